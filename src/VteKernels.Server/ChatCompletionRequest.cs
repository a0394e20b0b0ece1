// Reads an OpenAI chat-completions request body into Microsoft.Extensions.AI messages and options, checking
// every field's type so a bad request gets a 400 naming the field. Sampling: temperature, top_p, seed,
// max_completion_tokens (or the older max_tokens), frequency_penalty, presence_penalty, stop (a string or up
// to 4, as OpenAI allows), logprobs + top_logprobs, and the extensions top_k, min_p, repetition_penalty (as
// vLLM takes them); their ranges are the library's, checked by the chat client, and FieldOf names the field
// the client's option came from so its errors name the request's field. Content parts: "text" and "image_url"
// (data: URIs; file:// URLs become UriContent, which the chat client accepts only when file URLs are
// allowed; http(s) URLs are refused here, since the engine never fetches). The methods come in an extra
// "vte" object: {"exit": "layer:16", "exit_kv": "keep", "naavit": false, "skip_attn": "20-31", "trace": true,
// "reuse_cache": true}.
// Unknown top-level fields are ignored, as most OpenAI-compatible servers do; unknown "vte" fields are errors.
using System.Text.Json;
using Microsoft.Extensions.AI;
using VteKernels.Extensions.AI;

namespace VteKernels.Server;

