// CpuOps.Linear against a naive float64 triple loop over the same stored weight values, across shapes
// that hit both inner loops (few rows: dot-product tiles; many rows: packed panels), every tail (rows not
// a multiple of 4 or 16, outputs not a multiple of 3, 6 or the 48-row block, inputs not a multiple of 8 or
// of the 256-element chunk), the parallel path, all stored dtypes, with and without bias.
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public class LinearTests
{
    public static TheoryData<int, int, int, DType, bool, int> Cases()
    {
        var data = new TheoryData<int, int, int, DType, bool, int>();
        (int N, int In, int Out)[] shapes =
        [
            (1, 1, 1), (1, 7, 5), (3, 33, 7), (5, 1030, 101), (1, 4100, 211), (11, 300, 50),
            (12, 37, 50), (23, 64, 128), (33, 600, 97), (577, 33, 7), (17, 1000, 577),
        ];
        int seed = 1;
        foreach (var (n, inF, outF) in shapes)
            foreach (var dtype in OpsTestData.AllDTypes)
                foreach (var bias in new[] { false, true })
                    data.Add(n, inF, outF, dtype, bias, seed++);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesFloat64Reference(int n, int inFeatures, int outFeatures, DType dtype, bool withBias, int seed)
    {
        var (w, ws) = OpsTestData.RandomWeight("w", dtype, seed, 1f, 0f, outFeatures, inFeatures);
        var (b, bs) = OpsTestData.RandomWeight("b", dtype, seed + 1000, 1f, 0f, outFeatures);
        var x = OpsTestData.RandomFloats(n * inFeatures, seed + 2000);
        var y = OpsTestData.Poisoned(n * outFeatures);

        CpuOps.Linear(x, n, w, withBias ? b : null, y);

        var expected = new double[n * outFeatures];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < outFeatures; j++)
            {
                double s = withBias ? bs[j] : 0.0;
                for (int k = 0; k < inFeatures; k++) s += x[i * inFeatures + k] * ws[j * inFeatures + k];
                expected[i * outFeatures + j] = s;
            }
        // float32 accumulation of K products of magnitude <= 1: the rounding error grows like sqrt(K).
        // Measured max |error| over these cases: 2.5e-6 at K = 64, 2.0e-5 at K = 1000, 1.0e-5 at K = 4100
        // (the bound below is 2.4e-5, 9.5e-5 and 1.9e-4 there).
        Tolerance.AssertClose(y, expected, atol: 3e-6 * Math.Sqrt(inFeatures), rtol: 1e-6,
            $"Linear n={n} {inFeatures}->{outFeatures} {dtype} bias={withBias} seed={seed}");
    }

    [Theory]
    [InlineData(1, 700, 300, DType.F32)]
    [InlineData(1, 700, 300, DType.BF16)]
    [InlineData(40, 700, 300, DType.F32)]
    [InlineData(40, 700, 300, DType.BF16)]
    public void IsBitwiseDeterministic(int n, int inFeatures, int outFeatures, DType dtype)
    {
        var (w, _) = OpsTestData.RandomWeight("w", dtype, 5, 1f, 0f, outFeatures, inFeatures);
        var x = OpsTestData.RandomFloats(n * inFeatures, 6);
        var first = new float[n * outFeatures];
        var second = OpsTestData.Poisoned(n * outFeatures);
        CpuOps.Linear(x, n, w, null, first);
        CpuOps.Linear(x, n, w, null, second);
        for (int i = 0; i < first.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(first[i]) == BitConverter.SingleToInt32Bits(second[i]),
                $"run 2 differs at [{i}]: {first[i]:R} then {second[i]:R}");
    }

    [Fact]
    public void ConvWeightCountsAsMatrixOfItsFlattenedRows()
    {
        // [d, c, p, p] = [4, 3, 2, 2] is used as [4, 12].
        var (w, ws) = OpsTestData.RandomWeight("conv", DType.F32, 7, 1f, 0f, 4, 3, 2, 2);
        var x = OpsTestData.RandomFloats(2 * 12, 8);
        var y = OpsTestData.Poisoned(2 * 4);
        CpuOps.Linear(x, 2, w, null, y);
        var expected = new double[8];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 12; k++) expected[i * 4 + j] += x[i * 12 + k] * ws[j * 12 + k];
        Tolerance.AssertClose(y, expected, 1e-6, 1e-6, "Linear conv weight [4,3,2,2]");
    }

    [Fact]
    public void ZeroRowsAndZeroInputsAreHandled()
    {
        var (w, _) = OpsTestData.RandomWeight("w", DType.BF16, 1, 1f, 0f, 5, 3);
        CpuOps.Linear([], 0, w, null, []);
        // No input features: y is the bias.
        var (empty, _) = OpsTestData.RandomWeight("w0", DType.F32, 1, 1f, 0f, 4, 0);
        var (b, bs) = OpsTestData.RandomWeight("b", DType.F16, 2, 1f, 0f, 4);
        var y = OpsTestData.Poisoned(2 * 4);
        CpuOps.Linear([], 2, empty, b, y);
        Tolerance.AssertClose(y, [.. bs, .. bs], 0, 0, "Linear with in = 0");
    }

    [Fact]
    public void RejectsLengthsThatDisagreeWithTheWeight()
    {
        var (w, _) = OpsTestData.RandomWeight("w", DType.F32, 1, 1f, 0f, 5, 3);
        var (b, _) = OpsTestData.RandomWeight("b", DType.F32, 1, 1f, 0f, 4);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => CpuOps.Linear(new float[7], 2, w, null, new float[10])).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.Linear(new float[6], 2, w, null, new float[9])).ParamName);
        Assert.Equal("bias", Assert.Throws<ArgumentException>(() => CpuOps.Linear(new float[6], 2, w, b, new float[10])).ParamName);
        Assert.Equal("n", Assert.ThrowsAny<ArgumentException>(() => CpuOps.Linear(new float[6], -1, w, null, new float[10])).ParamName);
        var shared = new float[16];
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.Linear(shared.AsSpan(0, 6), 2, w, null, shared.AsSpan(4, 10))).ParamName);
    }
}
