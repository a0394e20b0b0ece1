// The model description read from a HF `LlavaForConditionalGeneration` config.json, with the defaults that
// transformers applies when a key is absent (llava-hf files omit keys equal to their defaults, so the
// defaults matter: LlamaConfig's rms_norm_eps default is 1e-6, CLIPVisionConfig's patch size is 32, and a
// missing vision_config means LLaVA's own CLIP-L/14-336). Every value is validated here, once, so the
// engine can trust it. A config.json must be one JSON object without repeated keys. The original LLaVA
// layout (mm_* keys, vision tower in a folder of its own) maps onto the same record in LlavaConfig.OriginalLayout.cs.
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VteKernels.Models;

/// <summary>CLIP vision tower shape (HF CLIPVisionConfig).</summary>
public sealed record VisionConfig(
    int HiddenSize,
    int IntermediateSize,
    int NumLayers,
    int NumHeads,
    int ImageSize,
    int PatchSize,
    int NumChannels,
    float LayerNormEps,
    string HiddenAct)
{
    /// <summary>Patches along one side of the image.</summary>
    public int PatchesPerSide => ImageSize / PatchSize;

    /// <summary>Number of patch tokens (without the class token).</summary>
    public int NumPatches => PatchesPerSide * PatchesPerSide;

    /// <summary>Tokens in the tower: class token plus patches.</summary>
    public int NumPositions => NumPatches + 1;

    /// <summary>Dimension of one attention head.</summary>
    public int HeadDim => HiddenSize / NumHeads;
}

/// <summary>LLaMA language model shape (HF LlamaConfig).</summary>
public sealed record TextConfig(
    int HiddenSize,
    int IntermediateSize,
    int NumLayers,
    int NumHeads,
    int NumKvHeads,
    int HeadDim,
    int VocabSize,
    float RmsNormEps,
    float RopeTheta,
    int MaxPositionEmbeddings,
    string HiddenAct,
    bool TieWordEmbeddings,
    int? BosTokenId,
    int? EosTokenId)
{
    /// <summary>Query heads that share one key/value head.</summary>
    public int GroupSize => NumHeads / NumKvHeads;

    /// <summary>Width of the query projection output (heads x head dim).</summary>
    public int QDim => NumHeads * HeadDim;

    /// <summary>Width of the key and value projection outputs.</summary>
    public int KvDim => NumKvHeads * HeadDim;
}

