// The seam between a model family's vision side and the family-blind decoder. A family's encoder turns one
// checked ImageInput into the rows that fill that image's span of the prompt ([TokenCount, text hidden]);
// the session writes them into the embeddings and from there on only rows and spans exist. A family whose
// visual rows are re-derived before every decoder layer (SAISA: a projector per layer from the raw CLIP
// features) hands the decoder an ILayerVisualRows; the loop calls it without knowing what it does.
using VteKernels.Backends;

namespace VteKernels.Engine.Vision;

/// <summary>One encoded image: the rows for its prompt span, and whatever the family keeps for later layers.</summary>
internal sealed class EncodedImage(Tensor rows, Tensor? raw = null) : IDisposable
{
    /// <summary>[TokenCount, text hidden]: what the image's span of the embeddings becomes.</summary>
    public Tensor Rows { get; } = rows;

    /// <summary>The raw tower features some families project again per layer (SAISA); null otherwise.</summary>
    public Tensor? Raw { get; } = raw;

    public void Dispose()
    {
        Rows.Dispose();
        Raw?.Dispose();
    }
}

/// <summary>Visual rows re-derived before each decoder layer (SAISA), called by the decoder loop.</summary>
internal interface ILayerVisualRows
{
    /// <summary>
    /// Overwrites the rows of <paramref name="x"/> inside <paramref name="spans"/> (one span per image, in order)
    /// with this layer's visual rows; returns the multiply-adds spent.
    /// </summary>
    long Write(int layer, Tensor x, IReadOnlyList<ImageSpan> spans);
}

/// <summary>A family's vision side on a backend: tower, projector, packing.</summary>
internal abstract class VisionEncoder : IDisposable
{
    /// <summary>Encodes one image (checked by the family); <paramref name="states"/> receives the tower's hidden states when given.</summary>
    public abstract EncodedImage Encode(ImageInput image, List<float[]>? states);

    /// <summary>The per-layer visual rows of a prompt's encoded images, or null when the family has none (the default).</summary>
    public virtual ILayerVisualRows? LayerRows(IReadOnlyList<EncodedImage> images) => null;

    /// <summary>Releases what the encoder allocated on the backend (uploaded weights belong to the backend).</summary>
    public virtual void Dispose() { }
}
