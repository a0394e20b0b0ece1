// The one place where Microsoft.Extensions.AI's ChatOptions become the engine's generation settings.
// Every ChatOptions property is either mapped or rejected with a NotSupportedException that names it;
// KnownProperties lists them all so a test notices when a new Abstractions version adds one.
// Options the sampler does not have yet (frequency/presence penalties, stop sequences) are accepted only
// at their neutral values.
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.AI;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;

namespace VteKernels.Extensions.AI;

/// <summary>A request's settings after mapping.</summary>
/// <param name="Sampling">Temperature, top-k, top-p and seed.</param>
/// <param name="MaxOutputTokens">Most tokens to generate.</param>
/// <param name="Methods">Exit, NAAViT, EAS and trace of this request.</param>
/// <param name="Instructions">ChatOptions.Instructions: a system message put before the conversation, or null.</param>
internal sealed record MappedOptions(SamplingOptions Sampling, int MaxOutputTokens, VteMethods Methods, string? Instructions);

internal static class ChatOptionsMapping
{
    /// <summary>Every public property of ChatOptions this mapping has a rule for.</summary>
    public static IReadOnlyList<string> KnownProperties { get; } =
    [
        nameof(ChatOptions.ConversationId), nameof(ChatOptions.Instructions), nameof(ChatOptions.Temperature),
        nameof(ChatOptions.MaxOutputTokens), nameof(ChatOptions.TopP), nameof(ChatOptions.TopK),
        nameof(ChatOptions.FrequencyPenalty), nameof(ChatOptions.PresencePenalty), nameof(ChatOptions.Seed),
        nameof(ChatOptions.Reasoning), nameof(ChatOptions.ResponseFormat), nameof(ChatOptions.ModelId),
        nameof(ChatOptions.StopSequences), nameof(ChatOptions.AllowMultipleToolCalls), nameof(ChatOptions.ToolMode),
        nameof(ChatOptions.Tools), nameof(ChatOptions.AllowBackgroundResponses), nameof(ChatOptions.ContinuationToken),
        nameof(ChatOptions.RawRepresentationFactory), nameof(ChatOptions.AdditionalProperties),
    ];

    /// <summary>Maps <paramref name="o"/> over the client's defaults.</summary>
    /// <exception cref="NotSupportedException">An option the engine does not have.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A value out of range.</exception>
    /// <exception cref="InvalidInputException">The request names another model, or a method setting is malformed.</exception>
    public static MappedOptions Map(ChatOptions? o, VteChatClientOptions client, string modelId)
    {
        if (o is null) return new MappedOptions(new SamplingOptions(), client.DefaultMaxOutputTokens, client.Methods, null);

        if (o.ConversationId is not null)
            throw Unsupported(nameof(o.ConversationId), "the client keeps no server-side conversations; send the whole conversation (the KV cache is reused when it continues the previous one)");
        if (o.Reasoning is not null) throw Unsupported(nameof(o.Reasoning), "the model has no reasoning controls");
        if (o.ResponseFormat is not null and not ChatResponseFormatText)
            throw Unsupported(nameof(o.ResponseFormat), "only plain text is generated (no JSON mode or schema)");
        if (o.Tools is { Count: > 0 }) throw Unsupported(nameof(o.Tools), "tool calling is not supported");
        if (o.ToolMode is not null and not NoneChatToolMode) throw Unsupported(nameof(o.ToolMode), "tool calling is not supported");
        if (o.AllowBackgroundResponses == true) throw Unsupported(nameof(o.AllowBackgroundResponses), "responses are produced while the caller waits");
        if (o.ContinuationToken is not null) throw Unsupported(nameof(o.ContinuationToken), "there are no background responses to continue");
        if (o.RawRepresentationFactory is not null)
            throw Unsupported(nameof(o.RawRepresentationFactory), "the engine has no provider-specific request object");
        // AllowMultipleToolCalls only qualifies tools, which are rejected above; alone it changes nothing.
        if (o.FrequencyPenalty is float fp && fp != 0)
            throw Unsupported(nameof(o.FrequencyPenalty), "the sampler has no frequency penalty yet (0 is accepted)");
        if (o.PresencePenalty is float pp && pp != 0)
            throw Unsupported(nameof(o.PresencePenalty), "the sampler has no presence penalty yet (0 is accepted)");
        if (o.StopSequences is { Count: > 0 })
            throw Unsupported(nameof(o.StopSequences), "stop strings are not supported yet; generation ends at the model's end-of-sequence token or the token limit");
        if (o.ModelId is not null && o.ModelId != modelId)
            throw new InvalidInputException($"model '{o.ModelId}' is not served here (this client serves '{modelId}')");

        int? seed = null;
        if (o.Seed is long s)
        {
            if (s is < int.MinValue or > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(o.Seed), s, "seed must fit in 32 bits");
            seed = (int)s;
        }
        var sampling = new SamplingOptions
        {
            Temperature = o.Temperature ?? 0f,
            TopP = o.TopP ?? 1f,
            TopK = o.TopK ?? 0,
            Seed = seed,
        };
        try
        {
            sampling.Validate();
        }
        catch (InvalidOptionException e)
        {
            throw new ArgumentOutOfRangeException(e.Option, e.Message);   // this client's contract: out of range is an ArgumentException
        }
        int max = o.MaxOutputTokens ?? client.DefaultMaxOutputTokens;
        if (max < 1) throw new ArgumentOutOfRangeException(nameof(o.MaxOutputTokens), max, "MaxOutputTokens must be at least 1");
        return new MappedOptions(sampling, max, Methods(o.AdditionalProperties, client), o.Instructions);
    }

