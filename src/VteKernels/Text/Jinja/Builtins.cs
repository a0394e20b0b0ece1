// The library of the template language: globals (range, namespace, dict, raise_exception, strftime_now),
// filters, tests, attribute and item lookup with the Python string and dict methods chat templates call,
// arithmetic and comparison. Semantics are CPython's and Jinja 3.1's (with transformers' tojson), so a
// template renders here as apply_chat_template renders it. Names not listed here are rejected when the
// template is parsed (filters, tests) or when the lookup happens (methods).
// Costs: every builtin is linear in the sizes of its operands and result, and the interpreter charges
// those to the render budget; operations whose result can be far larger than their operands (string and
// list repetition, replace, indent, join, concatenation) check the result's size before building it, and
// substring searches charge text length x pattern length, their worst case.
using System.Globalization;
using System.Text;

namespace VteKernels.Text.Jinja;

internal static class Builtins
{
    /// <summary>Jinja's sandbox limit on range(); a template asking for more is refused.</summary>
    private const int MaxRange = 100_000;

    private static readonly object Required = new();

    private static readonly HashSet<string> FilterNames = new(StringComparer.Ordinal)
    {
        "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "first", "float", "indent", "int", "items", "join",
        "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round",
        "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper",
    };

    private static readonly HashSet<string> TestNames = new(StringComparer.Ordinal)
    {
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "float", "ge", ">=",
        "gt", "greaterthan", ">", "in", "integer", "iterable", "le", "<=", "lower", "lt", "lessthan", "<", "mapping", "ne", "!=",
        "none", "number", "odd", "sameas", "sequence", "string", "true", "undefined", "upper",
    };

    public static bool IsFilter(string name) => FilterNames.Contains(name);

    public static bool IsTest(string name) => TestNames.Contains(name);

    /// <summary>Supported filter names, sorted (for documentation and error messages).</summary>
    public static IEnumerable<string> Filters => FilterNames.Order(StringComparer.Ordinal);

    /// <summary>Supported test names, sorted.</summary>
    public static IEnumerable<string> Tests => TestNames.Order(StringComparer.Ordinal);

    public static IEnumerable<KeyValuePair<string, object?>> Globals()
    {
        yield return new("range", new JinjaCallable("range", Range));
        yield return new("namespace", new JinjaCallable("namespace", (args, kwargs) =>
        {
            var ns = new JinjaNamespace();
            foreach (var a in args)
            {
                if (a is not OrderedDictionary<string, object?> init) throw new TemplateError("namespace() takes a dict or keyword arguments");
                foreach (var (k, v) in init) ns.Attributes[k] = v;
            }
            foreach (var (k, v) in kwargs) ns.Attributes[k] = v;
            return ns;
        }));
        yield return new("dict", new JinjaCallable("dict", (args, kwargs) =>
        {
            var d = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
            foreach (var a in args)
            {
                if (a is not OrderedDictionary<string, object?> init) throw new TemplateError("dict() takes a dict or keyword arguments");
                foreach (var (k, v) in init) d[k] = v;
            }
            foreach (var (k, v) in kwargs) d[k] = v;
            return d;
        }));
        yield return new("raise_exception", new JinjaCallable("raise_exception", (args, _) =>
            throw new RaisedError(args.Count > 0 ? Values.Str(args[0]) : "raise_exception() called")));
        yield return new("strftime_now", new JinjaCallable("strftime_now", (args, _) =>
            Strftime(DateTime.Now, args.Count > 0 && args[0] is string f ? f : throw new TemplateError("strftime_now(format) needs a format string"))));
    }

    // ---------------------------------------------------------------- arguments

    // Binds positional and keyword arguments to named parameters; Required marks parameters without default.
    private static object?[] Bind(string function, List<object?> args, List<KeyValuePair<string, object?>> kwargs, params (string Name, object? Default)[] parameters)
    {
        if (args.Count > parameters.Length)
            throw new TemplateError($"{function}() takes at most {parameters.Length} arguments ({args.Count} given)");
        var values = new object?[parameters.Length];
        var set = new bool[parameters.Length];
        for (int i = 0; i < args.Count; i++) { values[i] = args[i]; set[i] = true; }
        foreach (var (name, value) in kwargs)
        {
            int idx = Array.FindIndex(parameters, p => p.Name == name);
            if (idx < 0) throw new TemplateError($"{function}() got an unexpected keyword argument '{name}'");
            if (set[idx]) throw new TemplateError($"{function}() got multiple values for argument '{name}'");
            values[idx] = value;
            set[idx] = true;
        }
        for (int i = 0; i < parameters.Length; i++)
        {
            if (set[i]) continue;
            if (ReferenceEquals(parameters[i].Default, Required))
                throw new TemplateError($"{function}() missing required argument '{parameters[i].Name}'");
            values[i] = parameters[i].Default;
        }
        return values;
    }

    private static object? Range(List<object?> args, List<KeyValuePair<string, object?>> kwargs)
    {
        if (kwargs.Count > 0 || args.Count is 0 or > 3) throw new TemplateError("range() takes 1 to 3 positional arguments");
        long start = 0, stop, step = 1;
        if (args.Count == 1) stop = Int(args[0], "range");
        else
        {
            start = Int(args[0], "range");
            stop = Int(args[1], "range");
            if (args.Count == 3) step = Int(args[2], "range");
        }
        if (step == 0) throw new TemplateError("range() arg 3 must not be zero");
        Int128 span = step > 0 ? (Int128)stop - start : (Int128)start - stop;
        Int128 stride = step > 0 ? step : -(Int128)step;
        long count = span <= 0 ? 0 : (long)Int128.Min((span + stride - 1) / stride, MaxRange + 1);
        if (count > MaxRange) throw new TemplateError($"range() of {count} items is more than the sandbox allows ({MaxRange})");
        var result = new List<object?>((int)count);
        for (long i = 0; i < count; i++) result.Add(start + i * step);
        return result;
    }

