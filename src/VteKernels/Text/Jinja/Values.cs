// Runtime values of the template language and Python's rules for them. Values are plain objects:
//   null = None, bool, long = int, double = float, string, List<object?> = list, object?[] = tuple,
//   OrderedDictionary<string, object?> = dict (insertion-ordered, string keys only), JinjaNamespace,
//   LoopContext, JinjaCallable, Undefined.
// Truthiness, str() (True/False/None capitalised, floats as Python's repr, lists and dicts as Python's
// repr), ==, ordering and json.dumps with transformers' tojson defaults (ensure_ascii=False, indent=None)
// follow CPython, because Hugging Face renders chat templates with Python's Jinja2.
// The walks over values (repr, tojson, ==, ordering, conversion from the host) stop at
// TemplateLimits.MaxValueDepth levels and count every element they visit as a step of the render, so a
// value nested a million deep or a list of itself shared 2^40 ways costs a typed error, not the stack or
// the machine; the strings they build stop at TemplateLimits.MaxStringLength.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VteKernels.Text.Jinja;

/// <summary>A failure while rendering, before its position is known; the interpreter adds the offset of the
/// innermost expression it was evaluating and turns it into a <see cref="ChatTemplateException"/>.</summary>
internal class TemplateError(string message) : Exception(message)
{
    /// <summary>Offset in the normalised source, or -1 while unknown.</summary>
    public int Offset { get; set; } = -1;
}

/// <summary>raise_exception(msg) from the template: surfaces as a ChatTemplateException carrying msg unchanged.</summary>
internal sealed class RaisedError(string message) : TemplateError(message);

/// <summary>A missing variable, attribute or item: prints as "", is false, iterates as empty; anything else fails.</summary>
internal sealed class Undefined(string hint)
{
    /// <summary>What was missing, e.g. "'tools' is undefined" or "'dict object' has no attribute 'x'".</summary>
    public string Hint { get; } = hint;
}

/// <summary>namespace(...): the one mutable object, so a {% set ns.x %} inside a loop survives the loop.</summary>
internal sealed class JinjaNamespace
{
    public OrderedDictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>A function value: a global (range, namespace, raise_exception), a bound method or a macro.</summary>
internal sealed class JinjaCallable(string name, Func<List<object?>, List<KeyValuePair<string, object?>>, object?> invoke)
{
    public string Name { get; } = name;

    public object? Invoke(List<object?> args, List<KeyValuePair<string, object?>> kwargs) => invoke(args, kwargs);
}

/// <summary>The "loop" variable inside a for loop.</summary>
internal sealed class LoopContext(IReadOnlyList<object?> items)
{
    public int Index0 { get; set; }

    public IReadOnlyList<object?> Items { get; } = items;

    public object? Get(string name) => name switch
    {
        "index0" => (long)Index0,
        "index" => (long)Index0 + 1,
        "revindex" => (long)(Items.Count - Index0),
        "revindex0" => (long)(Items.Count - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == Items.Count - 1,
        "length" => (long)Items.Count,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? Items[Index0 - 1] : new Undefined("there is no previous item"),
        "nextitem" => Index0 + 1 < Items.Count ? Items[Index0 + 1] : new Undefined("there is no next item"),
        "cycle" => new JinjaCallable("loop.cycle", (args, _) =>
            args.Count == 0 ? throw new TemplateError("loop.cycle() needs at least one argument") : args[Index0 % args.Count]),
        _ => new Undefined($"'LoopContext' has no attribute '{name}'"),
    };
}

/// <summary>Python semantics for runtime values.</summary>
internal static class Values
{
    /// <summary>Python's bool(x); undefined is false.</summary>
    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> list => list.Count > 0,
        object?[] tuple => tuple.Length > 0,
        OrderedDictionary<string, object?> dict => dict.Count > 0,
        _ => true,
    };

