// A model folder's generation_config.json, read as HF transformers' GenerationConfig reads it: absent keys take
// GenerationConfig's defaults (do_sample false, temperature 1.0, top_k 50, top_p 1.0, repetition_penalty 1.0), and
// without the file the end-of-sequence id comes from config.json (GenerationConfig.from_model_config). The
// sampling options follow from it as generate() applies them: the warpers (temperature, top-k, top-p, min-p)
// only when do_sample is true, the repetition penalty always. Length: max_new_tokens, else max_length counted
// with the prompt. (HF's built-in max_length of 20 when the file says nothing is not copied: callers choose.)
using System.Text.Json;
using VteKernels.Engine;

namespace VteKernels.Models;

/// <summary>The generation defaults a model ships with (generation_config.json).</summary>
public sealed record GenerationConfig
{
    /// <summary>File name inside a model folder.</summary>
    public const string FileName = "generation_config.json";

    /// <summary>do_sample: draw tokens (with the warpers) rather than search greedily.</summary>
    public bool DoSample { get; init; }

    /// <summary>temperature (HF default 1.0); used only when <see cref="DoSample"/>.</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>top_k (HF default 50; 0: off); used only when <see cref="DoSample"/>.</summary>
    public int TopK { get; init; } = 50;

    /// <summary>top_p (HF default 1.0); used only when <see cref="DoSample"/>.</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>min_p (HF default none: 0 here); used only when <see cref="DoSample"/>.</summary>
    public float MinP { get; init; }

    /// <summary>repetition_penalty (HF default 1.0); applies in greedy search too.</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>max_new_tokens, when the file gives it.</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>max_length (prompt plus new tokens), when the file gives it.</summary>
    public int? MaxLength { get; init; }

    /// <summary>eos_token_id (a number or a list): the tokens that end a generation.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>The file these values came from; null when there was none (the defaults and config.json's eos).</summary>
    public string? SourcePath { get; init; }

    /// <summary>The sampling options HF's generate would run with these values (greedy unless <see cref="DoSample"/>).</summary>
    public SamplingOptions Sampling => DoSample
        ? new SamplingOptions { Temperature = Temperature, TopK = TopK, TopP = TopP, MinP = MinP, RepetitionPenalty = RepetitionPenalty }
        : new SamplingOptions { RepetitionPenalty = RepetitionPenalty };

    /// <summary>
    /// The sampling options for a request that sets some values and leaves the rest (null) to the model, as HF's
    /// generate(**kwargs) overrides single fields of the generation config: top-k, top-p and min-p come from this
    /// config when the request does not set them, also when the request turns sampling on (a temperature above 0)
    /// for a model whose config is greedy (then top_k is HF's default 50 unless the file sets it). One difference from
    /// HF: a temperature above 0 samples (HF would also need do_sample=True), 0 is greedy.
    /// </summary>
    public SamplingOptions ResolveSampling(SamplingRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return new SamplingOptions
        {
            Temperature = request.Temperature ?? (DoSample ? Temperature : 0f),
            TopK = request.TopK ?? TopK,
            TopP = request.TopP ?? TopP,
            MinP = request.MinP ?? MinP,
            RepetitionPenalty = request.RepetitionPenalty ?? RepetitionPenalty,
            FrequencyPenalty = request.FrequencyPenalty ?? 0f,
            PresencePenalty = request.PresencePenalty ?? 0f,
            Seed = request.Seed,
        };
    }

    /// <summary>The new-token limit for a prompt of <paramref name="promptLength"/> tokens: max_new_tokens, else max_length minus the prompt (at least 0); null when the file sets neither.</summary>
    public int? MaxNewTokensFor(int promptLength) =>
        MaxNewTokens ?? (MaxLength is int max ? Math.Max(0, max - promptLength) : null);

    /// <summary>The defaults HF derives from config.json alone: GenerationConfig's defaults and the model's eos_token_id.</summary>
    public static GenerationConfig FromModelConfig(LlavaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new GenerationConfig { EosTokenIds = config.Text.EosTokenId is int eos ? [eos] : [] };
    }

