// How a VteChatClient answers by default, and the names of the per-request settings it reads from
// ChatOptions.AdditionalProperties. A request's own settings override the client's defaults one by one.
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Text;

namespace VteKernels.Extensions.AI;

/// <summary>The inference-time methods of one request: visual-token exit, NAAViT, EAS attention skipping, trace.</summary>
public sealed record VteMethods
{
    /// <summary>When the visual tokens leave the decoder (default: never).</summary>
    public ExitPolicy Exit { get; init; } = ExitPolicy.None;

    /// <summary>What happens to the early layers' visual K/V after an exit (default: kept, as DyVTE does).</summary>
    public ExitKvMode ExitKv { get; init; } = ExitKvMode.KeepEarly;

    /// <summary>NAAViT: visual rows issue no queries and skip the FFN.</summary>
    public bool Naavit { get; init; }

    /// <summary>EAS: the layers whose attention is skipped, with PIA adapters where loaded (null: none).</summary>
    public EasAdapters? Eas { get; init; }

    /// <summary>How PIA adapters run.</summary>
    public PiaMode PiaMode { get; init; } = PiaMode.Explicit;

    /// <summary>Measure every layer's text-to-image attention mass for the report (one extra score pass per layer).</summary>
    public bool Trace { get; init; }

    /// <summary>Reuse the KV cache when the prompt shares a prefix with the previous request's tokens (default); off, every
    /// request is prefilled from scratch, so its report covers the whole prompt.</summary>
    public bool ReuseCache { get; init; } = true;
}

/// <summary>Defaults of a <see cref="VteChatClient"/>.</summary>
public sealed record VteChatClientOptions
{
    /// <summary>The model id the client answers to (default: the model folder's name).</summary>
    public string? ModelId { get; init; }

    /// <summary>Methods used when a request names none.</summary>
    public VteMethods Methods { get; init; } = new();

    /// <summary>How the conversation becomes a prompt; null (the default) uses the model's chat template when it has one, else LLaVA-1.5's format.</summary>
    public PromptStyle? PromptStyle { get; init; }

    /// <summary>Pad images to a square of the mean colour before CLIP preprocessing, as the original LLaVA-1.5 does.</summary>
    public bool PadImages { get; init; }

    /// <summary>
    /// Most tokens per answer when the request does not say (ChatOptions.MaxOutputTokens); null (the default): the model's
    /// generation_config.json (max_new_tokens, or max_length minus the prompt), else <see cref="Engine.GenerationOptions.DefaultMaxNewTokens"/>.
    /// </summary>
    public int? DefaultMaxOutputTokens { get; init; }

    /// <summary>Accept <c>file://</c> image URIs (UriContent) and read them from this machine's disk. Off by default; remote URLs are never fetched.</summary>
    public bool AllowFileUris { get; init; }

    /// <summary>
    /// Opens the gate file of a "gate:FILE" exit named in a request (default: <see cref="ExitGates.Load"/>). A server
    /// that must not open files on a client's behalf replaces it.
    /// </summary>
    public Func<string, ExitGates> LoadGates { get; init; } = ExitGates.Load;

    /// <summary>
    /// Told (decoder layers done, decoder layers) before each decoder layer of every request's prefill, on the thread that
    /// runs it (a <see cref="Progress{T}"/> posts it to its own context); null: nobody listens. A cancelled request stops
    /// at the next of these points.
    /// </summary>
    public IProgress<(int Done, int Total)>? PrefillProgress { get; init; }
}

/// <summary>Keys of <see cref="Microsoft.Extensions.AI.ChatOptions.AdditionalProperties"/> (requests) and of the responses' additional properties.</summary>
public static class VteChatKeys
{
    /// <summary>Exit policy: "none", "layer:K", "gate:FILE", "attn:TAU[:M]" (a string) or an <see cref="ExitPolicy"/>.</summary>
    public const string Exit = "vte.exit";

    /// <summary>"keep" or "drop" (a string) or an <see cref="ExitKvMode"/>.</summary>
    public const string ExitKv = "vte.exit_kv";

    /// <summary>NAAViT on or off (a bool).</summary>
    public const string Naavit = "vte.naavit";

    /// <summary>Layers whose attention is skipped, e.g. "20-31" (a string; "" for none).</summary>
    public const string SkipAttention = "vte.skip_attn";

    /// <summary>Trace the per-layer attention mass (a bool).</summary>
    public const string Trace = "vte.trace";

    /// <summary>Reuse the KV cache of the previous request where the prompts agree (a bool; default true).</summary>
    public const string ReuseCache = "vte.reuse_cache";

    /// <summary>HF's min-p filter, 0..1 (a number; 0: off). Not a ChatOptions property, so it comes here.</summary>
    public const string MinP = "min_p";

    /// <summary>HF's repetition penalty, over prompt and answer (a number above 0; 1: off).</summary>
    public const string RepetitionPenalty = "repetition_penalty";

    /// <summary>Report each generated token's log-probability (a bool): see <see cref="Tokens"/>.</summary>
    public const string Logprobs = "logprobs";

    /// <summary>How many most likely alternatives to report per token, 0..20 (an integer; needs <see cref="Logprobs"/>).</summary>
    public const string TopLogprobs = "top_logprobs";

    /// <summary>Response key of the <see cref="VteRequestReport"/> (on ChatResponse and on the final streaming update).</summary>
    public const string Report = "vte.report";

    /// <summary>
    /// Response key of the generated tokens (an <c>IReadOnlyList&lt;GeneratedToken&gt;</c>: ids, stop flag and, when asked
    /// for, logprobs): on each streaming update the tokens generated since the previous one, on ChatResponse all of them.
    /// Every token counted in the usage is there, an end-of-sequence token and the tokens of a stop string included.
    /// </summary>
    public const string Tokens = "vte.tokens";

    /// <summary>The request keys, for messages.</summary>
    public static IReadOnlyList<string> RequestKeys { get; } = [Exit, ExitKv, Naavit, SkipAttention, Trace, ReuseCache, MinP, RepetitionPenalty, Logprobs, TopLogprobs];
}

/// <summary>The prompt does not fit in the model's context.</summary>
public sealed class ContextLengthException : VteException
{
    /// <summary>Creates the exception.</summary>
    public ContextLengthException(int promptTokens, int contextTokens, string message) : base(message)
    {
        PromptTokens = promptTokens;
        ContextTokens = contextTokens;
    }

    /// <summary>Tokens of the prompt.</summary>
    public int PromptTokens { get; }

    /// <summary>The model's context length.</summary>
    public int ContextTokens { get; }
}
