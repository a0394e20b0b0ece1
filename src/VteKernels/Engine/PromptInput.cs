// What a request gives the engine: token ids in which each image is a run of image-placeholder tokens
// (image_token_index, as long as the model's family says that image takes: TokensPerImage for LLaVA-1.5,
// a count that depends on the image's size for LLaVA-NeXT), plus one preprocessed input per image, in
// order: float32 tiles [tiles, channels, size, size] and the image's original size.
using VteKernels.Models;

namespace VteKernels.Engine;

/// <summary>
/// One preprocessed image: float32 pixels [<see cref="Tiles"/>, channels, height, width], normalized as the
/// vision tower expects. LLaVA-1.5 takes one tile; LLaVA-NeXT's anyres takes the base image and the grid tiles,
/// and needs <see cref="SourceSize"/> to pack their features.
/// </summary>
public sealed record ImageInput(float[] Pixels, int Channels, int Height, int Width)
{
    /// <summary>How many tiles <see cref="Pixels"/> holds, one after another (1 for a plain image).</summary>
    public int Tiles { get; init; } = 1;

    /// <summary>The original image's (height, width) before preprocessing (HF's image_sizes); null when unknown.</summary>
    public (int Height, int Width)? SourceSize { get; init; }

    /// <summary>Wraps pixels of a square image of <paramref name="size"/> with <paramref name="channels"/> channels.</summary>
    public static ImageInput Square(float[] pixels, int size, int channels = 3) => new(pixels, channels, size, size);

    /// <summary>
    /// Wraps anyres pixels [<paramref name="tiles"/>, <paramref name="channels"/>, <paramref name="size"/>,
    /// <paramref name="size"/>] of an image that was <paramref name="sourceHeight"/> x <paramref name="sourceWidth"/>.
    /// </summary>
    public static ImageInput Tiled(float[] pixels, int tiles, int size, int sourceHeight, int sourceWidth, int channels = 3) =>
        new(pixels, channels, size, size) { Tiles = tiles, SourceSize = (sourceHeight, sourceWidth) };

    /// <summary>Values in one tile.</summary>
    public int TileLength => Channels * Height * Width;

    /// <summary>Tile <paramref name="tile"/>'s pixels [channels, height, width].</summary>
    public ReadOnlySpan<float> Tile(int tile) => Pixels.AsSpan(tile * TileLength, TileLength);
}

/// <summary>A span of the prompt that one image occupies.</summary>
public readonly record struct ImageSpan(int Start, int Length)
{
    /// <summary>One past the last position.</summary>
    public int End => Start + Length;
}

/// <summary>Token ids with image placeholders, and the images that fill them.</summary>
public sealed record PromptInput(int[] TokenIds, IReadOnlyList<ImageInput> Images)
{
    /// <summary>A text-only prompt.</summary>
    public static PromptInput TextOnly(int[] tokenIds) => new(tokenIds, []);

    /// <summary>
    /// Finds the image spans: the images fill the runs of the image token in order, each exactly as many
    /// tokens long as the model's family says that image takes (<see cref="Families.ModelFamily.TokenCount"/>);
    /// several images may share one run, and every image needs its run.
    /// </summary>
    /// <exception cref="InvalidInputException">The runs and the images do not match.</exception>
    public IReadOnlyList<ImageSpan> FindImageSpans(LlavaConfig config)
    {
        var family = config.Family;
        var spans = new List<ImageSpan>();
        for (int i = 0; i < TokenIds.Length;)
        {
            if (TokenIds[i] != config.ImageTokenIndex) { i++; continue; }
            int start = i;
            while (i < TokenIds.Length && TokenIds[i] == config.ImageTokenIndex) i++;
            int len = i - start;
            for (int at = start; at < i;)
            {
                if (Images.Count == 0)
                    throw new InvalidInputException($"the prompt has placeholders for {PlaceholderRuns(config)} image(s) but 0 image(s) were given (token {config.ImageTokenIndex})");
                if (spans.Count == Images.Count)
                    throw new InvalidInputException($"the prompt has more image placeholder tokens than the {Images.Count} image(s) given fill: {i - at} left over at position {at}" +
                        (family.CountMismatchHint(config, Images[^1], spans[^1].Length + i - at) is { } h ? $" ({h})" : ""));
                var image = Images[spans.Count];
                int count = family.TokenCount(config, image);
                if (at + count > i)
                {
                    string what = Images.All(im => family.TokenCount(config, im) == count) ? $"{count} tokens" : $"its own count (image {spans.Count + 1}: {count} tokens)";
                    throw new InvalidInputException($"image placeholder run at position {start} is {len} tokens long; each image takes exactly {what} (token {config.ImageTokenIndex})" +
                        (family.CountMismatchHint(config, image, i - at) is { } hint ? $": {hint}" : ""));
                }
                spans.Add(new ImageSpan(at, count));
                at += count;
            }
        }
        if (spans.Count != Images.Count)
            throw new InvalidInputException($"the prompt has placeholders for {spans.Count} image(s) but {Images.Count} image(s) were given");
        return spans;
    }

    /// <summary>Maximal runs of the image token (each holds at least one image).</summary>
    private int PlaceholderRuns(LlavaConfig config) =>
        Enumerable.Range(0, TokenIds.Length).Count(i => TokenIds[i] == config.ImageTokenIndex && (i == 0 || TokenIds[i - 1] != config.ImageTokenIndex));
}