    /// <summary>
    /// Reads <c>generation_config.json</c> from <paramref name="modelDir"/>; without the file, <see cref="FromModelConfig"/>.
    /// A file without eos_token_id keeps config.json's.
    /// </summary>
    /// <exception cref="ModelConfigException">The file is not a JSON object or a known key has the wrong type or range.</exception>
    public static GenerationConfig Load(string modelDir, LlavaConfig config)
    {
        var path = Path.Combine(modelDir, FileName);
        var fallback = FromModelConfig(config);
        if (!File.Exists(path)) return fallback;
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new ModelConfigException(path, $"not valid JSON: {e.Message}", e);
        }
        if (root.ValueKind != JsonValueKind.Object) throw new ModelConfigException(path, "the top level is not a JSON object");
        return Parse(root, path) is var g && g.EosTokenIds.Count == 0 ? g with { EosTokenIds = fallback.EosTokenIds } : g;
    }

    private static GenerationConfig Parse(JsonElement o, string path)
    {
        bool Has(string key, out JsonElement v) => o.TryGetProperty(key, out v) && v.ValueKind != JsonValueKind.Null;
        float Float(string key, float dflt)
        {
            if (!Has(key, out var v)) return dflt;
            if (v.ValueKind != JsonValueKind.Number || !float.IsFinite(v.GetSingle())) throw new ModelConfigException(path, $"{key} must be a number");
            return v.GetSingle();
        }
        int? Int(string key)
        {
            if (!Has(key, out var v)) return null;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i) || i < 0) throw new ModelConfigException(path, $"{key} must be a non-negative integer");
            return i;
        }
        bool doSample = false;
        if (Has("do_sample", out var ds))
        {
            if (ds.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw new ModelConfigException(path, "do_sample must be true or false");
            doSample = ds.GetBoolean();
        }
        var eos = new List<int>();
        if (Has("eos_token_id", out var e))
        {
            if (e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int one) && one >= 0) eos.Add(one);
            else if (e.ValueKind == JsonValueKind.Array && e.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int id) && id >= 0))
                eos.AddRange(e.EnumerateArray().Select(x => x.GetInt32()).Distinct());
            else throw new ModelConfigException(path, "eos_token_id must be a token id or a list of token ids");
        }
        var g = new GenerationConfig
        {
            DoSample = doSample,
            Temperature = Float("temperature", 1f),
            TopK = Int("top_k") ?? 50,
            TopP = Float("top_p", 1f),
            MinP = Float("min_p", 0f),
            RepetitionPenalty = Float("repetition_penalty", 1f),
            MaxNewTokens = Int("max_new_tokens"),
            MaxLength = Int("max_length"),
            EosTokenIds = eos,
            SourcePath = path,
        };
        try
        {
            // Every value is checked, used or not (HF's GenerationConfig.validate looks at them all too).
            new SamplingOptions { Temperature = g.Temperature, TopK = g.TopK, TopP = g.TopP, MinP = g.MinP, RepetitionPenalty = g.RepetitionPenalty }.Validate();
        }
        catch (InvalidOptionException x)
        {
            throw new ModelConfigException(path, $"{Snake(x.Option)} {x.Problem}");
        }
        return g;
    }

    private static string Snake(string property) => property switch
    {
        nameof(SamplingOptions.TopP) => "top_p",
        nameof(SamplingOptions.TopK) => "top_k",
        nameof(SamplingOptions.MinP) => "min_p",
        nameof(SamplingOptions.RepetitionPenalty) => "repetition_penalty",
        _ => property.ToLowerInvariant(),
    };
}

/// <summary>Sampling values a request sets; null leaves a value to the model's <see cref="GenerationConfig"/>.</summary>
public sealed record SamplingRequest
{
    /// <summary>Temperature (0: greedy).</summary>
    public float? Temperature { get; init; }

    /// <summary>Top-k (0: off).</summary>
    public int? TopK { get; init; }

    /// <summary>Top-p (1: off).</summary>
    public float? TopP { get; init; }

    /// <summary>Min-p (0: off).</summary>
    public float? MinP { get; init; }

    /// <summary>HF's repetition penalty (1: off).</summary>
    public float? RepetitionPenalty { get; init; }

    /// <summary>OpenAI's frequency penalty (0: off).</summary>
    public float? FrequencyPenalty { get; init; }

    /// <summary>OpenAI's presence penalty (0: off).</summary>
    public float? PresencePenalty { get; init; }

    /// <summary>Random seed (null: a fresh one).</summary>
    public int? Seed { get; init; }
}
