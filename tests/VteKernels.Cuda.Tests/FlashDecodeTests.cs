// Decode attention (kernels/flash_decode.cu, CudaBackend.DecodeAttention) against the CPU op: fresh seeded
// random inputs rounded to the device type, outputs poisoned with NaN, cache lengths around the split
// boundaries (1, 7, 255, 256, 641, 4097, 33000), grouped-query ratios 1/4/8, head dims 64/128/80, one and
// three query rows, every dtype; the oracle is the attention tests' (DeviceTolerance.AssertNoWorseThan
// against a float64 reference). GPU tests skip without a device; the split-count choice and the constants
// the host mirrors from the kernel source run anywhere.
using System.Text.RegularExpressions;
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using VteKernels.Cuda.Kernels;
using Xunit;
using static VteKernels.Cuda.Tests.CudaOpTests;

namespace VteKernels.Cuda.Tests;

public sealed class FlashDecodeTests
{
    public static TheoryData<int, int, int, int, AttentionMask, DType, int> Cases()
    {
        var data = new TheoryData<int, int, int, int, AttentionMask, DType, int>();
        (int Ratio, int HeadDim)[] heads = [(1, 64), (4, 128), (8, 80), (4, 64), (8, 128), (1, 80), (8, 64), (1, 128), (4, 80)];
        int seed = 1, next = 0;
        foreach (int nk in new[] { 1, 7, 255, 256, 641, 4097, Gpu.Scaled(33000, 8193) }) // the emulator's long cache: still many splits
            foreach (int nq in new[] { 1, 3 })
            {
                if (nq > nk) continue;
                foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                {
                    var (ratio, headDim) = heads[next++ % heads.Length];
                    var mask = nq == 3 && nk == 641 ? AttentionMask.None : AttentionMask.Causal;
                    data.Add(nq, nk, ratio, headDim, mask, dtype, seed++);
                }
            }
        return data;
    }

    [Theory, MemberData(nameof(Cases)), Trait("Category", "Gpu")]
    public void DecodeAttentionMatchesCpu(int nq, int nk, int ratio, int headDim, AttentionMask mask, DType dtype, int seed)
    {
        using var b = Gpu.Backend(dtype);
        const int kvHeads = 2;
        int qHeads = kvHeads * ratio;
        var (q, k, v) = Inputs(nq, nk, qHeads, kvHeads, headDim, dtype, seed);
        var baseline = new float[q.Length];
        CpuOps.Attention(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask, baseline);
        var reference = NaiveAttention(q, nq, qHeads, k, v, nk, kvHeads, headDim, mask);

        using var qd = Put(b, q, nq, qHeads * headDim);
        using var kd = Put(b, k, nk, kvHeads * headDim);
        using var vd = Put(b, v, nk, kvHeads * headDim);
        using var od = Poisoned(b, nq, qHeads * headDim);
        b.DecodeAttention(qd, qHeads, kd, vd, kvHeads, headDim, mask, od);

        DeviceTolerance.AssertNoWorseThan(Get(b, od), reference, baseline, dtype,
            $"decode attention nq={nq} nk={nk} heads={qHeads}/{kvHeads} d={headDim} {mask} seed={seed}");
    }

    [Theory, Trait("Category", "Gpu")]
    [InlineData(DType.BF16)]
    [InlineData(DType.F32)]
    public void AttentionRoutesDecodeToTheSplitKernelsWhenFused(DType dtype)
    {
        using var b = Gpu.Backend(dtype, fused: true);
        const int nq = 1, nk = 577, qHeads = 8, kvHeads = 2, headDim = 128, seed = 77;
        var (q, k, v) = Inputs(nq, nk, qHeads, kvHeads, headDim, dtype, seed);
        var baseline = new float[q.Length];
        CpuOps.Attention(q, nq, qHeads, k, v, nk, kvHeads, headDim, AttentionMask.Causal, baseline);
        var reference = NaiveAttention(q, nq, qHeads, k, v, nk, kvHeads, headDim, AttentionMask.Causal);

        using var qd = Put(b, q, nq, qHeads * headDim);
        using var kd = Put(b, k, nk, kvHeads * headDim);
        using var vd = Put(b, v, nk, kvHeads * headDim);
        using var od = Poisoned(b, nq, qHeads * headDim);
        b.Attention(qd, qHeads, kd, vd, kvHeads, headDim, AttentionMask.Causal, od);

        DeviceTolerance.AssertNoWorseThan(Get(b, od), reference, baseline, dtype, $"fused attention nq={nq} nk={nk} seed={seed}");
    }

    [Fact, Trait("Category", "Gpu")]
    public void MoreThanEightQueriesAreRejected()
    {
        using var b = Gpu.Backend(DType.BF16);
        using var q = b.Allocate(9, 64);
        using var k = b.Allocate(300, 64);
        using var v = b.Allocate(300, 64);
        using var o = b.Allocate(9, 64);
        Assert.Throws<ArgumentException>(() => b.DecodeAttention(q, 1, k, v, 1, 64, AttentionMask.Causal, o));
    }

