// LLaVA-NeXT (llava-v1.6, model_type "llava_next", HF LlavaNextForConditionalGeneration): "anyres" images.
// An image is tiled at the pinpoint resolution that fits it best (AnyRes), every tile plus a base image goes
// through the CLIP tower and the projector, and the features are packed (LlavaNextVision): the base tile's
// first, then the grid's feature map unpadded to the image's aspect ratio with image_newline after every row.
// The token count therefore depends on the image's size (AnyRes.FeatureCount).
// config.json keys of the family: image_grid_pinpoints ([[h, w], ...], each a multiple of the tile size;
// LlavaNextConfig's default is llava-v1.6's five), use_image_newline_parameter (read for its type only:
// transformers 4.45.1's model always uses image_newline, whatever the key says). The "full" feature strategy
// is refused: HF 4.45.1 cannot run it with anyres (the tiles' side^2 + 1 features do not fold into the grid).
// Preprocessing reads preprocessor_config.json (LlavaNextImageProcessor) and checks processor_config.json
// (LlavaNextProcessor's patch_size and feature strategy) against the model where they exist.
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Backends;
using VteKernels.Engine;
using VteKernels.Engine.Vision;
using VteKernels.Imaging;
using VteKernels.Models;

namespace VteKernels.Families.LlavaNext;

/// <summary>LLaVA-NeXT: anyres tiles, a token count that depends on the image's size.</summary>
/// <param name="Pinpoints">image_grid_pinpoints: the resolutions (height, width) an image may be tiled at.</param>
public sealed record LlavaNextFamily(IReadOnlyList<GridPinpoint> Pinpoints) : ModelFamily
{
    /// <summary>LlavaNextConfig's default pinpoints (llava-v1.6's): 336x672, 672x336, 672x672, 1008x336, 336x1008.</summary>
    public static IReadOnlyList<GridPinpoint> DefaultPinpoints { get; } = [new(336, 672), new(672, 336), new(672, 672), new(1008, 336), new(336, 1008)];

    /// <summary>The state-dict name of the row written after every feature-map row.</summary>
    public const string ImageNewlineTensor = "image_newline";

    /// <inheritdoc/>
    public override string ModelType => "llava_next";

    /// <inheritdoc/>
    public override string DisplayName => "LLaVA-NeXT";

    /// <inheritdoc/>
    public bool Equals(LlavaNextFamily? other) => other is not null && Pinpoints.SequenceEqual(other.Pinpoints);

    /// <inheritdoc/>
    public override int GetHashCode() => Pinpoints.Aggregate(17, (h, p) => HashCode.Combine(h, p));

    internal static ModelFamily Read(JsonObject root, string? path)
    {
        var pinpoints = DefaultPinpoints;
        if (root.TryGetPropertyValue("image_grid_pinpoints", out var node) && node is not null)
        {
            using var doc = JsonDocument.Parse(node.ToJsonString());
            pinpoints = ReadPinpoints(doc.RootElement, path, "image_grid_pinpoints", (f, m) => new ModelConfigException(f, m));
        }
        if (root.TryGetPropertyValue("use_image_newline_parameter", out var nl) && nl is not null &&
            !(nl is JsonValue v && v.TryGetValue(out bool _)))
            throw new ModelConfigException(path, "use_image_newline_parameter must be true or false");
        return new LlavaNextFamily(pinpoints);
    }

    /// <summary>Most pinpoints accepted (released models list at most a few dozen).</summary>
    public const int MaxPinpoints = 256;

    /// <summary>Largest pinpoint side in pixels (<see cref="LlavaConfig.MaxImageSize"/>; released models use at most 2,304).</summary>
    public const int MaxPinpointSide = LlavaConfig.MaxImageSize;

