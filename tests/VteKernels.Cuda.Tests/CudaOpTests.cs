// GPU: every elementwise, normalisation, rotary, gather, patch and attention kernel against the CPU op
// (CpuOps) on the same inputs. Inputs are fresh seeded random values rounded to the device type first, so
// both sides see identical numbers and the comparison measures only the kernel; weights are stored in that
// type for both. Outputs are poisoned with NaN before each run (an element a kernel forgets stays NaN and
// fails), sizes are odd (1, 7, 33, 577, 4097) next to the real ones (1024, 4096), every dtype runs, and
// in-place forms run where the op allows them. Tolerances come from DeviceTolerance.
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using VteKernels.Tests.Ops;
using Xunit;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class CudaOpTests
{
    internal static float[] Rounded(float[] v, DType t)
    {
        var bytes = new byte[v.Length * t.Size()];
        DTypes.FromFloat(v, t, bytes);
        var r = new float[v.Length];
        DTypes.ToFloat(bytes, t, r);
        return r;
    }

    internal static float[] Random(int count, int seed, DType t, float scale = 1f, float offset = 0f) =>
        Rounded(OpsTestData.RandomFloats(count, seed, scale, offset), t);

    internal static Tensor Put(CudaBackend b, float[] values, int rows, int cols)
    {
        var t = b.Allocate(rows, cols);
        b.CopyFromHost(values, t);
        return t;
    }

    internal static float[] Get(CudaBackend b, Tensor t)
    {
        var a = new float[t.Rows * t.Cols];
        b.CopyToHost(t, a);
        return a;
    }

    internal static Tensor Poisoned(CudaBackend b, int rows, int cols)
    {
        var t = b.Allocate(rows, cols);
        b.Fill(t, float.NaN);
        return t;
    }

    private static (Weight Weight, DeviceWeight Device) UploadRandom(CudaBackend b, string name, int seed, DType t, float scale, float offset, params int[] shape)
    {
        int count = shape.Aggregate(1, (x, y) => x * y);
        var w = VteKernels.Weight.FromFloats(name, OpsTestData.RandomFloats(count, seed, scale, offset), t, shape);
        return (w, b.Upload(w));
    }

    public static TheoryData<int, int, DType, bool, int> NormCases()
    {
        var data = new TheoryData<int, int, DType, bool, int>();
        (int Rows, int Cols)[] shapes = [(1, 1), (1, 7), (7, 33), (3, 4097), (33, 4096), (577, 1024)];
        int seed = 1;
        foreach (var (rows, cols) in shapes)
            foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                foreach (var inPlace in new[] { false, true })
                    data.Add(rows, cols, dtype, inPlace, seed++);
        return data;
    }

    [Theory, MemberData(nameof(NormCases))]
    public void RmsNormMatchesCpu(int rows, int cols, DType dtype, bool inPlace, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var (gamma, g) = UploadRandom(b, "gamma", seed, dtype, 0.5f, 1f, cols);
        var x = Random(rows * cols, seed + 100, dtype, scale: 3f, offset: 0.5f);
        var expected = new float[x.Length];
        CpuOps.RmsNorm(x, rows, gamma, 1e-5f, expected);

        using var xd = Put(b, x, rows, cols);
        using var yd = inPlace ? null : Poisoned(b, rows, cols);
        b.RmsNorm(xd, g, 1e-5f, yd ?? xd);

        DeviceTolerance.AssertRounded(Get(b, yd ?? xd), expected, dtype, $"rms_norm rows={rows} cols={cols} inPlace={inPlace} seed={seed}");
    }

    [Theory, MemberData(nameof(NormCases))]
    public void LayerNormMatchesCpu(int rows, int cols, DType dtype, bool inPlace, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var (gamma, g) = UploadRandom(b, "gamma", seed, dtype, 0.5f, 1f, cols);
        var (beta, bt) = UploadRandom(b, "beta", seed + 50, dtype, 0.5f, 0f, cols);
        var x = Random(rows * cols, seed + 100, dtype, scale: 1f, offset: 10f); // mean far from zero
        var expected = new float[x.Length];
        CpuOps.LayerNorm(x, rows, gamma, beta, 1e-5f, expected);

        using var xd = Put(b, x, rows, cols);
        using var yd = inPlace ? null : Poisoned(b, rows, cols);
        b.LayerNorm(xd, g, bt, 1e-5f, yd ?? xd);

        DeviceTolerance.AssertRounded(Get(b, yd ?? xd), expected, dtype, $"layer_norm rows={rows} cols={cols} inPlace={inPlace} seed={seed}");
    }

    [Theory, MemberData(nameof(NormCases))]
    public void AddRmsNormMatchesAddThenRmsNorm(int rows, int cols, DType dtype, bool unused, int seed)
    {
        _ = unused;
        using var b = Gpu.Backend(dtype);
        var (gamma, g) = UploadRandom(b, "gamma", seed, dtype, 0.5f, 1f, cols);
        var residual = Random(rows * cols, seed + 100, dtype, scale: 2f);
        var delta = Random(rows * cols, seed + 200, dtype, scale: 2f);
        var sum = new float[residual.Length];
        for (int i = 0; i < sum.Length; i++) sum[i] = residual[i] + delta[i];
        sum = Rounded(sum, dtype); // add_T stores the sum in T before the norm reads it
        var expected = new float[sum.Length];
        CpuOps.RmsNorm(sum, rows, gamma, 1e-5f, expected);

        using var rd = Put(b, residual, rows, cols);
        using var dd = Put(b, delta, rows, cols);
        using var yd = Poisoned(b, rows, cols);
        b.AddRmsNorm(rd, dd, g, 1e-5f, yd);

        DeviceTolerance.AssertRounded(Get(b, rd), sum, dtype, $"add_rms_norm residual rows={rows} cols={cols} seed={seed}", roundings: 0);
        DeviceTolerance.AssertRounded(Get(b, yd), expected, dtype, $"add_rms_norm y rows={rows} cols={cols} seed={seed}");
    }

    public static TheoryData<int, int, int, DType, int> RopeCases()
    {
        var data = new TheoryData<int, int, int, DType, int>();
        (int Rows, int Heads, int HeadDim)[] shapes = [(1, 1, 2), (7, 4, 32), (5, 3, 66), (33, 32, 128), (577, 2, 64)];
        int seed = 1;
        foreach (var (rows, heads, headDim) in shapes)
            foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                data.Add(rows, heads, headDim, dtype, seed++);
        return data;
    }

    [Theory, MemberData(nameof(RopeCases))]
    public void RopeMatchesCpuAtLargeAndGappedPositions(int rows, int heads, int headDim, DType dtype, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var rng = new System.Random(seed);
        // Increasing positions with gaps (a visual-token exit leaves one of 576) reaching past 4000.
        var positions = new int[rows];
        for (int i = 0, p = rng.Next(0, 40); i < rows; i++, p += rng.Next(0, 5) == 0 ? 576 : 1 + rng.Next(0, 3)) positions[i] = p;
        positions[^1] = 4095;
        var x = Random(rows * heads * headDim, seed + 10, dtype, scale: 2f);
        var expected = (float[])x.Clone();
        CpuOps.Rope(expected, rows, heads, headDim, positions, 10000f);

        using var xd = Put(b, x, rows, heads * headDim);
        b.Rope(xd, heads, headDim, positions, 10000f);

        DeviceTolerance.AssertRounded(Get(b, xd), expected, dtype, $"rope rows={rows} heads={heads} headDim={headDim} seed={seed}");
    }

    public static TheoryData<int, int, DType, bool, int> ElementwiseCases()
    {
        var data = new TheoryData<int, int, DType, bool, int>();
        (int Rows, int Cols)[] shapes = [(1, 1), (7, 33), (3, 4097), (577, 4096)];
        int seed = 1;
        foreach (var (rows, cols) in shapes)
            foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                foreach (var bias in new[] { false, true })
                    data.Add(rows, cols, dtype, bias, seed++);
        return data;
    }

    [Theory, MemberData(nameof(ElementwiseCases))]
    public void QuickGeluMatchesCpu(int rows, int cols, DType dtype, bool withBias, int seed) => BiasActivation(rows, cols, dtype, withBias, seed, gelu: false);

    [Theory, MemberData(nameof(ElementwiseCases))]
    public void GeluMatchesCpu(int rows, int cols, DType dtype, bool withBias, int seed) => BiasActivation(rows, cols, dtype, withBias, seed, gelu: true);

    private static void BiasActivation(int rows, int cols, DType dtype, bool withBias, int seed, bool gelu)
    {
        using var b = Gpu.Backend(dtype);
        var x = Random(rows * cols, seed, dtype, scale: 6f); // reaches the tails of both activations
        var (bias, bd) = UploadRandom(b, "bias", seed + 1, dtype, 1f, 0f, cols);
        var expected = (float[])x.Clone();
        if (withBias)
        {
            var bv = bias.ToFloatArray();
            for (int i = 0; i < expected.Length; i++) expected[i] += bv[i % cols];
        }
        if (gelu) CpuOps.Gelu(expected); else CpuOps.QuickGelu(expected);

        using var xd = Put(b, x, rows, cols);
        if (gelu) b.Gelu(xd, withBias ? bd : null); else b.QuickGelu(xd, withBias ? bd : null);

        DeviceTolerance.AssertRounded(Get(b, xd), expected, dtype, $"{(gelu ? "gelu" : "quick_gelu")} rows={rows} cols={cols} bias={withBias} seed={seed}");
    }

    [Theory, MemberData(nameof(ElementwiseCases))]
    public void SiluMulMatchesCpu(int rows, int cols, DType dtype, bool inPlace, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var gate = Random(rows * cols, seed, dtype, scale: 6f);
        var up = Random(rows * cols, seed + 1, dtype, scale: 2f);
        var expected = new float[gate.Length];
        CpuOps.SiluMul(gate, up, expected);

        using var gd = Put(b, gate, rows, cols);
        using var ud = Put(b, up, rows, cols);
        using var yd = inPlace ? null : Poisoned(b, rows, cols);
        b.SiluMul(gd, ud, yd ?? gd);

        DeviceTolerance.AssertRounded(Get(b, yd ?? gd), expected, dtype, $"silu_mul rows={rows} cols={cols} inPlace={inPlace} seed={seed}");
    }

    [Theory, MemberData(nameof(ElementwiseCases))]
    public void AddAndAddWeightMatchCpu(int rows, int cols, DType dtype, bool inPlace, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var x = Random(rows * cols, seed, dtype, scale: 3f);
        var y = Random(rows * cols, seed + 1, dtype, scale: 3f);
        var (w, wd) = UploadRandom(b, "position", seed + 2, dtype, 3f, 0f, rows, cols);
        var sum = new float[x.Length];
        var plusWeight = new float[x.Length];
        var wv = w.ToFloatArray();
        for (int i = 0; i < x.Length; i++)
        {
            sum[i] = x[i] + y[i];
            plusWeight[i] = x[i] + wv[i];
        }

        using var xd = Put(b, x, rows, cols);
        using var yd = Put(b, y, rows, cols);
        using var sd = inPlace ? null : Poisoned(b, rows, cols);
        b.Add(xd, yd, sd ?? yd);
        DeviceTolerance.AssertRounded(Get(b, sd ?? yd), sum, dtype, $"add rows={rows} cols={cols} inPlace={inPlace} seed={seed}");

        b.AddWeight(xd, wd);
        DeviceTolerance.AssertRounded(Get(b, xd), plusWeight, dtype, $"add weight rows={rows} cols={cols} seed={seed}");
    }

    public static TheoryData<int, int, int, DType, int> EmbeddingCases()
    {
        var data = new TheoryData<int, int, int, DType, int>();
        (int Ids, int Vocab, int Dim)[] shapes = [(1, 1, 1), (7, 513, 33), (33, 512, 4096), (577, 4097, 64)];
        int seed = 1;
        foreach (var (ids, vocab, dim) in shapes)
            foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                data.Add(ids, vocab, dim, dtype, seed++);
        return data;
    }

    [Theory, MemberData(nameof(EmbeddingCases))]
    public void EmbeddingGathersTheRows(int count, int vocab, int dim, DType dtype, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var (table, td) = UploadRandom(b, "embed", seed, dtype, 1f, 0f, vocab, dim);
        var rng = new System.Random(seed);
        var ids = Enumerable.Range(0, count).Select(_ => rng.Next(vocab)).ToArray();
        ids[0] = vocab - 1;
        var expected = new float[count * dim];
        CpuOps.Embedding(table, ids, expected);

        using var yd = Poisoned(b, count, dim);
        b.Embedding(td, ids, yd);

        DeviceTolerance.AssertRounded(Get(b, yd), expected, dtype, $"embedding ids={count} vocab={vocab} dim={dim} seed={seed}", roundings: 0);
    }

    [Fact]
    public void EmbeddingRejectsABadIdAndWritesNothing()
    {
        using var b = Gpu.Backend(DType.BF16);
        var (_, td) = UploadRandom(b, "embed", 1, DType.BF16, 1f, 0f, 10, 8);
        using var yd = Poisoned(b, 3, 8);
        var e = Assert.Throws<InvalidInputException>(() => b.Embedding(td, [1, 10, 2], yd));
        Assert.Contains("token id 10 at position 1", e.Message);
        Assert.All(Get(b, yd), v => Assert.True(float.IsNaN(v)));
    }

    public static TheoryData<int, int, int, int, int, DType, int> PatchCases()
    {
        var data = new TheoryData<int, int, int, int, int, DType, int>();
        (int C, int H, int W, int P, int D)[] shapes = [(1, 1, 1, 1, 1), (3, 28, 42, 14, 33), (3, 112, 112, 14, 64), (3, 336, 336, 14, 1024)];
        int seed = 1;
        foreach (var (c, h, w, p, d) in shapes)
            foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                data.Add(c, h, w, p, d, dtype, seed++);
        return data;
    }

    [Theory, MemberData(nameof(PatchCases))]
    public void PatchEmbedMatchesCpu(int channels, int height, int width, int patch, int dim, DType dtype, int seed)
    {
        using var b = Gpu.Backend(dtype);
        int patchLength = channels * patch * patch, patches = height / patch * (width / patch);
        var (conv, cd) = UploadRandom(b, "conv", seed, dtype, 0.05f, 0f, dim, channels, patch, patch);
        var pixels = Random(channels * height * width, seed + 1, dtype, scale: 2f); // the device rounds pixels to T too
        var baseline = new float[patches * dim];
        CpuOps.PatchEmbed(pixels, channels, height, width, patch, conv, baseline);
        var w = conv.ToFloatArray();
        var reference = new double[patches * dim];
        for (int py = 0, p = 0; py < height / patch; py++)
            for (int px = 0; px < width / patch; px++, p++)
                for (int o = 0; o < dim; o++)
                {
                    double s = 0;
                    for (int c = 0; c < channels; c++)
                        for (int ky = 0; ky < patch; ky++)
                            for (int kx = 0; kx < patch; kx++)
                                s += (double)pixels[(c * height + py * patch + ky) * width + px * patch + kx] * w[o * patchLength + (c * patch + ky) * patch + kx];
                    reference[p * dim + o] = s;
                }

        using var yd = Poisoned(b, patches, dim);
        b.PatchEmbed(pixels, channels, height, width, patch, cd, yd);

        DeviceTolerance.AssertNoWorseThan(Get(b, yd), reference, baseline, dtype, $"patch_embed [{channels}, {height}, {width}] patch={patch} dim={dim} seed={seed}");
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    [InlineData(DType.F32)]
    public void CopyBlockMovesExactlyTheBlock(DType dtype)
    {
        using var b = Gpu.Backend(dtype);
        var src = Random(7 * 33, 5, dtype);
        var dst = Random(9 * 40, 6, dtype);
        var expected = (float[])dst.Clone();
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 17; c++)
                expected[(3 + r) * 40 + 5 + c] = src[(2 + r) * 33 + 1 + c];

        using var sd = Put(b, src, 7, 33);
        using var dd = Put(b, dst, 9, 40);
        b.CopyBlock(sd, 2, 1, dd, 3, 5, 4, 17);

        DeviceTolerance.AssertRounded(Get(b, dd), expected, dtype, "copy block 4x17", roundings: 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => b.CopyBlock(sd, 5, 0, dd, 0, 0, 3, 1));
    }

    public static TheoryData<int, int, int, int, int, AttentionMask, DType, bool, int> AttentionCases()
    {
        var data = new TheoryData<int, int, int, int, int, AttentionMask, DType, bool, int>();
        (int Nq, int Nk, int QHeads, int KvHeads, int HeadDim, AttentionMask Mask)[] shapes =
        [
            (1, 1, 1, 1, 1, AttentionMask.Causal),
            (7, 7, 4, 2, 32, AttentionMask.Causal),        // prefill, grouped-query
            (1, 577, 32, 32, 128, AttentionMask.Causal),   // decode against a cache
            (33, 65, 8, 2, 64, AttentionMask.Causal),      // prefill continuing a cache
            (577, 577, Gpu.Scaled(16, 2), Gpu.Scaled(16, 2), 64, AttentionMask.None), // CLIP (2 heads on the emulator: each score is a warp reduction)
            (5, 9, 6, 3, 256, AttentionMask.None),
        ];
        int seed = 1;
        foreach (var s in shapes)
            foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                foreach (var fused in new[] { false, true })
                    data.Add(s.Nq, s.Nk, s.QHeads, s.KvHeads, s.HeadDim, s.Mask, dtype, fused, seed++);
        return data;
    }

    /// <summary>Attention through IBackend.Attention: the reference kernel, or with <paramref name="fused"/> the fused kernels where they take the call.</summary>
    [Theory, MemberData(nameof(AttentionCases))]
    public void AttentionMatchesCpu(int nq, int nk, int qHeads, int kvHeads, int headDim, AttentionMask mask, DType dtype, bool fused, int seed)
    {
        using var b = Gpu.Backend(dtype, fused: fused);
        var q = Random(nq * qHeads * headDim, seed, dtype, scale: 2f);
        var k = Random(nk * kvHeads * headDim, seed + 1, dtype, scale: 2f);
        var v = Random(nk * kvHeads * headDim, seed + 2, dtype);
        var baseline = new float[q.Length];
        CpuOps.Attention(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, baseline);
        var reference = NaiveAttention(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask);

        using var qd = Put(b, q, nq, qHeads * headDim);
        using var kd = Put(b, k, nk, kvHeads * headDim);
        using var vd = Put(b, v, nk, kvHeads * headDim);
        using var od = Poisoned(b, nq, qHeads * headDim);
        b.Attention(qd, qHeads, kd, vd, kvHeads, headDim, mask, od);

        DeviceTolerance.AssertNoWorseThan(Get(b, od), reference, baseline, dtype, $"attention nq={nq} nk={nk} heads={qHeads}/{kvHeads} d={headDim} {mask} fused={fused} seed={seed}");
    }

    /// <summary>
    /// Attention in float64 over the visible keys: the causal suffix mask and, when given, per-query key limits
    /// (<paramref name="keyEnd"/>).
    /// </summary>
    internal static double[] NaiveAttention(float[] q, int nq, int qHeads, float[] k, float[] v, int nk, int kvHeads, int headDim, AttentionMask mask,
        int[]? keyEnd = null) =>
        NaiveAttention<double>(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, keyEnd);

    /// <summary>
    /// Attention computed in <typeparamref name="T"/> in key order (scores scaled by 1/√headDim, softmax, weighted
    /// sum) over the visible keys: the causal suffix mask and, when given, per-query key limits.
    /// </summary>
    internal static T[] NaiveAttention<T>(float[] q, int nq, int qHeads, float[] k, float[] v, int nk, int kvHeads, int headDim, AttentionMask mask,
        int[]? keyEnd) where T : System.Numerics.IFloatingPointIeee754<T>
    {
        static T Of(float x) => T.CreateTruncating(x);
        var o = new T[q.Length];
        int group = qHeads / kvHeads;
        var s = new T[nk];
        T scale = T.One / T.Sqrt(T.CreateTruncating(headDim));
        for (int i = 0; i < nq; i++)
            for (int h = 0; h < qHeads; h++)
            {
                int g = h / group, visible = mask == AttentionMask.Causal ? nk - nq + i + 1 : nk;
                if (keyEnd is not null) visible = Math.Min(visible, keyEnd[i]);
                T max = T.NegativeInfinity, sum = T.Zero;
                for (int j = 0; j < visible; j++)
                {
                    T dot = T.Zero;
                    for (int d = 0; d < headDim; d++) dot += Of(q[(i * qHeads + h) * headDim + d]) * Of(k[(j * kvHeads + g) * headDim + d]);
                    s[j] = dot * scale;
                    max = T.Max(max, s[j]);
                }
                for (int j = 0; j < visible; j++) sum += s[j] = T.Exp(s[j] - max);
                for (int d = 0; d < headDim; d++)
                {
                    T acc = T.Zero;
                    for (int j = 0; j < visible; j++) acc += s[j] / sum * Of(v[(j * kvHeads + g) * headDim + d]);
                    o[(i * qHeads + h) * headDim + d] = acc;
                }
            }
        return o;
    }

    [Fact]
    public void TensorsOfAnotherBackendAreRejected()
    {
        using var b = Gpu.Backend(DType.BF16);
        using var other = Gpu.Backend(DType.BF16);
        using var x = b.Allocate(2, 4);
        using var y = other.Allocate(2, 4);
        Assert.Throws<ArgumentException>(() => b.Add(x, y, x));
        using var cpu = new CpuBackend();
        using var c = cpu.Allocate(2, 4);
        Assert.Throws<ArgumentException>(() => b.Add(x, c, x));
    }

    [Fact]
    public void PartiallyOverlappingOutputsAreRejected()
    {
        using var b = Gpu.Backend(DType.F32);
        var (_, g) = UploadRandom(b, "gamma", 1, DType.F32, 0.5f, 1f, 8);
        using var x = b.Allocate(4, 8);
        using var shifted = x.Slice(1, 3);
        using var head = x.Slice(0, 3);
        Assert.Throws<ArgumentException>(() => b.RmsNorm(head, g, 1e-5f, shifted));
    }
}
