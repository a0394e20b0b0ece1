// CpuOps activations against float64 formulas, and the erf behind the exact GELU against independent
// float64 references: the Maclaurin series of erf where it converges without much cancellation
// (|x| <= 2.5), the continued fraction of erfc in the tail (x >= 2), and a few values printed by a C
// library's erf/erfc (CPython's math module). Lengths run from 1 to long enough for the parallel path.
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public class ActivationTests
{
    public static TheoryData<int, int> Lengths() => new() { { 1, 1 }, { 7, 2 }, { 33, 3 }, { 4097, 4 }, { 100_003, 5 } };

    [Theory, MemberData(nameof(Lengths))]
    public void QuickGeluMatchesFloat64(int length, int seed)
    {
        var x = OpsTestData.RandomFloats(length, seed, scale: 8f);
        var expected = Array.ConvertAll(x, v => v / (1.0 + Math.Exp(-1.702 * v)));
        CpuOps.QuickGelu(x);
        // float32 sigmoid (vectorized exp) and two products; measured max |error| 6.9e-7 for |x| <= 8
        // (outputs up to 8, where an ulp is 4.8e-7).
        Tolerance.AssertClose(x, expected, atol: 1e-7, rtol: 2e-7, $"QuickGelu length={length} seed={seed}");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void GeluMatchesFloat64(int length, int seed)
    {
        var x = OpsTestData.RandomFloats(length, seed, scale: 8f);
        x[0] = -10f; // deep negative tail: 0.5·x·(1 + erf) cancels in the erf form
        var expected = Array.ConvertAll(x, v => 0.5 * v * ReferenceErfc(-v / Math.Sqrt(2)));
        CpuOps.Gelu(x);
        // Evaluated in double and rounded once, so within half an ulp (2^-24 relative) of the exact value;
        // measured max |error| 2.4e-7 (outputs up to 8).
        Tolerance.AssertClose(x, expected, atol: 1e-30, rtol: 6e-8, $"Gelu length={length} seed={seed}");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void SiluMulMatchesFloat64(int length, int seed)
    {
        var gate = OpsTestData.RandomFloats(length, seed, scale: 8f);
        var up = OpsTestData.RandomFloats(length, seed + 100, scale: 2f);
        var expected = new double[length];
        for (int i = 0; i < length; i++) expected[i] = gate[i] / (1.0 + Math.Exp(-(double)gate[i])) * up[i];

        var y = OpsTestData.Poisoned(length);
        CpuOps.SiluMul(gate, up, y);
        // Measured max |error| 2.0e-6 for |gate| <= 8, |up| <= 2 (outputs up to 16, where an ulp is 9.5e-7).
        Tolerance.AssertClose(y, expected, atol: 1e-7, rtol: 3e-7, $"SiluMul length={length} seed={seed}");

        var upCopy = (float[])up.Clone();
        CpuOps.SiluMul(gate, up, gate); // y aliasing gate
        Tolerance.AssertClose(gate, Array.ConvertAll(y, v => (double)v), 0, 0, $"SiluMul into gate length={length}");
        var gate2 = OpsTestData.RandomFloats(length, seed, scale: 8f);
        CpuOps.SiluMul(gate2, upCopy, upCopy); // y aliasing up
        Tolerance.AssertClose(upCopy, Array.ConvertAll(y, v => (double)v), 0, 0, $"SiluMul into up length={length}");
    }

    [Fact]
    public void SiluMulRejectsMismatchedLengthsAndPartialOverlap()
    {
        Assert.Equal("up", Assert.Throws<ArgumentException>(() => CpuOps.SiluMul(new float[4], new float[3], new float[4])).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.SiluMul(new float[4], new float[4], new float[5])).ParamName);
        var shared = new float[8];
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.SiluMul(shared.AsSpan(0, 4), new float[4], shared.AsSpan(2, 4))).ParamName);
    }

    /// <summary>erf by its Maclaurin series, summed until the terms vanish (for |x| ≤ 2.5 the largest term is ~200).</summary>
    private static double SeriesErf(double x)
    {
        double sum = 0, term = x; // term = (−1)^n x^(2n+1) / n!
        for (int n = 0; n < 200; n++)
        {
            sum += term / (2 * n + 1);
            term *= -x * x / (n + 1);
            if (Math.Abs(term) < 1e-40) break;
        }
        return 2.0 / Math.Sqrt(Math.PI) * sum;
    }

    /// <summary>erfc by the continued fraction erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), for x ≥ 2.</summary>
    private static double ContinuedFractionErfc(double x)
    {
        double t = x;
        for (int n = 2000; n >= 1; n--) t = x + n / 2.0 / t;
        return Math.Exp(-x * x) / Math.Sqrt(Math.PI) / t;
    }

    private static double ReferenceErfc(double x) =>
        x >= 2.5 ? ContinuedFractionErfc(x) : x <= -2.5 ? 2.0 - ContinuedFractionErfc(-x) : 1.0 - SeriesErf(x);

    [Fact]
    public void ErfMatchesSeriesWhereItConverges()
    {
        for (double x = -2.5; x <= 2.5; x += 0.001953125) // 2561 points, 0 and ±0.46875 (a branch point) included
        {
            double expected = SeriesErf(x), actual = CpuOps.Erf(x);
            Assert.True(Math.Abs(actual - expected) <= 1e-15 + 1e-14 * Math.Abs(expected), $"erf({x:R}) = {actual:R}, series {expected:R}");
        }
    }

    [Fact]
    public void ErfcMatchesContinuedFractionInTheTail()
    {
        for (double x = 2.0; x <= 26.5; x += 0.0078125) // erfc(26.5) ≈ 3e-307: still a normal double
        {
            double expected = ContinuedFractionErfc(x), actual = CpuOps.Erfc(x);
            Assert.True(Math.Abs(actual - expected) <= 1e-13 * expected, $"erfc({x:R}) = {actual:R}, continued fraction {expected:R}");
            double mirrored = CpuOps.Erfc(-x);
            Assert.True(Math.Abs(mirrored - (2.0 - expected)) <= 1e-15, $"erfc({-x:R}) = {mirrored:R}");
        }
        Assert.Equal(0.0, CpuOps.Erfc(40.0));
        Assert.Equal(2.0, CpuOps.Erfc(-40.0));
        Assert.Equal(1.0, CpuOps.Erf(40.0));
        Assert.Equal(-1.0, CpuOps.Erf(double.NegativeInfinity));
        Assert.True(double.IsNaN(CpuOps.Erf(double.NaN)));
    }

    [Theory]
    [InlineData(-3.0, -0.9999779095030014, 1.9999779095030015)]
    [InlineData(-0.3, -0.3286267594591274, 1.3286267594591274)]
    [InlineData(0.1, 0.1124629160182849, 0.8875370839817152)]
    [InlineData(0.46875, 0.49261347321793797, 0.507386526782062)]
    [InlineData(0.5, 0.5204998778130465, 0.4795001221869535)]
    [InlineData(1.0, 0.8427007929497149, 0.15729920705028513)]
    [InlineData(2.0, 0.9953222650189527, 0.004677734981047265)]
    [InlineData(4.0, 0.9999999845827421, 1.541725790028002e-08)]
    [InlineData(4.5, 0.9999999998033839, 1.9661604415428873e-10)]
    [InlineData(10.0, 1.0, 2.088487583762545e-45)]
    [InlineData(26.0, 1.0, 5.663192408856143e-296)]
    public void ErfAndErfcMatchCLibraryValues(double x, double erf, double erfc)
    {
        Assert.True(Math.Abs(CpuOps.Erf(x) - erf) <= 4e-16 * Math.Max(1e-300, Math.Abs(erf)), $"erf({x}) = {CpuOps.Erf(x):R}, libm {erf:R}");
        Assert.True(Math.Abs(CpuOps.Erfc(x) - erfc) <= 1e-14 * erfc, $"erfc({x}) = {CpuOps.Erfc(x):R}, libm {erfc:R}");
    }
}
