// `vte preprocess`: decode an image file and write what the engine would see, as .npy:
//   decode        uint8 [H, W, 3], PIL's Image.open(f).convert("RGB");
//   clip336       float32 [3, H, W], HF CLIPImageProcessor (shortest edge 336, bicubic, center crop 336,
//                 rescale, CLIP mean/std), the llava-hf pipeline;
//   llava-pad336  the same after LLaVA-1.5's expand2square onto the mean colour (122, 116, 104);
//   anyres        float32 [tiles, 3, S, S], LLaVA-NeXT's LlavaNextImageProcessor (base image + grid tiles);
//   model         (the default with --model DIR when DIR has a config.json) what that model's vision tower
//                 receives, by its family: clip336 at its sizes for LLaVA-1.5, anyres for LLaVA-NeXT.
// With --model DIR the options come from DIR/preprocessor_config.json (its sizes replace 336; anyres also reads
// its pinpoints and config.json's); a model directory without one (the synthetic models) gets CLIP's defaults at
// its vision tower's image_size, and the summary line says so. The summary names the image's size (H,W, what
// `vte forward --image-sizes` takes) and, with a model, the prompt tokens the image fills. The float output
// feeds `vte forward --pixels` directly.
using System.CommandLine;
using System.Diagnostics;
using VteKernels.Engine;
using VteKernels.Families.LlavaNext;
using VteKernels.Formats;
using VteKernels.Imaging;
using VteKernels.Models;

namespace VteKernels.Cli;

internal static class PreprocessCommand
{
    public static Command Create(TextWriter stdout)
    {
        var image = new Option<string>("--image", "-i") { Description = $"Image file: {ImageDecoder.SupportedFormats}", Required = true };
        var mode = new Option<string>("--mode")
        {
            Description = "decode (uint8 HxWx3), clip336 (float32 3xHxW, HF CLIPImageProcessor), llava-pad336 (pad to square first, as LLaVA-1.5), " +
                          "anyres (float32 tiles x3xSxS, LLaVA-NeXT) or model (the model's own family; the default with --model). Without --model: clip336",
        };
        mode.AcceptOnlyFromAmong("decode", "clip336", "llava-pad336", "anyres", "model");
        var model = new Option<string>("--model", "-m") { Description = "Model directory whose family, preprocessor_config.json (or vision image_size) set the options" };
        var exif = new Option<bool>("--exif-orientation") { Description = "Rotate/flip by the EXIF Orientation tag (ImageOps.exif_transpose); off by default, as PIL's Image.open" };
        var output = new Option<string>("--out", "-o") { Description = "Where to write the .npy", Required = true };
        var cmd = new Command("preprocess", "Decode an image and write the model's pixel input (or the decoded RGB) as .npy") { image, mode, model, exif, output };
        cmd.SetAction(p => Run(p.GetValue(image)!, p.GetValue(mode), p.GetValue(model), p.GetValue(exif), p.GetValue(output)!, stdout));
        return cmd;
    }

