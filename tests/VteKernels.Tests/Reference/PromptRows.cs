// Which prompt rows are visual, and picking rows out of a reference's [rows, vocab] logits.
using VteKernels.Models;

namespace VteKernels.Tests.Reference;

internal static class PromptRows
{
    /// <summary>True for each image-placeholder row.</summary>
    public static bool[] VisualMask(LlavaConfig cfg, int[] ids) => ids.Select(id => id == cfg.ImageTokenIndex).ToArray();

    /// <summary>The positions of the rows that are not image placeholders, in order.</summary>
    public static int[] TextRows(LlavaConfig cfg, int[] ids) => Enumerable.Range(0, ids.Length).Where(i => ids[i] != cfg.ImageTokenIndex).ToArray();

    /// <summary>Rows of a [rows, vocab] double matrix, in the order given.</summary>
    public static double[] SelectRows(double[] m, int vocab, IEnumerable<int> rows) =>
        rows.SelectMany(r => m.AsSpan(r * vocab, vocab).ToArray()).ToArray();
}
