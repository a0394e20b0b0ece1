// GPU: Linear through cuBLASLt (many rows) and through the hand-written GEMV (one row), against a float64
// loop over the same stored values, with the CPU float32 op as the yardstick: the device's largest error
// may be at most twice the CPU's plus the rounding of the output to the device type (DeviceTolerance).
// Shapes are odd in every dimension (1, 7, 33, 577, 4097), with and without bias, in every dtype; a row
// of one also runs through cuBLASLt (GEMV off) so both paths are checked on the same cases; inputs that
// are row views of larger tensors check that misaligned pointers reach cuBLASLt's alignment preferences.
// Where cuBLASLt has no algorithm (bf16/f16 rows that are not a multiple of 16 bytes; on the CPU emulator,
// which models that rule, most of the odd shapes here) the backend's tiled kernel (gemm_T) runs instead.
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class CudaLinearTests
{
    public static TheoryData<int, int, int, bool, DType, int> Cases()
    {
        var data = new TheoryData<int, int, int, bool, DType, int>();
        (int M, int K, int N)[] shapes =
        [
            (1, 1, 1), (1, 7, 33), (1, 4096, 577), (1, 4097, 33), (1, 11008, 64),
            (7, 33, 1), (33, 577, 7), (577, 64, 129), (4, 1, 5), (16, 4096, 1024),
        ];
        int seed = 1;
        foreach (var (m, k, n) in shapes)
            foreach (var bias in new[] { false, true })
                foreach (var dtype in new[] { DType.BF16, DType.F16, DType.F32 })
                    data.Add(m, k, n, bias, dtype, seed++);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void LinearMatchesFloat64(int m, int k, int n, bool withBias, DType dtype, int seed) => Check(m, k, n, withBias, dtype, seed, useGemv: true, viewOffset: 0);

    [Theory, MemberData(nameof(Cases))]
    public void LinearThroughCublasLtOnlyMatchesFloat64(int m, int k, int n, bool withBias, DType dtype, int seed) => Check(m, k, n, withBias, dtype, seed, useGemv: false, viewOffset: 0);

    [Theory, MemberData(nameof(Cases))]
    public void LinearOnRowViewsMatchesFloat64(int m, int k, int n, bool withBias, DType dtype, int seed) => Check(m, k, n, withBias, dtype, seed, useGemv: true, viewOffset: 1);

    private static void Check(int m, int k, int n, bool withBias, DType dtype, int seed, bool useGemv, int viewOffset)
    {
        using var b = Gpu.Backend(dtype, useGemv);
        float scale = 1f / MathF.Sqrt(k);
        var x = CudaOpTests.Random(m * k, seed, dtype);
        var w = Weight.FromFloats("w", VteKernels.Tests.Ops.OpsTestData.RandomFloats(n * k, seed + 1, scale), dtype, n, k);
        var bias = withBias ? Weight.FromFloats("b", VteKernels.Tests.Ops.OpsTestData.RandomFloats(n, seed + 2), dtype, n) : null;
        var baseline = new float[m * n];
        CpuOps.Linear(x, m, w, bias, baseline);
        var wv = w.ToFloatArray();
        var bv = bias?.ToFloatArray();
        var reference = new double[m * n];
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
            {
                double s = bv?[c] ?? 0;
                for (int p = 0; p < k; p++) s += (double)x[r * k + p] * wv[c * k + p];
                reference[r * n + c] = s;
            }

        var wd = b.Upload(w);
        var bd = bias is null ? null : b.Upload(bias);
        // A view starting one row in: for odd k·size the pointer is only 2- or 4-byte aligned.
        using var xAll = b.Allocate(m + viewOffset, k);
        using var yAll = b.Allocate(m + viewOffset, n);
        b.Fill(yAll, float.NaN);
        using var xd = xAll.Slice(viewOffset, m);
        using var yd = yAll.Slice(viewOffset, m);
        b.CopyFromHost(x, xd);
        b.Linear(xd, wd, bd, yd);

        DeviceTolerance.AssertNoWorseThan(CudaOpTests.Get(b, yd), reference, baseline, dtype,
            $"linear m={m} k={k} n={n} bias={withBias} gemv={useGemv} view={viewOffset} seed={seed}", roundings: withBias ? 2 : 1);
    }

    [Fact]
    public void TheFallbackTileIsTheKernelsTile()
    {
        var source = Kernels.KernelSources.Kernel(Kernels.KernelCatalog.Gemm.File);
        Assert.Contains($"constexpr int GEMM_TILE = {CudaBackend.GemmTile};", source);
    }

    [Fact]
    public void ZeroInputFeaturesGiveTheBias()
    {
        using var b = Gpu.Backend(DType.F32);
        var w = b.Upload(Weight.FromFloats("w", [], DType.F32, 3, 0));
        var bias = b.Upload(Weight.FromFloats("b", [1f, -2f, 3f], DType.F32, 3));
        using var x = b.Allocate(2, 0);
        using var y = b.Allocate(2, 3);
        b.Linear(x, w, bias, y);
        Assert.Equal([1f, -2f, 3f, 1f, -2f, 3f], CudaOpTests.Get(b, y));
    }

    [Fact]
    public void ShapeMistakesAreArgumentExceptions()
    {
        using var b = Gpu.Backend(DType.BF16);
        var w = b.Upload(Weight.FromFloats("w", new float[12], DType.BF16, 3, 4));
        using var x = b.Allocate(2, 5);
        using var y = b.Allocate(2, 3);
        Assert.Throws<ArgumentException>(() => b.Linear(x, w, null, y));
        using var x4 = b.Allocate(2, 4);
        Assert.Throws<ArgumentException>(() => b.Linear(x4, w, null, x4.Slice(0, 2)));
    }
}
