// Q8_0 and Q4_0 rows interleaved by sixteens (BlockInterleave.cs): the bytes where the layout says, the same values read
// back by every row reader, and the CPU backend's uploads taking the layout where the int8 kernels run.
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public sealed class BlockInterleaveTests
{
    [Theory]
    [InlineData(16, 32, DType.Q4_0)]
    [InlineData(29, 224, DType.Q4_0)]
    [InlineData(45, 4128, DType.Q4_0)]
    [InlineData(16, 32, DType.Q8_0)]
    [InlineData(29, 224, DType.Q8_0)]
    [InlineData(45, 4128, DType.Q8_0)]
    public void BytesLieWhereTheLayoutSaysAndRowsReadBackTheSame(int rows, int k, DType dtype)
    {
        Assert.SkipUnless(CpuOps.Int8DotSupported, "rows are interleaved only where the int8 decode kernels run (AVX2)");
        var (w, _) = OpsTestData.RandomWeight("w", dtype, rows + k, 1f, 0f, rows, k);
        var plain = w.Bytes.ToArray();
        var interleaved = CpuWeights.Interleave(w, inPlace: false, threads: 0);
        Assert.True(interleaved.Interleaved);
        Assert.Equal(w.ByteLength, interleaved.ByteLength);
        var bytes = interleaved.Bytes.ToArray();
        int blockBytes = BlockQuant.BlockBytes(dtype), chunks = (blockBytes - 2) / 4;
        const int G = 16;   // the layout's rows per group, written out: the test checks the constant too
        Assert.Equal(G, BlockInterleave.GroupRows);
        int blocks = k / 32, rowBytes = blocks * blockBytes, groups = rows / G;
        for (int g = 0; g < groups; g++)
            for (int b = 0; b < blocks; b++)
            {
                int at = g * G * rowBytes + b * G * blockBytes;
                for (int l = 0; l < G; l++)
                {
                    int from = (g * G + l) * rowBytes + b * blockBytes;
                    Assert.Equal(plain[from], bytes[at + 2 * l]);
                    Assert.Equal(plain[from + 1], bytes[at + 2 * l + 1]);
                    for (int c = 0; c < chunks; c++)
                        for (int t = 0; t < 4; t++)
                            Assert.Equal(plain[from + 2 + 4 * c + t], bytes[at + 2 * G + 4 * G * c + 4 * l + t]);
                }
            }
        // Rows after the last whole group stay as ggml stores them.
        Assert.Equal(plain.AsSpan(groups * G * rowBytes).ToArray(), bytes.AsSpan(groups * G * rowBytes).ToArray());

        Assert.Equal(w.ToFloatArray(), interleaved.ToFloatArray());
        var one = new float[k];
        var expected = new float[k];
        for (int r = 0; r < rows; r++)
        {
            interleaved.RowsToFloat(r, one);
            w.RowsToFloat(r, expected);
            Assert.Equal(expected, one);
        }
        Assert.Throws<InvalidOperationException>(() => interleaved.RowBytes(0).Length);
        if (rows > groups * G) Assert.Equal(w.RowBytes(rows - 1).ToArray(), interleaved.RowBytes(rows - 1).ToArray());
    }

    [Theory]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q8_0)]
    public void InPlaceGivesTheSameBytesAsACopy(DType dtype)
    {
        Assert.SkipUnless(CpuOps.Int8DotSupported, "rows are interleaved only where the int8 decode kernels run (AVX2)");
        var (a, _) = OpsTestData.RandomWeight("a", dtype, 3, 1f, 0f, 21, 96);
        var (b, _) = OpsTestData.RandomWeight("b", dtype, 3, 1f, 0f, 21, 96);
        var copy = CpuWeights.Interleave(a, inPlace: false, threads: 0);
        var inPlace = CpuWeights.Interleave(b, inPlace: true, threads: 1);
        Assert.Equal(copy.Bytes.ToArray(), inPlace.Bytes.ToArray());
        Assert.Equal(a.ToFloatArray(), inPlace.ToFloatArray());
    }

    [Fact]
    public void OnlyBlockMatricesOfAGroupOrMoreAreInterleaved()
    {
        var (bf16, _) = OpsTestData.RandomWeight("bf16", DType.BF16, 4, 1f, 0f, 16, 64);
        var (small, _) = OpsTestData.RandomWeight("small", DType.Q4_0, 4, 1f, 0f, 15, 64);
        Assert.False(CpuWeights.CanInterleave(bf16));
        Assert.False(CpuWeights.CanInterleave(small));
        Assert.Throws<ArgumentException>(() => CpuWeights.Interleave(bf16, inPlace: false, threads: 0));
    }

    [Fact]
    public void TheBackendInterleavesLanguageModelBlockMatricesOnly()
    {
        Assert.SkipUnless(CpuOps.Int8DotSupported, "rows are interleaved only where the int8 decode kernels run (AVX2)");
        var (f32, _) = OpsTestData.RandomWeight("f", DType.F32, 5, 1f, 0f, 24, 64);
        var (q4, _) = OpsTestData.RandomWeight("q", DType.Q4_0, 6, 1f, 0f, 24, 64);
        var quantizing = new CpuBackend(new CpuBackendOptions { Quantize = DType.Q4_0 });
        Assert.True(quantizing.UploadLinear(f32, LinearRole.LanguageModel).Source.Interleaved);
        Assert.False(quantizing.UploadLinear(f32, LinearRole.Vision).Source.Interleaved);
        var plain = new CpuBackend();
        var fromFile = plain.UploadLinear(q4, LinearRole.LanguageModel).Source;
        Assert.True(fromFile.Interleaved);
        Assert.False(q4.Interleaved);
        Assert.Equal(q4.ToFloatArray(), fromFile.ToFloatArray());
    }
}
