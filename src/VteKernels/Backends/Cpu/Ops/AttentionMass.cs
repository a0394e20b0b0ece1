// CpuOps.AttentionMass: how much of a causal attention row's softmax lands on chosen key ranges (the visual
// tokens). Same scores and float32 softmax as CpuOps.Attention, so the mass is the one the attention output
// was computed with; the sum over the ranges accumulates in double.
namespace VteKernels.Backends.Cpu;

public static partial class CpuOps
{
    /// <summary>
    /// mass[r · qHeads + h] = Σ over keys j in <paramref name="keyRanges"/> that query row
    /// <paramref name="queryRows"/>[r] sees of softmax(q·kᵀ/√headDim)[j], for a causal mask whose queries are
    /// the last <paramref name="nq"/> of the <paramref name="nk"/> keys.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree, a query row or key range lies outside its tensor, or the ranges overlap.</exception>
    public static void AttentionMass(ReadOnlySpan<float> q, int nq, int qHeads, ReadOnlySpan<float> k, int nk, int kvHeads, int headDim,
        ReadOnlySpan<int> queryRows, ReadOnlySpan<(int Start, int Length)> keyRanges, Span<float> mass)
    {
        CheckPositive(qHeads, nameof(qHeads));
        CheckPositive(kvHeads, nameof(kvHeads));
        CheckPositive(headDim, nameof(headDim));
        if (qHeads % kvHeads != 0) throw new ArgumentException($"qHeads ({qHeads}) must be a multiple of kvHeads ({kvHeads})", nameof(qHeads));
        CheckLength(q.Length, (long)nq * qHeads * headDim, nameof(q), $"[{nq}, {qHeads}, {headDim}]");
        CheckLength(k.Length, (long)nk * kvHeads * headDim, nameof(k), $"[{nk}, {kvHeads}, {headDim}]");
        CheckLength(mass.Length, (long)queryRows.Length * qHeads, nameof(mass), $"[{queryRows.Length}, {qHeads}]");
        if (nk < nq) throw new ArgumentException($"a causal mask needs at least as many keys as queries (nk = {nk}, nq = {nq})", nameof(nk));
        var inRange = new bool[nk];
        foreach (var (start, length) in keyRanges)
        {
            if (start < 0 || length < 0 || start + length > nk) throw new ArgumentException($"key range [{start}, {start + length}) is outside {nk} keys", nameof(keyRanges));
            for (int j = start; j < start + length; j++)
            {
                if (inRange[j]) throw new ArgumentException($"key ranges overlap at key {j}", nameof(keyRanges));
                inRange[j] = true;
            }
        }
        int group = qHeads / kvHeads;
        float scale = 1f / MathF.Sqrt(headDim);
        var scores = new float[nk];
        for (int r = 0; r < queryRows.Length; r++)
        {
            int i = queryRows[r];
            if ((uint)i >= (uint)nq) throw new ArgumentException($"query row {i} is outside {nq} rows", nameof(queryRows));
            int visible = nk - nq + i + 1;
            for (int h = 0; h < qHeads; h++)
            {
                var qRow = q.Slice((i * qHeads + h) * headDim, headDim);
                int kvh = h / group;
                for (int j = 0; j < visible; j++)
                    scores[j] = System.Numerics.Tensors.TensorPrimitives.Dot(qRow, k.Slice((j * kvHeads + kvh) * headDim, headDim)) * scale;
                var row = scores.AsSpan(0, visible);
                SoftmaxInPlace(row);
                double sum = 0;
                for (int j = 0; j < visible; j++) if (inRange[j]) sum += row[j];
                mass[r * qHeads + h] = (float)sum;
            }
        }
    }
}
