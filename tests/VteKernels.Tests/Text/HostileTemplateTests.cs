// Hostile chat templates: every recursive construct nested far past the cap, values built deeper or larger
// than a render may hold, arithmetic at the edges of 64 bits. Each must end in a ChatTemplateException
// naming the line and column (never a stack overflow, a hang, an allocation the size of the machine or a
// BCL exception). Work bounds are checked by counting allocated bytes, not by timing.
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class HostileTemplateTests
{
    private const int Deep = 10_000;

    private static string Repeat(string s, int n) => string.Concat(Enumerable.Repeat(s, n));

    private static readonly IReadOnlyList<ChatMessage> Chat = [new("user", "hi")];

    private static ChatTemplateException ParseFails(string template) =>
        Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template));

    private static ChatTemplateException RenderFails(string template, IReadOnlyDictionary<string, object?>? variables = null) =>
        Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template).Render(Chat, true, variables));

    private static string Render(string template) => ChatTemplate.Parse(template).Render(Chat, true);

    // (name, template nested 10,000 deep): each recursive construct of the parser.
    public static TheoryData<string, string> DeepSources() => new()
    {
        { "parentheses", "{{ " + Repeat("(", Deep) + "1" + Repeat(")", Deep) + " }}" },
        { "lists", "{{ " + Repeat("[", Deep) + Repeat("]", Deep) + " }}" },
        { "dicts", "{{ " + Repeat("{'a': ", Deep) + "1" + Repeat("}", Deep) + " }}" },
        { "calls", "{{ " + Repeat("f(", Deep) + Repeat(")", Deep) + " }}" },
        { "subscripts", "{{ x" + Repeat("[x", Deep) + Repeat("]", Deep) + " }}" },
        { "if blocks", Repeat("{% if true %}", Deep) + "x" + Repeat("{% endif %}", Deep) },
        { "for blocks", Repeat("{% for a in [1] %}", Deep) + "x" + Repeat("{% endfor %}", Deep) },
        { "set blocks", Repeat("{% set a %}", Deep) + "x" + Repeat("{% endset %}", Deep) },
        { "macro blocks", Repeat("{% macro m() %}", Deep) + "x" + Repeat("{% endmacro %}", Deep) },
        { "not", "{{ " + Repeat("not ", Deep) + "x }}" },
        { "unary minus", "{{ " + Repeat("-", Deep) + "1 }}" },
        { "conditional else chain", "{{ " + Repeat("1 if x else ", Deep) + "2 }}" },
        { "chained plus", "{{ 1" + Repeat(" + 1", Deep) + " }}" },
        { "chained and", "{{ x" + Repeat(" and x", Deep) + " }}" },
        { "chained filters", "{{ 'a'" + Repeat("|upper", Deep) + " }}" },
        { "chained method calls", "{{ 'a'" + Repeat(".upper()", 3_000) + " }}" },
        { "chained attributes", "{{ x" + Repeat(".a", Deep) + " }}" },
        { "chained tests", "{{ x" + Repeat(" is defined", Deep) + " }}" },
        { "content filter chain", "{% for p in message.content" + Repeat("|list", Deep) + " %}{% endfor %}" },
    };

    [Theory, MemberData(nameof(DeepSources))]
    public void DeepNestingIsATypedParseErrorWithItsPosition(string name, string template)
    {
        var e = ParseFails(template);
        Assert.Matches(@"^chat template line \d+, column \d+: .*(nests deeper than 200|deeper than 200 levels)", e.Message);
        Assert.False(string.IsNullOrEmpty(name));
    }

    // A template near the nesting cap renders on a thread with a 1 MiB stack (less than .NET's default for
    // secondary threads), so the bounds leave room for the interpreter and the content-format scan as well.
    [Fact]
    public void TheDeepestAcceptedTemplateRendersOnASmallStack()
    {
        string template = Repeat("{% if true %}", 90) + "{{ " + Repeat("(", 100) + "1" + Repeat(")", 100) + Repeat(" + 1", 100) + " }}" + Repeat("{% endif %}", 90);
        string? output = null;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { output = Render(template); }
            catch (Exception e) { error = e; }
        }, maxStackSize: 1 << 20);
        t.Start();
        t.Join();
        Assert.Null(error);
        Assert.Equal("101", output);
    }

    // Values and calls nested at runtime: the interpreter's own bounds.
    public static TheoryData<string, string, string> RuntimeBombs() => new()
    {
        { "value nested 100,000 deep", "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}", "nests deeper than 500 levels" },
        { "tojson of a deep value", "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|tojson }}", "nests deeper than 500 levels" },
        { "equality of deep values", "{% set ns = namespace(x=[], y=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% set ns.y = [ns.y] %}{% endfor %}{{ ns.x == ns.y }}", "nests deeper than 500 levels" },
        { "repr of a value shared 2^60 ways", "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}", "more than" },
        { "equality of values shared 2^60 ways", "{% set ns = namespace(x=[1], y=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% set ns.y = [ns.y, ns.y] %}{% endfor %}{{ ns.x == ns.y }}", "more than 2000000 steps" },
        { "string doubling", "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}", "characters" },
        { "string repeated 10^12 times", "{{ 'ab' * 1000000000000 }}", "longer than the 67108864" },
        { "list repeated 10^12 times", "{{ ([1] * 1000000000000)|length }}", "longer than the 67108864" },
        { "output of 100M characters", "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "67108864" },
        { "nested loops of 10^10 steps", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "more than 2000000 steps" },
        { "recursive macro", "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "nests deeper than 64 calls" },
        { "map calling map", "{% set ns = namespace(x=1) %}{% for i in range(3000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|map(" + Repeat("'map', ", 3000) + "'string')|list }}", "nests deeper than 1000 levels" },
        { "indent of 10^12", "{{ 'a\nb'|indent(1000000000000) }}", "longer than the 67108864" },
        { "replace blowing up", "{{ ('a' * 10000000)|replace('a', 'aaaaaaaaaa') }}", "longer than the 67108864" },
        { "tojson with a huge indent", "{{ [[1]]|tojson(indent=1000000000000) }}", "longer than" },
        { "substring search of 10^14 comparisons", "{{ ('a' * 10000000) in ('a' * 10000000) }}", "characters and items" },
        { "join blowing up", "{{ (['a' * 10000000] * 7)|join('') }}", "longer than" },
    };

    [Theory, MemberData(nameof(RuntimeBombs))]
    public void RuntimeBombsAreTypedErrors(string name, string template, string expected)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = RenderFails(template);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains(expected, e.Message);
        Assert.Matches(@"^chat template line \d+, column \d+: ", e.Message);
        Assert.True(allocated < 2L << 30, $"{name}: {allocated} bytes allocated");
    }

    // Arithmetic at the edges of 64 bits: typed errors (or Python's answer), never an OverflowException.
    public static TheoryData<string, string?> EdgeArithmetic() => new()
    {
        { "{{ x.9223372036854775808 }}", null },
        { "{{ x.99999999999999999999999 }}", null },
        { "{{ -(-9223372036854775807 - 1) }}", null },
        { "{{ (-9223372036854775807 - 1)|abs }}", null },
        { "{{ (-9223372036854775807 - 1) // -1 }}", null },
        { "{{ (-9223372036854775807 - 1) % -1 }}", "0" },
        { "{{ 5 is divisibleby 0 }}", null },
        { "{{ (-9223372036854775807 - 1) is divisibleby(-1) }}", "True" },
        { "{{ 2 ** 64 }}", null },
        { "{{ 1 ** 1000000000000000000 }}", "1" },
        { "{{ (-1) ** 1000000000000000001 }}", "-1" },
        { "{{ 0 ** 1000000000000000000 }}", "0" },
        { "{{ range(-9223372036854775807 - 1, 9223372036854775807)|length }}", null },
        { "{{ range(9223372036854775807, -9223372036854775807 - 1, -1)|length }}", null },
        { "{{ 'ab'|indent(-5) }}", "ab" },
        { "{{ 99999999999999999999 }}", null },
    };

    [Theory, MemberData(nameof(EdgeArithmetic))]
    public void EdgeArithmeticIsTypedOrExact(string template, string? expected)
    {
        if (expected is null)
        {
            var e = Assert.Throws<ChatTemplateException>(() => Render(template));
            Assert.Matches(@"^chat template line 1, column \d+: ", e.Message);
        }
        else Assert.Equal(expected, Render(template));
    }

    // Values that cannot be ordered, inside sort and dictsort: List.Sort wrapped the template's error in an
    // InvalidOperationException (found by vte-fuzz, chat-template input 19526 of seed 20).
    [Theory]
    [InlineData("{{ [1, x, 2]|sort }}")]
    [InlineData("{{ [1, 'a', 2]|sort }}")]
    [InlineData("{{ {'a': 1, 'b': 'x', 'c': none}|dictsort(by='value') }}")]
    public void UnorderableValuesInSortAreTypedErrors(string template)
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render(template));
        Assert.Contains("'<' not supported between instances of", e.Message);
    }

    // Adjacent string literals ('a' 'b' is 'ab') join in one builder: parsing 20,000 of them allocates a small
    // multiple of the source (joining pairwise allocated ~800 MB).
    [Fact]
    public void AdjacentStringLiteralsParseInLinearMemory()
    {
        string template = "{{ " + Repeat("'ab' ", 20_000) + "}}";
        long before = GC.GetAllocatedBytesForCurrentThread();
        var parsed = ChatTemplate.Parse(template);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 100L * template.Length, $"{allocated} bytes allocated to parse {template.Length} characters");
        Assert.Equal(40_000, parsed.Render(Chat, false).Length);
    }

    // Host values nested past the cap are refused as arguments, not walked into a stack overflow.
    [Fact]
    public void DeepHostValuesAreRefused()
    {
        object? v = "x";
        for (int i = 0; i < 100_000; i++) v = new List<object?> { v };
        var template = ChatTemplate.Parse("{{ v }}");
        Assert.Throws<ArgumentException>(() => template.Render(new Dictionary<string, object?> { ["v"] = v }));
    }
}