    private static (float[] Q, float[] K, float[] V) Inputs(int nq, int nk, int qHeads, int kvHeads, int headDim, DType dtype, int seed) =>
        (Random(nq * qHeads * headDim, seed, dtype, scale: 2f),
         Random(nk * kvHeads * headDim, seed + 1, dtype, scale: 2f),
         Random(nk * kvHeads * headDim, seed + 2, dtype));

    [Theory]
    [InlineData(1, 2, 132, 4, 1)]         // one key: one split
    [InlineData(255, 2, 132, 4, 2)]       // at most one split per 128 keys
    [InlineData(256, 2, 132, 4, 2)]
    [InlineData(4097, 8, 132, 4, 33)]     // 33 = ceil(4097 / 128) < 4 * 132 / 8 = 66
    [InlineData(33000, 8, 132, 4, 66)]    // 4 blocks per SM on an H100/H200: 528 blocks, one wave
    [InlineData(33000, 32, 132, 4, 16)]   // 32 kv heads: 512 blocks of 528 slots, not 17 x 32 = 544 (a second wave)
    [InlineData(33000, 32, 132, 3, 12)]   // 137 registers (3 blocks per SM): 384 blocks of 396 slots
    [InlineData(33000, 5, 7, 4, 5)]       // floor(28 / 5)
    [InlineData(33000, 1000, 132, 4, 1)]  // the heads alone fill the GPU
    [InlineData(1 << 20, 1, 1000, 4, 1024)] // capped by the merge's shared weights
    public void SplitCountFillsOneWaveWithinItsLimits(int nk, int blocksPerSplit, int sms, int blocksPerSm, int expected)
    {
        int splits = CudaBackend.FlashDecodeSplits(nk, blocksPerSplit, sms, blocksPerSm);
        Assert.Equal(expected, splits);
    }

    [Fact]
    public void EverySplitHasKeysAndTheLimitsHold()
    {
        foreach (int nk in new[] { 1, 2, 7, 127, 128, 129, 255, 256, 257, 641, 4097, 33000, 131073 })
            foreach (int blocks in new[] { 1, 2, 3, 8, 32, 64 })
                foreach (int sms in new[] { 1, 46, 108, 132 })
                    foreach (int perSm in new[] { 1, 3, 4, 5 })
                    {
                        int splits = CudaBackend.FlashDecodeSplits(nk, blocks, sms, perSm);
                        int chunk = (nk + splits - 1) / splits;
                        string context = $"nk={nk} blocks={blocks} sms={sms} perSm={perSm}: {splits} splits of {chunk}";
                        Assert.InRange(splits, 1, CudaBackend.FlashDecodeMaxSplits);
                        Assert.True((splits - 1) * chunk < nk, context);                  // the last split is not empty
                        Assert.True(splits == 1 || chunk >= CudaBackend.FlashDecodeMinKeysPerSplit / 2, context); // ceil rounding can halve it at worst
                        Assert.True(splits == 1 || splits * blocks <= perSm * sms, context); // one wave
                    }
        Assert.Throws<ArgumentOutOfRangeException>(() => CudaBackend.FlashDecodeSplits(0, 1, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CudaBackend.FlashDecodeSplits(1, 0, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CudaBackend.FlashDecodeSplits(1, 1, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CudaBackend.FlashDecodeSplits(1, 1, 1, 0));
    }

    // The occupancy the split count is sized by: at least what the kernel's __launch_bounds__(128, 4) guarantees on
    // any device; exactly 4 on the emulator, which models the registers as the bound's 128 (40 KiB of shared
    // memory alone would allow 5).
    [Theory, Trait("Category", "Gpu")]
    [InlineData(DType.BF16)]
    [InlineData(DType.F32)]
    public void SplitKernelOccupancyIsAtLeastItsLaunchBound(DType dtype)
    {
        using var b = Gpu.Backend(dtype);
        int blocks = b.FlashDecodeBlocksPerSm();
        Assert.True(blocks >= CudaBackend.FlashDecodeMinBlocksPerSm, $"{blocks} split blocks per SM");
        if (Gpu.Emulated) Assert.Equal(CudaBackend.FlashDecodeMinBlocksPerSm, blocks);
        Assert.Equal(blocks, b.FlashDecodeBlocksPerSm()); // asked once
        int splits = CudaBackend.FlashDecodeSplits(33000, 32, b.Info.MultiprocessorCount, blocks);
        Assert.True(splits * 32 <= blocks * b.Info.MultiprocessorCount);
    }

    [Theory]
    [InlineData("FLASH_DECODE_ROWS", CudaBackend.FlashDecodeRows)]
    [InlineData("FLASH_DECODE_MAX_SPLITS", CudaBackend.FlashDecodeMaxSplits)]
    [InlineData("FLASH_DECODE_MAX_HEAD_DIM", 256)]
    [InlineData("FLASH_DECODE_MIN_BLOCKS", CudaBackend.FlashDecodeMinBlocksPerSm)]
    public void HostConstantsMirrorTheKernelSource(string name, int value)
    {
        var source = KernelSources.Kernel(KernelCatalog.FlashDecode.File);
        var m = Regex.Match(source, $@"constexpr int {name} = (\d+);");
        Assert.True(m.Success, $"{name} not found in {KernelCatalog.FlashDecode.File}");
        Assert.Equal(value, int.Parse(m.Groups[1].Value));
    }
}