/// <summary>A whole LLaVA model: vision tower, projector and language model.</summary>
public sealed partial record LlavaConfig(
    VisionConfig Vision,
    TextConfig Text,
    int ImageTokenIndex,
    IReadOnlyList<int> VisionFeatureLayers,
    string VisionFeatureSelectStrategy,
    string ProjectorHiddenAct,
    bool ProjectorBias,
    int ImageSeqLength)
{
    /// <summary>Image tokens one image becomes in the prompt ("default" drops the class token, "full" keeps it).</summary>
    public int TokensPerImage => VisionFeatureSelectStrategy == "full" ? Vision.NumPositions : Vision.NumPatches;

    /// <summary>Input width of the projector: the vision hidden size times the number of feature layers concatenated.</summary>
    public int ProjectorInputSize => Vision.HiddenSize * VisionFeatureLayers.Count;

    /// <summary>
    /// The feature layers as indices into the tower's hidden states (0 = embeddings after pre-LN,
    /// i = output of encoder layer i - 1), negative values counted from the end as Python does.
    /// </summary>
    public IReadOnlyList<int> FeatureHiddenStateIndices =>
        VisionFeatureLayers.Select(l => l < 0 ? Vision.NumLayers + 1 + l : l).ToArray();

    /// <summary>Encoder layers that must run: up to the deepest feature layer (later layers are never read).</summary>
    public int VisionLayersNeeded => FeatureHiddenStateIndices.Max();

    /// <summary>
    /// SAISA: every decoder layer has its own visual projector (Linear ProjectorInputSize -> d, GELU, Linear d -> d)
    /// whose output replaces the visual rows of that layer's input, and visual rows issue no queries and skip the
    /// FFN (NAAViT). No config.json key says so; <see cref="LlavaCheckpoint.Open"/> sets it when the checkpoint
    /// holds the per-layer projector tensors (<see cref="LlavaWeights.Saisa"/>).
    /// </summary>
    public bool Saisa { get; init; }

    /// <summary>Reads and validates a config.json file.</summary>
    /// <exception cref="ModelConfigException">The file is missing, is not JSON, or describes an unsupported or inconsistent model.</exception>
    public static LlavaConfig Load(string path) => Parse(ReadText(path), path);

    /// <summary>Parses and validates config.json text; <paramref name="path"/> only names the file in errors.</summary>
    /// <exception cref="ModelConfigException">The text is not JSON or describes an unsupported or inconsistent model.</exception>
    public static LlavaConfig Parse(string json, string? path = null) => Decoding(path, () => ParseLlavaHf(json, path));

    // System.Text.Json decodes names and strings lazily and throws InvalidOperationException for an escaped lone
    // surrogate ("\ud800"): a malformed file like any other.
    internal static T Decoding<T>(string? path, Func<T> parse)
    {
        try
        {
            return parse();
        }
        catch (InvalidOperationException e) when (e.Source == "System.Text.Json")
        {
            throw new ModelConfigException(path, $"a string is not valid UTF-16: {e.Message}", e);
        }
    }

    private static LlavaConfig ParseLlavaHf(string json, string? path)
    {
        var root = ParseObject(json, path);
        var r = new Reader(root, path, "");
        if (OriginalLayoutSettings.Describes(root))
            throw new ModelConfigException(path, "this config.json is in the original LLaVA layout (mm_vision_tower, no text_config), whose vision tower lives in its own folder; open the model with LlavaCheckpoint.Open");
        var modelType = r.Str("model_type", "llava");
        if (modelType != "llava")
            throw new ModelConfigException(path, $"model_type '{modelType}' is not supported (expected 'llava')");

        var vision = ParseVision(r.Obj("vision_config"), path);
        var text = ParseText(r.Obj("text_config"), root, path);

        int imageToken = r.Has("image_token_index") ? r.Int("image_token_index", 32000) : r.Int("image_token_id", 32000);
        var layers = r.IntOrIntList("vision_feature_layer", -2);
        var strategy = r.Str("vision_feature_select_strategy", "default");
        var projAct = r.Str("projector_hidden_act", "gelu");
        var projBias = r.Bool("multimodal_projector_bias", true);
        int imageSeq = r.Int("image_seq_length", 576);

        if (strategy is not ("default" or "full"))
            throw new ModelConfigException(path, $"vision_feature_select_strategy '{strategy}' is not supported (expected 'default' or 'full')");
        if (projAct is not "gelu")
            throw new ModelConfigException(path, $"projector_hidden_act '{projAct}' is not supported (expected 'gelu')");
        if (layers.Count == 0)
            throw new ModelConfigException(path, "vision_feature_layer is an empty list");
        if (layers.Count > MaxFeatureLayers)
            throw new ModelConfigException(path, $"vision_feature_layer lists {layers.Count} layers, more than the {MaxFeatureLayers} supported");
        if ((long)layers.Count * vision.HiddenSize > MaxWidth)
            throw new ModelConfigException(path, $"vision_feature_layer concatenates {layers.Count} x {vision.HiddenSize} features, wider than the {MaxWidth} supported");
        foreach (var l in layers)
            if (l < -(vision.NumLayers + 1) || l > vision.NumLayers)
                throw new ModelConfigException(path, $"vision_feature_layer {l} is outside the {vision.NumLayers + 1} hidden states of a {vision.NumLayers}-layer vision tower");
        // The placeholder may lie past the embedding table (LLaVA's defaults put it at 32000 with a vocabulary
        // of 32000): its rows are always overwritten by image features, so it is never looked up.
        if (imageToken < 0)
            throw new ModelConfigException(path, $"image_token_index {imageToken} is negative");

        var cfg = new LlavaConfig(vision, text, imageToken, layers, strategy, projAct, projBias, imageSeq);
        if (r.Has("image_seq_length") && imageSeq != cfg.TokensPerImage)
            throw new ModelConfigException(path, $"image_seq_length {imageSeq} disagrees with the vision tower, which yields {cfg.TokensPerImage} tokens per image");
        return cfg;
    }

    /// <summary>Parses config.json text that must be one JSON object.</summary>
    internal static JsonObject ParseObject(string json, string? path)
    {
        try
        {
            return JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = false, AllowDuplicateProperties = false }) as JsonObject
                ?? throw new ModelConfigException(path, "top level is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new ModelConfigException(path, $"invalid JSON: {e.Message}", e);
        }
    }

    /// <summary>Reads a file's text, as a <see cref="ModelConfigException"/> when it cannot be read.</summary>
    internal static string ReadText(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelConfigException(path, $"cannot read: {e.Message}", e);
        }
    }

    /// <summary>Reads a CLIPVisionConfig from <paramref name="o"/>; <paramref name="prefix"/> names its keys in errors.</summary>
    private static VisionConfig ParseVision(JsonObject? o, string? path, string prefix = "vision_config.")
    {
        // LlavaConfig's own default when vision_config is absent: CLIP ViT-L/14 at 336 px.
        if (o is null)
            return new VisionConfig(1024, 4096, 24, 16, 336, 14, 3, 1e-5f, "quick_gelu");
        var r = new Reader(o, path, prefix);
        var type = r.Str("model_type", "clip_vision_model");
        if (type != "clip_vision_model")
            throw new ModelConfigException(path, $"{prefix}model_type '{type}' is not supported (expected 'clip_vision_model')");
        var v = new VisionConfig(
            HiddenSize: r.Positive("hidden_size", 768),
            IntermediateSize: r.Positive("intermediate_size", 3072),
            NumLayers: r.Positive("num_hidden_layers", 12),
            NumHeads: r.Positive("num_attention_heads", 12),
            ImageSize: r.Positive("image_size", 224),
            PatchSize: r.Positive("patch_size", 32),
            NumChannels: r.Positive("num_channels", 3),
            LayerNormEps: r.Float("layer_norm_eps", 1e-5f),
            HiddenAct: r.Str("hidden_act", "quick_gelu"));
        Validate(v, path, prefix);
        if (v.HiddenSize % v.NumHeads != 0)
            throw new ModelConfigException(path, $"{prefix}hidden_size {v.HiddenSize} is not a multiple of num_attention_heads {v.NumHeads}");
        if (v.ImageSize % v.PatchSize != 0)
            throw new ModelConfigException(path, $"{prefix}image_size {v.ImageSize} is not a multiple of patch_size {v.PatchSize}");
        if (v.HiddenAct is not ("quick_gelu" or "gelu"))
            throw new ModelConfigException(path, $"{prefix}hidden_act '{v.HiddenAct}' is not supported (expected 'quick_gelu' or 'gelu')");
        if (!(v.LayerNormEps > 0)) throw new ModelConfigException(path, $"{prefix}layer_norm_eps must be positive");
        return v;
    }

    /// <summary>
    /// Reads a LlamaConfig from <paramref name="o"/>; <paramref name="prefix"/> names its keys in errors. Its
    /// model_type is checked only where the object is a text config of its own (<paramref name="checkModelType"/>):
    /// an original-layout config is a LlamaConfig whose model_type names the LLaVA class.
    /// </summary>
    private static TextConfig ParseText(JsonObject? o, JsonObject root, string? path, string prefix = "text_config.", bool checkModelType = true)
    {
        var r = new Reader(o ?? new JsonObject(), path, prefix);
        var type = r.Str("model_type", "llama");
        if (checkModelType && type is not ("llama" or "mistral"))
            throw new ModelConfigException(path, $"{prefix}model_type '{type}' is not supported (expected 'llama')");
        int hidden = r.Positive("hidden_size", 4096);
        int heads = r.Positive("num_attention_heads", 32);
        int kvHeads = r.IsNull("num_key_value_heads") ? heads : r.Positive("num_key_value_heads", heads);
        int headDim = r.IsNull("head_dim") ? (heads > 0 ? hidden / heads : 0) : r.Positive("head_dim", hidden / heads);

        // transformers 5 moves rope_theta into rope_parameters; 4.x keeps it at the top with rope_scaling.
        float theta = r.Float("rope_theta", 10000f);
        var ropeParams = r.Obj("rope_parameters");
        if (ropeParams is not null)
        {
            var rp = new Reader(ropeParams, path, prefix + "rope_parameters.");
            theta = rp.Float("rope_theta", theta);
            var ropeType = rp.Str("rope_type", "default");
            if (ropeType != "default")
                throw new ModelConfigException(path, $"{prefix}rope_parameters.rope_type '{ropeType}' is not supported (only default RoPE)");
        }
        if (!r.IsNull("rope_scaling"))
        {
            var rs = r.Obj("rope_scaling");
            var rt = rs is null ? "?" : new Reader(rs, path, prefix + "rope_scaling.").Str("rope_type", new Reader(rs, path, prefix + "rope_scaling.").Str("type", "?"));
            if (rt != "default")
                throw new ModelConfigException(path, $"{prefix}rope_scaling '{rt}' is not supported (only default RoPE)");
        }
        if (r.Bool("attention_bias", false)) throw new ModelConfigException(path, $"{prefix}attention_bias = true is not supported");
        if (r.Bool("mlp_bias", false)) throw new ModelConfigException(path, $"{prefix}mlp_bias = true is not supported");
        if (r.Int("pretraining_tp", 1) != 1) throw new ModelConfigException(path, $"{prefix}pretraining_tp other than 1 is not supported");

        bool tie = r.Has("tie_word_embeddings")
            ? r.Bool("tie_word_embeddings", false)
            : new Reader(root, path, "").Bool("tie_word_embeddings", false);
        var t = new TextConfig(
            HiddenSize: hidden,
            IntermediateSize: r.Positive("intermediate_size", 11008),
            NumLayers: r.Positive("num_hidden_layers", 32),
            NumHeads: heads,
            NumKvHeads: kvHeads,
            HeadDim: headDim,
            VocabSize: r.Positive("vocab_size", 32000),
            RmsNormEps: r.Float("rms_norm_eps", 1e-6f),
            RopeTheta: theta,
            MaxPositionEmbeddings: r.Positive("max_position_embeddings", 2048),
            HiddenAct: r.Str("hidden_act", "silu"),
            TieWordEmbeddings: tie,
            BosTokenId: r.OptInt("bos_token_id", 1),
            EosTokenId: r.OptInt("eos_token_id", 2));
        Validate(t, path, prefix);
        if (heads % kvHeads != 0)
            throw new ModelConfigException(path, $"{prefix}num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        if (headDim <= 0 || headDim % 2 != 0)
            throw new ModelConfigException(path, $"{prefix}head_dim {headDim} (given or hidden_size / num_attention_heads) must be positive and even (RoPE rotates pairs)");
        if (t.HiddenAct != "silu")
            throw new ModelConfigException(path, $"{prefix}hidden_act '{t.HiddenAct}' is not supported (expected 'silu')");
        if (!(t.RmsNormEps > 0)) throw new ModelConfigException(path, $"{prefix}rms_norm_eps must be positive");
        if (!(t.RopeTheta > 0)) throw new ModelConfigException(path, $"{prefix}rope_theta must be positive");
        return t;
    }

    /// <summary>Typed access to one JSON object, with the key path in every error.</summary>
    private readonly struct Reader(JsonObject o, string? path, string prefix)
    {
        public bool Has(string key) => o.ContainsKey(key);

        public bool IsNull(string key) => !o.TryGetPropertyValue(key, out var n) || n is null;

        public JsonObject? Obj(string key)
        {
            if (!o.TryGetPropertyValue(key, out var n) || n is null) return null;
            return n as JsonObject ?? throw Bad(key, "an object");
        }

        public string Str(string key, string dflt)
        {
            if (!o.TryGetPropertyValue(key, out var n) || n is null) return dflt;
            if (n is JsonValue v && v.TryGetValue(out string? s)) return s;
            throw Bad(key, "a string");
        }

        public bool Bool(string key, bool dflt)
        {
            if (!o.TryGetPropertyValue(key, out var n) || n is null) return dflt;
            if (n is JsonValue v && v.TryGetValue(out bool b)) return b;
            throw Bad(key, "true or false");
        }

        public int Int(string key, int dflt) => OptInt(key, dflt) ?? dflt;

        public int? OptInt(string key, int? dflt)
        {
            if (!o.TryGetPropertyValue(key, out var n)) return dflt;
            if (n is null) return null;
            if (n is JsonArray a && a.Count > 0) n = a[0]; // eos_token_id may be a list: the first is the main one
            if (n is JsonValue v)
            {
                if (v.TryGetValue(out int i)) return i;
                if (v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
            }
            throw Bad(key, "an integer");
        }

        public int Positive(string key, int dflt)
        {
            int v = Int(key, dflt);
            if (v <= 0) throw new ModelConfigException(path, $"{prefix}{key} must be a positive integer, got {v}");
            return v;
        }

        public float Float(string key, float dflt)
        {
            if (!o.TryGetPropertyValue(key, out var n) || n is null) return dflt;
            if (n is JsonValue v && v.TryGetValue(out double d) && double.IsFinite(d))
            {
                // 1e308 is finite as a double and infinity as the float32 the engine computes with.
                if (!float.IsFinite((float)d)) throw new ModelConfigException(path, $"{prefix}{key} {d} is beyond the float32 range");
                return (float)d;
            }
            throw Bad(key, "a number");
        }

        public IReadOnlyList<int> IntOrIntList(string key, int dflt)
        {
            if (!o.TryGetPropertyValue(key, out var n) || n is null) return [dflt];
            if (n is JsonArray a)
            {
                var list = new List<int>();
                foreach (var e in a)
                {
                    if (e is JsonValue ev && ev.TryGetValue(out int i)) list.Add(i);
                    else throw Bad(key, "an integer or a list of integers");
                }
                return list;
            }
            if (n is JsonValue v && v.TryGetValue(out int x)) return [x];
            throw Bad(key, "an integer or a list of integers");
        }

        private ModelConfigException Bad(string key, string what) => new(path, $"{prefix}{key} must be {what}");
    }
}
