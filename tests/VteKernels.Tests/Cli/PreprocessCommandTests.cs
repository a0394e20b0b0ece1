// `vte preprocess` run in-process: decode writes PIL's RGB as uint8 .npy; clip336 and llava-pad336 write the
// HF-exact float32 tensors; --model takes the sizes from preprocessor_config.json (or the vision image_size);
// the output feeds `vte forward --pixels`; mistakes are one "error:" line with exit code 2.
using System.Runtime.InteropServices;
using System.Text;
using VteKernels.Cli;
using VteKernels.Formats;
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Tests.Imaging;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class PreprocessCommandTests
{
    private static string ReferenceSha(string file, string options) =>
        ImageData.Preprocess.GetProperty("cases").EnumerateArray()
            .Single(c => c.GetProperty("file").GetString() == file && c.GetProperty("options").GetString() == options)
            .GetProperty("sha256").GetString()!;

    [Theory]
    [InlineData("jpg_420_333x517.jpg")]
    [InlineData("png_pal4_adam7.png")]
    [InlineData("bmp_24_topdown.bmp")]
    public void DecodeWritesUInt8Hwc(string file)
    {
        using var dir = new TempDir();
        var outPath = dir.File("rgb.npy");
        var r = Vte("preprocess", "--image", ImageData.PathOf(file), "--mode", "decode", "--out", outPath);
        Assert.True(r.Code == 0, r.Err);
        var img = ImageDecoder.Load(ImageData.PathOf(file));
        Assert.Contains($"{img.Width}x{img.Height} -> uint8 [{img.Height}, {img.Width}, 3]", r.Out);
        var bytes = File.ReadAllBytes(outPath);
        int headerLen = BitConverter.ToUInt16(bytes, 8);
        var header = Encoding.Latin1.GetString(bytes, 10, headerLen);
        Assert.StartsWith($"{{'descr': '|u1', 'fortran_order': False, 'shape': ({img.Height}, {img.Width}, 3), }}", header);
        Assert.Equal(0, (10 + headerLen) % 64);
        Assert.Equal(img.Pixels, bytes[(10 + headerLen)..]);
        ImageData.AssertMatches(img, ImageData.DecodeEntry(file), file);
    }

    [Theory]
    [InlineData("scene_1024x768.jpg", "clip336", "clip336")]
    [InlineData("scene_1024x768.jpg", "llava-pad336", "clip336_pad")]
    [InlineData("pre_tall_50x83.png", "llava-pad336", "clip336_pad")]
    public void ClipModesMatchTheHfReference(string file, string mode, string referenceOptions)
    {
        using var dir = new TempDir();
        var outPath = dir.File("pixels.npy");
        var r = Vte("preprocess", "-i", ImageData.PathOf(file), "--mode", mode, "-o", outPath);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("float32 [3, 336, 336]", r.Out);
        var a = Npy.ReadFloat32(outPath);
        Assert.Equal([3, 336, 336], a.Shape);
        Assert.Equal(ReferenceSha(file, referenceOptions), ImageData.Sha256(MemoryMarshal.AsBytes(a.Data.AsSpan())));
    }

    [Fact]
    public void ModelPreprocessorConfigSetsTheSizes()
    {
        using var dir = new TempDir();
        var model = Path.Combine(dir.Path, "model");
        Directory.CreateDirectory(model);
        var json = File.ReadAllText(ImageData.PathOf("preprocessor_config_llava15.json")).Replace("336", "224", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(model, "preprocessor_config.json"), json);
        var outPath = dir.File("pixels.npy");
        var r = Vte("preprocess", "-i", ImageData.PathOf("pre_wide_97x61.png"), "-m", model, "-o", outPath);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("(preprocessor_config.json) float32 [3, 224, 224]", r.Out);
        var want = ClipPreprocessor.Preprocess(ImageDecoder.Load(ImageData.PathOf("pre_wide_97x61.png")),
            ClipOptions.Clip336 with { ShortestEdge = 224, CropHeight = 224, CropWidth = 224 });
        Assert.Equal(want, Npy.ReadFloat32(outPath).Data);
    }

    // preprocess -> forward on the synthetic model: the .npy is the engine's pixel input as is; without a
    // preprocessor_config.json the vision image_size sets the sizes and gives the same tensor.
    [Fact]
    public void OutputFeedsForward()
    {
        var model = TestModels.CopyOf(TestModels.Tiny());
        var cfg = LlavaConfig.Load(Path.Combine(model, "config.json"));
        int size = cfg.Vision.ImageSize;
        var pixels = Path.Combine(model, "pixels.npy");
        var r = Vte("preprocess", "-i", ImageData.PathOf("jpg_420_base_61x37.jpg"), "--mode", "llava-pad336", "-m", model, "-o", pixels);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains($"float32 [3, {size}, {size}]", r.Out);

        File.Delete(Path.Combine(model, "preprocessor_config.json"));
        var again = Path.Combine(model, "pixels2.npy");
        var r2 = Vte("preprocess", "-i", ImageData.PathOf("jpg_420_base_61x37.jpg"), "--mode", "llava-pad336", "-m", model, "-o", again);
        Assert.True(r2.Code == 0, r2.Err);
        Assert.Contains($"vision image_size {size}", r2.Out);
        Assert.Equal(Npy.ReadFloat32(pixels).Data, Npy.ReadFloat32(again).Data);

        var ids = TestModels.PromptIds(cfg, 3);
        var fwd = Vte("forward", "-m", model, "--input-ids", string.Join(",", ids), "--pixels", pixels, "--out", Path.Combine(model, "logits.npy"));
        Assert.True(fwd.Code == 0, fwd.Err);
    }

    [Fact]
    public void ExifOrientationIsOptIn()
    {
        using var dir = new TempDir();
        var plain = Vte("preprocess", "-i", ImageData.PathOf("jpg_exif6.jpg"), "--mode", "decode", "-o", dir.File("a.npy"));
        var turned = Vte("preprocess", "-i", ImageData.PathOf("jpg_exif6.jpg"), "--mode", "decode", "--exif-orientation", "-o", dir.File("b.npy"));
        Assert.Contains("40x24", plain.Out);
        Assert.Contains("24x40", turned.Out);
    }

    [Fact]
    public void MistakesAreOneErrorLine()
    {
        using var dir = new TempDir();
        var broken = dir.File("broken.jpg");
        File.WriteAllBytes(broken, ImageData.Bytes("jpg_420_base_61x37.jpg")[..300]);
        AssertUserError(Vte("preprocess", "-i", broken, "-o", dir.File("x.npy")), "broken.jpg: JPEG: ");
        AssertUserError(Vte("preprocess", "-i", dir.File("missing.png"), "-o", dir.File("x.npy")), "does not exist");
        AssertUserError(Vte("preprocess", "-i", ImageData.PathOf("ppm_pil.ppm"), "--mode", "resize", "-o", dir.File("x.npy")), "resize");
        AssertUserError(Vte("preprocess", "-i", ImageData.PathOf("ppm_pil.ppm"), "--mode", "decode", "-m", dir.Path, "-o", dir.File("x.npy")), "--model has no effect");
        AssertUserError(Vte("preprocess", "-i", ImageData.PathOf("ppm_pil.ppm"), "-m", dir.File("nomodel"), "-o", dir.File("x.npy")), "does not exist");
        File.WriteAllText(dir.File("preprocessor_config.json"), """{"crop_size": "big"}""");
        AssertUserError(Vte("preprocess", "-i", ImageData.PathOf("ppm_pil.ppm"), "-m", dir.Path, "-o", dir.File("x.npy")), "'crop_size' must be");
    }
}
