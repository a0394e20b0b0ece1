// The one place test tolerances are checked. A comparison passes when every element satisfies
// |actual − expected| ≤ atol + rtol·|expected| (NaN never passes). On failure the message gives the
// context (op, shape, dtype, seed), the number of mismatches, the first few with their flat indices, and
// the largest absolute error, so a failure can be reproduced and located without a debugger.
using System.Text;
using Xunit;

namespace VteKernels.Tests;

internal static class Tolerance
{
    private const int ShownMismatches = 8;

    /// <summary>Asserts that <paramref name="actual"/> matches the float64 reference <paramref name="expected"/>.</summary>
    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double atol, double rtol, string context)
    {
        if (actual.Length != expected.Length)
            Assert.Fail($"{context}: length {actual.Length}, expected {expected.Length}");
        int mismatches = 0;
        double maxAbs = 0;
        int maxAt = -1;
        var shown = new StringBuilder();
        for (int i = 0; i < actual.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]);
            bool ok = err <= atol + rtol * Math.Abs(expected[i]); // false for NaN
            if (double.IsNaN(err) ? !double.IsNaN(maxAbs) : err > maxAbs) { maxAbs = err; maxAt = i; }
            if (!ok)
            {
                if (mismatches < ShownMismatches)
                    shown.Append($"\n  [{i}] actual {actual[i]:R}, expected {expected[i]:R}, |error| {err:E3}");
                mismatches++;
            }
        }
        if (mismatches > 0)
            Assert.Fail($"{context}: {mismatches} of {actual.Length} elements outside atol {atol:E2} + rtol {rtol:E2}·|expected|; " +
                        $"max |error| {maxAbs:E3} at [{maxAt}]{shown}");
    }

    /// <summary>
    /// Asserts that no element is NaN and max |actual − expected| ≤ rel · max(1, max |expected|): a whole model
    /// output (logits, hidden states) held to a share of its own scale. Logs the figures to <paramref name="log"/>.
    /// </summary>
    public static void AssertCloseToScale(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double rel, string context, ITestOutputHelper? log = null)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxDiff = 0, maxRef = 0;
        int worst = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            Assert.False(float.IsNaN(actual[i]), $"{context}: NaN at flat index {i}");
            double d = Math.Abs(actual[i] - expected[i]);
            if (d > maxDiff) { maxDiff = d; worst = i; }
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }
        double bound = rel * Math.Max(1, maxRef);
        log?.WriteLine($"{context}: max |diff| {maxDiff:E2} (at {worst}), max |ref| {maxRef:F3}, bound {bound:E2}");
        Assert.True(maxDiff <= bound, $"{context}: max |diff| {maxDiff:E3} at flat index {worst} (got {actual[worst]}, want {expected[worst]}) exceeds {bound:E3}");
    }
}
