// The research hook of the decoder loop: an observer sees, for every decoder layer of a prefill (or a
// decode step), the rows that enter the layer, which of them issue queries, what the exit policy decided
// after it, and, for the layers and heads it asks for, the full attention probabilities. It is called at
// three named points of the loop (layer begins, attention computed, layer ends) and only reads: what it
// sees is exactly what the layer computed, under every method (visual-token exit, NAAViT, EAS skipping).
using VteKernels.Engine.Exit;

namespace VteKernels.Engine.Observers;

/// <summary>Watches the decoder layer by layer (<see cref="PrefillOptions.Observer"/>, <see cref="InferenceSession.Decode(int, IDecoderObserver, bool)"/>).</summary>
public interface IDecoderObserver
{
    /// <summary>What to copy out of the layers (asked once per pass). Copies cost host memory and time; the rest is free.</summary>
    DecoderCapture Capture { get; }

    /// <summary>Called after each decoder layer, in layer order.</summary>
    void OnLayer(DecoderLayerObservation observation);
}

/// <summary>Which layers' tensors an observer wants copied.</summary>
public sealed record DecoderCapture
{
    /// <summary>Layers whose input rows and attention are copied (null: every layer).</summary>
    public IReadOnlySet<int>? Layers { get; init; }

    /// <summary>Copy the hidden states of the rows entering each chosen layer.</summary>
    public bool InputRows { get; init; }

    /// <summary>Compute the attention probabilities of each chosen layer (over the keys each query saw).</summary>
    public bool AttentionProbabilities { get; init; }

    /// <summary>Query heads whose probabilities are kept (null: all heads).</summary>
    public IReadOnlyList<int>? Heads { get; init; }

    /// <summary>Whether <paramref name="layer"/> is chosen.</summary>
    public bool Wants(int layer) => Layers is null || Layers.Contains(layer);
}

/// <summary>Whether a pass is a prefill or a decode step.</summary>
public enum DecoderStep
{
    /// <summary>A prompt (several rows, the exit policy active).</summary>
    Prefill,

    /// <summary>One generated token.</summary>
    Decode,
}

/// <summary>What one decoder layer did in one pass.</summary>
public sealed record DecoderLayerObservation
{
    /// <summary>Decoder layer index.</summary>
    public required int Layer { get; init; }

    /// <summary>Prefill or decode.</summary>
    public required DecoderStep Step { get; init; }

    /// <summary>For each row entering the layer, its index in the step's input (prefill: the prompt row; decode: 0).</summary>
    public required int[] Rows { get; init; }

    /// <summary>For each row entering the layer, its RoPE position (after an exit the visual positions are missing: a gap).</summary>
    public required int[] Positions { get; init; }

    /// <summary>Indices into <see cref="Rows"/> of the visual rows entering the layer (empty after an exit, or without images).</summary>
    public required int[] VisualRows { get; init; }

    /// <summary>
    /// Indices into <see cref="Rows"/> of the rows that issued queries and ran the FFN: all of them, the non-visual ones with
    /// NAAViT, none when the layer's attention is skipped (EAS; the FFN then ran for all rows).
    /// </summary>
    public required int[] QueryRows { get; init; }

    /// <summary>The layer's attention block was skipped (EAS): no queries, no keys or values cached.</summary>
    public required bool AttentionSkipped { get; init; }

    /// <summary>Keys the layer's cache held before this step; key CachedKeys + i is row i of this step.</summary>
    public required int CachedKeys { get; init; }

    /// <summary>The hidden states entering the layer, [Rows.Length, hidden] row-major; null unless captured.</summary>
    public float[]? Input { get; init; }

    /// <summary>
    /// Attention probabilities, [AttentionHeads.Length, QueryRows.Length, CachedKeys + Rows.Length] row-major: row q of head h is
    /// softmax over the keys query q saw (those it did not see are 0). Computed in float64 from the layer's own rotated
    /// queries and keys, rounded to float32. Null unless captured (and for a skipped layer).
    /// </summary>
    public float[]? Attention { get; init; }

    /// <summary>The query heads in <see cref="Attention"/>, in order; empty when it is null.</summary>
    public int[] AttentionHeads { get; init; } = [];

    /// <summary>The visual rows leave after this layer (the exit policy fired, or NAAViT's last layer).</summary>
    public required bool ExitAfter { get; init; }

    /// <summary>The exit policy's record of the layer (attention mass, gate logits); null in decode steps.</summary>
    public LayerTrace? Trace { get; init; }
}

/// <summary>An observer that keeps every observation (for export and tests).</summary>
public sealed class DecoderRecorder(DecoderCapture capture) : IDecoderObserver
{
    private readonly List<DecoderLayerObservation> _layers = [];

    /// <inheritdoc/>
    public DecoderCapture Capture { get; } = capture;

    /// <summary>The observations so far, in call order.</summary>
    public IReadOnlyList<DecoderLayerObservation> Layers => _layers;

    /// <inheritdoc/>
    public void OnLayer(DecoderLayerObservation observation) => _layers.Add(observation);
}
