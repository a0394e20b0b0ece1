// CpuOps.Embedding (exact: widening is lossless, so the rows must equal the stored values bit for bit) and
// CpuOps.PatchEmbed against a direct float64 convolution loop (kernel = stride = patch), which shares
// nothing with the im2col + Linear route the op takes.
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public class EmbeddingTests
{
    public static TheoryData<int, int, int, DType, int> EmbeddingCases()
    {
        var data = new TheoryData<int, int, int, DType, int>();
        (int Vocab, int Dim, int Tokens)[] shapes = [(1, 1, 1), (7, 5, 9), (33, 64, 33), (577, 33, 3)];
        int seed = 1;
        foreach (var (vocab, dim, tokens) in shapes)
            foreach (var dtype in OpsTestData.AllDTypes)
                data.Add(vocab, dim, tokens, dtype, seed++);
        return data;
    }

    [Theory, MemberData(nameof(EmbeddingCases))]
    public void EmbeddingCopiesTheStoredRows(int vocab, int dim, int tokens, DType dtype, int seed)
    {
        var (table, stored) = OpsTestData.RandomWeight("embed", dtype, seed, 1f, 0f, vocab, dim);
        var rng = new Random(seed);
        var ids = new int[tokens];
        for (int i = 0; i < tokens; i++) ids[i] = rng.Next(vocab);
        ids[0] = vocab - 1;
        if (tokens > 1) ids[^1] = 0;
        var y = OpsTestData.Poisoned(tokens * dim);

        CpuOps.Embedding(table, ids, y);

        var expected = new double[tokens * dim];
        for (int i = 0; i < tokens; i++)
            Array.Copy(stored, ids[i] * dim, expected, i * dim, dim);
        Tolerance.AssertClose(y, expected, 0, 0, $"Embedding vocab={vocab} dim={dim} tokens={tokens} {dtype} seed={seed}");
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(7)]
    [InlineData(int.MaxValue)]
    public void EmbeddingRejectsIdsOutsideTheVocabularyBeforeWriting(int badId)
    {
        var (table, _) = OpsTestData.RandomWeight("embed", DType.BF16, 1, 1f, 0f, 7, 4);
        var y = OpsTestData.Poisoned(3 * 4);
        var e = Assert.Throws<InvalidInputException>(() => CpuOps.Embedding(table, [1, badId, 2], y));
        Assert.Contains(badId.ToString(), e.Message);
        Assert.Contains("7", e.Message);
        Assert.All(y, v => Assert.True(float.IsNaN(v)));
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.Embedding(table, [1, 2], new float[7])).ParamName);
    }

    public static TheoryData<int, int, int, int, int, DType, int> PatchCases()
    {
        var data = new TheoryData<int, int, int, int, int, DType, int>();
        (int C, int H, int W, int Patch, int D)[] shapes = [(1, 1, 1, 1, 1), (1, 4, 6, 2, 3), (2, 9, 9, 3, 8), (3, 14, 28, 14, 5), (3, 42, 28, 14, 17), (3, 56, 42, 14, 33), (1, 20, 20, 2, 7)];
        int seed = 1;
        foreach (var (c, h, w, p, d) in shapes)
            foreach (var dtype in OpsTestData.AllDTypes)
                data.Add(c, h, w, p, d, dtype, seed++);
        return data;
    }

    [Theory, MemberData(nameof(PatchCases))]
    public void PatchEmbedMatchesDirectConvolution(int channels, int height, int width, int patch, int d, DType dtype, int seed)
    {
        var (conv, wv) = OpsTestData.RandomWeight("patch_embedding", dtype, seed, 1f, 0f, d, channels, patch, patch);
        var pixels = OpsTestData.RandomFloats(channels * height * width, seed + 100, scale: 2f);
        int gh = height / patch, gw = width / patch;
        var y = OpsTestData.Poisoned(gh * gw * d);

        CpuOps.PatchEmbed(pixels, channels, height, width, patch, conv, y);

        var expected = new double[gh * gw * d];
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++)
                for (int o = 0; o < d; o++)
                {
                    double s = 0;
                    for (int c = 0; c < channels; c++)
                        for (int ky = 0; ky < patch; ky++)
                            for (int kx = 0; kx < patch; kx++)
                                s += pixels[(c * height + py * patch + ky) * width + px * patch + kx]
                                     * wv[((o * channels + c) * patch + ky) * patch + kx];
                    expected[(py * gw + px) * d + o] = s;
                }
        // A dot product of channels·patch² terms (588 for CLIP) of magnitude <= 2; measured max |error| 5.5e-6
        // at 588 terms (the bound there is 1.5e-4).
        Tolerance.AssertClose(y, expected, atol: 6e-6 * Math.Sqrt(channels * patch * patch), rtol: 1e-6,
            $"PatchEmbed [{channels},{height},{width}] patch={patch} d={d} {dtype} seed={seed}");
    }

    [Fact]
    public void PatchEmbedRejectsSizesThatAreNotMultiplesOfThePatch()
    {
        var (conv, _) = OpsTestData.RandomWeight("conv", DType.F32, 1, 1f, 0f, 2, 1, 2, 2);
        Assert.Equal("height", Assert.Throws<ArgumentException>(() => CpuOps.PatchEmbed(new float[3 * 4], 1, 3, 4, 2, conv, new float[4])).ParamName);
        Assert.Equal("width", Assert.Throws<ArgumentException>(() => CpuOps.PatchEmbed(new float[4 * 5], 1, 4, 5, 2, conv, new float[8])).ParamName);
        Assert.Equal("conv", Assert.Throws<ArgumentException>(() => CpuOps.PatchEmbed(new float[2 * 4 * 4], 2, 4, 4, 2, conv, new float[8])).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => CpuOps.PatchEmbed(new float[4 * 4], 1, 4, 4, 2, conv, new float[7])).ParamName);
    }
}
