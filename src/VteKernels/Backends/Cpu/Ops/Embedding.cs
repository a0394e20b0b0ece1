// CpuOps.Embedding: token ids to rows of the embedding table, widened from the stored dtype. Only the rows
// asked for are read (the LLaMA table is 32064 × 4096). Every id is checked before anything is written, so
// a bad id leaves the output untouched.
namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>y[i] = table row ids[i], widened to float32.</summary>
    /// <param name="table">Embedding table, [vocabulary, dim].</param>
    /// <param name="ids">Token ids, each in [0, table.Rows).</param>
    /// <param name="y">Output, [ids.Length, table.Cols].</param>
    /// <exception cref="ArgumentException">y has the wrong length.</exception>
    /// <exception cref="InvalidInputException">An id lies outside the vocabulary.</exception>
    public static void Embedding(Weight table, ReadOnlySpan<int> ids, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(table);
        int dim = table.Cols, vocabulary = table.Rows;
        CheckLength(y.Length, (long)ids.Length * dim, nameof(y), $"[{ids.Length}, {dim}]");
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)vocabulary)
                throw new InvalidInputException($"token id {ids[i]} at position {i} is outside the vocabulary of {vocabulary} entries ('{table.Name}')");
        }
        for (int i = 0; i < ids.Length; i++)
        {
            fixed (byte* src = table.RowBytes(ids[i]))
            fixed (float* dst = y.Slice(i * dim, dim))
                Widen(src, table.DType, dst, dim);
        }
    }
}
