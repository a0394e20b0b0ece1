// GPU: device-side token choice. argmax_T equals Sampler.ArgMax row by row (ties, -inf, NaN); the
// sampler's uniforms equal the host Philox mirror bit for bit; sample_T draws from exactly the set the host
// Sampler keeps (temperature, then top-k with ties to the lowest ids, then top-p with the host's
// "mass before the token < p" rule), with frequencies matching the host's probabilities (chi-square over
// 20000 draws: one launch over 20000 identical rows, each row its own counter); a seed and step always give
// the same tokens.
using VteKernels.Engine;
using Xunit;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class CudaSamplingTests
{
    /// <summary>The host Sampler's probabilities by token id, in double.</summary>
    internal static double[] HostProbabilities(float[] logits, float temperature, int topK, float topP)
    {
        var ids = Enumerable.Range(0, logits.Length).ToArray();
        Array.Sort(ids, (a, b) => logits[b].CompareTo(logits[a]) is var c && c != 0 ? c : a.CompareTo(b));
        int keep = topK > 0 ? Math.Min(topK, ids.Length) : ids.Length;
        double max = logits[ids[0]] / (double)temperature;
        var p = new double[keep];
        double sum = 0;
        for (int i = 0; i < keep; i++) sum += p[i] = Math.Exp(logits[ids[i]] / (double)temperature - max);
        for (int i = 0; i < keep; i++) p[i] /= sum;
        if (topP < 1f)
        {
            double cum = 0;
            int n = 0;
            while (n < keep) { cum += p[n++]; if (cum >= topP) break; }
            keep = n;
            sum = p.Take(keep).Sum();
            for (int i = 0; i < keep; i++) p[i] /= sum;
        }
        var byId = new double[logits.Length];
        for (int i = 0; i < keep; i++) byId[ids[i]] = p[i];
        return byId;
    }

    private static int[] Draw(CudaBackend b, float[] logits, int draws, float temperature, int topK, float topP, ulong seed, ulong step = 0)
    {
        var rows = new float[draws * logits.Length];
        for (int r = 0; r < draws; r++) logits.CopyTo(rows, r * logits.Length);
        using var t = CudaOpTests.Put(b, rows, draws, logits.Length);
        return b.Sample(t, temperature, topK, topP, seed, step);
    }

    public static TheoryData<string, float, int, float, DType> DistributionCases() => new()
    {
        { "temperature only", 1.0f, 0, 1f, DType.F32 },
        { "hot", 2.5f, 0, 1f, DType.BF16 },
        { "top-k", 0.7f, 5, 1f, DType.F32 },
        { "top-p", 1.0f, 0, 0.8f, DType.F32 },
        { "top-k then top-p", 0.9f, 9, 0.6f, DType.F16 },
        { "top-k of one", 1.0f, 1, 1f, DType.BF16 },
    };

    [Theory, MemberData(nameof(DistributionCases))]
    public void DrawsFollowTheHostSamplersDistribution(string label, float temperature, int topK, float topP, DType dtype)
    {
        const int vocab = 37, draws = 20000;
        using var b = Gpu.Backend(dtype);
        var logits = CudaOpTests.Random(vocab, 11, dtype, scale: 2.5f);
        var p = HostProbabilities(logits, temperature, topK, topP);
        var tokens = Draw(b, logits, draws, temperature, topK, topP, seed: 12345);

        var counts = new int[vocab];
        foreach (var t in tokens)
        {
            Assert.InRange(t, 0, vocab - 1);
            counts[t]++;
        }
        double chi2 = 0;
        int df = -1;
        for (int i = 0; i < vocab; i++)
        {
            if (p[i] == 0)
            {
                Assert.True(counts[i] == 0, $"{label}: token {i} is outside the kept set but was drawn {counts[i]} times");
                continue;
            }
            double e = p[i] * draws;
            chi2 += (counts[i] - e) * (counts[i] - e) / e;
            df++;
        }
        // Mean df, sd sqrt(2 df): df + 6 sd + 10 is far beyond any honest draw and far below a wrong distribution.
        double bound = df + 6 * Math.Sqrt(2.0 * Math.Max(df, 1)) + 10;
        Assert.True(chi2 <= bound, $"{label}: chi-square {chi2:F1} with {df} degrees of freedom exceeds {bound:F1}; counts [{string.Join(", ", counts)}]");
    }

    [Fact]
    public void TiesAtTheKthLogitGoToTheLowestIds()
    {
        using var b = Gpu.Backend(DType.F32);
        float[] logits = [1f, 3f, 2f, 3f, 2f, 2f, 3f, 2f, 0f];
        var tokens = Draw(b, logits, 4000, 1f, 5, 1f, seed: 3);
        var seen = tokens.ToHashSet();
        Assert.Equal(new HashSet<int> { 1, 3, 6, 2, 4 }, seen); // the three 3s, then the two lowest-id 2s
    }

    [Fact]
    public void TopPKeepsTokensWhileTheMassBeforeThemIsUnderP()
    {
        using var b = Gpu.Backend(DType.F32);
        var logits = new float[10]; // ten equal tokens of 0.1: 0.0, 0.1, 0.2, 0.3 < 0.35 are kept, 0.4 is not
        var tokens = Draw(b, logits, 4000, 1f, 0, 0.35f, seed: 4);
        Assert.Equal(new HashSet<int> { 0, 1, 2, 3 }, tokens.ToHashSet());
    }

    [Fact]
    public void LargeVocabulariesStayInsideTheTopK()
    {
        const int vocab = 32064, rows = 64, k = 50;
        using var b = Gpu.Backend(DType.BF16);
        var logits = CudaOpTests.Random(rows * vocab, 21, DType.BF16, scale: 8f);
        using var t = CudaOpTests.Put(b, logits, rows, vocab);
        var tokens = b.Sample(t, 0.8f, k, 0.95f, seed: 9, step: 1);
        for (int r = 0; r < rows; r++)
        {
            var p = HostProbabilities(logits[(r * vocab)..((r + 1) * vocab)], 0.8f, k, 0.95f);
            Assert.True(p[tokens[r]] > 0, $"row {r}: token {tokens[r]} is outside the kept set");
        }
    }

    [Fact]
    public void ASeedAndStepAlwaysGiveTheSameTokens()
    {
        using var b = Gpu.Backend(DType.BF16);
        var logits = CudaOpTests.Random(101, 5, DType.BF16, scale: 2f);
        var first = Draw(b, logits, 1000, 0.8f, 20, 0.9f, seed: 77, step: 5);
        var again = Draw(b, logits, 1000, 0.8f, 20, 0.9f, seed: 77, step: 5);
        var nextStep = Draw(b, logits, 1000, 0.8f, 20, 0.9f, seed: 77, step: 6);
        Assert.Equal(first, again);
        Assert.NotEqual(first, nextStep);
    }

    [Theory]
    [InlineData(0ul, 0ul)]
    [InlineData(0x0123456789abcdeful, 42ul)]
    [InlineData(ulong.MaxValue, ulong.MaxValue)]
    public void UniformsEqualTheHostMirror(ulong seed, ulong step)
    {
        using var b = Gpu.Backend(DType.F32);
        var device = b.SampleUniforms(1000, seed, step);
        for (int i = 0; i < device.Length; i++)
            Assert.Equal(Kernels.Philox.SampleUniform(seed, step, i), device[i]);
    }

    [Theory]
    [InlineData(DType.BF16, 1, 1)]
    [InlineData(DType.BF16, 7, 32064)]
    [InlineData(DType.F16, 33, 513)]
    [InlineData(DType.F32, 5, 4097)]
    public void ArgMaxEqualsTheHostsFirstMaximum(DType dtype, int rows, int vocab)
    {
        using var b = Gpu.Backend(dtype);
        // Coarse values so that rounding to bf16/f16 makes ties within a row.
        var logits = CudaOpTests.Random(rows * vocab, rows + vocab, dtype, scale: 4f).Select(v => MathF.Round(v * 4) / 4).ToArray();
        if (rows > 2)
        {
            Array.Fill(logits, float.NegativeInfinity, vocab, vocab);     // row 1: all -inf → 0
            logits[2 * vocab] = float.NaN;                                  // row 2: NaN ignored
        }
        using var t = CudaOpTests.Put(b, logits, rows, vocab);
        var device = b.ArgMax(t);
        for (int r = 0; r < rows; r++)
        {
            var row = logits.AsSpan(r * vocab, vocab);
            int expected = float.IsNaN(row[0]) ? Sampler.ArgMax(row[1..]) + 1 : Sampler.ArgMax(row);
            Assert.True(expected == device[r], $"row {r}: device {device[r]}, host {expected}");
        }
        Assert.Equal(device, b.Sample(t, 0f, 0, 1f, seed: 1, step: 0)); // temperature 0 is argmax
    }

    [Fact]
    public void OptionsAreValidatedLikeTheHostSampler()
    {
        using var b = Gpu.Backend(DType.F32);
        using var t = b.Allocate(1, 4);
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Sample(t, -1f, 0, 1f, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Sample(t, 1f, -1, 1f, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Sample(t, 1f, 0, 0f, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Sample(t, 1f, 0, 1.5f, 0, 0));
    }
}
