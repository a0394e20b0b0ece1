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

    /// <summary>
    /// The house rule for a kernel: its largest error against the float64 reference may be at most
    /// <paramref name="factor"/> times the largest error of a naive implementation in the same precision
    /// (<paramref name="naive"/>), plus <paramref name="floor"/> for cases where the naive one happens to be
    /// exact. NaN never passes. The message names the context, both errors and the worst element.
    /// </summary>
    public static void AssertWithinNaiveError(ReadOnlySpan<float> actual, ReadOnlySpan<float> naive, ReadOnlySpan<double> expected,
        string context, double factor = 2, double floor = 0, ITestOutputHelper? log = null)
    {
        if (actual.Length != expected.Length || naive.Length != expected.Length)
            Assert.Fail($"{context}: lengths {actual.Length} (actual), {naive.Length} (naive), expected {expected.Length}");
        double ours = 0, theirs = 0;
        int worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double e = Math.Abs(actual[i] - expected[i]);
            if (double.IsNaN(e)) Assert.Fail($"{context}: NaN at flat index {i} (expected {expected[i]:R})");
            if (e > ours) { ours = e; worst = i; }
            theirs = Math.Max(theirs, Math.Abs(naive[i] - expected[i]));
        }
        double bound = factor * theirs + floor;
        log?.WriteLine($"{context}: max |error| {ours:E2}, naive same-precision {theirs:E2}, bound {bound:E2}");
        if (!(ours <= bound))
            Assert.Fail($"{context}: max |error| {ours:E3} at flat index {worst} (got {actual[worst]:R}, expected {expected[worst]:R}) " +
                        $"exceeds {factor} x the naive same-precision error {theirs:E3} + {floor:E1}");
    }
}
