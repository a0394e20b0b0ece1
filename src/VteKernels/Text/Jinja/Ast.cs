// The syntax tree of a parsed template: statements (text, output, if, for, set, macro, loop control)
// and expressions. Every node keeps the offset of its first token in the normalised source so that
// runtime errors can say where they happened. Every expression knows its Depth (the height of the tree
// under it), computed once from its children's when it is built, so the parser can refuse trees too deep
// to walk (left-deep chains such as a + 1 + 1 ... or x|upper|upper ... grow without the parser recursing)
// without walking them.
namespace VteKernels.Text.Jinja;

internal abstract record Node(int Offset);

internal sealed record TextNode(string Text, int Offset) : Node(Offset);

internal sealed record OutputNode(Expr Value, int Offset) : Node(Offset);

internal sealed record IfNode(IReadOnlyList<(Expr Condition, IReadOnlyList<Node> Body)> Branches, IReadOnlyList<Node>? Else, int Offset) : Node(Offset);

internal sealed record ForNode(Target Target, Expr Iterable, Expr? Filter, IReadOnlyList<Node> Body, IReadOnlyList<Node>? Else, int Offset) : Node(Offset);

internal sealed record SetNode(Target Target, Expr Value, int Offset) : Node(Offset);

/// <summary>{% set x %}...{% endset %}: the rendered body becomes the value.</summary>
internal sealed record SetBlockNode(Target Target, IReadOnlyList<Node> Body, int Offset) : Node(Offset);

internal sealed record MacroNode(string Name, IReadOnlyList<(string Name, Expr? Default)> Parameters, IReadOnlyList<Node> Body, int Offset) : Node(Offset);

internal sealed record BreakNode(int Offset) : Node(Offset);

internal sealed record ContinueNode(int Offset) : Node(Offset);

/// <summary>The left side of a set or the variables of a for loop.</summary>
internal abstract record Target(int Offset);

internal sealed record NameTarget(string Name, int Offset) : Target(Offset);

/// <summary>ns.attr = ... on a namespace() object.</summary>
internal sealed record AttrTarget(string Object, string Attribute, int Offset) : Target(Offset);

internal sealed record TupleTarget(IReadOnlyList<NameTarget> Names, int Offset) : Target(Offset);

internal abstract record Expr(int Offset)
{
    /// <summary>Height of the tree under this node: 1 for a leaf.</summary>
    public virtual int Depth => 1;

    /// <summary>The greatest <see cref="Depth"/> among <paramref name="items"/> (0 for none).</summary>
    protected static int MaxDepth(IEnumerable<Expr?> items)
    {
        int d = 0;
        foreach (var e in items) if (e is not null && e.Depth > d) d = e.Depth;
        return d;
    }
}

internal sealed record LiteralExpr(object? Value, int Offset) : Expr(Offset);

internal sealed record NameExpr(string Name, int Offset) : Expr(Offset);

internal sealed record ListExpr(IReadOnlyList<Expr> Items, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + MaxDepth(Items);
}

internal sealed record TupleExpr(IReadOnlyList<Expr> Items, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + MaxDepth(Items);
}

internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Items, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + MaxDepth(Items.SelectMany(p => new[] { p.Key, p.Value }));
}

internal sealed record AttrExpr(Expr Object, string Name, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Object.Depth;
}

internal sealed record ItemExpr(Expr Object, Expr Key, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Math.Max(Object.Depth, Key.Depth);
}

internal sealed record SliceExpr(Expr Object, Expr? Start, Expr? Stop, Expr? Step, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + MaxDepth([Object, Start, Stop, Step]);
}

/// <summary>Positional and keyword arguments of a call, filter or test.</summary>
internal sealed record Arguments(IReadOnlyList<Expr> Positional, IReadOnlyList<(string Name, Expr Value)> Keyword)
{
    public static readonly Arguments None = new([], []);

    /// <summary>The greatest depth among the argument expressions (0 for none).</summary>
    public int Depth { get; } = Math.Max(
        Positional.Count == 0 ? 0 : Positional.Max(e => e.Depth),
        Keyword.Count == 0 ? 0 : Keyword.Max(k => k.Value.Depth));
}

internal sealed record CallExpr(Expr Callee, Arguments Args, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Math.Max(Callee.Depth, Args.Depth);
}

internal sealed record FilterExpr(Expr Operand, string Name, Arguments Args, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Math.Max(Operand.Depth, Args.Depth);
}

internal sealed record TestExpr(Expr Operand, string Name, Arguments Args, bool Negated, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Math.Max(Operand.Depth, Args.Depth);
}

/// <summary>Unary "-", "+" and "not".</summary>
internal sealed record UnaryExpr(string Op, Expr Operand, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Operand.Depth;
}

/// <summary>Arithmetic, "~", "and", "or".</summary>
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Math.Max(Left.Depth, Right.Depth);
}

/// <summary>A chain such as a &lt; b &lt;= c: each pair compared, all must hold. Ops: == != &lt; &lt;= &gt; &gt;= in "not in".</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Op, Expr Right)> Rest, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + Math.Max(First.Depth, MaxDepth(Rest.Select(r => r.Right)));
}

/// <summary>a if cond else b; without else the value is undefined when cond is false.</summary>
internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else, int Offset) : Expr(Offset)
{
    public override int Depth { get; } = 1 + MaxDepth([Condition, Then, Else]);
}
