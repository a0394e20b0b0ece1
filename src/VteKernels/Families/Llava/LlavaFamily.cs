// LLaVA-1.5 (model_type "llava", and the original LLaVA layout's llava_llama): one image is one CLIP tile of
// vision_config.image_size pixels (CLIP preprocessing, optionally LLaVA-1.5's pad-to-square first), whose
// selected features (class token dropped for "default") go through the projector: TokensPerImage rows,
// whatever the image's size. SAISA checkpoints add a projector per decoder layer (LlavaVision).
using System.Text.Json.Nodes;
using VteKernels.Backends;
using VteKernels.Engine;
using VteKernels.Engine.Vision;
using VteKernels.Imaging;
using VteKernels.Models;

namespace VteKernels.Families.Llava;

/// <summary>LLaVA-1.5: one CLIP tile per image, a fixed token count.</summary>
public sealed record LlavaFamily : ModelFamily
{
    /// <summary>The family (it has no settings of its own).</summary>
    public static LlavaFamily Instance { get; } = new();

    private LlavaFamily() { }

    /// <inheritdoc/>
    public override string ModelType => "llava";

    /// <inheritdoc/>
    public override string DisplayName => "LLaVA-1.5";

    internal static ModelFamily Read(JsonObject root, string? path) => Instance;

    /// <inheritdoc/>
    public override int TokenCount(LlavaConfig config, ImageInput image) => config.TokensPerImage;

    /// <inheritdoc/>
    public override void CheckImage(LlavaConfig config, ImageInput image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var v = config.Vision;
        if (image.Tiles != 1)
            throw new InvalidInputException($"image has {image.Tiles} tiles but a {DisplayName} model takes one (anyres tiles are for LLaVA-NeXT)");
        VisionInputs.CheckTiles(image, v.NumChannels, v.ImageSize);
    }

    /// <inheritdoc/>
    public override ImagePreprocessor CreatePreprocessor(LlavaConfig config, string? preprocessorConfigPath, bool padToSquare)
    {
        int size = config.Vision.ImageSize;
        var (options, source) = preprocessorConfigPath is not null
            ? (ClipOptions.FromPreprocessorConfig(preprocessorConfigPath), Path.GetFileName(preprocessorConfigPath))
            : (ClipOptions.Clip336 with { ShortestEdge = size, CropHeight = size, CropWidth = size }, $"CLIP defaults at {size}px");
        return new ClipImagePreprocessor(options with { PadToSquare = padToSquare }, size, source);
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> Describe(LlavaConfig config) =>
        [$"{DisplayName}: one {config.Vision.ImageSize}px CLIP tile per image, {config.TokensPerImage} tokens per image"];

    internal override VisionEncoder CreateEncoder(LlavaConfig config, LlavaWeights weights, IBackend backend) =>
        new LlavaVision(config, weights, backend);
}
