// The host mirror of the sampler's generator against Random123's published known-answer vectors for
// Philox4x32-10 (tests/kat_vectors of the Random123 distribution), and the layout of the uniforms the
// kernel draws. The kernel's own output is compared with this mirror in CudaSamplingTests (GPU).
using VteKernels.Cuda.Kernels;
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class PhiloxTests
{
    public static TheoryData<uint[], uint[], uint[]> KnownAnswers() => new()
    {
        { [0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8] },
        { [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd] },
        { [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1] },
    };

    [Theory, MemberData(nameof(KnownAnswers))]
    public void MatchesRandom123(uint[] counter, uint[] key, uint[] expected)
    {
        var (x0, x1, x2, x3) = Philox.Philox4x32_10(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
        Assert.Equal(expected, new[] { x0, x1, x2, x3 });
    }

    [Fact]
    public void UniformsUse53BitsOfTheFirstTwoWords()
    {
        var (x0, x1, _, _) = Philox.Philox4x32_10(5, 0, 3, 0, 0x2a, 0);
        double expected = ((ulong)(x0 >> 5) * 67108864ul + (x1 >> 6)) / 9007199254740992.0;
        Assert.Equal(expected, Philox.SampleUniform(seed: 0x2a, offset: 5, row: 3));
    }

    [Fact]
    public void UniformsAreUniform()
    {
        const int n = 100_000, bins = 20;
        var counts = new int[bins];
        for (int i = 0; i < n; i++)
        {
            double u = Philox.SampleUniform(seed: 1234, offset: (ulong)(i / 7), row: i % 7);
            Assert.InRange(u, 0.0, 1.0 - 1e-17);
            counts[(int)(u * bins)]++;
        }
        double chi2 = counts.Sum(c => Math.Pow(c - n / (double)bins, 2) / (n / (double)bins));
        Assert.True(chi2 < 50, $"chi-square {chi2:F1} over {bins} bins"); // p ≈ 1e-4 for 19 degrees of freedom
    }
}