    private static int Run(string imagePath, string? mode, string? modelDir, bool exif, string outPath, TextWriter o)
    {
        if (mode == "decode" && modelDir is not null) throw new UsageException("--model has no effect with --mode decode (it sets the CLIP options)");
        if (modelDir is not null && !Directory.Exists(modelDir)) throw new UsageException($"model directory '{modelDir}' does not exist");
        var cfgPath = modelDir is null ? null : Path.Combine(modelDir, "config.json");
        if (mode == "model" && (cfgPath is null || !File.Exists(cfgPath))) throw new UsageException("--mode model needs --model DIR with a config.json");
        mode ??= cfgPath is not null && File.Exists(cfgPath) ? "model" : "clip336";

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

        var (preprocessor, source, cfg) = Preprocessor(mode, modelDir);
        var input = preprocessor.Preprocess(img);
        var totalMs = clock.Elapsed.TotalMilliseconds;
        // One tile is written [3, H, W] (as LLaVA-1.5's tower takes it); anyres tiles [tiles, 3, S, S].
        int[] shape = input.Tiles == 1 && mode != "anyres" && cfg?.Family is not LlavaNextFamily
            ? [input.Channels, input.Height, input.Width] : [input.Tiles, input.Channels, input.Height, input.Width];
        Npy.Write(outPath, input.Pixels, shape);
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (var v in input.Pixels)
        {
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }
        string tokens = cfg is null ? "" : $"; {cfg.Family.TokenCount(cfg, input)} prompt tokens for {cfg.Family.DisplayName}";
        o.WriteLine($"{name}: {format} {img.Width}x{img.Height} -> {(mode == "model" ? cfg!.Family.ModelType : mode)} ({source}) float32 [{string.Join(", ", shape)}], " +
                    $"range {min:F3}..{max:F3}, in {outPath} (decode {decodeMs:F1} ms, preprocess {totalMs - decodeMs:F1} ms)");
        o.WriteLine($"image size {img.Height},{img.Width} (height,width: forward --image-sizes){tokens}");
        return 0;
    }

    /// <summary>The preprocessor of <paramref name="mode"/>, where its settings came from, and the model's config when one was read.</summary>
    private static (ImagePreprocessor Preprocessor, string Source, LlavaConfig? Config) Preprocessor(string mode, string? modelDir)
    {
        var cfgPath = modelDir is null ? null : Path.Combine(modelDir, "config.json");
        var cfg = cfgPath is not null && File.Exists(cfgPath) ? LlavaConfig.Load(cfgPath) : null;
        var pre = modelDir is null ? null : Path.Combine(modelDir, "preprocessor_config.json");
        if (pre is not null && !File.Exists(pre)) pre = null;
        switch (mode)
        {
            case "model":
                var p = MultimodalPrompt.PreprocessorFor(modelDir!, cfg!, pad: false);
                return (p, pre is null ? $"no preprocessor_config.json: CLIP defaults at the vision image_size {cfg!.Vision.ImageSize}" : "preprocessor_config.json", cfg);
            case "anyres":
                if (cfg?.Family is LlavaNextFamily next) return (next.CreatePreprocessor(cfg, pre, padToSquare: false), pre is null ? "config.json's pinpoints, CLIP defaults" : "preprocessor_config.json", cfg);
                if (cfg is not null) throw new UsageException($"--mode anyres: {modelDir} is a {cfg.Family.DisplayName} model (model_type {cfg.Family.ModelType}), which takes one CLIP tile; use --mode model");
                var anyres = pre is null ? new AnyResOptions(ClipOptions.Clip336, LlavaNextFamily.DefaultPinpoints)
                    : AnyResOptions.FromPreprocessorConfig(pre, LlavaNextFamily.DefaultPinpoints);
                return (new AnyResPreprocessor(anyres, anyres.TileSize), pre is null ? "llava-v1.6 defaults: 336px tiles, its five pinpoints" : "preprocessor_config.json", null);
            default:
                var (options, source) = ClipSettings(modelDir, cfg);
                options = options with { PadToSquare = mode == "llava-pad336" };
                return (new ClipImagePreprocessor(options, towerSize: null), source, null);
        }
    }

    private static (ClipOptions Options, string Source) ClipSettings(string? modelDir, LlavaConfig? cfg)
    {
        if (modelDir is null) return (ClipOptions.Clip336, "CLIP-336 defaults");
        var pre = Path.Combine(modelDir, "preprocessor_config.json");
        if (File.Exists(pre)) return (ClipOptions.FromPreprocessorConfig(pre), "preprocessor_config.json");
        if (cfg is null)
            throw new UsageException($"model directory '{modelDir}' has neither preprocessor_config.json nor config.json");
        int size = cfg.Vision.ImageSize;
        return (ClipOptions.Clip336 with { ShortestEdge = size, CropHeight = size, CropWidth = size },
                $"no preprocessor_config.json: CLIP defaults at the vision image_size {size}");
    }
}
