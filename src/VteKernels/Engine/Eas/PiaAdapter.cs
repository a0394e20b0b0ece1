// EAS's parallel adapters (PIA), as the public LLaVA-EAS code defines them (pia_adapter.py), in eval mode:
//
//   non-skipped layer, before the attention (the "FFN" adapter):
//     u = A h + a                                        A [H, d], a [H]
//   skipped layer, in place of the attention (the "Attn" adapter):
//     u = 0.5 (C h + c + g)                              C [H, d], c [H], g = mean over the prefill rows of (A h + a)
//   both:
//     w = softmax((E m + e) / t)                          E [2, d], e [2] (absent: 0), m = mean over the prefill rows of h
//     y = h + s (w0 (B u + b) + w1 (D u + dbias))          B, D grouped 1x1 convolutions [d, H / groups], groups = 2
//
// h is the layer's input RMSNorm output. m and g are per-sequence terms: computed at the sequence's first
// prefill and kept for every later step. So y = M h + beta with, per sequence,
//   W_up = s (w0 B + w1 D) (block diagonal [d, H]),  M = I + W_up A  (or I + 0.5 W_up C),
//   beta = W_up a + s (w0 b + w1 dbias)    (or W_up 0.5 (c + g) + s (w0 b + w1 dbias)).
namespace VteKernels.Engine.Eas;

/// <summary>
/// One PIA adapter's trained tensors, float32 row-major (1x1 convolution weights with the trailing 1 dropped).
/// <see cref="C"/> is set for the adapters that stand in for a skipped attention block.
/// </summary>
public sealed record PiaAdapter
{
    /// <summary>The decoder layer it belongs to.</summary>
    public required int Layer { get; init; }

    /// <summary>The language model's hidden size d.</summary>
    public required int ModelDim { get; init; }

    /// <summary>The adapter's bottleneck width H (128 before attention, 256 in place of it in the public release).</summary>
    public required int HiddenDim { get; init; }

    /// <summary>Groups of the up-projections B and D (2 in the public release).</summary>
    public int Groups { get; init; } = 2;

    /// <summary>Down-projection A [H, d] and its bias [H].</summary>
    public required float[] A { get; init; }

    /// <summary>Bias of A [H].</summary>
    public required float[] ABias { get; init; }

    /// <summary>The per-token down-projection C [H, d] of an adapter replacing attention; null otherwise.</summary>
    public float[]? C { get; init; }

    /// <summary>Bias of C [H].</summary>
    public float[]? CBias { get; init; }

    /// <summary>First expert's up-projection B [d, H / Groups] (grouped) and its bias [d].</summary>
    public required float[] B { get; init; }

    /// <summary>Bias of B [d].</summary>
    public required float[] BBias { get; init; }

    /// <summary>Second expert's up-projection D [d, H / Groups] and its bias [d].</summary>
    public required float[] D { get; init; }

    /// <summary>Bias of D [d].</summary>
    public required float[] DBias { get; init; }

    /// <summary>Expert router E [2, d].</summary>
    public required float[] Expert { get; init; }

    /// <summary>Router bias [2]; null when the router has none.</summary>
    public float[]? ExpertBias { get; init; }

    /// <summary>Output scale s.</summary>
    public float Scale { get; init; } = 1f;

    /// <summary>Router softmax temperature t.</summary>
    public float Temperature { get; init; } = 10f;

    /// <summary>True for the adapter that stands in for a skipped attention block.</summary>
    public bool ReplacesAttention => C is not null;

    /// <summary>Checks every length against d, H and the groups.</summary>
    /// <exception cref="ArgumentException">A tensor has the wrong length or the widths do not divide.</exception>
    public void CheckShapes()
    {
        int d = ModelDim, h = HiddenDim;
        if (d <= 0 || h <= 0 || Groups <= 0 || d % Groups != 0 || h % Groups != 0)
            throw new ArgumentException($"PIA adapter of layer {Layer}: d = {d}, H = {h} and groups = {Groups} do not fit");
        Check(A, h * d, "A");
        Check(ABias, h, "A bias");
        if (C is not null || CBias is not null)
        {
            Check(C, h * d, "C");
            Check(CBias, h, "C bias");
        }
        Check(B, d * (h / Groups), "B");
        Check(BBias, d, "B bias");
        Check(D, d * (h / Groups), "D");
        Check(DBias, d, "D bias");
        Check(Expert, 2 * d, "expert router");
        if (ExpertBias is not null) Check(ExpertBias, 2, "expert router bias");
        if (!float.IsFinite(Scale) || !(Temperature > 0) || !float.IsFinite(Temperature))
            throw new ArgumentException($"PIA adapter of layer {Layer}: scale {Scale} / temperature {Temperature} are not usable");

        void Check(float[]? a, int n, string what)
        {
            if (a is null) throw new ArgumentException($"PIA adapter of layer {Layer}: {what} is missing");
            if (a.Length != n) throw new ArgumentException($"PIA adapter of layer {Layer}: {what} holds {a.Length} values, expected {n}");
        }
    }
}

/// <summary>
/// An EAS configuration: the decoder layers whose attention is skipped, and the PIA adapters (if any) that
/// go with them. With no adapters this is training-free skipping: a skipped layer is x = x + Ffn(Norm(x)).
/// </summary>
public sealed class EasAdapters
{
    /// <summary>Where it came from (a file path, "--skip-attn", or "memory").</summary>
    public string Source { get; }

