// `vte preprocess`: decode an image file and write what the engine would see, as .npy:
//   decode        uint8 [H, W, 3], PIL's Image.open(f).convert("RGB");
//   clip336       float32 [3, H, W], HF CLIPImageProcessor (shortest edge 336, bicubic, center crop 336,
//                 rescale, CLIP mean/std), the llava-hf pipeline;
//   llava-pad336  the same after LLaVA-1.5's expand2square onto the mean colour (122, 116, 104).
// With --model DIR the CLIP options come from DIR/preprocessor_config.json (its sizes replace 336); a model
// directory without one (the synthetic models) gets CLIP's defaults at its vision tower's image_size, and the
// summary line says so. The float output feeds `vte forward --pixels` directly.
using System.CommandLine;
using System.Diagnostics;
using VteKernels.Formats;
using VteKernels.Imaging;
using VteKernels.Models;

namespace VteKernels.Cli;

internal static class PreprocessCommand
{
    public static Command Create(TextWriter stdout)
    {
        var image = new Option<string>("--image", "-i") { Description = $"Image file: {ImageDecoder.SupportedFormats}", Required = true };
        var mode = new Option<string>("--mode") { Description = "decode (uint8 HxWx3), clip336 (float32 3xHxW, HF CLIPImageProcessor) or llava-pad336 (pad to square first, as LLaVA-1.5)", DefaultValueFactory = _ => "clip336" };
        mode.AcceptOnlyFromAmong("decode", "clip336", "llava-pad336");
        var model = new Option<string>("--model", "-m") { Description = "Model directory whose preprocessor_config.json (or vision image_size) sets the CLIP options" };
        var exif = new Option<bool>("--exif-orientation") { Description = "Rotate/flip by the EXIF Orientation tag (ImageOps.exif_transpose); off by default, as PIL's Image.open" };
        var output = new Option<string>("--out", "-o") { Description = "Where to write the .npy", Required = true };
        var cmd = new Command("preprocess", "Decode an image and write the model's pixel input (or the decoded RGB) as .npy") { image, mode, model, exif, output };
        cmd.SetAction(p => Run(p.GetValue(image)!, p.GetValue(mode)!, p.GetValue(model), p.GetValue(exif), p.GetValue(output)!, stdout));
        return cmd;
    }

    private static int Run(string imagePath, string mode, string? modelDir, bool exif, string outPath, TextWriter o)
    {
        if (mode == "decode" && modelDir is not null) throw new UsageException("--model has no effect with --mode decode (it sets the CLIP options)");
        var clock = Stopwatch.StartNew();
        var bytes = File.Exists(imagePath) ? File.ReadAllBytes(imagePath) : throw new UsageException($"image file '{imagePath}' does not exist");
        string format = ImageDecoder.DetectFormat(bytes) ?? "image";
        RgbImage img;
        try { img = ImageDecoder.Decode(bytes, new DecodeOptions(ApplyExifOrientation: exif)); }
        catch (ImageFormatException e) { throw e.WithFile(imagePath); }
        var decodeMs = clock.Elapsed.TotalMilliseconds;
        string name = Path.GetFileName(imagePath);

        if (mode == "decode")
        {
            Npy.WriteUInt8(outPath, img.Pixels, [img.Height, img.Width, 3]);
            o.WriteLine($"{name}: {format} {img.Width}x{img.Height} -> uint8 [{img.Height}, {img.Width}, 3] in {outPath} (decode {decodeMs:F1} ms)");
            return 0;
        }

        var (options, source) = Options(modelDir);
        options = options with { PadToSquare = mode == "llava-pad336" };
        var input = ClipPreprocessor.ToImageInput(img, options);
        var totalMs = clock.Elapsed.TotalMilliseconds;
        Npy.Write(outPath, input.Pixels, [input.Channels, input.Height, input.Width]);
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (var v in input.Pixels)
        {
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }
        o.WriteLine($"{name}: {format} {img.Width}x{img.Height} -> {mode} ({source}) float32 [{input.Channels}, {input.Height}, {input.Width}], " +
                    $"range {min:F3}..{max:F3}, in {outPath} (decode {decodeMs:F1} ms, preprocess {totalMs - decodeMs:F1} ms)");
        return 0;
    }

    private static (ClipOptions Options, string Source) Options(string? modelDir)
    {
        if (modelDir is null) return (ClipOptions.Clip336, "CLIP-336 defaults");
        if (!Directory.Exists(modelDir)) throw new UsageException($"model directory '{modelDir}' does not exist");
        var pre = Path.Combine(modelDir, "preprocessor_config.json");
        if (File.Exists(pre)) return (ClipOptions.FromPreprocessorConfig(pre), "preprocessor_config.json");
        var cfgPath = Path.Combine(modelDir, "config.json");
        if (!File.Exists(cfgPath))
            throw new UsageException($"model directory '{modelDir}' has neither preprocessor_config.json nor config.json");
        int size = LlavaConfig.Load(cfgPath).Vision.ImageSize;
        return (ClipOptions.Clip336 with { ShortestEdge = size, CropHeight = size, CropWidth = size },
                $"no preprocessor_config.json: CLIP defaults at the vision image_size {size}");
    }
}