    private static long Int(object? v, string function) => v is long or bool ? Values.ToLong(v)
        : throw new TemplateError($"{function}() expects an integer, got {Values.TypeName(v)}");

    // ---------------------------------------------------------------- lookup

    /// <summary>x.name: methods of str and dict first (as Python's getattr finds them), then dict keys,
    /// namespace attributes and loop fields; anything missing is undefined.</summary>
    public static object? GetAttr(object? obj, string name)
    {
        switch (obj)
        {
            case Undefined u: throw new TemplateError(u.Hint);
            case OrderedDictionary<string, object?> dict:
                return DictMethod(dict, name) ?? (dict.TryGetValue(name, out var v) ? v : new Undefined($"'dict object' has no attribute '{name}'"));
            case string s:
                return (object?)StringMethod(s, name) ?? new Undefined($"'str object' has no attribute '{name}'");
            case JinjaNamespace ns:
                return ns.Attributes.TryGetValue(name, out var a) ? a : new Undefined($"'Namespace' has no attribute '{name}'");
            case LoopContext loop:
                return loop.Get(name);
            default:
                return new Undefined($"'{Values.TypeName(obj)} object' has no attribute '{name}'");
        }
    }

    /// <summary>x[key]: items first, then (for string keys) attributes, as Jinja's getitem does.</summary>
    public static object? GetItem(object? obj, object? key)
    {
        switch (obj)
        {
            case Undefined u: throw new TemplateError(u.Hint);
            case OrderedDictionary<string, object?> dict when key is string k:
                return dict.TryGetValue(k, out var v) ? v : GetAttr(dict, k);
            case List<object?> or object?[] when key is long or bool:
                var list = (IReadOnlyList<object?>)obj;
                long i = Values.ToLong(key);
                if (i < 0) i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"{Values.TypeName(obj)} index {key} out of range");
            case string s when key is long or bool:
                var cps = Values.CodePoints(s);
                long j = Values.ToLong(key);
                if (j < 0) j += cps.Count;
                return j >= 0 && j < cps.Count ? cps[(int)j] : new Undefined($"string index {key} out of range");
            case JinjaNamespace or LoopContext when key is string name:
                return GetAttr(obj, name);
            default:
                if (key is string attr && obj is not null) return GetAttr(obj, attr);
                return new Undefined($"'{Values.TypeName(obj)} object' has no element {Values.Repr(key)}");
        }
    }

    /// <summary>x[start:stop:step] on lists, tuples and strings, with Python's clamping and negative steps.</summary>
    public static object? Slice(object? obj, object? start, object? stop, object? step)
    {
        long st = step is null ? 1 : Int(step, "slice");
        if (st == 0) throw new TemplateError("slice step cannot be zero");
        IReadOnlyList<object?> items = obj switch
        {
            List<object?> l => l,
            object?[] t => t,
            string s => Values.CodePoints(s).Cast<object?>().ToList(),
            Undefined u => throw new TemplateError(u.Hint),
            _ => throw new TemplateError($"'{Values.TypeName(obj)}' object is not subscriptable"),
        };
        int n = items.Count;
        long Clamp(object? bound, long dflt)
        {
            if (bound is null) return dflt;
            long b = Int(bound, "slice");
            if (b < 0) b += n;
            return st > 0 ? Math.Clamp(b, 0, n) : Math.Clamp(b, -1, n - 1);
        }
        long from = Clamp(start, st > 0 ? 0 : n - 1);
        long to = Clamp(stop, st > 0 ? n : -1);
        var picked = new List<object?>();
        for (long i = from; st > 0 ? i < to : i > to; i += st) picked.Add(items[(int)i]);
        return obj switch
        {
            string => string.Concat(picked.Cast<string>()),
            object?[] => picked.ToArray(),
            _ => picked,
        };
    }

    private static JinjaCallable? DictMethod(OrderedDictionary<string, object?> dict, string name) => name switch
    {
        "items" => new("dict.items", (a, k) => { Bind("items", a, k); return dict.Select(p => (object?)new object?[] { p.Key, p.Value }).ToList(); }),
        "keys" => new("dict.keys", (a, k) => { Bind("keys", a, k); return dict.Keys.Cast<object?>().ToList(); }),
        "values" => new("dict.values", (a, k) => { Bind("values", a, k); return dict.Values.ToList(); }),
        "get" => new("dict.get", (a, k) =>
        {
            var p = Bind("get", a, k, ("key", Required), ("default", null));
            return p[0] is string key && dict.TryGetValue(key, out var v) ? v : p[1];
        }),
        _ => null,
    };

    private static JinjaCallable? StringMethod(string s, string name)
    {
        // A method reads its string at most once (searches charge more, in Search).
        JinjaCallable M(Func<List<object?>, List<KeyValuePair<string, object?>>, object?> f) => new("str." + name, (a, k) =>
        {
            RenderBudget.Charge(s.Length);
            return f(a, k);
        });
        return name switch
        {
            "strip" => M((a, k) => PyStrip(s, OptChars(Bind("strip", a, k, ("chars", null))[0]), true, true)),
            "lstrip" => M((a, k) => PyStrip(s, OptChars(Bind("lstrip", a, k, ("chars", null))[0]), true, false)),
            "rstrip" => M((a, k) => PyStrip(s, OptChars(Bind("rstrip", a, k, ("chars", null))[0]), false, true)),
            "startswith" => M((a, k) => Affix(s, Bind("startswith", a, k, ("prefix", Required))[0], prefix: true)),
            "endswith" => M((a, k) => Affix(s, Bind("endswith", a, k, ("suffix", Required))[0], prefix: false)),
            "split" => M((a, k) => { var p = Bind("split", a, k, ("sep", null), ("maxsplit", -1L)); return Split(s, OptChars(p[0]), Int(p[1], "split")); }),
            "rsplit" => M((a, k) => { var p = Bind("rsplit", a, k, ("sep", null), ("maxsplit", -1L)); return RSplit(s, OptChars(p[0]), Int(p[1], "rsplit")); }),
            "splitlines" => M((a, k) => { Bind("splitlines", a, k); return SplitLines(s); }),
            "upper" => M((a, k) => { Bind("upper", a, k); return s.ToUpperInvariant(); }),
            "lower" => M((a, k) => { Bind("lower", a, k); return s.ToLowerInvariant(); }),
            "capitalize" => M((a, k) => { Bind("capitalize", a, k); return Capitalize(s); }),
            "title" => M((a, k) => { Bind("title", a, k); return PyTitle(s); }),
            "replace" => M((a, k) =>
            {
                var p = Bind("replace", a, k, ("old", Required), ("new", Required), ("count", -1L));
                return Replace(s, Text(p[0], "replace"), Text(p[1], "replace"), Int(p[2], "replace"));
            }),
            "find" => M((a, k) => (long)CodePointIndex(s, s.IndexOf(Search(s, Text(Bind("find", a, k, ("sub", Required))[0], "find")), StringComparison.Ordinal))),
            "rfind" => M((a, k) => (long)CodePointIndex(s, s.LastIndexOf(Search(s, Text(Bind("rfind", a, k, ("sub", Required))[0], "rfind")), StringComparison.Ordinal))),
            "count" => M((a, k) => (long)Count(s, Text(Bind("count", a, k, ("sub", Required))[0], "count"))),
            "join" => M((a, k) => Join(s, Values.Iterate(Bind("join", a, k, ("iterable", Required))[0]).Select(x =>
                x as string ?? throw new TemplateError($"sequence item: expected str instance, {Values.TypeName(x)} found")).ToList())),
            "removeprefix" => M((a, k) => { var p = Text(Bind("removeprefix", a, k, ("prefix", Required))[0], "removeprefix"); return s.StartsWith(p, StringComparison.Ordinal) ? s[p.Length..] : s; }),
            "removesuffix" => M((a, k) => { var p = Text(Bind("removesuffix", a, k, ("suffix", Required))[0], "removesuffix"); return p.Length > 0 && s.EndsWith(p, StringComparison.Ordinal) ? s[..^p.Length] : s; }),
            "isdigit" => M((a, k) => { Bind("isdigit", a, k); return s.Length > 0 && s.All(char.IsDigit); }),
            "isalpha" => M((a, k) => { Bind("isalpha", a, k); return s.Length > 0 && s.All(char.IsLetter); }),
            "isalnum" => M((a, k) => { Bind("isalnum", a, k); return s.Length > 0 && s.All(char.IsLetterOrDigit); }),
            "isspace" => M((a, k) => { Bind("isspace", a, k); return s.Length > 0 && s.All(char.IsWhiteSpace); }),
            "islower" => M((a, k) => { Bind("islower", a, k); return IsLower(s); }),
            "isupper" => M((a, k) => { Bind("isupper", a, k); return IsUpper(s); }),
            _ => null,
        };
    }

    private static string Text(object? v, string function) =>
        v as string ?? throw new TemplateError($"{function}() expects a string argument, got {Values.TypeName(v)}");

    private static string? OptChars(object? v) => v is null ? null : Text(v, "strip");

    // A substring search over s costs at most |s| x |sub| character comparisons: charged before it runs.
    private static string Search(string s, string sub)
    {
        RenderBudget.Charge(RenderBudget.Product(s.Length, Math.Max(1, sub.Length)));
        return sub;
    }

    // string.Join with the result's length checked before it is built.
    private static string Join(string separator, IReadOnlyList<string> parts)
    {
        long length = (long)separator.Length * Math.Max(0, parts.Count - 1);
        foreach (var p in parts) length += p.Length;
        RenderBudget.CheckLength(length);
        return string.Join(separator, parts);
    }

    /// <summary>a + b or a ~ b on strings, with the result's length checked first.</summary>
    public static string Concat(string a, string b)
    {
        RenderBudget.CheckLength((long)a.Length + b.Length);
        return a + b;
    }

    // ---------------------------------------------------------------- string helpers (Python's str methods)

    private static bool IsStripped(char c, string? chars) => chars is null ? char.IsWhiteSpace(c) : chars.Contains(c);

    public static string PyStrip(string s, string? chars, bool left, bool right)
    {
        int a = 0, b = s.Length;
        if (left) while (a < b && IsStripped(s[a], chars)) a++;
        if (right) while (b > a && IsStripped(s[b - 1], chars)) b--;
        return s[a..b];
    }

    private static bool Affix(string s, object? affix, bool prefix)
    {
        bool One(object? x)
        {
            var t = Text(x, prefix ? "startswith" : "endswith");
            RenderBudget.Charge(t.Length);
            return prefix ? s.StartsWith(t, StringComparison.Ordinal) : s.EndsWith(t, StringComparison.Ordinal);
        }
        return affix is object?[] or List<object?> ? Values.Iterate(affix).Any(One) : One(affix);
    }

    private static List<object?> Split(string s, string? sep, long maxSplit)
    {
        var parts = new List<object?>();
        if (sep is null)
        {
            int i = 0;
            while (true)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && parts.Count == maxSplit)
                {
                    parts.Add(PyStrip(s[i..], null, false, true));
                    break;
                }
                int j = i;
                while (j < s.Length && !char.IsWhiteSpace(s[j])) j++;
                parts.Add(s[i..j]);
                i = j;
            }
            return parts;
        }
        if (sep.Length == 0) throw new TemplateError("empty separator");
        Search(s, sep);
        int start = 0;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int at = s.IndexOf(sep, start, StringComparison.Ordinal);
            if (at < 0) break;
            parts.Add(s[start..at]);
            start = at + sep.Length;
        }
        parts.Add(s[start..]);
        return parts;
    }

    private static List<object?> RSplit(string s, string? sep, long maxSplit)
    {
        if (maxSplit < 0) return Split(s, sep, -1);
        if (sep is null)
        {
            var parts = new List<object?>();
            int end = s.Length;
            while (true)
            {
                while (end > 0 && char.IsWhiteSpace(s[end - 1])) end--;
                if (end == 0) break;
                if (parts.Count == maxSplit)
                {
                    parts.Add(PyStrip(s[..end], null, true, false));
                    break;
                }
                int j = end;
                while (j > 0 && !char.IsWhiteSpace(s[j - 1])) j--;
                parts.Add(s[j..end]);
                end = j;
            }
            parts.Reverse();
            return parts;
        }
        if (sep.Length == 0) throw new TemplateError("empty separator");
        Search(s, sep);
        var result = new List<object?>();
        int stop = s.Length;
        while (result.Count < maxSplit)
        {
            int at = stop - sep.Length < 0 ? -1 : s.LastIndexOf(sep, stop - 1, stop, StringComparison.Ordinal);
            if (at < 0) break;
            result.Add(s[(at + sep.Length)..stop]);
            stop = at;
        }
        result.Add(s[..stop]);
        result.Reverse();
        return result;
    }

    private static List<object?> SplitLines(string s)
    {
        var lines = new List<object?>();
        int start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')
            {
                lines.Add(s[start..i]);
                if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
                start = i + 1;
            }
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    private static string Replace(string s, string old, string @new, long count)
    {
        // The result is at most s plus one copy of new per occurrence (one per code point and one more for an empty old).
        long occurrences = old.Length == 0 ? s.Length + 1L : Count(s, old);
        if (count >= 0) occurrences = Math.Min(occurrences, count);
        RenderBudget.CheckLength(s.Length + occurrences * Math.Max(0, @new.Length - old.Length));
        RenderBudget.Charge(occurrences * @new.Length);
        if (count < 0) return old.Length == 0 ? InsertEverywhere(s, @new, long.MaxValue) : s.Replace(old, @new, StringComparison.Ordinal);
        if (old.Length == 0) return InsertEverywhere(s, @new, count);
        var sb = new StringBuilder();
        int start = 0;
        for (long n = 0; n < count; n++)
        {
            int at = s.IndexOf(old, start, StringComparison.Ordinal);
            if (at < 0) break;
            sb.Append(s, start, at - start).Append(@new);
            start = at + old.Length;
        }
        return sb.Append(s, start, s.Length - start).ToString();
    }

    // Python's "ab".replace("", "-") is "-a-b-".
    private static string InsertEverywhere(string s, string insert, long count)
    {
        var sb = new StringBuilder();
        long n = 0;
        foreach (var cp in Values.CodePoints(s))
        {
            if (n++ < count) sb.Append(insert);
            sb.Append(cp);
        }
        if (n < count) sb.Append(insert);
        return sb.ToString();
    }

    private static int Count(string s, string sub)
    {
        if (sub.Length == 0) return Values.CodePoints(s).Count + 1;
        Search(s, sub);
        int n = 0;
        for (int at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    private static int CodePointIndex(string s, int utf16Index) =>
        utf16Index < 0 ? -1 : s[..utf16Index].EnumerateRunes().Count();

    private static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    // Python's str.title(): a letter after a non-letter is upper-cased, other letters lower-cased.
    private static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            sb.Append(prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            prevCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    // Jinja's title filter: words start after runs of whitespace, '-', '(', '{', '[' or '<'.
    private static string JinjaTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool wordStart = true;
        foreach (char c in s)
        {
            bool separator = char.IsWhiteSpace(c) || c is '-' or '(' or '{' or '[' or '<';
            if (separator) { sb.Append(c); wordStart = true; continue; }
            sb.Append(wordStart ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            wordStart = false;
        }
        return sb.ToString();
    }

    private static bool IsLower(string s) => s.Any(char.IsLetter) && !s.Any(char.IsUpper);

    private static bool IsUpper(string s) => s.Any(char.IsLetter) && !s.Any(char.IsLower);

    // ---------------------------------------------------------------- operators

    /// <summary>+ - * / // % ** and ~ with Python's rules (int stays int except for /; str and list + and *).</summary>
    public static object? Arithmetic(string op, object? a, object? b)
    {
        if (op == "~") return Concat(Values.Str(a), Values.Str(b));
        if (a is Undefined ua) throw new TemplateError(ua.Hint);
        if (b is Undefined ub) throw new TemplateError(ub.Hint);
        bool ints = a is long or bool && b is long or bool;
        bool nums = Values.IsNumber(a) && Values.IsNumber(b);
        try
        {
            switch (op)
            {
                case "+":
                    if (ints) return checked(Values.ToLong(a) + Values.ToLong(b));
                    if (nums) return Values.ToDouble(a) + Values.ToDouble(b);
                    if (a is string sa && b is string sb) return Concat(sa, sb);
                    if (a is List<object?> la && b is List<object?> lb) return la.Concat(lb).ToList();
                    if (a is object?[] ta && b is object?[] tb) return ta.Concat(tb).ToArray();
                    break;
                case "-":
                    if (ints) return checked(Values.ToLong(a) - Values.ToLong(b));
                    if (nums) return Values.ToDouble(a) - Values.ToDouble(b);
                    break;
                case "*":
                    if (ints) return checked(Values.ToLong(a) * Values.ToLong(b));
                    if (nums) return Values.ToDouble(a) * Values.ToDouble(b);
                    if (a is string s1 && b is long or bool) return Repeat(s1, Values.ToLong(b));
                    if (b is string s2 && a is long or bool) return Repeat(s2, Values.ToLong(a));
                    if (a is List<object?> l1 && b is long or bool) return RepeatList(l1, Values.ToLong(b));
                    break;
                case "/":
                    if (nums)
                    {
                        double den = Values.ToDouble(b);
                        if (den == 0) throw new TemplateError("division by zero");
                        return Values.ToDouble(a) / den;
                    }
                    break;
                case "//":
                    if (ints)
                    {
                        long x = Values.ToLong(a), y = Values.ToLong(b);
                        if (y == 0) throw new TemplateError("integer division or modulo by zero");
                        long q = x / y;
                        return (x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q;
                    }
                    if (nums)
                    {
                        double den = Values.ToDouble(b);
                        if (den == 0) throw new TemplateError("float floor division by zero");
                        return Math.Floor(Values.ToDouble(a) / den);
                    }
                    break;
                case "%":
                    if (a is string) throw new TemplateError("unsupported construct: printf-style string formatting with %");
                    if (ints)
                    {
                        long x = Values.ToLong(a), y = Values.ToLong(b);
                        if (y == 0) throw new TemplateError("integer division or modulo by zero");
                        if (y == -1) return 0L; // long.MinValue % -1 overflows in .NET; the remainder is 0
                        long r = x % y;
                        return r != 0 && (r < 0) != (y < 0) ? r + y : r;
                    }
                    if (nums)
                    {
                        double x = Values.ToDouble(a), y = Values.ToDouble(b);
                        if (y == 0) throw new TemplateError("float modulo");
                        double r = x % y;
                        return r != 0 && (r < 0) != (y < 0) ? r + y : r;
                    }
                    break;
                case "**":
                    if (ints && Values.ToLong(b) >= 0) return Power(Values.ToLong(a), Values.ToLong(b));
                    if (nums) return Math.Pow(Values.ToDouble(a), Values.ToDouble(b));
                    break;
            }
        }
        catch (OverflowException)
        {
            throw new TemplateError($"integer overflow in '{op}' (values beyond 64 bits are not supported)");
        }
        throw new TemplateError($"unsupported operand type(s) for {op}: '{Values.TypeName(a)}' and '{Values.TypeName(b)}'");
    }

    private static string Repeat(string s, long n)
    {
        if (n <= 0 || s.Length == 0) return "";
        RenderBudget.CheckLength(RenderBudget.Product(s.Length, n));
        return new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();
    }

    private static List<object?> RepeatList(List<object?> list, long n)
    {
        if (n <= 0 || list.Count == 0) return [];
        long count = RenderBudget.Product(list.Count, n);
        if (count > TemplateLimits.MaxStringLength)
            throw new TemplateError($"a list of {count} items is longer than the {TemplateLimits.MaxStringLength} a template may build");
        RenderBudget.Charge(count);
        var result = new List<object?>((int)count);
        for (long i = 0; i < n; i++) result.AddRange(list);
        return result;
    }

    // x ** e for e >= 0 by repeated squaring (a loop of e multiplications never ends for x in {-1, 0, 1}).
    private static long Power(long x, long e)
    {
        long result = 1;
        while (e > 0)
        {
            if ((e & 1) != 0) result = checked(result * x);
            e >>= 1;
            if (e > 0) x = checked(x * x);
        }
        return result;
    }

    /// <summary>One comparison of a chain: == != &lt; &lt;= &gt; &gt;= in, not in.</summary>
    public static bool Compare(string op, object? a, object? b) => op switch
    {
        "==" => Values.Equal(a, b),
        "!=" => !Values.Equal(a, b),
        "<" => Values.Compare(a, b) < 0,
        "<=" => Values.Compare(a, b) <= 0,
        ">" => Values.Compare(a, b) > 0,
        ">=" => Values.Compare(a, b) >= 0,
        "in" => Contains(b, a),
        "not in" => !Contains(b, a),
        _ => throw new TemplateError($"internal: unknown comparison '{op}'"),
    };

    /// <summary>item in container: substring, list/tuple element, dict key; nothing is in undefined.</summary>
    public static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(Search(s, sub), StringComparison.Ordinal)
            : throw new TemplateError($"'in <string>' requires string as left operand, not {Values.TypeName(item)}"),
        List<object?> or object?[] => ((IReadOnlyList<object?>)container).Any(x => Values.Equal(x, item)),
        OrderedDictionary<string, object?> d => item is string k && d.ContainsKey(k),
        JinjaNamespace ns => item is string k2 && ns.Attributes.ContainsKey(k2),
        Undefined => false,
        _ => throw new TemplateError($"argument of type '{Values.TypeName(container)}' is not iterable"),
    };

    // ---------------------------------------------------------------- tests

    /// <summary>x is name(args).</summary>
    public static bool Test(string name, object? v, List<object?> args)
    {
        object? Arg(int i) => i < args.Count ? args[i] : throw new TemplateError($"test '{name}' needs {i + 1} argument(s)");
        return name switch
        {
            "defined" => v is not Undefined,
            "undefined" => v is Undefined,
            "none" => v is null,
            "boolean" => v is bool,
            "true" => v is true,
            "false" => v is false,
            "integer" => v is long,
            "float" => v is double,
            "number" => Values.IsNumber(v),
            "string" => v is string,
            "mapping" => v is OrderedDictionary<string, object?>,
            "iterable" => v is string or List<object?> or object?[] or OrderedDictionary<string, object?> or Undefined or LoopContext,
            "sequence" => v is string or List<object?> or object?[] or OrderedDictionary<string, object?> or Undefined,
            "callable" => v is JinjaCallable,
            "escaped" => false,
            "odd" => Int(v, "odd") % 2 != 0,
            "even" => Int(v, "even") % 2 == 0,
            "divisibleby" => DivisibleBy(Int(v, "divisibleby"), Int(Arg(0), "divisibleby")),
            "eq" or "equalto" or "==" => Values.Equal(v, Arg(0)),
            "ne" or "!=" => !Values.Equal(v, Arg(0)),
            "lt" or "lessthan" or "<" => Values.Compare(v, Arg(0)) < 0,
            "le" or "<=" => Values.Compare(v, Arg(0)) <= 0,
            "gt" or "greaterthan" or ">" => Values.Compare(v, Arg(0)) > 0,
            "ge" or ">=" => Values.Compare(v, Arg(0)) >= 0,
            "in" => Contains(Arg(0), v),
            "sameas" => SameAs(v, Arg(0)),
            "lower" => IsLower(Values.Str(v)),
            "upper" => IsUpper(Values.Str(v)),
            _ => throw new TemplateError($"unknown test '{name}'"),
        };
    }

    private static bool DivisibleBy(long x, long y) => y switch
    {
        0 => throw new TemplateError("integer division or modulo by zero"),
        -1 => true, // long.MinValue % -1 overflows; every integer is divisible by -1
        _ => x % y == 0,
    };

    private static bool SameAs(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (bool x, bool y) => x == y,
        (long x, long y) => x == y,
        (string x, string y) => string.Equals(x, y, StringComparison.Ordinal),
        _ => ReferenceEquals(a, b),
    };

    // ---------------------------------------------------------------- filters

    /// <summary>value | name(args).</summary>
    public static object? Filter(string name, object? v, List<object?> args, List<KeyValuePair<string, object?>> kwargs)
    {
        using var level = RenderBudget.Enter(); // map(filter, ...) calls filters from filters
        object?[] P(params (string, object?)[] parameters) => Bind(name, args, kwargs, parameters);
        switch (name)
        {
            case "abs":
                P();
                return v switch
                {
                    long.MinValue => throw new TemplateError("integer overflow in abs() (values beyond 64 bits are not supported)"),
                    long l => (object)Math.Abs(l),
                    double d => Math.Abs(d),
                    bool b => b ? 1L : 0L,
                    _ => throw new TemplateError($"bad operand type for abs(): '{Values.TypeName(v)}'"),
                };
            case "attr":
                // Attribute lookup only, as Jinja's attr filter does: a dict's keys are items, not attributes.
                var attrName = Text(P(("name", Required))[0], "attr");
                return v is OrderedDictionary<string, object?> ad
                    ? (object?)DictMethod(ad, attrName) ?? new Undefined($"'dict object' has no attribute '{attrName}'")
                    : GetAttr(v, attrName);
            case "capitalize":
                P();
                return Capitalize(Values.Str(v));
            case "count":
            case "length":
                P();
                return Values.Length(v);
            case "d":
            case "default":
                var dp = P(("default_value", ""), ("boolean", false));
                return v is Undefined || (Values.Truthy(dp[1]) && !Values.Truthy(v)) ? dp[0] : v;
            case "dictsort":
                return DictSort(v, P(("case_sensitive", false), ("by", "key"), ("reverse", false)));
            case "first":
                P();
                var fi = Values.Iterate(v);
                return fi.Count > 0 ? fi[0] : new Undefined("No first item, sequence was empty.");
            case "last":
                P();
                var la = Values.Iterate(v);
                return la.Count > 0 ? la[^1] : new Undefined("No last item, sequence was empty.");
            case "float":
                var flp = P(("default", 0.0));
                return ToFloat(v) ?? flp[0];
            case "int":
                var ip = P(("default", 0L), ("base", 10L));
                return ToInt(v, Int(ip[1], "int")) ?? ip[0];
            case "indent":
                var inp = P(("width", 4L), ("first", false), ("blank", false));
                return Indent(Values.Str(v), inp[0] is string w ? w : Spaces(Int(inp[0], "indent")), Values.Truthy(inp[1]), Values.Truthy(inp[2]));
            case "items":
                P();
                return v switch
                {
                    OrderedDictionary<string, object?> d => d.Select(p => (object?)new object?[] { p.Key, p.Value }).ToList(),
                    Undefined => new List<object?>(),
                    _ => throw new TemplateError($"can only get item pairs from a mapping, not {Values.TypeName(v)}"),
                };
            case "join":
                var jp = P(("d", ""), ("attribute", null));
                var parts = Values.Iterate(v).Select(x => jp[1] is null ? x : AttrOrItem(x, jp[1]));
                return Join(Values.Str(jp[0]), parts.Select(Values.Str).ToList());
            case "list":
                P();
                return Values.Iterate(v).ToList();
            case "lower":
                P();
                return Values.Str(v).ToLowerInvariant();
            case "upper":
                P();
                return Values.Str(v).ToUpperInvariant();
            case "map":
                return Map(v, args, kwargs);
            case "max":
            case "min":
                var mp = P(("case_sensitive", false), ("attribute", null));
                var all = Values.Iterate(v);
                if (all.Count == 0) return new Undefined($"No aggregated item, sequence was empty.");
                var key = SortKey(Values.Truthy(mp[0]), mp[1]);
                var best = all[0];
                foreach (var x in all.Skip(1))
                {
                    int c = Values.Compare(key(x), key(best));
                    if (name == "max" ? c > 0 : c < 0) best = x;
                }
                return best;
            case "reject":
            case "select":
                return Select(v, args, kwargs, attribute: false, keep: name == "select");
            case "rejectattr":
            case "selectattr":
                return Select(v, args, kwargs, attribute: true, keep: name == "selectattr");
            case "replace":
                var rp = P(("old", Required), ("new", Required), ("count", null));
                return Replace(Values.Str(v), Values.Str(rp[0]), Values.Str(rp[1]), rp[2] is null ? -1 : Int(rp[2], "replace"));
            case "reverse":
                P();
                if (v is string rs) return string.Concat(Enumerable.Reverse(Values.CodePoints(rs)));
                var rl = Values.Iterate(v).ToList();
                rl.Reverse();
                return rl;
            case "round":
                var ro = P(("precision", 0L), ("method", "common"));
                double val = Values.ToDouble(v);
                int prec = (int)Int(ro[0], "round");
                return ro[1] switch
                {
                    "common" => Math.Round(val, Math.Clamp(prec, 0, 15), MidpointRounding.ToEven),
                    "ceil" => Math.Ceiling(val * Math.Pow(10, prec)) / Math.Pow(10, prec),
                    "floor" => Math.Floor(val * Math.Pow(10, prec)) / Math.Pow(10, prec),
                    _ => throw new TemplateError("round() method must be 'common', 'ceil' or 'floor'"),
                };
            case "safe":
            case "string":
                P();
                return Values.Str(v);
            case "sort":
                var sp = P(("reverse", false), ("case_sensitive", false), ("attribute", null));
                var sortKey = SortKey(Values.Truthy(sp[1]), sp[2]);
                var sorted = Values.Iterate(v).Select((x, i) => (x, i)).ToList();
                SortTyped(sorted, (p, q) =>
                {
                    int c = Values.Compare(sortKey(p.x), sortKey(q.x));
                    return c != 0 ? c : p.i.CompareTo(q.i);
                });
                if (Values.Truthy(sp[0])) sorted.Reverse();
                return sorted.Select(p => p.x).ToList();
            case "sum":
                var su = P(("attribute", null), ("start", 0L));
                object? total = su[1];
                foreach (var x in Values.Iterate(v)) total = Arithmetic("+", total, su[0] is null ? x : AttrOrItem(x, su[0]));
                return total;
            case "title":
                P();
                return JinjaTitle(Values.Str(v));
            case "tojson":
                // transformers replaces Jinja's HTML-escaping tojson with json.dumps(x, ensure_ascii=False,
                // indent=None, separators=None, sort_keys=False); the argument order is that function's.
                var tj = P(("ensure_ascii", false), ("indent", null), ("separators", null), ("sort_keys", false));
                int? indent = tj[1] switch
                {
                    null => null,
                    long or bool => (int)Math.Clamp(Values.ToLong(tj[1]), -1, TemplateLimits.MaxStringLength + 1L),
                    _ => throw new TemplateError("tojson indent must be an integer"),
                };
                (string, string)? seps = null;
                if (tj[2] is not null)
                {
                    var s = Values.Iterate(tj[2]);
                    if (s.Count != 2 || s[0] is not string s0 || s[1] is not string s1) throw new TemplateError("tojson separators must be two strings");
                    seps = (s0, s1);
                }
                if (v is Undefined uj) throw new TemplateError($"Object of type Undefined is not JSON serializable ({uj.Hint})");
                return Values.ToJson(v, indent, Values.Truthy(tj[0]), seps, Values.Truthy(tj[3]));
            case "trim":
                return PyStrip(Values.Str(v), OptChars(P(("chars", null))[0]), true, true);
            case "unique":
                var up = P(("case_sensitive", false), ("attribute", null));
                var ukey = SortKey(Values.Truthy(up[0]), up[1]);
                var seen = new List<object?>();
                var unique = new List<object?>();
                foreach (var x in Values.Iterate(v))
                {
                    var k = ukey(x);
                    if (seen.Any(s => Values.Equal(s, k))) continue;
                    seen.Add(k);
                    unique.Add(x);
                }
                return unique;
            default:
                throw new TemplateError($"unknown filter '{name}'");
        }
    }

    private static object? AttrOrItem(object? obj, object? attribute)
    {
        // Jinja's attribute getters take dotted paths ("function.name") and integer parts as indexes.
        foreach (var part in Values.Str(attribute).Split('.'))
            obj = long.TryParse(part, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long idx) ? GetItem(obj, idx) : GetItem(obj, part);
        return obj;
    }

    private static Func<object?, object?> SortKey(bool caseSensitive, object? attribute) => x =>
    {
        var k = attribute is null ? x : AttrOrItem(x, attribute);
        return !caseSensitive && k is string s ? s.ToLowerInvariant() : k;
    };

    private static List<object?> DictSort(object? v, object?[] p)
    {
        if (v is not OrderedDictionary<string, object?> d) throw new TemplateError("dictsort expects a mapping");
        bool byValue = p[1] switch
        {
            "key" => false,
            "value" => true,
            _ => throw new TemplateError("dictsort 'by' must be 'key' or 'value'"),
        };
        var key = SortKey(Values.Truthy(p[0]), null);
        var pairs = d.Select(e => (e.Key, e.Value)).ToList();
        SortTyped(pairs, (a, b) => Values.Compare(key(byValue ? a.Value : a.Key), key(byValue ? b.Value : b.Key)));
        if (Values.Truthy(p[2])) pairs.Reverse();
        return pairs.Select(e => (object?)new object?[] { e.Key, e.Value }).ToList();
    }

    // List.Sort wraps an exception of the comparison in InvalidOperationException: the template's error is the inner one.
    private static void SortTyped<T>(List<T> list, Comparison<T> comparison)
    {
        try
        {
            list.Sort(comparison);
        }
        catch (InvalidOperationException e) when (e.InnerException is TemplateError inner)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(inner);
        }
    }

    private static List<object?> Map(object? v, List<object?> args, List<KeyValuePair<string, object?>> kwargs)
    {
        var items = Values.Iterate(v);
        if (args.Count == 0)
        {
            var p = Bind("map", args, kwargs, ("attribute", Required), ("default", null));
            bool hasDefault = kwargs.Any(k => k.Key == "default");
            return items.Select(x =>
            {
                var r = AttrOrItem(x, p[0]);
                return r is Undefined && hasDefault ? p[1] : r;
            }).ToList();
        }
        if (args[0] is not string filter || !IsFilter(filter)) throw new TemplateError($"map(): unknown filter {Values.Repr(args[0])}");
        var rest = args.Skip(1).ToList();
        return items.Select(x => Filter(filter, x, rest, kwargs)).ToList();
    }

    private static List<object?> Select(object? v, List<object?> args, List<KeyValuePair<string, object?>> kwargs, bool attribute, bool keep)
    {
        if (kwargs.Count > 0) throw new TemplateError("select/reject filters take no keyword arguments");
        int at = 0;
        object? attr = null;
        if (attribute)
        {
            if (args.Count == 0) throw new TemplateError("selectattr/rejectattr need an attribute name");
            attr = args[at++];
        }
        string? test = null;
        if (at < args.Count)
        {
            test = args[at++] as string;
            if (test is null || !IsTest(test)) throw new TemplateError($"unknown test {Values.Repr(args[at - 1])}");
        }
        var testArgs = args.Skip(at).ToList();
        var kept = new List<object?>();
        foreach (var item in Values.Iterate(v))
        {
            var subject = attribute ? AttrOrItem(item, attr) : item;
            bool ok = test is null ? Values.Truthy(subject) : Test(test, subject, testArgs);
            if (ok == keep) kept.Add(item);
        }
        return kept;
    }

    private static object? ToFloat(object? v) => v switch
    {
        double d => d,
        long l => (double)l,
        bool b => b ? 1.0 : 0.0,
        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
        _ => null,
    };

    private static object? ToInt(object? v, long numberBase) => v switch
    {
        long l => l,
        bool b => b ? 1L : 0L,
        double d when !double.IsNaN(d) && !double.IsInfinity(d) => (long)Math.Truncate(d),
        string s when numberBase == 10 && long.TryParse(s.Trim().Replace("_", "", StringComparison.Ordinal), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l) => l,
        string s when numberBase == 10 && double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => (long)Math.Truncate(d),
        string s when numberBase == 16 && long.TryParse(PyStrip(s, null, true, true).Replace("0x", "", StringComparison.OrdinalIgnoreCase), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var h) => h,
        _ => null,
    };

    // indent(width): Python's " " * width (empty for width <= 0), its length checked first.
    private static string Spaces(long width)
    {
        if (width <= 0) return "";
        RenderBudget.CheckLength(width);
        return new string(' ', (int)width);
    }

    // Jinja 3.1's indent: the first line unindented unless first=True, blank lines left blank unless blank=True.
    private static string Indent(string s, string indentation, bool first, bool blank)
    {
        long breaks = 2;
        foreach (char c in s) if (c == '\n') breaks++;
        RenderBudget.CheckLength(s.Length + RenderBudget.Product(breaks, indentation.Length));
        var lines = SplitLines(s + "\n").Select(x => (string)x!).ToList();
        string rv;
        if (blank) rv = string.Join("\n" + indentation, lines);
        else
        {
            rv = lines[0];
            if (lines.Count > 1) rv += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indentation + l : l));
        }
        return first ? indentation + rv : rv;
    }

    // ---------------------------------------------------------------- strftime_now

    private static readonly string[] MonthAbbr = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

    /// <summary>C strftime for the directives chat templates use (%d %m %y %Y %b %B %a %A %H %I %M %S %p %j %%).</summary>
    public static string Strftime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
            char d = format[++i];
            var inv = CultureInfo.InvariantCulture;
            sb.Append(d switch
            {
                'd' => t.Day.ToString("00", inv),
                'm' => t.Month.ToString("00", inv),
                'y' => (t.Year % 100).ToString("00", inv),
                'Y' => t.Year.ToString(inv),
                'b' => MonthAbbr[t.Month - 1],
                'B' => inv.DateTimeFormat.GetMonthName(t.Month),
                'a' => inv.DateTimeFormat.GetAbbreviatedDayName(t.DayOfWeek),
                'A' => inv.DateTimeFormat.GetDayName(t.DayOfWeek),
                'H' => t.Hour.ToString("00", inv),
                'I' => ((t.Hour + 11) % 12 + 1).ToString("00", inv),
                'M' => t.Minute.ToString("00", inv),
                'S' => t.Second.ToString("00", inv),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => t.DayOfYear.ToString("000", inv),
                '%' => "%",
                _ => throw new TemplateError($"strftime_now: unsupported directive '%{d}'"),
            });
        }
        return sb.ToString();
    }
}