    /// <summary>Python's type names, for error messages.</summary>
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        object?[] => "tuple",
        OrderedDictionary<string, object?> => "dict",
        JinjaNamespace => "Namespace",
        LoopContext => "LoopContext",
        JinjaCallable => "function",
        _ => v.GetType().Name,
    };

    /// <summary>Python's str(x), as {{ x }} prints it; undefined prints as "".</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's repr(x): strings quoted, containers as Python prints them.</summary>
    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        AppendRepr(sb, v, 0);
        return sb.ToString();
    }

    /// <summary>The shallow size of a value as the render budget counts it: characters of a string, items of a
    /// list, tuple, dict or namespace, else 1.</summary>
    public static long Size(object? v) => v switch
    {
        string s => s.Length,
        List<object?> l => l.Count,
        object?[] t => t.Length,
        OrderedDictionary<string, object?> d => d.Count,
        JinjaNamespace ns => ns.Attributes.Count,
        _ => 1,
    };

    // One element of a walk over a value at nesting depth: a step, and a check of the depth and of the text built so far.
    private static void Visit(int depth, StringBuilder? sb = null)
    {
        RenderBudget.Step();
        if (depth > TemplateLimits.MaxValueDepth)
            throw new TemplateError($"a value nests deeper than {TemplateLimits.MaxValueDepth} levels");
        if (sb is not null) RenderBudget.CheckLength(sb.Length);
    }

    private static void AppendRepr(StringBuilder sb, object? v, int depth)
    {
        Visit(depth, sb);
        switch (v)
        {
            case null: sb.Append("None"); break;
            case Undefined: break;
            case bool b: sb.Append(b ? "True" : "False"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FloatRepr(d)); break;
            case string s: AppendStringRepr(sb, s); break;
            case List<object?> list:
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    AppendRepr(sb, list[i], depth + 1);
                }
                sb.Append(']');
                break;
            case object?[] tuple:
                sb.Append('(');
                for (int i = 0; i < tuple.Length; i++)
                {
                    if (i > 0) sb.Append(", ");
                    AppendRepr(sb, tuple[i], depth + 1);
                }
                if (tuple.Length == 1) sb.Append(',');
                sb.Append(')');
                break;
            case OrderedDictionary<string, object?> dict:
                AppendDictRepr(sb, dict, depth);
                break;
            case JinjaNamespace ns:
                sb.Append("<Namespace ");
                AppendDictRepr(sb, ns.Attributes, depth);
                sb.Append('>');
                break;
            case JinjaCallable f: sb.Append("<function ").Append(f.Name).Append('>'); break;
            case LoopContext: sb.Append("<LoopContext>"); break;
            default: sb.Append(v); break;
        }
    }

    private static void AppendDictRepr(StringBuilder sb, OrderedDictionary<string, object?> dict, int depth)
    {
        sb.Append('{');
        bool first = true;
        foreach (var (k, value) in dict)
        {
            if (!first) sb.Append(", ");
            first = false;
            AppendStringRepr(sb, k);
            sb.Append(": ");
            AppendRepr(sb, value, depth + 1);
        }
        sb.Append('}');
    }

    // Python quotes with ' unless the text holds ' and no ", and escapes \\, the quote, \n \r \t and
    // other control characters.
    private static void AppendStringRepr(StringBuilder sb, string s)
    {
        RenderBudget.CheckLength((long)sb.Length + s.Length);
        RenderBudget.Charge(s.Length);
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(quote);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append(quote);
    }

    /// <summary>Python's repr(float): the shortest round-trip digits, "1.0" not "1", exponent form
    /// below 1e-4 and from 1e16 ("1e+16", "1.5e-05").</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsPositiveInfinity(d)) return "inf";
        if (double.IsNegativeInfinity(d)) return "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // "R" gives the shortest round-trip digits ("1E+20", "1.5E-05", "123.456"); read them back as
        // significant digits and the position of the decimal point relative to the first of them.
        string shortest = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);
        int ePos = shortest.IndexOf('E');
        string mantissa = ePos >= 0 ? shortest[..ePos] : shortest;
        int exp10 = ePos >= 0 ? int.Parse(shortest[(ePos + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) : 0;
        int dot = mantissa.IndexOf('.');
        string allDigits = mantissa.Replace(".", "", StringComparison.Ordinal);
        int leadingZeros = allDigits.Length - allDigits.TrimStart('0').Length;
        string digits = allDigits.Trim('0');
        int pointPos = (dot >= 0 ? dot : mantissa.Length) + exp10 - leadingZeros; // value = 0.digits × 10^pointPos
        int sciExp = pointPos - 1;
        var sb = new StringBuilder();
        if (d < 0) sb.Append('-');
        if (sciExp < -4 || sciExp >= 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(sciExp < 0 ? '-' : '+').Append(Math.Abs(sciExp).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPos <= 0)
        {
            sb.Append("0.").Append('0', -pointPos).Append(digits);
        }
        else if (pointPos >= digits.Length)
        {
            sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }
        return sb.ToString();
    }

    /// <summary>Python's ==: numbers (bool included) by value, containers element-wise, list != tuple.</summary>
    public static bool Equal(object? a, object? b) => Equal(a, b, 0);

    private static bool Equal(object? a, object? b, int depth)
    {
        Visit(depth);
        if (a is null || b is null) return a is null && b is null;
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        switch (a)
        {
            case string sa:
                if (b is not string sb) return false;
                RenderBudget.Charge(Math.Min(sa.Length, sb.Length));
                return string.Equals(sa, sb, StringComparison.Ordinal);
            case List<object?> la: return b is List<object?> lb && SequenceEqual(la, lb, depth);
            case object?[] ta: return b is object?[] tb && SequenceEqual(ta, tb, depth);
            case OrderedDictionary<string, object?> da:
                if (b is not OrderedDictionary<string, object?> db || da.Count != db.Count) return false;
                foreach (var (k, v) in da)
                    if (!db.TryGetValue(k, out var w) || !Equal(v, w, depth + 1)) return false;
                return true;
            default: return ReferenceEquals(a, b);
        }
    }

    private static bool SequenceEqual(IReadOnlyList<object?> a, IReadOnlyList<object?> b, int depth)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
            if (!Equal(a[i], b[i], depth + 1)) return false;
        return true;
    }

    /// <summary>Python's ordering for &lt; &lt;= &gt; &gt;=: numbers, strings (by code point), sequences of the same kind.</summary>
    /// <exception cref="ChatTemplateException">The two values are not orderable.</exception>
    public static int Compare(object? a, object? b) => Compare(a, b, 0);

    private static int Compare(object? a, object? b, int depth)
    {
        Visit(depth);
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        if (a is string sa && b is string sb)
        {
            RenderBudget.Charge(Math.Min(sa.Length, sb.Length));
            return Math.Sign(CompareCodePoints(sa, sb));
        }
        if ((a is List<object?> && b is List<object?>) || (a is object?[] && b is object?[]))
        {
            var la = (IReadOnlyList<object?>)a;
            var lb = (IReadOnlyList<object?>)b!;
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                if (Equal(la[i], lb[i], depth + 1)) continue;
                return Compare(la[i], lb[i], depth + 1);
            }
            return la.Count.CompareTo(lb.Count);
        }
        throw new TemplateError($"'<' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static int CompareCodePoints(string a, string b)
    {
        var ea = a.EnumerateRunes();
        var eb = b.EnumerateRunes();
        while (true)
        {
            bool ha = ea.MoveNext(), hb = eb.MoveNext();
            if (!ha || !hb) return ha.CompareTo(hb);
            int c = ea.Current.Value.CompareTo(eb.Current.Value);
            if (c != 0) return c;
        }
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static bool IsSequence(object? v) => v is List<object?> or object?[];

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => (long)d,
        _ => throw new TemplateError($"expected a number, got {TypeName(v)}"),
    };

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => d,
        _ => throw new TemplateError($"expected a number, got {TypeName(v)}"),
    };

    /// <summary>The Unicode scalar values of a string as one string each (Python indexes strings by code point).</summary>
    public static List<string> CodePoints(string s)
    {
        RenderBudget.Charge(s.Length);
        var result = new List<string>(s.Length);
        foreach (var rune in s.EnumerateRunes()) result.Add(rune.ToString());
        return result;
    }

    /// <summary>Python's len(); undefined has length 0.</summary>
    public static long Length(object? v) => v switch
    {
        string s => CountRunes(s),
        List<object?> l => l.Count,
        object?[] t => t.Length,
        OrderedDictionary<string, object?> d => d.Count,
        JinjaNamespace ns => ns.Attributes.Count,
        Undefined => 0,
        _ => throw new TemplateError($"object of type '{TypeName(v)}' has no len()"),
    };

    private static long CountRunes(string s)
    {
        RenderBudget.Charge(s.Length);
        return s.EnumerateRunes().Count();
    }

    /// <summary>The items a for loop or a filter walks: list/tuple items, dict keys, string characters; undefined is empty.</summary>
    public static IReadOnlyList<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        object?[] t => t,
        OrderedDictionary<string, object?> d => Keys(d),
        string s => CodePoints(s).Cast<object?>().ToList(),
        Undefined => [],
        _ => throw new TemplateError($"'{TypeName(v)}' object is not iterable"),
    };

    private static List<object?> Keys(OrderedDictionary<string, object?> d)
    {
        RenderBudget.Charge(d.Count);
        return d.Keys.Cast<object?>().ToList();
    }

    /// <summary>json.dumps(v, ensure_ascii, indent, separators, sort_keys), as transformers' tojson filter calls it.</summary>
    public static string ToJson(object? v, int? indent = null, bool ensureAscii = false, (string Item, string Key)? separators = null, bool sortKeys = false)
    {
        var seps = separators ?? (indent is null ? (", ", ": ") : (",", ": "));
        var sb = new StringBuilder();
        AppendJson(sb, v, indent, ensureAscii, seps, sortKeys, 0);
        return sb.ToString();
    }

    private static void AppendJson(StringBuilder sb, object? v, int? indent, bool ascii, (string Item, string Key) seps, bool sortKeys, int depth)
    {
        Visit(depth, sb);
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : FloatRepr(d));
                break;
            case string s: AppendJsonString(sb, s, ascii); break;
            case List<object?> or object?[]:
                var items = (IReadOnlyList<object?>)v;
                if (items.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < items.Count; i++)
                {
                    if (i > 0) sb.Append(seps.Item);
                    NewLine(sb, indent, depth + 1);
                    AppendJson(sb, items[i], indent, ascii, seps, sortKeys, depth + 1);
                }
                NewLine(sb, indent, depth);
                sb.Append(']');
                break;
            case OrderedDictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                IEnumerable<KeyValuePair<string, object?>> entries = dict;
                if (sortKeys) entries = entries.OrderBy(e => e.Key, Comparer<string>.Create((x, y) => CompareCodePoints(x, y)));
                sb.Append('{');
                bool first = true;
                foreach (var (k, value) in entries)
                {
                    if (!first) sb.Append(seps.Item);
                    first = false;
                    NewLine(sb, indent, depth + 1);
                    AppendJsonString(sb, k, ascii);
                    sb.Append(seps.Key);
                    AppendJson(sb, value, indent, ascii, seps, sortKeys, depth + 1);
                }
                NewLine(sb, indent, depth);
                sb.Append('}');
                break;
            default:
                throw new TemplateError($"Object of type {TypeName(v)} is not JSON serializable");
        }
    }

    private static void NewLine(StringBuilder sb, int? indent, int depth)
    {
        if (indent is null) return;
        long width = (long)Math.Max(0, indent.Value) * depth;
        RenderBudget.CheckLength(sb.Length + 1 + width);
        RenderBudget.Charge(width);
        sb.Append('\n').Append(' ', (int)width);
    }

    // json.dumps string escapes: \" \\ \n \r \t \b \f, other controls as \u00XX; with ensure_ascii every
    // non-ASCII UTF-16 unit as \uXXXX (astral characters as their surrogate pair, as Python writes them).
    private static void AppendJsonString(StringBuilder sb, string s, bool ascii)
    {
        RenderBudget.CheckLength((long)sb.Length + s.Length);
        RenderBudget.Charge(s.Length);
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7e))
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>Converts a value handed in by the caller (CLR primitives, dictionaries, lists, System.Text.Json
    /// nodes and elements) to a runtime value.</summary>
    /// <exception cref="ArgumentException">A value of a type templates cannot use.</exception>
    public static object? FromHost(object? v) => FromHost(v, 0);

    private static object? FromHost(object? v, int depth) => depth > TemplateLimits.MaxValueDepth
        ? throw new ArgumentException($"a chat template variable nests deeper than {TemplateLimits.MaxValueDepth} levels")
        : v switch
    {
        null => null,
        Undefined or JinjaNamespace or JinjaCallable => v,
        bool or string or long or double => v,
        int i => (long)i,
        short s => (long)s,
        byte b => (long)b,
        sbyte sb => (long)sb,
        uint u => (long)u,
        ushort us => (long)us,
        ulong ul => ul <= long.MaxValue ? (object)(long)ul : (double)ul,
        float f => (double)f,
        decimal m => (double)m,
        char c => c.ToString(),
        Enum e => e.ToString(),
        JsonElement el => FromJson(el, depth),
        JsonNode node => FromJson(JsonSerializer.SerializeToElement(node), depth),
        OrderedDictionary<string, object?> od => ConvertDict(od, depth),
        IEnumerable<KeyValuePair<string, object?>> dict => ConvertDict(dict, depth),
        IEnumerable<KeyValuePair<string, string>> sdict => ConvertDict(sdict.Select(p => new KeyValuePair<string, object?>(p.Key, p.Value)), depth),
        object?[] tuple => tuple.Select(x => FromHost(x, depth + 1)).ToArray(),
        System.Collections.IEnumerable seq => seq.Cast<object?>().Select(x => FromHost(x, depth + 1)).ToList(),
        _ => throw new ArgumentException($"a chat template variable cannot hold a value of type {v.GetType().FullName}"),
    };

    private static OrderedDictionary<string, object?> ConvertDict(IEnumerable<KeyValuePair<string, object?>> dict, int depth)
    {
        var result = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, value) in dict) result[k] = FromHost(value, depth + 1);
        return result;
    }

    private static object? FromJson(JsonElement el, int depth)
    {
        if (depth > TemplateLimits.MaxValueDepth)
            throw new ArgumentException($"a chat template variable nests deeper than {TemplateLimits.MaxValueDepth} levels");
        switch (el.ValueKind)
        {
            case JsonValueKind.Null:
            case JsonValueKind.Undefined: return null;
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            case JsonValueKind.String:
                try { return el.GetString(); }
                catch (InvalidOperationException e) { throw new ArgumentException($"a chat template variable holds a JSON string that is not valid UTF-8 or UTF-16: {e.Message}", e); }
            case JsonValueKind.Number:
                var raw = el.GetRawText();
                if (raw.IndexOfAny(['.', 'e', 'E']) < 0 && el.TryGetInt64(out long l)) return l;
                return el.GetDouble();
            case JsonValueKind.Array: return el.EnumerateArray().Select(x => FromJson(x, depth + 1)).ToList();
            default:
                var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                foreach (var p in el.EnumerateObject()) dict[p.Name] = FromJson(p.Value, depth + 1);
                return dict;
        }
    }
}
