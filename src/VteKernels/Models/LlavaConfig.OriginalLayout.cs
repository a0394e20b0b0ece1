// The original LLaVA checkpoint layout (haotian-liu/LLaVA; the DyVTE and SAISA releases ship in it): config.json
// is a LlamaConfig whose model_type is "llava_llama" (older code: "llava") plus mm_* keys, and the CLIP tower is
// not in the checkpoint: mm_vision_tower names a CLIPModel or CLIPVisionModel folder with its own config.json.
// This file maps the pair of configs onto LlavaConfig:
//   text        the LLaMA keys at the top level, with LlamaConfig's defaults (as llava-hf's text_config);
//   vision      the CLIP folder's vision_config (CLIPConfig) or its top level (CLIPVisionConfig);
//   features    mm_vision_select_layer -> VisionFeatureLayers [layer]; mm_vision_select_feature "patch" drops
//               the class token ("default"), "cls_patch" keeps it ("full");
//   projector   mm_projector_type must be "mlp2x_gelu" (Linear, GELU, Linear, with biases); LLaVA's default when
//               the key is absent is "linear", which this runtime does not run;
//   image token the original code marks the image in input ids with IMAGE_TOKEN_INDEX = -200, an id outside the
//               vocabulary that never reaches the embedding table. Our prompts carry a placeholder id repeated
//               TokensPerImage times; for this layout it is vocab_size, the first id past the embedding table
//               (32000 for LLaVA-1.5's 32000-token Vicuna vocabulary: the id llava-hf gives "<image>"), so it
//               cannot collide with a real token, and the engine overwrites its rows before any lookup.
// Keys that change the token layout (anyres tiling, spatial patch merging, image start/end tokens, S2
// multi-scale features) are refused rather than ignored.
using System.Text.Json.Nodes;

namespace VteKernels.Models;

/// <summary>The keys of an original-layout config.json beyond the LLaMA shape: where the vision tower is and how it is read.</summary>
/// <param name="ModelType">"llava_llama" or "llava".</param>
/// <param name="VisionTower">mm_vision_tower as written: a hub id (e.g. openai/clip-vit-large-patch14-336) or a local folder.</param>
/// <param name="VisionSelectLayer">mm_vision_select_layer: the CLIP hidden state the features come from (-2 for LLaVA-1.5).</param>
/// <param name="VisionSelectFeature">mm_vision_select_feature: "patch" (class token dropped) or "cls_patch".</param>
/// <param name="MmHiddenSize">mm_hidden_size, the projector's input width, where given.</param>
/// <param name="ProjectorType">mm_projector_type ("mlp2x_gelu").</param>
/// <param name="ImageAspectRatio">image_aspect_ratio: "pad" pads images to a square with the CLIP mean colour before
/// preprocessing (LLaVA-1.5); anything else but "anyres" is plain CLIP preprocessing. "square" when absent.</param>
/// <param name="UnfreezeVisionTower">unfreeze_mm_vision_tower: the checkpoint carries its own, fine-tuned tower weights
/// (model.vision_tower.vision_tower.vision_model.*) that replace the CLIP folder's.</param>
public sealed record OriginalLayoutSettings(
    string ModelType,
    string VisionTower,
    int VisionSelectLayer,
    string VisionSelectFeature,
    int? MmHiddenSize,
    string ProjectorType,
    string ImageAspectRatio,
    bool UnfreezeVisionTower)
{
    /// <summary>Whether images are padded to a square with the mean colour first (image_aspect_ratio "pad").</summary>
    public bool PadToSquare => ImageAspectRatio == "pad";

    /// <summary>
    /// Whether a config.json object is in the original layout: it has mm_vision_tower or model_type "llava_llama".
    /// llava-hf configs have neither (their vision tower is a vision_config inside the file).
    /// </summary>
    public static bool Describes(JsonObject root) =>
        root.ContainsKey("mm_vision_tower") ||
        (root.TryGetPropertyValue("model_type", out var t) && t is JsonValue v && v.TryGetValue(out string? s) && s == "llava_llama");

    /// <summary>Reads and validates the mm_* keys of an original-layout config.json.</summary>
    /// <exception cref="ModelConfigException">The text is not JSON, a key is missing or mistyped, or it asks for a model this runtime does not run.</exception>
    public static OriginalLayoutSettings Parse(string json, string? path = null) =>
        LlavaConfig.ReadOriginalLayoutSettings(LlavaConfig.ParseObject(json, path), path);
}

public sealed partial record LlavaConfig
{
    /// <summary>Reads an original-layout config.json and the config.json of its CLIP folder.</summary>
    /// <exception cref="ModelConfigException">Either file cannot be read or is invalid, or they disagree.</exception>
    public static LlavaConfig LoadOriginalLayout(string path, string visionTowerConfigPath) =>
        ParseOriginalLayout(ReadText(path), ReadText(visionTowerConfigPath), path, visionTowerConfigPath);

