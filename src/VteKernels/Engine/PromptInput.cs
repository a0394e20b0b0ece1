// What a request gives the engine: token ids in which each image is a run of image-placeholder tokens
// (image_token_index, TokensPerImage long, as HF's processor expands them), plus one preprocessed pixel
// tensor [channels, size, size] per run, in order.
using VteKernels.Models;

namespace VteKernels.Engine;

/// <summary>One preprocessed image: float32 pixels [channels, height, width], normalized as the vision tower expects.</summary>
public sealed record ImageInput(float[] Pixels, int Channels, int Height, int Width)
{
    /// <summary>Wraps pixels of a square image of <paramref name="size"/> with <paramref name="channels"/> channels.</summary>
    public static ImageInput Square(float[] pixels, int size, int channels = 3) => new(pixels, channels, size, size);
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
    /// Finds the image spans: each maximal run of the image token must be exactly one image long, and
    /// there must be one run per image.
    /// </summary>
    /// <exception cref="InvalidInputException">The runs and the images do not match.</exception>
    public IReadOnlyList<ImageSpan> FindImageSpans(LlavaConfig config)
    {
        var spans = new List<ImageSpan>();
        int per = config.TokensPerImage;
        for (int i = 0; i < TokenIds.Length;)
        {
            if (TokenIds[i] != config.ImageTokenIndex) { i++; continue; }
            int start = i;
            while (i < TokenIds.Length && TokenIds[i] == config.ImageTokenIndex) i++;
            int len = i - start;
            if (len % per != 0)
                throw new InvalidInputException($"image placeholder run at position {start} is {len} tokens long; each image takes exactly {per} tokens (token {config.ImageTokenIndex})");
            for (int k = 0; k < len / per; k++) spans.Add(new ImageSpan(start + k * per, per));
        }
        if (spans.Count != Images.Count)
            throw new InvalidInputException($"the prompt has placeholders for {spans.Count} image(s) but {Images.Count} image(s) were given");
        return spans;
    }
}