    /// <summary>The methods of a request: the client's defaults with the request's vte.* keys applied.</summary>
    private static VteMethods Methods(AdditionalPropertiesDictionary? props, VteChatClientOptions client)
    {
        var m = client.Methods;
        if (props is null) return m;
        foreach (var (key, value) in props)
        {
            switch (key)
            {
                case VteChatKeys.Exit:
                    m = m with { Exit = value as ExitPolicy ?? ParseExit(Text(key, value), client) };
                    break;
                case VteChatKeys.ExitKv:
                    m = m with
                    {
                        ExitKv = value is ExitKvMode mode ? mode : Text(key, value) switch
                        {
                            "keep" => ExitKvMode.KeepEarly,
                            "drop" => ExitKvMode.DropAll,
                            var t => throw new InvalidInputException($"{key} '{t}' is not keep or drop"),
                        },
                    };
                    break;
                case VteChatKeys.Naavit:
                    m = m with { Naavit = Flag(key, value) };
                    break;
                case VteChatKeys.Trace:
                    m = m with { Trace = Flag(key, value) };
                    break;
                case VteChatKeys.ReuseCache:
                    m = m with { ReuseCache = Flag(key, value) };
                    break;
                case VteChatKeys.SkipAttention:
                    m = m with { Eas = SkipList(Text(key, value), client.Methods.Eas) };
                    break;
                default:
                    throw Unsupported($"{nameof(ChatOptions.AdditionalProperties)}[\"{key}\"]",
                        $"unknown key (the engine reads {string.Join(", ", VteChatKeys.RequestKeys)})");
            }
        }
        return m;
    }

    private static ExitPolicy ParseExit(string text, VteChatClientOptions client)
    {
        try
        {
            return ExitPolicy.Parse(text, client.LoadGates);
        }
        catch (FormatException e)
        {
            throw new InvalidInputException(e.Message);
        }
    }

    /// <summary>A per-request skip list; the client's adapters are kept when the list is theirs, else skipping is training-free.</summary>
    private static EasAdapters? SkipList(string text, EasAdapters? defaults)
    {
        if (text.Trim().Length == 0) return null;
        IReadOnlyList<int> layers;
        try
        {
            layers = EasAdapters.ParseLayers(text);
        }
        catch (FormatException e)
        {
            throw new InvalidInputException($"{VteChatKeys.SkipAttention}: {e.Message}");
        }
        if (defaults is not null && defaults.SkippedLayers.SequenceEqual(layers)) return defaults;
        return new EasAdapters(layers, source: $"skip_attn {EasAdapters.FormatLayers(layers)}");
    }

    private static string Text(string key, object? value) => value switch
    {
        string s => s,
        JsonElement { ValueKind: JsonValueKind.String } e => e.GetString()!,
        _ => throw new InvalidInputException($"{key} must be a string, not {Describe(value)}"),
    };

    private static bool Flag(string key, object? value) => value switch
    {
        bool b => b,
        JsonElement { ValueKind: JsonValueKind.True } => true,
        JsonElement { ValueKind: JsonValueKind.False } => false,
        _ => throw new InvalidInputException($"{key} must be true or false, not {Describe(value)}"),
    };

    private static string Describe(object? value) => value switch
    {
        null => "null",
        JsonElement e => e.ValueKind.ToString().ToLowerInvariant(),
        _ => value.GetType().Name,
    };

    private static NotSupportedException Unsupported(string option, string why) =>
        new(string.Create(CultureInfo.InvariantCulture, $"ChatOptions.{option} is not supported: {why}"));
}