    /// <summary>Decoder layers whose attention block is skipped, ascending.</summary>
    public IReadOnlyList<int> SkippedLayers { get; }

    /// <summary>Adapters by layer: before the attention of kept layers, in place of it in skipped layers.</summary>
    public IReadOnlyDictionary<int, PiaAdapter> Adapters { get; }

    /// <summary>Builds and checks a configuration.</summary>
    /// <exception cref="ArgumentException">A layer repeats, an adapter's shapes are inconsistent, or an adapter's kind disagrees with the skip list.</exception>
    public EasAdapters(IEnumerable<int> skippedLayers, IEnumerable<PiaAdapter>? adapters = null, string source = "memory")
    {
        var skipped = skippedLayers.ToList();
        if (skipped.Any(l => l < 0)) throw new ArgumentException("a skipped layer index is negative", nameof(skippedLayers));
        if (skipped.Distinct().Count() != skipped.Count) throw new ArgumentException("a skipped layer is listed twice", nameof(skippedLayers));
        skipped.Sort();
        var byLayer = new Dictionary<int, PiaAdapter>();
        foreach (var a in adapters ?? [])
        {
            a.CheckShapes();
            if (!byLayer.TryAdd(a.Layer, a)) throw new ArgumentException($"layer {a.Layer} has two PIA adapters", nameof(adapters));
            bool isSkipped = skipped.BinarySearch(a.Layer) >= 0;
            if (a.ReplacesAttention != isSkipped)
                throw new ArgumentException(isSkipped
                    ? $"layer {a.Layer} is skipped but its adapter has no C projection (it is a before-attention adapter)"
                    : $"layer {a.Layer} keeps its attention but its adapter is one that replaces attention (it has C)", nameof(adapters));
        }
        if (byLayer.Count > 0 && byLayer.Values.Select(a => a.ModelDim).Distinct().Count() > 1)
            throw new ArgumentException("PIA adapters disagree on the model's hidden size", nameof(adapters));
        SkippedLayers = skipped;
        Adapters = byLayer;
        Source = source;
    }

    /// <summary>True when <paramref name="layer"/>'s attention is skipped.</summary>
    public bool Skips(int layer) => ((List<int>)SkippedLayers).BinarySearch(layer) >= 0;

    /// <summary>The adapter of <paramref name="layer"/>, or null.</summary>
    public PiaAdapter? AdapterFor(int layer) => Adapters.GetValueOrDefault(layer);

    /// <summary>Parses a layer list such as "20-31", "3,5,7-9" (inclusive ranges, comma separated), or "none".</summary>
    /// <exception cref="FormatException">Not a list of non-negative integers and ranges.</exception>
    public static IReadOnlyList<int> ParseLayers(string text)
    {
        var layers = new SortedSet<int>();
        if (text.Trim() == "none") return [];
        foreach (var raw in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (raw.Length == 0) throw new FormatException($"empty item in layer list '{text}'");
            var dash = raw.IndexOf('-');
            if (dash < 0)
            {
                layers.Add(ParseIndex(raw));
                continue;
            }
            int lo = ParseIndex(raw[..dash].Trim()), hi = ParseIndex(raw[(dash + 1)..].Trim());
            if (hi < lo) throw new FormatException($"range '{raw}' runs backwards");
            for (int l = lo; l <= hi; l++) layers.Add(l);
        }
        return [.. layers];

        int ParseIndex(string s) =>
            int.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v)
                ? v : throw new FormatException($"'{s}' in layer list '{text}' is not a layer index (expected e.g. 20-31 or 3,5,7-9)");
    }

    /// <summary>Checks the configuration against <paramref name="config"/>.</summary>
    /// <exception cref="ModelFormatException">Layer indices beyond the model, or adapters for another hidden size.</exception>
    public void Validate(Models.LlavaConfig config)
    {
        int layers = config.Text.NumLayers;
        if (SkippedLayers.Count > 0 && SkippedLayers[^1] >= layers)
            throw new ModelFormatException(Source, null, $"skipped layer {SkippedLayers[^1]} is beyond the model's {layers} decoder layers (0..{layers - 1})");
        foreach (var a in Adapters.Values)
        {
            if (a.Layer >= layers) throw new ModelFormatException(Source, null, $"PIA adapter for layer {a.Layer}, but the model has {layers} decoder layers");
            if (a.ModelDim != config.Text.HiddenSize)
                throw new ModelFormatException(Source, null, $"PIA adapters are for hidden size {a.ModelDim}, the model's is {config.Text.HiddenSize}");
        }
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"skip-attn {FormatLayers(SkippedLayers)}" + (Adapters.Count > 0 ? $" + {Adapters.Count} PIA adapters" : "");

    /// <summary>"20-31" style text for a sorted layer list.</summary>
    public static string FormatLayers(IReadOnlyList<int> layers)
    {
        if (layers.Count == 0) return "none";
        var parts = new List<string>();
        int i = 0;
        while (i < layers.Count)
        {
            int j = i;
            while (j + 1 < layers.Count && layers[j + 1] == layers[j] + 1) j++;
            parts.Add(i == j ? $"{layers[i]}" : $"{layers[i]}-{layers[j]}");
            i = j + 1;
        }
        return string.Join(",", parts);
    }
}
