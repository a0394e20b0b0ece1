// The one place where Microsoft.Extensions.AI's ChatOptions become the engine's generation settings.
// Every ChatOptions property is either mapped or rejected with a NotSupportedException that names it;
// KnownProperties lists them all so a test notices when a new Abstractions version adds one.
// What a request leaves unset comes from the model's generation_config.json exactly as the library resolves
// it (GenerationConfig.ResolveSampling; the new-token limit and end-of-sequence ids through Generator), so a
// request overrides only what it sets. Sampling settings ChatOptions has no property for (min-p, HF's
// repetition penalty, logprobs) come in AdditionalProperties under their OpenAI/HF names.
// A value out of range is an ArgumentOutOfRangeException whose ParamName is the ChatOptions property (or the
// AdditionalProperties key) and whose message is the library's problem text (InvalidOptionException.Problem).
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.AI;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Models;

namespace VteKernels.Extensions.AI;

/// <summary>A request's settings after mapping.</summary>
/// <param name="Sampling">Every sampling value: the request's, the rest the model's generation config.</param>
/// <param name="MaxOutputTokens">Most tokens to generate; null: the model's generation config (else the library's default).</param>
/// <param name="StopSequences">Strings that end the answer (never part of it).</param>
/// <param name="TopLogprobs">Null: no logprobs; else each token's logprob and this many alternatives (0..20).</param>
/// <param name="Methods">Exit, NAAViT, EAS and trace of this request.</param>
/// <param name="Instructions">ChatOptions.Instructions: a system message put before the conversation, or null.</param>
internal sealed record MappedOptions(SamplingOptions Sampling, int? MaxOutputTokens, IReadOnlyList<string> StopSequences, int? TopLogprobs,
    VteMethods Methods, string? Instructions);

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

    /// <summary>Maps <paramref name="o"/> over the client's defaults and the model's generation config.</summary>
    /// <exception cref="NotSupportedException">An option the engine does not have.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A value out of range (ParamName: the ChatOptions property or AdditionalProperties key).</exception>
    /// <exception cref="InvalidInputException">The request names another model, or a setting in AdditionalProperties is malformed.</exception>
    public static MappedOptions Map(ChatOptions? o, VteChatClientOptions client, GenerationConfig generation, string modelId)
    {
        o ??= new ChatOptions();
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
        if (o.ModelId is not null && o.ModelId != modelId)
            throw new InvalidInputException($"model '{o.ModelId}' is not served here (this client serves '{modelId}')");

        var extra = Sampling(o.AdditionalProperties);
        int? seed = null;
        if (o.Seed is long s)
        {
            if (s is < int.MinValue or > int.MaxValue) throw OutOfRange(nameof(o.Seed), Inv($"must fit in 32 bits, got {s}"));
            seed = (int)s;
        }
        var request = new SamplingRequest
        {
            Temperature = o.Temperature, TopP = o.TopP, TopK = o.TopK, Seed = seed,
            FrequencyPenalty = o.FrequencyPenalty, PresencePenalty = o.PresencePenalty,
            MinP = extra.MinP, RepetitionPenalty = extra.RepetitionPenalty,
        };
        int? max = o.MaxOutputTokens ?? client.DefaultMaxOutputTokens;
        if (max < 1) throw OutOfRange(nameof(o.MaxOutputTokens), Inv($"must be at least 1, got {max}"));
        IReadOnlyList<string> stops = o.StopSequences is { } list ? [.. list] : [];
        var sampling = generation.ResolveSampling(request);
        try
        {
            // The generator's own checks, with the names this client is asked in.
            new GenerationOptions { Sampling = sampling, StopSequences = stops, TopLogprobs = extra.TopLogprobs ?? 0 }.Validate();
        }
        catch (InvalidOptionException e)
        {
            throw OutOfRange(OptionName(e.Option), e.Problem);
        }
        return new MappedOptions(sampling, max, stops, extra.TopLogprobs, Methods(o.AdditionalProperties, client), o.Instructions);
    }

    /// <summary>The ChatOptions property (or AdditionalProperties key) a library option comes from.</summary>
    private static string OptionName(string libraryOption) => libraryOption switch
    {
        nameof(SamplingOptions.MinP) => VteChatKeys.MinP,
        nameof(SamplingOptions.RepetitionPenalty) => VteChatKeys.RepetitionPenalty,
        nameof(GenerationOptions.TopLogprobs) => VteChatKeys.TopLogprobs,
        nameof(GenerationOptions.MaxNewTokens) => nameof(ChatOptions.MaxOutputTokens),
        _ => libraryOption,   // Temperature, TopP, TopK, FrequencyPenalty, PresencePenalty, StopSequences: same names
    };

    /// <summary>.NET's form: the message is the problem, the parameter the option ("must be in (0, 1] ..., got 7 (Parameter 'TopP')").</summary>
    private static ArgumentOutOfRangeException OutOfRange(string option, string problem) => new(option, problem);

    /// <summary>The sampling keys of AdditionalProperties: min_p, repetition_penalty, logprobs, top_logprobs (null when absent).</summary>
    private static (float? MinP, float? RepetitionPenalty, int? TopLogprobs) Sampling(AdditionalPropertiesDictionary? props)
    {
        if (props is null) return default;
        float? minP = props.TryGetValue(VteChatKeys.MinP, out var m) ? Number(VteChatKeys.MinP, m) : null;
        float? repetition = props.TryGetValue(VteChatKeys.RepetitionPenalty, out var r) ? Number(VteChatKeys.RepetitionPenalty, r) : null;
        bool logprobs = props.TryGetValue(VteChatKeys.Logprobs, out var l) && Flag(VteChatKeys.Logprobs, l);
        int? top = props.TryGetValue(VteChatKeys.TopLogprobs, out var t) ? Integer(VteChatKeys.TopLogprobs, t) : null;
        // As OpenAI's API: top_logprobs asks for alternatives of the logprobs, so it needs logprobs.
        if (top is not null && !logprobs) throw new InvalidInputException($"{VteChatKeys.TopLogprobs} needs {VteChatKeys.Logprobs} set to true");
        return (minP, repetition, logprobs ? top ?? 0 : null);
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
                case VteChatKeys.MinP or VteChatKeys.RepetitionPenalty or VteChatKeys.Logprobs or VteChatKeys.TopLogprobs:
                    break;   // sampling, read by Sampling
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

    private static float Number(string key, object? value) => value switch
    {
        float f => f,
        double d => (float)d,
        int i => i,
        long l => l,
        decimal d => (float)d,
        JsonElement { ValueKind: JsonValueKind.Number } e => e.GetSingle(),
        _ => throw new InvalidInputException($"{key} must be a number, not {Describe(value)}"),
    };

    private static int Integer(string key, object? value) => value switch
    {
        int i => i,
        long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
        JsonElement { ValueKind: JsonValueKind.Number } e when e.TryGetInt32(out int i) => i,
        _ => throw new InvalidInputException($"{key} must be an integer, not {Describe(value)}"),
    };

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private static string Describe(object? value) => value switch
    {
        null => "null",
        JsonElement e => e.ValueKind.ToString().ToLowerInvariant(),
        _ => value.GetType().Name,
    };

    private static NotSupportedException Unsupported(string option, string why) =>
        new(string.Create(CultureInfo.InvariantCulture, $"ChatOptions.{option} is not supported: {why}"));
}
