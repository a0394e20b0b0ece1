// Renders a model's Jinja chat_template (tokenizer_config.json / chat_template.json) the way Hugging Face's
// apply_chat_template does: Python Jinja2 semantics, trim_blocks and lstrip_blocks on, transformers'
// tojson, raise_exception and strftime_now, and {% generation %} blocks rendered as plain text.
// The template is parsed once (syntax errors and unsupported constructs fail here) and rendered per
// conversation; a ChatTemplate is immutable and safe to share between threads.
using VteKernels.Text.Jinja;

namespace VteKernels.Text;

/// <summary>One message of a conversation: a role ("system", "user", "assistant", ...), its text, and how
/// many images it carries.</summary>
/// <param name="Role">The role as templates compare it, e.g. "user".</param>
/// <param name="Text">The message text, without image placeholders.</param>
/// <param name="ImageCount">Images attached to the message; they come before the text.</param>
public sealed record ChatMessage(string Role, string Text, int ImageCount = 0);

/// <summary>How a template expects message['content'].</summary>
public enum ChatContentFormat
{
    /// <summary>A string: "&lt;image&gt;\n" once per image, then the text.</summary>
    String,

    /// <summary>A list of parts, as HF processors take them: one {"type": "image"} per image, then
    /// {"type": "text", "text": ...}.</summary>
    Parts,
}

/// <summary>A parsed chat template.</summary>
/// <remarks>
/// Supported Jinja subset (everything else fails in <see cref="Parse"/> or <see cref="Render(IReadOnlyList{ChatMessage}, bool, IReadOnlyDictionary{string, object?}?)"/>
/// with a <see cref="ChatTemplateException"/> naming the construct and its line and column; docs/chat-templates.md has the details):
/// <list type="bullet">
/// <item>Tags: {{ }}, {% if/elif/else/endif %}, {% for x in xs [if cond] %}...{% else %}...{% endfor %} with
/// loop.index0/index/revindex/revindex0/first/last/length/previtem/nextitem/cycle, tuple unpacking, {% set x = ... %},
/// {% set ns.attr = ... %}, {% set x %}...{% endset %}, {% macro %} (positional and keyword parameters with defaults),
/// {% break %}, {% continue %}, {% generation %}, {# comments #}, whitespace control with - and +.</item>
/// <item>Expressions: string (with Python escapes), integer, float, list, tuple and dict literals, true/false/none and
/// True/False/None, names, .attr, [key], slices [a:b:c], calls with keyword arguments, a if c else b, and/or/not,
/// == != &lt; &lt;= &gt; &gt;= (chained), in / not in, + - * / // % **, ~, unary - and +.</item>
/// <item>Filters: abs attr capitalize count d default dictsort first float indent int items join last length list lower
/// map max min reject rejectattr replace reverse round safe select selectattr sort string sum title tojson trim unique upper.</item>
/// <item>Tests: boolean callable defined divisibleby eq/equalto/== escaped even false float ge/&gt;= gt/greaterthan/&gt; in integer
/// iterable le/&lt;= lower lt/lessthan/&lt; mapping ne/!= none number odd sameas sequence string true undefined upper.</item>
/// <item>Methods: str.strip/lstrip/rstrip/startswith/endswith/split/rsplit/splitlines/upper/lower/capitalize/title/replace/
/// find/rfind/count/join/removeprefix/removesuffix/isdigit/isalpha/isalnum/isspace/islower/isupper; dict.items/keys/values/get.</item>
/// <item>Globals: range, namespace, dict, raise_exception(msg), strftime_now(format).</item>
/// </list>
/// Not supported: raw, filter, call, include, import, extends, block, with, do blocks; recursive loops; *args/**kwargs;
/// printf-style "%" string formatting; str.format; list methods; non-string dict keys.
/// Values print as Python prints them (True, False, None, ['a', 1], {'k': 'v'}, 1.0); a missing variable or key is
/// undefined (prints as "", is false, iterates as empty), and taking an attribute of an undefined value fails.
/// </remarks>
public sealed class ChatTemplate
{
    private readonly string _normalized;
    private readonly IReadOnlyList<Node> _program;

    private ChatTemplate(string source, string normalized, IReadOnlyList<Node> program)
    {
        Source = source;
        _normalized = normalized;
        _program = program;
        ContentFormat = DetectContentFormat(program);
    }

    /// <summary>The template text as given.</summary>
    public string Source { get; }

    /// <summary>How <see cref="Render(IReadOnlyList{ChatMessage}, bool, IReadOnlyDictionary{string, object?}?)"/> builds
    /// message['content']: <see cref="ChatContentFormat.Parts"/> when the template loops over a message's content
    /// (as multimodal processor templates do), else <see cref="ChatContentFormat.String"/>.</summary>
    public ChatContentFormat ContentFormat { get; }

