// FlashAttentionTests: flash_attention_T against float64 and CpuOps. Every mask mode (none, causal suffix,
// per-query key limit, causal + key limit), GQA ratios 1/4/8, head dims 64/80/96/128, odd lengths and chunked
// prefill (nq < nk); fresh random inputs, output poisoned with NaN. The oracle: the kernel's max error
// against float64 is at most 2x that of a naive implementation in the same precision (q, k, v rounded to T,
// scores, softmax and the weighted sum in float32, output rounded to T) plus one rounding. The mass side output is compared with
// CpuOps.AttentionMass. GPU tests skip without a device (Gpu.Backend).
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using Xunit;
using static VteKernels.Cuda.Tests.CudaOpTests;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class FlashAttentionTests
{
    public enum Limits { None, Causal, KeyEnd, CausalKeyEnd }

    public static TheoryData<int, int, int, int, int, Limits, DType, int> Cases()
    {
        var data = new TheoryData<int, int, int, int, int, Limits, DType, int>();
        (int Nq, int Nk, int QHeads, int KvHeads, int HeadDim, Limits Mask)[] shapes =
        [
            (1, 1, 4, 4, 64, Limits.Causal),
            (7, 7, 8, 2, 128, Limits.Causal),           // GQA 4
            (577, 577, 4, 4, 64, Limits.None),          // CLIP-sized, not a multiple of the tiles
            (641, 641, 8, 1, 128, Limits.Causal),       // GQA 8
            (7, 641, 8, 1, 80, Limits.Causal),          // chunked prefill: queries are the last 7 keys
            (577, 641, 4, 1, 96, Limits.KeyEnd),        // per-query key limits (NAAViT, chunks)
            (7, 577, 4, 4, 96, Limits.None),
            (1, 577, 8, 2, 80, Limits.CausalKeyEnd),
            (577, 641, 8, 8, 128, Limits.CausalKeyEnd),
            (641, 641, 4, 1, 80, Limits.None),
        ];
        int seed = 100;
        foreach (var s in shapes)
            foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                data.Add(s.Nq, s.Nk, s.QHeads, s.KvHeads, s.HeadDim, s.Mask, dtype, seed++);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesFloat64WithinTwiceTheNaiveError(int nq, int nk, int qHeads, int kvHeads, int headDim, Limits limits, DType dtype, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var q = Random(nq * qHeads * headDim, seed, dtype, scale: 2f);
        var k = Random(nk * kvHeads * headDim, seed + 1, dtype, scale: 2f);
        var v = Random(nk * kvHeads * headDim, seed + 2, dtype);
        var keyEnd = limits is Limits.KeyEnd or Limits.CausalKeyEnd ? KeyEnds(nq, nk, seed) : null;
        var mask = limits is Limits.Causal or Limits.CausalKeyEnd ? AttentionMask.Causal : AttentionMask.None;
        var reference = Reference(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, keyEnd);
        var naive = Naive(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, keyEnd, dtype);
        if (keyEnd is null)
        {
            var cpu = new float[q.Length];
            CpuOps.Attention(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, cpu);
            DeviceTolerance.AssertNoWorseThan(cpu, reference, naive, dtype, "CPU op against the naive reference (self-check)");
        }

        using var qd = Put(b, q, nq, qHeads * headDim);
        using var kd = Put(b, k, nk, kvHeads * headDim);
        using var vd = Put(b, v, nk, kvHeads * headDim);
        using var od = Poisoned(b, nq, qHeads * headDim);
        b.FlashAttention(qd, qHeads, kd, vd, kvHeads, headDim, mask, od, keyEnd);

        DeviceTolerance.AssertNoWorseThan(Get(b, od), reference, naive, dtype,
            $"flash attention nq={nq} nk={nk} heads={qHeads}/{kvHeads} d={headDim} {limits} seed={seed}");
    }

    [Theory]
    [InlineData(7, 577, 8, 2, 128, DType.BF16, 1)]
    [InlineData(641, 641, 4, 4, 64, DType.F16, 2)]
    [InlineData(577, 641, 8, 1, 80, DType.F32, 3)]
    [InlineData(1, 7, 4, 1, 96, DType.BF16, 4)]
    public void MassMatchesCpuAttentionMass(int nq, int nk, int qHeads, int kvHeads, int headDim, DType dtype, int seed)
    {
        using var b = Gpu.Backend(dtype);
        var q = Random(nq * qHeads * headDim, seed, dtype, scale: 2f);
        var k = Random(nk * kvHeads * headDim, seed + 1, dtype, scale: 2f);
        var v = Random(nk * kvHeads * headDim, seed + 2, dtype);
        (int Start, int End)[] ranges = nk >= 7 ? [(1, nk / 2), (nk / 2 + 1, nk / 2 + 3)] : [(0, 1)];
        var expected = new float[nq * qHeads];
        CpuOps.AttentionMass(q, nq, qHeads, k, nk, kvHeads, headDim, Enumerable.Range(0, nq).ToArray(),
            ranges.Select(r => (r.Start, r.End - r.Start)).ToArray(), expected);

        using var qd = Put(b, q, nq, qHeads * headDim);
        using var kd = Put(b, k, nk, kvHeads * headDim);
        using var vd = Put(b, v, nk, kvHeads * headDim);
        using var od = Poisoned(b, nq, qHeads * headDim);
        var mass = Enumerable.Repeat(float.NaN, nq * qHeads).ToArray();
        b.FlashAttention(qd, qHeads, kd, vd, kvHeads, headDim, AttentionMask.Causal, od, massRanges: ranges, mass: mass);

        // Probabilities in [0, 1]; bf16/f16 only change how P·V is computed, the mass is float32 throughout.
        for (int i = 0; i < mass.Length; i++)
            Assert.True(Math.Abs(mass[i] - expected[i]) <= 1e-5 + 1e-4 * expected[i],
                $"mass nq={nq} nk={nk} d={headDim} {dtype} seed={seed}: [{i}] = {mass[i]:R}, CPU {expected[i]:R}");
    }

    [Fact]
    public void AttentionRoutesToTheFusedKernelOnlyWhenAskedTo()
    {
        using var b = Gpu.Backend(DType.BF16, fused: true);
        int nq = 33, nk = 65, qHeads = 8, kvHeads = 2, headDim = 64;
        var q = Random(nq * qHeads * headDim, 7, DType.BF16, scale: 2f);
        var k = Random(nk * kvHeads * headDim, 8, DType.BF16, scale: 2f);
        var v = Random(nk * kvHeads * headDim, 9, DType.BF16);
        var reference = Reference(q, nq, qHeads, k, v, nk, kvHeads, headDim, AttentionMask.Causal, null);
        var naive = Naive(q, nq, qHeads, k, v, nk, kvHeads, headDim, AttentionMask.Causal, null, DType.BF16);
        using var qd = Put(b, q, nq, qHeads * headDim);
        using var kd = Put(b, k, nk, kvHeads * headDim);
        using var vd = Put(b, v, nk, kvHeads * headDim);
        using var od = Poisoned(b, nq, qHeads * headDim);
        b.Attention(qd, qHeads, kd, vd, kvHeads, headDim, AttentionMask.Causal, od);
        DeviceTolerance.AssertNoWorseThan(Get(b, od), reference, naive, DType.BF16, "routed attention");
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        using var b = Gpu.Backend(DType.BF16);
        using var q = b.Allocate(4, 2 * 64);
        using var k = b.Allocate(6, 64);
        using var v = b.Allocate(6, 64);
        using var o = b.Allocate(4, 2 * 64);
        using var q48 = b.Allocate(4, 2 * 48);
        using var k48 = b.Allocate(6, 48);
        using var o48 = b.Allocate(4, 2 * 48);
        Assert.Throws<ArgumentOutOfRangeException>(() => b.FlashAttention(q48, 2, k48, k48, 1, 48, AttentionMask.None, o48)); // a head dim it has no template for
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, q));
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, o, keyEnd: [1, 2, 3]));
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, o, keyEnd: [1, 2, 3, 7]));
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, o, keyEnd: [0, 2, 3, 4]));
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, o, massRanges: [(0, 3), (2, 4)], mass: new float[8]));
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, o, massRanges: [(0, 7)], mass: new float[8]));
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, o, massRanges: [(0, 3)], mass: new float[7]));
        Assert.Throws<ArgumentException>(() => b.FlashAttention(q, 2, k, v, 1, 64, AttentionMask.None, o,
            massRanges: Enumerable.Range(0, 9).Select(i => (i, i)).ToArray(), mass: new float[8]));
    }

    [Fact]
    public void SupportedHeadDimsAreTheKernelsTemplates()
    {
        Assert.All(new[] { 64, 80, 96, 128 }, d => Assert.True(CudaBackend.FlashAttentionSupportsHeadDim(d)));
        Assert.All(new[] { 1, 32, 48, 112, 256 }, d => Assert.False(CudaBackend.FlashAttentionSupportsHeadDim(d)));
        var source = Kernels.KernelSources.Kernel("flash_attention.cu");
        Assert.All(new[] { 64, 80, 96, 128 }, d => Assert.Contains($"case {d}: fa_run<{d}>", source));
    }

    /// <summary>Per-query key limits in [1, nk]: mostly increasing (NAAViT, chunks), some short.</summary>
    private static int[] KeyEnds(int nq, int nk, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, nq).Select(i => i % 5 == 0 ? 1 + rng.Next(nk) : Math.Max(1, nk - nq + i + 1 - rng.Next(3))).ToArray();
    }

    private static float RoundTo(double x, DType? t) => t switch
    {
        null => (float)x,
        DType.F32 => (float)x,
        { } d => Rounded([(float)x], d)[0],
    };

    /// <summary>
    /// The naive implementation in the kernel's precision, the yardstick of its error: scores, softmax and
    /// the weighted sum in float32 in key order (inputs are already values of T), the output rounded to T.
    /// (A float64 computation with only its output rounded is far more accurate than any float32 kernel:
    /// summing 577-641 float32 terms alone exceeds its bound.)
    /// </summary>
    internal static float[] Naive(float[] q, int nq, int qHeads, float[] k, float[] v, int nk, int kvHeads, int headDim, AttentionMask mask,
        int[]? keyEnd, DType dtype) =>
        [.. CudaOpTests.NaiveAttention<float>(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, keyEnd).Select(x => RoundTo(x, dtype))];

    /// <summary>Attention in float64 over the visible keys (the causal suffix mask, per-query key limits).</summary>
    internal static double[] Reference(float[] q, int nq, int qHeads, float[] k, float[] v, int nk, int kvHeads, int headDim,
        AttentionMask mask, int[]? keyEnd) =>
        CudaOpTests.NaiveAttention(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, keyEnd);
}
