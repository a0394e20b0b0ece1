// CpuOps.RmsNorm and CpuOps.LayerNorm against float64 loops over the same stored gamma/beta values, out of
// place and in place (x and y the same array), at row lengths that are not multiples of the vector width,
// one row up to enough rows for the parallel path. LayerNorm inputs carry a mean far from zero (10) so a
// one-pass E[x²] − mean² variance would fail the tolerance.
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public class NormTests
{
    public static TheoryData<int, int, DType, bool, int> Cases()
    {
        var data = new TheoryData<int, int, DType, bool, int>();
        (int N, int Cols)[] shapes = [(1, 1), (1, 7), (3, 33), (7, 4096), (577, 1024)];
        int seed = 1;
        foreach (var (n, cols) in shapes)
            foreach (var dtype in OpsTestData.AllDTypes)
                foreach (var inPlace in new[] { false, true })
                    data.Add(n, cols, dtype, inPlace, seed++);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void RmsNormMatchesFloat64Reference(int n, int cols, DType dtype, bool inPlace, int seed)
    {
        const float eps = 1e-5f;
        var (gamma, g) = OpsTestData.RandomWeight("gamma", dtype, seed, 0.5f, 1f, cols);
        var x = OpsTestData.RandomFloats(n * cols, seed + 100, scale: 3f, offset: 0.5f);
        var expected = new double[n * cols];
        for (int i = 0; i < n; i++)
        {
            double sum = 0;
            for (int j = 0; j < cols; j++) sum += (double)x[i * cols + j] * x[i * cols + j];
            double inv = 1.0 / Math.Sqrt(sum / cols + eps);
            for (int j = 0; j < cols; j++) expected[i * cols + j] = x[i * cols + j] * inv * g[j];
        }
        var y = inPlace ? x : OpsTestData.Poisoned(n * cols);

        CpuOps.RmsNorm(x, n, gamma, eps, y);

        // Outputs are O(1); float32 sum of squares over the row plus three roundings per element.
        // Measured max |error| 6.1e-7 (577 × 1024).
        Tolerance.AssertClose(y, expected, atol: 1e-6, rtol: 2e-6, $"RmsNorm n={n} cols={cols} {dtype} inPlace={inPlace} seed={seed}");
    }

    [Theory, MemberData(nameof(Cases))]
    public void LayerNormMatchesFloat64Reference(int n, int cols, DType dtype, bool inPlace, int seed)
    {
        const float eps = 1e-5f;
        var (gamma, g) = OpsTestData.RandomWeight("gamma", dtype, seed, 0.5f, 1f, cols);
        var (beta, b) = OpsTestData.RandomWeight("beta", dtype, seed + 50, 0.5f, 0f, cols);
        var x = OpsTestData.RandomFloats(n * cols, seed + 100, scale: 1f, offset: 10f);
        var expected = new double[n * cols];
        for (int i = 0; i < n; i++)
        {
            double mean = 0;
            for (int j = 0; j < cols; j++) mean += x[i * cols + j];
            mean /= cols;
            double variance = 0;
            for (int j = 0; j < cols; j++) variance += (x[i * cols + j] - mean) * (x[i * cols + j] - mean);
            variance /= cols;
            double rstd = 1.0 / Math.Sqrt(variance + eps);
            for (int j = 0; j < cols; j++) expected[i * cols + j] = (x[i * cols + j] - mean) * rstd * g[j] + b[j];
        }
        var y = inPlace ? x : OpsTestData.Poisoned(n * cols);

        CpuOps.LayerNorm(x, n, gamma, beta, eps, y);

        // The inputs are float32 values near 10 (spacing 9.5e-7), so x − mean carries ~1e-6 relative to
        // a unit spread; the normalized outputs are O(1). Measured max |error| 8.8e-6 (577 × 1024).
        Tolerance.AssertClose(y, expected, atol: 1e-5, rtol: 1e-5, $"LayerNorm n={n} cols={cols} {dtype} inPlace={inPlace} seed={seed}");
    }

    [Fact]
    public void LayerNormOfAConstantRowIsBeta()
    {
        var (gamma, _) = OpsTestData.RandomWeight("gamma", DType.F32, 1, 0.5f, 1f, 9);
        var (beta, b) = OpsTestData.RandomWeight("beta", DType.F32, 2, 0.5f, 0f, 9);
        var x = new float[9];
        Array.Fill(x, 3.25f);
        var y = OpsTestData.Poisoned(9);
        CpuOps.LayerNorm(x, 1, gamma, beta, 1e-5f, y);
        Tolerance.AssertClose(y, b, 0, 0, "LayerNorm constant row");
    }

    [Fact]
    public void RejectBadShapesAndPartialOverlap()
    {
        var (gamma, _) = OpsTestData.RandomWeight("gamma", DType.F32, 1, 1f, 0f, 4);
        var (beta, _) = OpsTestData.RandomWeight("beta", DType.F32, 1, 1f, 0f, 5);
        var (matrix, _) = OpsTestData.RandomWeight("m", DType.F32, 1, 1f, 0f, 2, 2);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => CpuOps.RmsNorm(new float[7], 2, gamma, 1e-5f, new float[8])).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.RmsNorm(new float[8], 2, gamma, 1e-5f, new float[7])).ParamName);
        Assert.Equal("gamma", Assert.Throws<ArgumentException>(() => CpuOps.RmsNorm(new float[4], 1, matrix, 1e-5f, new float[4])).ParamName);
        Assert.Equal("beta", Assert.Throws<ArgumentException>(() => CpuOps.LayerNorm(new float[4], 1, gamma, beta, 1e-5f, new float[4])).ParamName);
        var shared = new float[12];
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.RmsNorm(shared.AsSpan(0, 8), 2, gamma, 1e-5f, shared.AsSpan(4, 8))).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.LayerNorm(shared.AsSpan(0, 4), 1, gamma, gamma, 1e-5f, shared.AsSpan(1, 4))).ParamName);
    }
}
