// PilResize against PIL 9.4's Image.resize(size, filter, reducing_gap=None): every filter (nearest, lanczos,
// bilinear, bicubic, box, hamming), shrinking and enlarging, one or both axes, down to 1x1. Exact equality.
using VteKernels.Imaging;
using Xunit;

namespace VteKernels.Tests.Imaging;

public sealed class PilResizeTests
{
    public static TheoryData<string, int, int, int> Cases()
    {
        var data = new TheoryData<string, int, int, int>();
        foreach (var c in ImageData.Resize.GetProperty("cases").EnumerateArray())
            data.Add(c.GetProperty("file").GetString()!, c.GetProperty("filter").GetInt32(), c.GetProperty("width").GetInt32(), c.GetProperty("height").GetInt32());
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesPilResize(string file, int filter, int width, int height)
    {
        var reference = ImageData.Resize.GetProperty("cases").EnumerateArray().Single(c =>
            c.GetProperty("file").GetString() == file && c.GetProperty("filter").GetInt32() == filter &&
            c.GetProperty("width").GetInt32() == width && c.GetProperty("height").GetInt32() == height);
        var src = ImageDecoder.Load(ImageData.PathOf(file));
        var resized = PilResize.Resize(src, width, height, (ResampleFilter)filter);
        ImageData.AssertMatches(resized, reference, $"{file} -> {width}x{height} filter {(ResampleFilter)filter}");
    }

    [Fact]
    public void SameSizeReturnsTheInput()
    {
        var src = new RgbImage(5, 4);
        Assert.Same(src, PilResize.Resize(src, 5, 4, ResampleFilter.Bicubic));
    }
}
