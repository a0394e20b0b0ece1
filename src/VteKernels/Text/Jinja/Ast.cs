// The syntax tree of a parsed template: statements (text, output, if, for, set, macro, loop control)
// and expressions. Every node keeps the offset of its first token in the normalised source so that
// runtime errors can say where they happened.
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

internal abstract record Expr(int Offset);

internal sealed record LiteralExpr(object? Value, int Offset) : Expr(Offset);

internal sealed record NameExpr(string Name, int Offset) : Expr(Offset);

internal sealed record ListExpr(IReadOnlyList<Expr> Items, int Offset) : Expr(Offset);

internal sealed record TupleExpr(IReadOnlyList<Expr> Items, int Offset) : Expr(Offset);

internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Items, int Offset) : Expr(Offset);

internal sealed record AttrExpr(Expr Object, string Name, int Offset) : Expr(Offset);

internal sealed record ItemExpr(Expr Object, Expr Key, int Offset) : Expr(Offset);

internal sealed record SliceExpr(Expr Object, Expr? Start, Expr? Stop, Expr? Step, int Offset) : Expr(Offset);

/// <summary>Positional and keyword arguments of a call, filter or test.</summary>
internal sealed record Arguments(IReadOnlyList<Expr> Positional, IReadOnlyList<(string Name, Expr Value)> Keyword)
{
    public static readonly Arguments None = new([], []);
}

internal sealed record CallExpr(Expr Callee, Arguments Args, int Offset) : Expr(Offset);

internal sealed record FilterExpr(Expr Operand, string Name, Arguments Args, int Offset) : Expr(Offset);

internal sealed record TestExpr(Expr Operand, string Name, Arguments Args, bool Negated, int Offset) : Expr(Offset);

/// <summary>Unary "-", "+" and "not".</summary>
internal sealed record UnaryExpr(string Op, Expr Operand, int Offset) : Expr(Offset);

/// <summary>Arithmetic, "~", "and", "or".</summary>
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Offset) : Expr(Offset);

/// <summary>A chain such as a &lt; b &lt;= c: each pair compared, all must hold. Ops: == != &lt; &lt;= &gt; &gt;= in "not in".</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Op, Expr Right)> Rest, int Offset) : Expr(Offset);

/// <summary>a if cond else b; without else the value is undefined when cond is false.</summary>
internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else, int Offset) : Expr(Offset);
