// Walks the syntax tree and writes the output. Scoping follows Jinja: {% if %} shares its scope; every
// iteration of a {% for %} body gets a fresh scope over the enclosing one, so a plain {% set %} inside a
// loop is gone after the iteration (namespace() attributes are how templates carry state out of loops);
// a macro body runs in a scope over the scope the macro was defined in.
// Errors carry the offset of the innermost expression or statement being evaluated.
// Every render runs on a RenderBudget (TemplateLimits): each statement and expression is a step and a
// level of nesting, operands and results are charged by their size, and the output may not outgrow
// MaxStringLength, so a hostile template ends in a ChatTemplateException, not a hang or an exhausted heap.
using System.Text;

namespace VteKernels.Text.Jinja;

internal sealed class Interpreter
{
    private const int MaxMacroDepth = 64;

    private sealed class Scope(Scope? parent)
    {
        public Scope? Parent { get; } = parent;

        public Dictionary<string, object?> Vars { get; } = new(StringComparer.Ordinal);

        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s is not null; s = s.Parent)
                if (s.Vars.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }
    }

    private enum Flow { Normal, Break, Continue }

    private readonly string _src;
    private StringBuilder _out = new();
    private Scope _scope;
    private int _loopDepth;
    private int _macroDepth;

    private Interpreter(string src, Scope globals)
    {
        _src = src;
        _scope = globals;
    }

    /// <summary>Renders the program with the given top-level variables (already runtime values) over the builtins.</summary>
    /// <exception cref="ChatTemplateException">Any failure while rendering, or raise_exception from the template.</exception>
    public static string Render(string normalizedSource, IReadOnlyList<Node> program, IReadOnlyDictionary<string, object?> variables)
    {
        var builtins = new Scope(null);
        foreach (var (name, value) in Builtins.Globals()) builtins.Vars[name] = value;
        var top = new Scope(builtins);
        foreach (var (name, value) in variables) top.Vars[name] = value;
        var interp = new Interpreter(normalizedSource, top);
        using var budget = RenderBudget.Begin();
        try
        {
            interp.ExecBlock(program);
        }
        catch (RaisedError e)
        {
            throw new ChatTemplateException(e.Message);
        }
        catch (TemplateError e)
        {
            throw Lexer.Error(normalizedSource, Math.Max(e.Offset, 0), e.Message);
        }
        return interp._out.ToString();
    }

    private Flow ExecBlock(IReadOnlyList<Node> nodes)
    {
        foreach (var node in nodes)
        {
            var flow = Exec(node);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private void Write(string s)
    {
        RenderBudget.CheckLength((long)_out.Length + s.Length);
        RenderBudget.Charge(s.Length);
        _out.Append(s);
    }

    private Flow Exec(Node node)
    {
        try
        {
            RenderBudget.Step();
            using var level = RenderBudget.Enter();
            switch (node)
            {
                case TextNode t:
                    Write(t.Text);
                    return Flow.Normal;
                case OutputNode o:
                    Write(Values.Str(Eval(o.Value)));
                    return Flow.Normal;
                case IfNode i:
                    foreach (var (condition, body) in i.Branches)
                        if (Values.Truthy(Eval(condition))) return ExecBlock(body);
                    return i.Else is null ? Flow.Normal : ExecBlock(i.Else);
                case ForNode f:
                    return ExecFor(f);
                case SetNode s:
                    Assign(s.Target, Eval(s.Value));
                    return Flow.Normal;
                case SetBlockNode sb:
                    Assign(sb.Target, Capture(sb.Body));
                    return Flow.Normal;
                case MacroNode m:
                    _scope.Vars[m.Name] = MakeMacro(m, _scope);
                    return Flow.Normal;
                case BreakNode:
                    if (_loopDepth == 0) throw new TemplateError("'break' outside a for loop");
                    return Flow.Break;
                case ContinueNode:
                    if (_loopDepth == 0) throw new TemplateError("'continue' outside a for loop");
                    return Flow.Continue;
                default:
                    throw new TemplateError($"internal: unknown statement {node.GetType().Name}");
            }
        }
        catch (TemplateError e) when (e.Offset < 0)
        {
            e.Offset = node.Offset;
            throw;
        }
    }

    private Flow ExecFor(ForNode f)
    {
        var source = Eval(f.Iterable);
        IReadOnlyList<object?> items;
        try { items = Values.Iterate(source); }
        catch (TemplateError e) when (e.Offset < 0) { e.Offset = f.Iterable.Offset; throw; }

        var outer = _scope;
        try
        {
            if (f.Filter is not null)
            {
                // {% for x in xs if cond %}: the filter runs first, so loop.index counts kept items only.
                var kept = new List<object?>();
                foreach (var item in items)
                {
                    RenderBudget.Step();
                    _scope = new Scope(outer);
                    Assign(f.Target, item);
                    if (Values.Truthy(Eval(f.Filter))) kept.Add(item);
                }
                items = kept;
            }

            var loop = new LoopContext(items);
            _loopDepth++;
            for (int i = 0; i < items.Count; i++)
            {
                RenderBudget.Step();
                _scope = new Scope(outer);
                Assign(f.Target, items[i]);
                loop.Index0 = i;
                _scope.Vars["loop"] = loop;
                if (ExecBlock(f.Body) == Flow.Break) break;
            }
            _loopDepth--;
        }
        finally
        {
            _scope = outer;
        }
        if (items.Count == 0 && f.Else is not null) return ExecBlock(f.Else);
        return Flow.Normal;
    }

    private string Capture(IReadOnlyList<Node> body)
    {
        var saved = _out;
        _out = new StringBuilder();
        try
        {
            ExecBlock(body);
            return _out.ToString();
        }
        finally
        {
            _out = saved;
        }
    }

    private void Assign(Target target, object? value)
    {
        switch (target)
        {
            case NameTarget n:
                _scope.Vars[n.Name] = value;
                break;
            case AttrTarget a:
                if (!_scope.TryGet(a.Object, out var obj) || obj is not JinjaNamespace ns)
                    throw new TemplateError($"cannot assign attribute '{a.Attribute}' on '{a.Object}': only namespace() objects take attribute assignment");
                ns.Attributes[a.Attribute] = value;
                break;
            case TupleTarget t:
                var items = Values.Iterate(value);
                if (items.Count != t.Names.Count)
                    throw new TemplateError($"cannot unpack {items.Count} values into {t.Names.Count} variables");
                for (int i = 0; i < items.Count; i++) _scope.Vars[t.Names[i].Name] = items[i];
                break;
        }
    }

    private JinjaCallable MakeMacro(MacroNode m, Scope defining) => new(m.Name, (args, kwargs) =>
    {
        if (args.Count > m.Parameters.Count)
            throw new TemplateError($"macro '{m.Name}' takes {m.Parameters.Count} arguments, {args.Count} given");
        if (_macroDepth >= MaxMacroDepth)
            throw new TemplateError($"macro '{m.Name}' nests deeper than {MaxMacroDepth} calls");
        var savedScope = _scope;
        var savedLoopDepth = _loopDepth;
        _scope = new Scope(defining);
        _macroDepth++;
        _loopDepth = 0;
        try
        {
            var given = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (name, value) in kwargs)
            {
                if (!m.Parameters.Any(p => p.Name == name))
                    throw new TemplateError($"macro '{m.Name}' has no parameter '{name}'");
                given[name] = value;
            }
            for (int i = 0; i < m.Parameters.Count; i++)
            {
                var (name, dflt) = m.Parameters[i];
                object? value = i < args.Count ? args[i]
                    : given.TryGetValue(name, out var kw) ? kw
                    : dflt is not null ? Eval(dflt)
                    : new Undefined($"parameter '{name}' of macro '{m.Name}' was not provided");
                _scope.Vars[name] = value;
            }
            return Capture(m.Body);
        }
        finally
        {
            _scope = savedScope;
            _macroDepth--;
            _loopDepth = savedLoopDepth;
        }
    });

    private object? Eval(Expr expr)
    {
        try
        {
            RenderBudget.Step();
            using var level = RenderBudget.Enter();
            return EvalCore(expr);
        }
        catch (TemplateError e) when (e.Offset < 0)
        {
            e.Offset = expr.Offset;
            throw;
        }
    }

    private object? EvalCore(Expr expr)
    {
        switch (expr)
        {
            case LiteralExpr l:
                return l.Value;
            case NameExpr n:
                return _scope.TryGet(n.Name, out var v) ? v : new Undefined($"'{n.Name}' is undefined");
            case ListExpr list:
                RenderBudget.Charge(list.Items.Count);
                return list.Items.Select(Eval).ToList();
            case TupleExpr tuple:
                RenderBudget.Charge(tuple.Items.Count);
                return tuple.Items.Select(Eval).ToArray();
            case DictExpr dict:
                var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (k, value) in dict.Items)
                {
                    if (Eval(k) is not string key)
                        throw new TemplateError("unsupported construct: dict literal keys must be strings");
                    d[key] = Eval(value);
                }
                return d;
            case AttrExpr a:
                return Builtins.GetAttr(Eval(a.Object), a.Name);
            case ItemExpr i:
                return Builtins.GetItem(Eval(i.Object), Eval(i.Key));
            case SliceExpr s:
                return Charged(Builtins.Slice(Eval(s.Object), s.Start is null ? null : Eval(s.Start), s.Stop is null ? null : Eval(s.Stop), s.Step is null ? null : Eval(s.Step)));
            case CallExpr c:
                var callee = Eval(c.Callee);
                var (args, kwargs) = EvalArgs(c.Args);
                return callee switch
                {
                    JinjaCallable f => Charged(f.Invoke(args, kwargs)),
                    Undefined u => throw new TemplateError(u.Hint),
                    _ => throw new TemplateError($"'{Values.TypeName(callee)}' object is not callable"),
                };
            case FilterExpr f:
                var operand = Eval(f.Operand);
                var (fargs, fkwargs) = EvalArgs(f.Args);
                RenderBudget.Charge(Values.Size(operand));
                return Charged(Builtins.Filter(f.Name, operand, fargs, fkwargs));
            case TestExpr t:
                var subject = Eval(t.Operand);
                var (targs, tkwargs) = EvalArgs(t.Args);
                if (tkwargs.Count > 0) throw new TemplateError($"test '{t.Name}' takes no keyword arguments");
                RenderBudget.Charge(Values.Size(subject));
                return Builtins.Test(t.Name, subject, targs) != t.Negated;
            case UnaryExpr u:
                var x = Eval(u.Operand);
                return u.Op switch
                {
                    "not" => !Values.Truthy(x),
                    "-" => x switch
                    {
                        long.MinValue => throw new TemplateError("integer overflow in unary '-' (values beyond 64 bits are not supported)"),
                        long l => (object)-l,
                        double dd => -dd,
                        bool b => b ? -1L : 0L,
                        _ => throw new TemplateError($"bad operand type for unary -: '{Values.TypeName(x)}'"),
                    },
                    _ => Values.IsNumber(x) ? (x is bool b2 ? (b2 ? 1L : 0L) : x) : throw new TemplateError($"bad operand type for unary +: '{Values.TypeName(x)}'"),
                };
            case BinaryExpr b when b.Op == "and":
                var left = Eval(b.Left);
                return Values.Truthy(left) ? Eval(b.Right) : left;
            case BinaryExpr b when b.Op == "or":
                var l2 = Eval(b.Left);
                return Values.Truthy(l2) ? l2 : Eval(b.Right);
            case BinaryExpr b:
                var a1 = Eval(b.Left);
                var a2 = Eval(b.Right);
                RenderBudget.Charge(Values.Size(a1) + Values.Size(a2));
                return Charged(Builtins.Arithmetic(b.Op, a1, a2));
            case CompareExpr c:
                var current = Eval(c.First);
                foreach (var (op, rightExpr) in c.Rest)
                {
                    var right = Eval(rightExpr);
                    RenderBudget.Charge(Values.Size(current) + Values.Size(right));
                    if (!Builtins.Compare(op, current, right)) return false;
                    current = right;
                }
                return true;
            case ConditionalExpr ce:
                return Values.Truthy(Eval(ce.Condition)) ? Eval(ce.Then)
                    : ce.Else is null ? new Undefined("the conditional expression had no else branch") : Eval(ce.Else);
            default:
                throw new TemplateError($"internal: unknown expression {expr.GetType().Name}");
        }
    }

    // A value an operation created is charged by its size (an existing value looked up is not).
    private static object? Charged(object? value)
    {
        RenderBudget.Charge(Values.Size(value));
        return value;
    }

    private (List<object?> Args, List<KeyValuePair<string, object?>> Kwargs) EvalArgs(Arguments a)
    {
        var args = new List<object?>(a.Positional.Count);
        foreach (var p in a.Positional) args.Add(Eval(p));
        var kwargs = new List<KeyValuePair<string, object?>>(a.Keyword.Count);
        foreach (var (name, value) in a.Keyword) kwargs.Add(new(name, Eval(value)));
        return (args, kwargs);
    }
}
