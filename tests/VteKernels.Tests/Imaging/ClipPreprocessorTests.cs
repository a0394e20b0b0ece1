// ClipPreprocessor against HF CLIPImageProcessor's algorithm recomputed with PIL and numpy
// (tools/reference/images/make_reference.py): float32 3xHxW compared bit for bit (SHA-256 of the bytes,
// plus sampled values for the failure message), for landscape, portrait, tiny and 1024x768 inputs, in
// CLIP mode and in LLaVA's pad-to-square mode, and for option sets that exercise crop padding, exact-size
// resizing, bilinear, and rescale/normalize switched off. Also the preprocessor_config.json reader.
using System.Runtime.InteropServices;
using System.Text.Json;
using VteKernels.Imaging;
using Xunit;

namespace VteKernels.Tests.Imaging;

public sealed class ClipPreprocessorTests
{
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var c in ImageData.Preprocess.GetProperty("cases").EnumerateArray())
            data.Add(c.GetProperty("file").GetString()!, c.GetProperty("options").GetString()!);
        return data;
    }

    // The option sets of preprocess.json, as ClipOptions.
    internal static ClipOptions Options(JsonElement o)
    {
        var size = o.GetProperty("size");
        var crop = o.GetProperty("crop_size");
        bool se = size.TryGetProperty("shortest_edge", out var s);
        return new ClipOptions
        {
            DoResize = o.GetProperty("do_resize").GetBoolean(),
            ShortestEdge = se ? s.GetInt32() : null,
            ResizeHeight = se ? null : size.GetProperty("height").GetInt32(),
            ResizeWidth = se ? null : size.GetProperty("width").GetInt32(),
            Resample = (ResampleFilter)o.GetProperty("resample").GetInt32(),
            DoCenterCrop = o.GetProperty("do_center_crop").GetBoolean(),
            CropHeight = crop.GetProperty("height").GetInt32(),
            CropWidth = crop.GetProperty("width").GetInt32(),
            DoRescale = o.GetProperty("do_rescale").GetBoolean(),
            RescaleFactor = o.GetProperty("rescale_factor").GetDouble(),
            DoNormalize = o.GetProperty("do_normalize").GetBoolean(),
            ImageMean = o.GetProperty("image_mean").EnumerateArray().Select(v => v.GetDouble()).ToArray(),
            ImageStd = o.GetProperty("image_std").EnumerateArray().Select(v => v.GetDouble()).ToArray(),
            PadToSquare = o.TryGetProperty("pad_to_square", out var p) && p.GetBoolean(),
        };
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesHfClipImageProcessor(string file, string optionSet)
    {
        var c = ImageData.Preprocess.GetProperty("cases").EnumerateArray()
            .Single(e => e.GetProperty("file").GetString() == file && e.GetProperty("options").GetString() == optionSet);
        var o = Options(ImageData.Preprocess.GetProperty("options").GetProperty(optionSet));
        var image = ImageDecoder.Load(ImageData.PathOf(file));
        var input = ClipPreprocessor.ToImageInput(image, o);
        int[] shape = [input.Channels, input.Height, input.Width];
        Assert.Equal(c.GetProperty("shape").EnumerateArray().Select(v => v.GetInt32()), shape);
        Assert.Equal(3 * input.Height * input.Width, input.Pixels.Length);

        var bad = new List<string>();
        double maxErr = 0;
        foreach (var s in c.GetProperty("samples").EnumerateArray())
        {
            int ch = s[0].GetInt32(), y = s[1].GetInt32(), x = s[2].GetInt32();
            float want = (float)HexFloat(s[3].GetString()!);
            float got = input.Pixels[(ch * input.Height + y) * input.Width + x];
            maxErr = Math.Max(maxErr, Math.Abs(got - want));
            if (got != want) bad.Add($"[{ch},{y},{x}] got {got:R} expected {want:R}");
        }
        string sha = ImageData.Sha256(MemoryMarshal.AsBytes(input.Pixels.AsSpan()));
        if (sha != c.GetProperty("sha256").GetString() || bad.Count > 0)
            Assert.Fail($"{file} {optionSet}: output differs from the reference (max sampled |error| {maxErr:E2}); " +
                        (bad.Count == 0 ? "sampled values equal" : string.Join("; ", bad.Take(8))));
    }

    // Python's float.hex(): [-]0x1.<hex>p<exp>, or 0x0.0p+0.
    private static double HexFloat(string s)
    {
        bool neg = s.StartsWith('-');
        if (neg) s = s[1..];
        int p = s.IndexOf('p', StringComparison.Ordinal);
        var mant = s[2..p];
        int exp = int.Parse(s[(p + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        int dot = mant.IndexOf('.', StringComparison.Ordinal);
        double v = Convert.ToInt64(mant[..dot], 16);
        var frac = mant[(dot + 1)..];
        for (int i = 0; i < frac.Length; i++) v += Convert.ToInt32(frac[i].ToString(), 16) * Math.Pow(16, -(i + 1));
        v = Math.ScaleB(v, exp);
        return neg ? -v : v;
    }

    [Fact]
    public void Llava15ConfigReadsAsClip336()
    {
        var o = ClipOptions.FromPreprocessorConfig(ImageData.PathOf("preprocessor_config_llava15.json"));
        Assert.Equal(336, o.ShortestEdge);
        Assert.Equal((336, 336), (o.CropHeight, o.CropWidth));
        Assert.Equal(ResampleFilter.Bicubic, o.Resample);
        Assert.Equal(1.0 / 255, o.RescaleFactor);
        Assert.Equal(ClipOptions.ClipMean, o.ImageMean);
        Assert.Equal(ClipOptions.ClipStd, o.ImageStd);
        Assert.Equal(((byte)122, (byte)116, (byte)104), o.EffectivePadColor);
        var image = ImageDecoder.Load(ImageData.PathOf("pre_wide_97x61.png"));
        Assert.Equal(ClipPreprocessor.Preprocess(image, ClipOptions.Clip336), ClipPreprocessor.Preprocess(image, o));
    }

    [Fact]
    public void OldStyleConfigWithIntegerSizes()
    {
        var o = ClipOptions.FromPreprocessorConfig(ImageData.PathOf("preprocessor_config_clip224_old.json"));
        Assert.Equal(224, o.ShortestEdge);
        Assert.Equal((224, 224), (o.CropHeight, o.CropWidth));
        Assert.True(o.DoRescale);
    }

    [Theory]
    [InlineData("size string", """{"size": "336"}""", "'size'")]
    [InlineData("size longest edge", """{"size": {"shortest_edge": 336, "longest_edge": 500}}""", "longest_edge")]
    [InlineData("size zero", """{"size": {"shortest_edge": 0}}""", "size.shortest_edge")]
    [InlineData("crop list", """{"crop_size": [336, 336]}""", "'crop_size'")]
    [InlineData("resample 9", """{"resample": 9}""", "'resample'")]
    [InlineData("mean of 2", """{"image_mean": [0.5, 0.5]}""", "'image_mean'")]
    [InlineData("flag string", """{"do_resize": "yes"}""", "'do_resize'")]
    [InlineData("not json", """{"size": 336""", "not valid JSON")]
    [InlineData("array", """[1, 2]""", "not a JSON object")]
    // Sizes far past any processor were accepted and failed later inside Preprocess, PilResize or RgbImage with
    // OverflowException, ArgumentOutOfRangeException or OutOfMemoryException: now each is refused at load.
    [InlineData("shortest edge 1e9", """{"size": {"shortest_edge": 1000000000}}""", "ShortestEdge 1000000000 is outside 1..4096")]
    [InlineData("int size 2^31-1", """{"size": 2147483647}""", "ShortestEdge 2147483647 is outside 1..4096")]
    [InlineData("resize height 1e6", """{"size": {"height": 1000000, "width": 2}}""", "ResizeHeight 1000000 is outside 1..4096")]
    [InlineData("resize width 5000", """{"size": {"height": 2, "width": 5000}}""", "ResizeWidth 5000 is outside 1..4096")]
    [InlineData("crop 1e9", """{"crop_size": 1000000000}""", "CropHeight 1000000000 is outside 1..4096")]
    [InlineData("crop width 1e5", """{"crop_size": {"height": 2, "width": 100000}}""", "CropWidth 100000 is outside 1..4096")]
    [InlineData("std 1e308", """{"image_std": [1e308, 1, 1]}""", "ImageStd has a value that is not finite")]
    [InlineData("std zero", """{"image_std": 0}""", "ImageStd has a zero")]
    [InlineData("mean 1e400", """{"image_mean": 1e400}""", "'image_mean'")]
    [InlineData("rescale 1e400", """{"rescale_factor": 1e400}""", "'rescale_factor'")]
    public void BadConfigsAreClearErrors(string label, string json, string expected)
    {
        using var dir = new TempDir();
        var path = dir.File("preprocessor_config.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<ModelFormatException>(() => ClipOptions.FromPreprocessorConfig(path));
        Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"{label}: {e.Message}");
        Assert.Contains("preprocessor_config.json", e.Message);
    }

    [Fact]
    public void PadToSquareCentresOnTheMeanColour()
    {
        var src = new RgbImage(4, 2, Enumerable.Repeat((byte)200, 24).ToArray());
        var sq = ClipPreprocessor.ExpandToSquare(src, ClipOptions.Clip336.EffectivePadColor);
        Assert.Equal((4, 4), (sq.Width, sq.Height));
        Assert.Equal([122, 116, 104], sq[0, 0].ToArray());
        Assert.Equal([200, 200, 200], sq[0, 1].ToArray());
        Assert.Equal([200, 200, 200], sq[3, 2].ToArray());
        Assert.Equal([122, 116, 104], sq[3, 3].ToArray());
    }

    [Theory]
    [InlineData(1024, 768, 336, 448)]
    [InlineData(768, 1024, 448, 336)]
    [InlineData(333, 517, 521, 336)]
    [InlineData(1, 1, 336, 336)]
    [InlineData(7, 3, 336, 784)]
    public void ResizeSizeFollowsShortestEdge(int w, int h, int wantH, int wantW)
    {
        var o = ClipOptions.Clip336 with { DoCenterCrop = false };
        Assert.Equal((wantH, wantW), ClipPreprocessor.OutputSize(w, h, o));
    }

    [Fact]
    public void InvalidOptionsAreArgumentErrors()
    {
        var img = new RgbImage(2, 2);
        Assert.Throws<ArgumentException>(() => ClipPreprocessor.Preprocess(img, ClipOptions.Clip336 with { ImageStd = [1, 0, 1] }));
        Assert.Throws<ArgumentException>(() => ClipPreprocessor.Preprocess(img, ClipOptions.Clip336 with { CropHeight = 0 }));
        Assert.Throws<ArgumentException>(() => ClipPreprocessor.Preprocess(img, ClipOptions.Clip336 with { ShortestEdge = null }));
        Assert.Throws<ArgumentException>(() => ClipPreprocessor.Preprocess(img, ClipOptions.Clip336 with { ImageMean = [0.5] }));
    }

    // Legal options on an image of an absurd aspect ratio: the resized image or the filter tables would not fit
    // in memory (an OverflowException or OutOfMemoryException before); a typed error before anything is allocated.
    [Theory]
    [InlineData(1, 60_000, 4096, null, null, "more than the 67108864 allowed")]
    [InlineData(60_000, 1, 4096, null, null, "more than the 67108864 allowed")]
    [InlineData(20_000_000, 1, null, 1, 1, "filter weights, more than the 67108864 allowed")]
    [InlineData(1, 100_000, null, 4096, 4096, "needs an image of 409600000 pixels")]
    public void AbsurdResizesAreInvalidInput(int w, int h, int? shortest, int? rh, int? rw, string expected)
    {
        var img = new RgbImage(w, h);
        var o = ClipOptions.Clip336 with { ShortestEdge = shortest, ResizeHeight = rh, ResizeWidth = rw, DoCenterCrop = false };
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<InvalidInputException>(() => ClipPreprocessor.Preprocess(img, o));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
        Assert.Contains(expected, e.Message);
    }
}
