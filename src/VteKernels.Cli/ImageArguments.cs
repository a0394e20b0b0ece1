// How the commands that run a model take images: files (--image), preprocessed as the model's family requires
// (LLaVA-1.5: one CLIP tile; LLaVA-NeXT: anyres tiles), or pre-made tensors for outside references
// (--pixels X.npy, [1,3,S,S] / [3,S,S] for one tile, [tiles,3,S,S] for anyres, with --image-sizes H,W giving
// each image's original size, which anyres packing needs). Token ids given with images may hold one
// placeholder per image (expanded here to each image's count) or be expanded already.
using VteKernels.Engine;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Cli;

internal static class ImageArguments
{
    /// <summary>Decodes and preprocesses image files for the model in <paramref name="modelDir"/> (<paramref name="pad"/> null: the model's own choice).</summary>
    public static List<ImageInput> Load(string modelDir, LlavaConfig config, IEnumerable<string> files, bool? pad)
    {
        var list = files.ToList();
        if (list.Count == 0) return [];
        var preprocessor = MultimodalPrompt.PreprocessorFor(modelDir, config, pad);
        return [.. list.Select(f => MultimodalPrompt.LoadImage(f, preprocessor))];
    }

    /// <summary>Reads --pixels files, each with its --image-sizes entry when given.</summary>
    public static List<ImageInput> ReadPixels(string[]? files, string[]? sizes)
    {
        files ??= [];
        var parsed = (sizes ?? []).Select(ParseSize).ToList();
        if (parsed.Count > 0 && parsed.Count != files.Length)
            throw new UsageException($"--image-sizes gives {parsed.Count} size(s) for {files.Length} --pixels file(s): one H,W per image");
        return [.. files.Select((f, i) => Read(f, parsed.Count > 0 ? parsed[i] : null))];
    }

    /// <summary>
    /// The prompt of <paramref name="ids"/> and <paramref name="images"/>: with exactly one placeholder per image
    /// the placeholders are expanded to each image's count (as the family's processor does); otherwise the ids
    /// are taken as expanded already.
    /// </summary>
    public static PromptInput Prompt(LlavaConfig config, int[] ids, IReadOnlyList<ImageInput> images)
    {
        int placeholders = ids.Count(id => id == config.ImageTokenIndex);
        bool compact = images.Count > 0 && placeholders == images.Count;
        return compact ? MultimodalPrompt.Expand(config, ids, images) : new PromptInput(ids, images);
    }

    private static (int Height, int Width) ParseSize(string text)
    {
        var parts = text.Split([',', 'x'], StringSplitOptions.TrimEntries);
        if (parts.Length != 2 || !int.TryParse(parts[0], System.Globalization.CultureInfo.InvariantCulture, out int h) ||
            !int.TryParse(parts[1], System.Globalization.CultureInfo.InvariantCulture, out int w) || h < 1 || w < 1)
            throw new UsageException($"--image-sizes '{text}' is not H,W (the original image's height and width, positive integers)");
        return (h, w);
    }

    /// <summary>Preprocessed pixels from .npy: one tile [1,C,H,W] or [C,H,W], or anyres tiles [tiles,C,S,S].</summary>
    private static ImageInput Read(string path, (int Height, int Width)? size)
    {
        if (!File.Exists(path)) throw new UsageException($"pixel file '{path}' does not exist");
        var a = Npy.ReadFloat32(path);
        var s = a.Shape;
        if (s.Length == 3) s = [1, .. s];
        if (s.Length != 4)
            throw new UsageException($"{Path.GetFileName(path)}: pixels must be [1, C, H, W], [C, H, W] or anyres tiles [tiles, C, S, S], got [{string.Join(", ", a.Shape)}]");
        return new ImageInput(a.Data, s[1], s[2], s[3]) { Tiles = s[0], SourceSize = size };
    }
}
