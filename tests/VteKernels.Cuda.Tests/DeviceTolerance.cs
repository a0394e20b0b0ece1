// Tolerances of device results, per storage type, in one place. Two criteria:
// * AssertRounded, for ops whose device result differs from the CPU op's float32 result only by rounding
//   to the storage type (`roundings` times at most) plus float32 noise: elementwise
//   |actual − expected| ≤ roundings·u·|expected| + 256·2⁻²⁴·(|expected| + max|expected|) (the float32 part
//   allows for sums taken in another order, e.g. a 4096-wide sum of squares);
// * AssertNoWorseThan, the oracle for reductions (GEMM, attention, whole model): against a float64
//   reference, the device's largest error may be at most twice the CPU float32 op's largest error, plus
//   `roundings` roundings of the largest reference value to the storage type.
// u is the unit roundoff of the storage type: 2⁻⁸ (bf16), 2⁻¹¹ (f16), 2⁻²⁴ (f32). Messages carry the
// context (op, shape, dtype, seed) and, through Tolerance, the first mismatches with their flat indices.
using VteKernels.Tests;
using Xunit;

namespace VteKernels.Cuda.Tests;

internal static class DeviceTolerance
{
    private const double F32Unit = 1.0 / (1 << 24);

    public static double Unit(DType t) => t switch
    {
        DType.BF16 => 1.0 / (1 << 8),
        DType.F16 => 1.0 / (1 << 11),
        _ => F32Unit,
    };

    public static void AssertRounded(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, DType dtype, string context, double roundings = 1)
    {
        double max = MaxAbs(expected);
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        double rtol = roundings * Unit(dtype) + 256 * F32Unit;
        Tolerance.AssertClose(actual, e, atol: 256 * F32Unit * max + double.Epsilon, rtol: rtol, $"{context} {dtype}");
    }

    public static void AssertNoWorseThan(ReadOnlySpan<float> actual, ReadOnlySpan<double> reference, ReadOnlySpan<float> baseline, DType dtype, string context,
        double roundings = 1)
    {
        Assert.Equal(reference.Length, actual.Length);
        Assert.Equal(reference.Length, baseline.Length);
        double maxRef = 0, errActual = 0, errBaseline = 0;
        int worst = 0; // stays 0 when the device matches the reference exactly
        for (int i = 0; i < reference.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(reference[i]));
            double ea = Math.Abs(actual[i] - reference[i]);
            if (double.IsNaN(ea)) Assert.Fail($"{context} {dtype}: NaN at [{i}] (reference {reference[i]:R})");
            if (ea > errActual) { errActual = ea; worst = i; }
            errBaseline = Math.Max(errBaseline, Math.Abs(baseline[i] - reference[i]));
        }
        double bound = 2 * errBaseline + roundings * Unit(dtype) * maxRef + 4 * F32Unit * maxRef;
        Assert.True(errActual <= bound,
            $"{context} {dtype}: max |device − float64| {errActual:E3} at [{worst}] (device {actual[worst]:R}, reference {reference[worst]:R}) " +
            $"exceeds 2 × CPU's {errBaseline:E3} + {roundings} rounding(s) of max |reference| {maxRef:E3} = {bound:E3}");
    }

    public static double MaxAbs(ReadOnlySpan<float> v)
    {
        double m = 0;
        foreach (var x in v) m = Math.Max(m, Math.Abs(x));
        return m;
    }
}
