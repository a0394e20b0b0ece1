// CpuOps.Attention against a float64 loop that builds each full score row, masks it, softmaxes it and
// mixes the values, for grouped-query ratios 1, 2 and 4, no mask and causal masks with the queries a
// suffix of the keys (nq < nk) or all of them (nq = nk), single-query decode, head sizes that are not
// multiples of 8, and sizes large enough for the parallel path.
using VteKernels.Backends.Cpu;
using VteKernels.Backends;
using Xunit;

namespace VteKernels.Tests.Ops;

public class AttentionTests
{
    public static TheoryData<int, int, int, int, int, AttentionMask, int> Cases()
    {
        var data = new TheoryData<int, int, int, int, int, AttentionMask, int>();
        (int Nq, int Nk, int QHeads, int KvHeads, int HeadDim, AttentionMask Mask)[] cases =
        [
            (1, 1, 1, 1, 1, AttentionMask.None),
            (1, 1, 1, 1, 1, AttentionMask.Causal),
            (3, 5, 2, 1, 7, AttentionMask.None),      // GQA 2, more keys than queries
            (5, 3, 4, 4, 8, AttentionMask.None),      // more queries than keys, no mask
            (5, 5, 4, 1, 33, AttentionMask.Causal),   // GQA 4, nq = nk
            (3, 17, 4, 2, 16, AttentionMask.Causal),  // GQA 2, queries are the last 3 of 17 positions
            (1, 40, 8, 2, 64, AttentionMask.Causal),  // GQA 4 decode step
            (37, 37, 4, 4, 33, AttentionMask.Causal), // GQA 1, spans three row blocks
            (50, 70, 8, 2, 64, AttentionMask.Causal), // parallel path, suffix
            (20, 577, 4, 4, 16, AttentionMask.None),  // vision-like: many keys, no mask
            (33, 33, 6, 3, 128, AttentionMask.Causal),
        ];
        int seed = 1;
        foreach (var c in cases) data.Add(c.Nq, c.Nk, c.QHeads, c.KvHeads, c.HeadDim, c.Mask, seed++);
        return data;
    }

    internal static double[] Reference(float[] q, int nq, int qHeads, float[] k, float[] v, int nk, int kvHeads, int headDim, AttentionMask mask)
    {
        var o = new double[nq * qHeads * headDim];
        double scale = 1.0 / Math.Sqrt(headDim);
        var p = new double[nk];
        for (int h = 0; h < qHeads; h++)
        {
            int kvh = h / (qHeads / kvHeads);
            for (int i = 0; i < nq; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < nk; j++)
                {
                    bool visible = mask == AttentionMask.None || j <= nk - nq + i;
                    double s = 0;
                    for (int d = 0; d < headDim; d++)
                        s += (double)q[(i * qHeads + h) * headDim + d] * k[(j * kvHeads + kvh) * headDim + d];
                    p[j] = visible ? s * scale : double.NegativeInfinity;
                    max = Math.Max(max, p[j]);
                }
                double sum = 0;
                for (int j = 0; j < nk; j++) { p[j] = Math.Exp(p[j] - max); sum += p[j]; }
                for (int d = 0; d < headDim; d++)
                {
                    double acc = 0;
                    for (int j = 0; j < nk; j++) acc += p[j] / sum * v[(j * kvHeads + kvh) * headDim + d];
                    o[(i * qHeads + h) * headDim + d] = acc;
                }
            }
        }
        return o;
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesFloat64Reference(int nq, int nk, int qHeads, int kvHeads, int headDim, AttentionMask mask, int seed)
    {
        // Scores of a few units in magnitude: the softmax is neither uniform nor one-hot.
        var q = OpsTestData.RandomFloats(nq * qHeads * headDim, seed, scale: 2f);
        var k = OpsTestData.RandomFloats(nk * kvHeads * headDim, seed + 100, scale: 2f);
        var v = OpsTestData.RandomFloats(nk * kvHeads * headDim, seed + 200, scale: 1f);
        var output = OpsTestData.Poisoned(nq * qHeads * headDim);

        CpuOps.Attention(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, output);

        var expected = Reference(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask);
        // float32 dot products (~headDim terms), exp and normalization; outputs are convex combinations of
        // values in [-1, 1]. Measured max |error| 3.1e-7.
        Tolerance.AssertClose(output, expected, atol: 1e-6, rtol: 0,
            $"Attention nq={nq} nk={nk} heads={qHeads}/{kvHeads} headDim={headDim} {mask} seed={seed}");
    }

    [Fact]
    public void CausalQueriesIgnoreLaterKeys()
    {
        const int nq = 4, nk = 9, heads = 2, headDim = 5;
        var q = OpsTestData.RandomFloats(nq * heads * headDim, 1, 2f);
        var k = OpsTestData.RandomFloats(nk * heads * headDim, 2, 2f);
        var v = OpsTestData.RandomFloats(nk * heads * headDim, 3);
        var first = new float[nq * heads * headDim];
        CpuOps.Attention(q, nq, heads, k, v, nk, heads, headDim, AttentionMask.Causal, first);
        // Query 0 sees keys 0..5; changing key/value 6 may change queries 1..3 only.
        for (int d = 0; d < heads * headDim; d++)
        {
            k[6 * heads * headDim + d] += 3f;
            v[6 * heads * headDim + d] += 3f;
        }
        var second = new float[nq * heads * headDim];
        CpuOps.Attention(q, nq, heads, k, v, nk, heads, headDim, AttentionMask.Causal, second);
        int row = heads * headDim;
        Tolerance.AssertClose(second.AsSpan(0, row), Array.ConvertAll(first[..row], f => (double)f), 0, 0, "query 0 after changing key 6");
        Assert.NotEqual(first[row], second[row]);
    }

    [Fact]
    public void SoftmaxMatchesFloat64AndDoesNotOverflow()
    {
        float[] row = [1000f, 1001f, 999.5f, -1e30f, 1000.25f];
        var expected = new double[row.Length];
        double max = row.Max(), sum = row.Sum(x => Math.Exp(x - max));
        for (int i = 0; i < row.Length; i++) expected[i] = Math.Exp(row[i] - max) / sum;
        CpuOps.SoftmaxInPlace(row);
        Tolerance.AssertClose(row, expected, 1e-7, 1e-6, "softmax of large logits");
    }

    [Fact]
    public void RejectsInconsistentArguments()
    {
        var q = new float[2 * 4 * 8];
        var kv = new float[3 * 2 * 8];
        var o = new float[2 * 4 * 8];
        Assert.Equal("qHeads", Assert.Throws<ArgumentException>(() => CpuOps.Attention(q, 2, 4, new float[3 * 3 * 8], new float[3 * 3 * 8], 3, 3, 8, AttentionMask.None, o)).ParamName);
        Assert.Equal("nk", Assert.Throws<ArgumentException>(() => CpuOps.Attention(q, 2, 4, new float[8 * 2], new float[8 * 2], 1, 2, 8, AttentionMask.Causal, o)).ParamName);
        Assert.Equal("k", Assert.Throws<ArgumentException>(() => CpuOps.Attention(q, 2, 4, new float[5], kv, 3, 2, 8, AttentionMask.None, o)).ParamName);
        Assert.Equal("output", Assert.Throws<ArgumentException>(() => CpuOps.Attention(q, 2, 4, kv, kv, 3, 2, 8, AttentionMask.None, new float[3])).ParamName);
        Assert.Equal("output", Assert.Throws<ArgumentException>(() => CpuOps.Attention(q, 2, 4, kv, kv, 3, 2, 8, AttentionMask.None, q)).ParamName);
    }
}