    /// <summary>
    /// Reads a pinpoint list [[h, w], ...] of integers in 1..<see cref="MaxPinpointSide"/>, at most <see cref="MaxPinpoints"/>
    /// of them (the bounds keep the tile grid, and so the pixels an image becomes, bounded); <paramref name="error"/> makes the exception.
    /// </summary>
    internal static IReadOnlyList<GridPinpoint> ReadPinpoints(JsonElement e, string? path, string key, Func<string?, string, Exception> error)
    {
        if (e.ValueKind != JsonValueKind.Array) throw error(path, $"{key} must be a list of [height, width] pairs");
        if (e.GetArrayLength() > MaxPinpoints) throw error(path, $"{key} lists {e.GetArrayLength()} resolutions, more than the {MaxPinpoints} supported");
        var list = new List<GridPinpoint>();
        foreach (var pair in e.EnumerateArray())
        {
            if (pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2 ||
                pair.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.Number || !x.TryGetInt32(out int n) || n < 1))
                throw error(path, $"{key}[{list.Count}] must be a [height, width] pair of positive integers");
            var pin = new GridPinpoint(pair[0].GetInt32(), pair[1].GetInt32());
            if (pin.Height > MaxPinpointSide || pin.Width > MaxPinpointSide)
                throw error(path, $"{key}[{list.Count}] {pin} has a side larger than the {MaxPinpointSide} supported");
            list.Add(pin);
        }
        if (list.Count == 0) throw error(path, $"{key} is empty: an anyres model needs at least one resolution");
        return list;
    }

    internal override void Validate(LlavaConfig config, string? path)
    {
        int s = config.Vision.ImageSize;
        foreach (var p in Pinpoints)
            if (p.Height % s != 0 || p.Width % s != 0)
                throw new ModelConfigException(path, $"image_grid_pinpoints {p} is not a multiple of the tile size (vision_config.image_size {s})");
        if (config.VisionFeatureSelectStrategy == "full")
            throw new ModelConfigException(path, "vision_feature_select_strategy 'full' cannot run with anyres tiles (the class token breaks the tile grid; HF transformers fails on it too): use 'default'");
    }

    /// <inheritdoc/>
    public override int TokenCount(LlavaConfig config, ImageInput image)
    {
        var (h, w) = SourceSizeOf(image);
        return AnyRes.FeatureCount(h, w, Pinpoints, config.Vision.ImageSize, config.Vision.PatchSize);
    }

    /// <summary>Tiles (base image included) an image of <paramref name="height"/> x <paramref name="width"/> becomes.</summary>
    public int TileCount(LlavaConfig config, int height, int width) => AnyRes.TileCount(height, width, Pinpoints, config.Vision.ImageSize);

    /// <inheritdoc/>
    public override void CheckImage(LlavaConfig config, ImageInput image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var (h, w) = SourceSizeOf(image);
        int tiles = TileCount(config, h, w);
        if (image.Tiles != tiles)
            throw new InvalidInputException($"image of {h}x{w} (height x width) has {image.Tiles} tile(s) but anyres makes {tiles} of it (the base image and a {tiles - 1}-tile grid)");
        VisionInputs.CheckTiles(image, config.Vision.NumChannels, config.Vision.ImageSize);
    }

    /// <inheritdoc/>
    public override string? CountMismatchHint(LlavaConfig config, ImageInput image, int tokens)
    {
        if (image.SourceSize is not var (h, w)) return null;
        int processor = AnyRes.ProcessorTokenCount(h, w, Pinpoints, config.Vision.ImageSize, config.Vision.PatchSize);
        return processor == tokens && processor != TokenCount(config, image)
            ? $"transformers 4.45.1's LlavaNextProcessor writes {processor} tokens for a {h}x{w} image, but the model packs {TokenCount(config, image)} features (its float truncation against the processor's integer floor); expand the image to {TokenCount(config, image)} tokens"
            : null;
    }

    /// <inheritdoc/>
    public override ImagePreprocessor CreatePreprocessor(LlavaConfig config, string? preprocessorConfigPath, bool padToSquare)
    {
        if (padToSquare)
            throw new InvalidInputException("LLaVA-NeXT's anyres preprocessing does not pad images to a square (that is LLaVA-1.5's image mode)");
        int size = config.Vision.ImageSize;
        AnyResOptions options;
        string source;
        if (preprocessorConfigPath is null)
        {
            options = new AnyResOptions(ClipOptions.Clip336 with { ShortestEdge = size, CropHeight = size, CropWidth = size }, Pinpoints);
            source = $"CLIP defaults at {size}px, the model's pinpoints";
        }
        else
        {
            options = AnyResOptions.FromPreprocessorConfig(preprocessorConfigPath, Pinpoints);
            source = Path.GetFileName(preprocessorConfigPath);
            if (!options.Pinpoints.SequenceEqual(Pinpoints))
                throw new ModelFormatException(preprocessorConfigPath, null,
                    $"image_grid_pinpoints {string.Join(",", options.Pinpoints)} differ from config.json's {string.Join(",", Pinpoints)}: the tiles would not match the model's packing");
            if (options.TileSize != size)
                throw new ModelFormatException(preprocessorConfigPath, null, $"crop_size {options.TileSize} is not the vision tower's image_size {size}: anyres tiles must be tower-sized");
            CheckProcessorConfig(config, Path.Combine(Path.GetDirectoryName(preprocessorConfigPath) ?? ".", "processor_config.json"));
        }
        return new AnyResPreprocessor(options, size, source);
    }

    /// <summary>
    /// processor_config.json's patch_size and vision_feature_select_strategy, where given, must be the model's:
    /// otherwise HF's processor would expand images to a count the model does not produce.
    /// </summary>
    private static void CheckProcessorConfig(LlavaConfig config, string path)
    {
        if (!File.Exists(path)) return;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new ModelFormatException(path, null, $"not valid JSON: {e.Message}", e); }
        using (doc)
        {
            var r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, null, "the top level is not a JSON object");
            if (r.TryGetProperty("patch_size", out var ps) && ps.ValueKind != JsonValueKind.Null &&
                (!ps.TryGetInt32(out int patch) || patch != config.Vision.PatchSize))
                throw new ModelFormatException(path, null, $"patch_size {ps.GetRawText()} is not the vision tower's patch_size {config.Vision.PatchSize}");
            if (r.TryGetProperty("vision_feature_select_strategy", out var st) && st.ValueKind != JsonValueKind.Null &&
                (st.ValueKind != JsonValueKind.String || st.GetString() != config.VisionFeatureSelectStrategy))
                throw new ModelFormatException(path, null, $"vision_feature_select_strategy {st.GetRawText()} is not config.json's '{config.VisionFeatureSelectStrategy}'");
        }
    }

    /// <inheritdoc/>
    public override IReadOnlyList<string> Describe(LlavaConfig config)
    {
        int s = config.Vision.ImageSize, side = config.Vision.PatchesPerSide;
        var largest = Pinpoints.MaxBy(p => (long)p.Height * p.Width);
        int tokens = AnyRes.FeatureCount(largest.Height, largest.Width, Pinpoints, s, config.Vision.PatchSize);
        return
        [
            $"{DisplayName} anyres: {s}px tiles at pinpoints {string.Join(", ", Pinpoints)} (height x width); base image + up to {Pinpoints.Max(p => p.Height / s * (p.Width / s))} grid tiles",
            $"{side * side} base tokens + the grid's rows unpadded to the image's aspect, each ending in image_newline (a {largest.Height}x{largest.Width} image: {tokens} tokens)",
        ];
    }

    internal override IEnumerable<(string Name, int[] Shape)> ExtraTensors(LlavaConfig config) => [(ImageNewlineTensor, [config.Text.HiddenSize])];

    internal override VisionEncoder CreateEncoder(LlavaConfig config, LlavaWeights weights, IBackend backend) =>
        new LlavaNextVision(config, this, weights, backend);

    private static (int Height, int Width) SourceSizeOf(ImageInput image) =>
        image.SourceSize is { Height: > 0, Width: > 0 } s ? s
            : throw new InvalidInputException("an anyres image needs its original size (height, width: HF's image_sizes) to be packed; give it with the pixels (vte: --image-sizes H,W)");
}