    /// <summary>Parses a template.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ChatTemplateException">A syntax error, or a tag, filter or test outside the supported subset.</exception>
    public static ChatTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var normalized = Lexer.Normalize(source);
        return new ChatTemplate(source, normalized, Parser.Parse(normalized));
    }

    /// <summary>Renders a conversation, as apply_chat_template(messages, add_generation_prompt=..., **variables) does.</summary>
    /// <param name="messages">The conversation; each message becomes {"role": ..., "content": ...} with content built as
    /// <see cref="ContentFormat"/> says. In the parts form an empty text is left out when the message has images.</param>
    /// <param name="addGenerationPrompt">Sets add_generation_prompt: end with the header of the assistant's turn.</param>
    /// <param name="variables">Further template variables: bos_token, eos_token, tools, enable_thinking, ...; strings,
    /// numbers, booleans, null, lists, string-keyed dictionaries and System.Text.Json values. tools and documents
    /// default to None as in transformers.</param>
    /// <returns>The prompt text.</returns>
    /// <exception cref="ArgumentException">A message has a negative image count, or variables set messages or
    /// add_generation_prompt, or hold a value of another type.</exception>
    /// <exception cref="ChatTemplateException">Rendering failed, or the template called raise_exception (its message is kept).</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, IReadOnlyDictionary<string, object?>? variables = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var context = new Dictionary<string, object?>(StringComparer.Ordinal) { ["tools"] = null, ["documents"] = null };
        if (variables is not null)
        {
            foreach (var (name, value) in variables)
            {
                if (name is "messages" or "add_generation_prompt")
                    throw new ArgumentException($"'{name}' is set by the messages and addGenerationPrompt arguments, not by variables", nameof(variables));
                context[name] = value;
            }
        }
        var list = new List<object?>(messages.Count);
        foreach (var m in messages) list.Add(ToDict(m, ContentFormat));
        context["messages"] = list;
        context["add_generation_prompt"] = addGenerationPrompt;
        return Render(context);
    }

    /// <summary>Renders with the given top-level variables only (messages included, in whatever shape the template
    /// wants: tool calls, content lists, ...); nothing is added.</summary>
    /// <exception cref="ArgumentException">A variable holds a value of a type templates cannot use.</exception>
    /// <exception cref="ChatTemplateException">Rendering failed, or the template called raise_exception (its message is kept).</exception>
    public string Render(IReadOnlyDictionary<string, object?> context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var values = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in context) values[name] = Values.FromHost(value);
        return Interpreter.Render(_normalized, _program, values);
    }

    /// <summary>The message as a template sees it.</summary>
    /// <exception cref="ArgumentException">A negative image count.</exception>
    public static OrderedDictionary<string, object?> ToDict(ChatMessage message, ChatContentFormat format)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.ImageCount < 0)
            throw new ArgumentException($"message image count must not be negative (got {message.ImageCount})", nameof(message));
        object content;
        if (format == ChatContentFormat.String)
        {
            content = string.Concat(Enumerable.Repeat("<image>\n", message.ImageCount)) + message.Text;
        }
        else
        {
            var parts = new List<object?>();
            for (int i = 0; i < message.ImageCount; i++)
                parts.Add(new OrderedDictionary<string, object?>(StringComparer.Ordinal) { ["type"] = "image" });
            if (message.Text.Length > 0 || message.ImageCount == 0)
                parts.Add(new OrderedDictionary<string, object?>(StringComparer.Ordinal) { ["type"] = "text", ["text"] = message.Text });
            content = parts;
        }
        return new OrderedDictionary<string, object?>(StringComparer.Ordinal) { ["role"] = message.Role, ["content"] = content };
    }

    // Parts when some for loop iterates x.content or x['content'] (through filters such as selectattr),
    // as vLLM decides between its "openai" and "string" content formats.
    private static ChatContentFormat DetectContentFormat(IReadOnlyList<Node> program)
    {
        static bool IsContent(Expr e) => e switch
        {
            AttrExpr a => a.Name == "content",
            ItemExpr { Key: LiteralExpr { Value: "content" } } => true,
            FilterExpr f => IsContent(f.Operand),
            _ => false,
        };

        static bool Walk(IReadOnlyList<Node> nodes)
        {
            foreach (var node in nodes)
            {
                switch (node)
                {
                    case ForNode f:
                        if (IsContent(f.Iterable) || Walk(f.Body) || (f.Else is not null && Walk(f.Else))) return true;
                        break;
                    case IfNode i:
                        if (i.Branches.Any(b => Walk(b.Body)) || (i.Else is not null && Walk(i.Else))) return true;
                        break;
                    case SetBlockNode s when Walk(s.Body):
                    case MacroNode m when Walk(m.Body):
                        return true;
                }
            }
            return false;
        }

        return Walk(program) ? ChatContentFormat.Parts : ChatContentFormat.String;
    }
}