    /// <summary>
    /// Builds the model description from an original-layout config.json (<paramref name="json"/>) and the
    /// config.json of its CLIP folder (<paramref name="visionTowerJson"/>, a CLIPConfig or CLIPVisionConfig). The
    /// image token is <c>vocab_size</c> (see the file header); <see cref="Saisa"/> is left false (the checkpoint's
    /// tensors decide it). The paths only name the files in errors.
    /// </summary>
    /// <exception cref="ModelConfigException">Either text is invalid, describes an unsupported model, or they disagree.</exception>
    public static LlavaConfig ParseOriginalLayout(string json, string visionTowerJson, string? path = null, string? visionTowerPath = null) =>
        Decoding(path, () => ParseOriginal(json, visionTowerJson, path, visionTowerPath));

    private static LlavaConfig ParseOriginal(string json, string visionTowerJson, string? path, string? visionTowerPath)
    {
        var root = ParseObject(json, path);
        var settings = ReadOriginalLayoutSettings(root, path);
        var vision = ParseClipVision(ParseObject(visionTowerJson, visionTowerPath), visionTowerPath);
        var text = ParseText(root, root, path, prefix: "", checkModelType: false);

        int layer = settings.VisionSelectLayer;
        if (layer < -(vision.NumLayers + 1) || layer > vision.NumLayers)
            throw new ModelConfigException(path, $"mm_vision_select_layer {layer} is outside the {vision.NumLayers + 1} hidden states of the {vision.NumLayers}-layer vision tower");
        if (settings.MmHiddenSize is int mm && mm != vision.HiddenSize)
            throw new ModelConfigException(path, $"mm_hidden_size {mm} disagrees with the vision tower, whose hidden_size is {vision.HiddenSize}" +
                (visionTowerPath is null ? "" : $" ({visionTowerPath})"));

        var strategy = settings.VisionSelectFeature == "cls_patch" ? "full" : "default";
        int tokens = strategy == "full" ? vision.NumPositions : vision.NumPatches;
        return new LlavaConfig(vision, text, ImageTokenIndex: text.VocabSize, [layer], strategy,
            ProjectorHiddenAct: "gelu", ProjectorBias: true, ImageSeqLength: tokens);
    }

    internal static OriginalLayoutSettings ReadOriginalLayoutSettings(JsonObject root, string? path)
    {
        var r = new Reader(root, path, "");
        var modelType = r.Str("model_type", "");
        if (modelType is not ("llava_llama" or "llava"))
            throw new ModelConfigException(path, $"model_type '{modelType}' is not supported in the original LLaVA layout (expected 'llava_llama' or 'llava': a LLaMA language model)");
        if (r.IsNull("mm_vision_tower"))
            throw new ModelConfigException(path, "mm_vision_tower is missing: the config names no vision tower");
        var tower = r.Str("mm_vision_tower", "");
        if (tower.Length == 0) throw new ModelConfigException(path, "mm_vision_tower is empty");
        if (r.IsNull("mm_vision_select_layer"))
            throw new ModelConfigException(path, "mm_vision_select_layer is missing (LLaVA-1.5 uses -2)");
        int layer = r.Int("mm_vision_select_layer", -2);
        var feature = r.Str("mm_vision_select_feature", "patch");
        if (feature is not ("patch" or "cls_patch"))
            throw new ModelConfigException(path, $"mm_vision_select_feature '{feature}' is not supported (expected 'patch' or 'cls_patch')");
        var projector = r.Str("mm_projector_type", "linear");
        if (projector != "mlp2x_gelu")
            throw new ModelConfigException(path, $"mm_projector_type '{projector}' is not supported (expected 'mlp2x_gelu'; LLaVA reads an absent key as 'linear')");
        var merge = r.Str("mm_patch_merge_type", "flat");
        if (merge != "flat")
            throw new ModelConfigException(path, $"mm_patch_merge_type '{merge}' is not supported (expected 'flat': one image, one run of patch tokens)");
        var aspect = r.Str("image_aspect_ratio", "square");
        if (aspect == "anyres")
            throw new ModelConfigException(path, "image_aspect_ratio 'anyres' (LLaVA-NeXT tiling) is not supported");
        if (r.Bool("mm_use_im_start_end", false))
            throw new ModelConfigException(path, "mm_use_im_start_end = true (image start/end tokens) is not supported");
        if (r.Bool("s2", false))
            throw new ModelConfigException(path, "s2 = true (multi-scale vision features) is not supported");
        int? mmHidden = r.IsNull("mm_hidden_size") ? null : r.Positive("mm_hidden_size", 0);
        return new OriginalLayoutSettings(modelType, tower, layer, feature, mmHidden, projector, aspect,
            r.Bool("unfreeze_mm_vision_tower", false));
    }

    /// <summary>The vision half of a CLIP folder's config.json: CLIPConfig.vision_config, or a CLIPVisionConfig itself.</summary>
    private static VisionConfig ParseClipVision(JsonObject clip, string? path)
    {
        var r = new Reader(clip, path, "");
        var type = r.Str("model_type", r.Has("vision_config") ? "clip" : "clip_vision_model");
        return type switch
        {
            // CLIPConfig builds CLIPVisionConfig() from an absent vision_config: CLIPVisionConfig's own defaults.
            "clip" => ParseVision(r.Obj("vision_config") ?? new JsonObject(), path, "vision_config."),
            "clip_vision_model" => ParseVision(clip, path, ""),
            _ => throw new ModelConfigException(path, $"model_type '{type}' is not a CLIP model (expected 'clip' or 'clip_vision_model')"),
        };
    }
}
