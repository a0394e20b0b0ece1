// Reads the committed chat-template reference vectors (Data/chat-templates, made by
// tools/reference/chat-templates): @huggingface/jinja's output in "expected"/"error", and Python Jinja2's in
// "jinja2"/"jinja2_error" where the two implementations disagree (Python wins: transformers renders with it).
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Text;

namespace VteKernels.Tests.Text;

internal sealed record ChatTemplateVector(
    string Id,
    string TemplateName,
    string Source,
    ChatContentFormat? ContentFormat,
    IReadOnlyList<ChatMessage>? Chat,
    JsonNode? Messages,
    bool? AddGenerationPrompt,
    JsonObject Variables,
    string? Expected,
    string? Error);

internal static class ChatTemplateVectors
{
    private const string Relative = "tests/VteKernels.Tests/Data/chat-templates";

    public static string Root => LazyRoot.Value;

    private static readonly Lazy<string> LazyRoot = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, Relative);
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException($"'{Relative}' not found above {AppContext.BaseDirectory}");
    });

    public static string TemplatePath(string name) => Path.Combine(Root, "templates", name + ".jinja");

    public static IReadOnlyDictionary<string, ChatTemplateVector> All => LazyAll.Value;

    private static readonly Lazy<IReadOnlyDictionary<string, ChatTemplateVector>> LazyAll = new(Load);

    private static IReadOnlyDictionary<string, ChatTemplateVector> Load()
    {
        var result = new Dictionary<string, ChatTemplateVector>(StringComparer.Ordinal);
        var sources = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(Path.Combine(Root, "vectors.jsonl")))
        {
            if (line.Length == 0) continue;
            var v = JsonNode.Parse(line)!.AsObject();
            string name = (string)v["template_name"]!;
            string id = $"{name} {(string)v["case"]!}";
            string source = v["template"] is JsonNode inline ? (string)inline! : sources.TryGetValue(name, out var s) ? s
                : sources[name] = File.ReadAllText(TemplatePath(name));
            ChatContentFormat? format = (string?)v["content_format"] switch
            {
                "parts" => ChatContentFormat.Parts,
                "string" => ChatContentFormat.String,
                _ => null,
            };
            var chat = v["chat"]?.AsArray().Select(m => new ChatMessage((string)m!["role"]!, (string)m["text"]!, (int)m["image_count"]!)).ToList();
            // Python's Jinja2 is the reference where the two implementations disagree.
            string? expected = v.ContainsKey("jinja2") ? (string?)v["jinja2"] : v.ContainsKey("jinja2_error") ? null : (string?)v["expected"];
            string? error = v.ContainsKey("jinja2_error") ? (string?)v["jinja2_error"] : v.ContainsKey("jinja2") ? null : (string?)v["error"];
            result.Add(id, new ChatTemplateVector(id, name, source, format, chat, v["messages"]?.DeepClone(),
                (bool?)v["add_generation_prompt"], v["variables"]?.AsObject().DeepClone().AsObject() ?? [], expected, error));
        }
        return result;
    }

    /// <summary>Top-level variables for ChatTemplate.Render(context): the vector's variables, messages and add_generation_prompt.</summary>
    public static Dictionary<string, object?> Context(ChatTemplateVector v)
    {
        var context = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in v.Variables) context[name] = value is null ? null : JsonSerializer.SerializeToElement(value);
        if (v.Messages is not null) context["messages"] = JsonSerializer.SerializeToElement(v.Messages);
        if (v.AddGenerationPrompt is bool agp) context["add_generation_prompt"] = agp;
        return context;
    }

    /// <summary>The variables only (for the ChatMessage overload, which adds messages and add_generation_prompt).</summary>
    public static Dictionary<string, object?> Variables(ChatTemplateVector v) =>
        v.Variables.ToDictionary(p => p.Key, p => p.Value is null ? null : (object?)JsonSerializer.SerializeToElement(p.Value), StringComparer.Ordinal);
}