/// <summary>A parsed chat-completions request.</summary>
internal sealed record ChatCompletionRequest(string? Model, IReadOnlyList<ChatMessage> Messages, ChatOptions Options, bool Stream, bool Logprobs,
    string MaxTokensField)
{
    /// <summary>OpenAI's limit on stop sequences.</summary>
    public const int MaxStopSequences = 4;

    private static readonly string[] VteFields = ["exit", "exit_kv", "naavit", "skip_attn", "trace", "reuse_cache"];

    /// <summary>The request field a chat-client option (an ArgumentException's ParamName) came from.</summary>
    public string? FieldOf(string? option) => option switch
    {
        nameof(ChatOptions.Temperature) => "temperature",
        nameof(ChatOptions.TopP) => "top_p",
        nameof(ChatOptions.TopK) => "top_k",
        nameof(ChatOptions.Seed) => "seed",
        nameof(ChatOptions.FrequencyPenalty) => "frequency_penalty",
        nameof(ChatOptions.PresencePenalty) => "presence_penalty",
        nameof(ChatOptions.StopSequences) => "stop",
        nameof(ChatOptions.MaxOutputTokens) => MaxTokensField,
        _ => option,   // min_p, repetition_penalty, top_logprobs: the client's keys are the field names
    };

    /// <exception cref="ApiError">The body is not a valid request.</exception>
    public static ChatCompletionRequest Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new ApiError(400, $"the request body must be a JSON object, not {Kind(root)}");
        var options = new ChatOptions();
        string? model = OptionalString(root, "model");
        options.ModelId = model;
        if (!root.TryGetProperty("messages", out var messagesElement)) throw new ApiError(400, "'messages' is required", "messages", "missing_required_parameter");
        if (messagesElement.ValueKind != JsonValueKind.Array) throw ApiError.BadField("messages", $"'messages' must be an array, not {Kind(messagesElement)}");
        var messages = new List<ChatMessage>();
        int i = 0;
        foreach (var m in messagesElement.EnumerateArray()) messages.Add(Message(m, i++));
        if (messages.Count == 0) throw ApiError.BadField("messages", "'messages' must not be empty");

        options.Temperature = OptionalFloat(root, "temperature");
        options.TopP = OptionalFloat(root, "top_p");
        options.TopK = OptionalInt(root, "top_k");
        int? maxCompletion = OptionalInt(root, "max_completion_tokens"), maxTokens = OptionalInt(root, "max_tokens");
        options.MaxOutputTokens = maxCompletion ?? maxTokens;
        string maxField = maxCompletion is not null ? "max_completion_tokens" : "max_tokens";
        options.Seed = OptionalLong(root, "seed");
        options.FrequencyPenalty = OptionalFloat(root, "frequency_penalty");
        options.PresencePenalty = OptionalFloat(root, "presence_penalty");
        if (Field(root, "stop") is { } stop)
        {
            options.StopSequences = stop.ValueKind switch
            {
                JsonValueKind.String => [stop.GetString()!],
                JsonValueKind.Array => stop.EnumerateArray().Select(s => s.ValueKind == JsonValueKind.String ? s.GetString()!
                    : throw ApiError.BadField("stop", "'stop' must be a string or an array of strings")).ToList(),
                _ => throw ApiError.BadField("stop", $"'stop' must be a string or an array of strings, not {Kind(stop)}"),
            };
            if (options.StopSequences.Count > MaxStopSequences)
                throw ApiError.BadField("stop", $"'stop' takes at most {MaxStopSequences} sequences, got {options.StopSequences.Count}");
        }
        var props = new AdditionalPropertiesDictionary();
        if (OptionalFloat(root, "min_p") is float minP) props[VteChatKeys.MinP] = minP;
        if (OptionalFloat(root, "repetition_penalty") is float repetition) props[VteChatKeys.RepetitionPenalty] = repetition;
        bool logprobs = OptionalBool(root, "logprobs") ?? false;
        if (logprobs) props[VteChatKeys.Logprobs] = true;
        if (OptionalInt(root, "top_logprobs") is int top)
        {
            if (!logprobs) throw ApiError.BadField("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            props[VteChatKeys.TopLogprobs] = top;
        }
        if (OptionalInt(root, "n") is int n && n != 1) throw new ApiError(400, "'n' must be 1: one answer per request", "n", "unsupported_value");
        if (root.TryGetProperty("tools", out var tools) && tools.ValueKind == JsonValueKind.Array && tools.GetArrayLength() > 0)
            throw new ApiError(400, "'tools' are not supported: the engine does no tool calling", "tools", "unsupported_parameter");
        if (root.TryGetProperty("response_format", out var format) && format.ValueKind == JsonValueKind.Object
            && format.TryGetProperty("type", out var formatType) && formatType.ValueKind == JsonValueKind.String && formatType.GetString() != "text")
            throw new ApiError(400, "'response_format' other than text is not supported", "response_format", "unsupported_value");
        bool stream = OptionalBool(root, "stream") ?? false;
        if (Field(root, "vte") is { } vte) Methods(vte, props);
        if (props.Count > 0) options.AdditionalProperties = props;
        return new ChatCompletionRequest(model, messages, options, stream, logprobs, maxField);
    }

    private static void Methods(JsonElement vte, AdditionalPropertiesDictionary props)
    {
        if (vte.ValueKind != JsonValueKind.Object) throw ApiError.BadField("vte", $"'vte' must be an object, not {Kind(vte)}");
        foreach (var p in vte.EnumerateObject())
        {
            string param = "vte." + p.Name;
            switch (p.Name)
            {
                case "exit" or "exit_kv" or "skip_attn":
                    if (p.Value.ValueKind != JsonValueKind.String) throw ApiError.BadField(param, $"'{param}' must be a string, not {Kind(p.Value)}");
                    props["vte." + p.Name] = p.Value.GetString();
                    break;
                case "naavit" or "trace" or "reuse_cache":
                    if (p.Value.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw ApiError.BadField(param, $"'{param}' must be true or false, not {Kind(p.Value)}");
                    props["vte." + p.Name] = p.Value.GetBoolean();
                    break;
                default:
                    throw new ApiError(400, $"unknown field '{param}' (the vte object takes {string.Join(", ", VteFields)})", param, "unknown_parameter");
            }
        }
    }

    private static ChatMessage Message(JsonElement m, int index)
    {
        string param = $"messages[{index}]";
        if (m.ValueKind != JsonValueKind.Object) throw ApiError.BadField(param, $"'{param}' must be an object, not {Kind(m)}");
        if (!m.TryGetProperty("role", out var roleElement) || roleElement.ValueKind != JsonValueKind.String)
            throw ApiError.BadField($"{param}.role", $"'{param}.role' must be a string");
        var role = roleElement.GetString() switch
        {
            "system" or "developer" => ChatRole.System,
            "user" => ChatRole.User,
            "assistant" => ChatRole.Assistant,
            var r => throw ApiError.BadField($"{param}.role", $"'{param}.role' '{r}' is not supported (system, developer, user, assistant)"),
        };
        var contents = new List<AIContent>();
        if (m.TryGetProperty("content", out var content))
        {
            switch (content.ValueKind)
            {
                case JsonValueKind.String:
                    contents.Add(new TextContent(content.GetString()));
                    break;
                case JsonValueKind.Null:
                    break;
                case JsonValueKind.Array:
                    int j = 0;
                    foreach (var part in content.EnumerateArray()) contents.Add(Part(part, $"{param}.content[{j++}]"));
                    break;
                default:
                    throw ApiError.BadField($"{param}.content", $"'{param}.content' must be a string or an array of parts, not {Kind(content)}");
            }
        }
        else if (role != ChatRole.Assistant) throw new ApiError(400, $"'{param}.content' is required", $"{param}.content", "missing_required_parameter");
        return new ChatMessage(role, contents);
    }

    private static AIContent Part(JsonElement part, string param)
    {
        if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
            throw ApiError.BadField(param, $"'{param}' must be an object with a string 'type'");
        switch (type.GetString())
        {
            case "text":
                if (!part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                    throw ApiError.BadField($"{param}.text", $"'{param}.text' must be a string");
                return new TextContent(text.GetString());
            case "image_url":
                if (!part.TryGetProperty("image_url", out var image)) throw ApiError.BadField($"{param}.image_url", $"'{param}.image_url' is required");
                var urlElement = image.ValueKind == JsonValueKind.Object && image.TryGetProperty("url", out var u) ? u : image;
                if (urlElement.ValueKind != JsonValueKind.String) throw ApiError.BadField($"{param}.image_url.url", $"'{param}.image_url.url' must be a string");
                return ImageUrl(urlElement.GetString()!, $"{param}.image_url.url");
            case var t:
                throw new ApiError(400, $"'{param}.type' '{t}' is not supported (text, image_url)", $"{param}.type", "unsupported_value");
        }
    }

    private static AIContent ImageUrl(string url, string param)
    {
        if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            try
            {
                var d = new DataContent(url);
                if (!d.HasTopLevelMediaType("image")) throw ApiError.BadField(param, $"'{param}' is a data URI of type '{d.MediaType}', not an image");
                return d;
            }
            catch (Exception e) when (e is FormatException or ArgumentException)
            {
                throw ApiError.BadField(param, $"'{param}' is not a valid base64 data URI: {e.Message}");
            }
        }
        if (url.StartsWith("file:", StringComparison.OrdinalIgnoreCase) && Uri.TryCreate(url, UriKind.Absolute, out var file) && file.IsFile)
            return new UriContent(file, "image/*");
        if (url.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            throw new ApiError(400, $"'{param}': remote image URLs are not fetched; send the image as a data URI (data:image/png;base64,...)", param, "unsupported_value");
        throw ApiError.BadField(param, $"'{param}' must be a data: URI (or a file:// URL where the server allows them)");
    }

    private static JsonElement? Field(JsonElement o, string name) =>
        o.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string? OptionalString(JsonElement o, string name) => Field(o, name) is { } v
        ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw ApiError.BadField(name, $"'{name}' must be a string, not {Kind(v)}")
        : null;

    private static float? OptionalFloat(JsonElement o, string name) => Field(o, name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out var d) && double.IsFinite(d) ? (float)d : throw ApiError.BadField(name, $"'{name}' must be a number, not {Kind(v)}")
        : null;

    private static long? OptionalLong(JsonElement o, string name) => Field(o, name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var l) ? l : throw ApiError.BadField(name, $"'{name}' must be an integer, not {Kind(v)}")
        : null;

    private static int? OptionalInt(JsonElement o, string name) => Field(o, name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : throw ApiError.BadField(name, $"'{name}' must be an integer, not {Kind(v)}")
        : null;

    private static bool? OptionalBool(JsonElement o, string name) => Field(o, name) is { } v
        ? v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw ApiError.BadField(name, $"'{name}' must be true or false, not {Kind(v)}")
        : null;

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => $"the number {e.GetRawText()}",
        JsonValueKind.String => "a string",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };
}
