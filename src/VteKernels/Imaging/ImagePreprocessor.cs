// From a decoded image to what a model's vision tower receives. Each model family brings its own
// (ModelFamily.CreatePreprocessor): LLaVA-1.5 one CLIP tile (ClipImagePreprocessor, below), LLaVA-NeXT
// anyres tiles (Families/LlavaNext/AnyResPreprocessor). The result is always an ImageInput: float32 tiles
// [Tiles, 3, S, S] plus the source size, which is all the engine needs to place the image in a prompt.
using VteKernels.Engine;

namespace VteKernels.Imaging;

/// <summary>Turns a decoded RGB image into a model's vision input.</summary>
public abstract class ImagePreprocessor
{
    /// <summary>What this preprocessor does and where its settings came from, for logs.</summary>
    public abstract string Description { get; }

    /// <summary>The image as the vision tower takes it.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="image"/> is null.</exception>
    /// <exception cref="InvalidInputException">The image preprocesses to a size the vision tower does not take.</exception>
    public abstract ImageInput Preprocess(RgbImage image);
}

/// <summary>One CLIP tile, as HF's CLIPImageProcessor (and LLaVA-1.5's pad-to-square) computes it.</summary>
public sealed class ClipImagePreprocessor : ImagePreprocessor
{
    private readonly int? _towerSize;

    /// <summary>A preprocessor with <paramref name="options"/> for a tower that takes <paramref name="towerSize"/> pixels square.</summary>
    /// <param name="options">The CLIP options (from preprocessor_config.json or defaults).</param>
    /// <param name="towerSize">vision_config.image_size, which every output is checked against; null: no check (any output size).</param>
    /// <param name="source">Where the options came from, for <see cref="Description"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="towerSize"/> is not positive.</exception>
    public ClipImagePreprocessor(ClipOptions options, int? towerSize, string source = "")
    {
        ArgumentNullException.ThrowIfNull(options);
        if (towerSize is int t) ArgumentOutOfRangeException.ThrowIfLessThan(t, 1);
        Options = options;
        _towerSize = towerSize;
        Description = $"CLIP {(options.PadToSquare ? "pad-to-square, " : "")}{options.CropHeight}px{(source.Length > 0 ? $" ({source})" : "")}";
    }

    /// <summary>The CLIP options.</summary>
    public ClipOptions Options { get; }

    /// <inheritdoc/>
    public override string Description { get; }

    /// <inheritdoc/>
    public override ImageInput Preprocess(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var input = ClipPreprocessor.ToImageInput(image, Options) with { SourceSize = (image.Height, image.Width) };
        if (_towerSize is int size && (input.Height != size || input.Width != size))
            throw new InvalidInputException($"the image preprocesses to {input.Width}x{input.Height} but the vision tower takes {size}x{size} (check preprocessor_config.json)");
        return input;
    }
}
