// Multiply-add counts of a LLaVA-family model's stages, from the shapes alone. Only matrix products are counted (linear
// layers, the patch convolution, attention's Q·Kᵀ and P·V, the LM head); norms, RoPE, softmax and
// activations are O(rows · d) and below 1% of a layer at LLaVA shapes. FLOPs ≈ 2 × MACs.
//
//   patch embedding   patches · C · P² · dv                    (per tile)
//   vision layer      n · 4dv² + 2 · n² · dv + 2 · n · dv · fv   (per tile; n = 577 positions, dense attention within the tile)
//   projector         t · (dv·f · d + d · d)                     (t = tokens per tile, f = feature layers)
//                     An image is one tile for LLaVA-1.5 and 1 + grid tiles for LLaVA-NeXT (5 for a 672x672
//                     image at llava-v1.6's pinpoints); packing (unpadding, image_newline rows) is copies only.
//   decoder layer     kv · d · 2 kvDim + 2 · r · qDim · d + 2 · S · headDim · heads + 3 · f · d · ff
//                     (r query rows, kv rows giving keys/values, f rows through the FFN; S = Σ over query rows
//                     of the keys each sees, causal). Dense: r = kv = f. NAAViT: r = f = the non-visual rows.
//                     EAS-skipped layer: FFN only; a PIA adapter adds 2 · d · H per row it transforms.
//   LM head           rows_out · d · vocab
using VteKernels.Models;

namespace VteKernels.Engine;

/// <summary>Multiply-add counts of the model's stages.</summary>
public static class Cost
{
    /// <summary>Vision tower (the layers that run) and projector for one image of one tile (LLaVA-1.5).</summary>
    public static long VisionPerImage(LlavaConfig c) => Vision(c, 1);

    /// <summary>Vision tower (the layers that run) and projector for an image of <paramref name="tiles"/> tiles.</summary>
    public static long Vision(LlavaConfig c, int tiles)
    {
        var v = c.Vision;
        long n = v.NumPositions, dv = v.HiddenSize;
        long patch = (long)v.NumPatches * v.NumChannels * v.PatchSize * v.PatchSize * dv;
        long layer = n * 4 * dv * dv + 2 * n * n * dv + 2 * n * dv * v.IntermediateSize;
        long projector = (long)c.TokensPerImage * ((long)c.ProjectorInputSize * c.Text.HiddenSize + (long)c.Text.HiddenSize * c.Text.HiddenSize);
        return tiles * (patch + c.VisionLayersNeeded * layer + projector);
    }

    /// <summary>
    /// One decoder layer over <paramref name="rows"/> query rows appended after <paramref name="cached"/>
    /// keys already in that layer's cache (each row sees the cached keys, the earlier new rows and itself).
    /// </summary>
    public static long DecoderLayer(TextConfig t, long rows, long cached) =>
        Attention(t, rows, rows, rows * cached + rows * (rows + 1) / 2) + Ffn(t, rows);

    /// <summary>
    /// The attention block: Q and O projections for <paramref name="queryRows"/>, K and V for
    /// <paramref name="kvRows"/>, scores and weighted values over <paramref name="seen"/> (query, key) pairs.
    /// </summary>
    public static long Attention(TextConfig t, long queryRows, long kvRows, long seen) =>
        kvRows * t.HiddenSize * 2L * t.KvDim + 2 * queryRows * (long)t.QDim * t.HiddenSize + 2 * seen * t.HeadDim * t.NumHeads;

    /// <summary>The SwiGLU FFN over <paramref name="rows"/> rows.</summary>
    public static long Ffn(TextConfig t, long rows) => 3 * rows * (long)t.HiddenSize * t.IntermediateSize;

    /// <summary>The LM head over <paramref name="rows"/> rows.</summary>
    public static long Head(TextConfig t, long rows) => rows * t.HiddenSize * (long)t.VocabSize;
}
