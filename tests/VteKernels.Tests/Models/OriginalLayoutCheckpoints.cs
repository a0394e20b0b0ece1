// Writes original-layout LLaVA checkpoints (haotian-liu/LLaVA's tensor names and config.json, the CLIP tower in
// a folder of its own) from llava-hf test models (transformers 4.x names) by renaming their tensors, so one model
// can be loaded in both layouts and compared. Renaming, as the original code names the modules:
//   language_model.model.*              -> model.*              (LlavaLlamaModel)
//   language_model.lm_head.weight       -> lm_head.weight
//   multi_modal_projector.linear_1.*    -> model.mm_projector.0.*  (nn.Sequential(Linear, GELU, Linear))
//   multi_modal_projector.linear_2.*    -> model.mm_projector.2.*
//   vision_tower.vision_model.*         -> CLIP folder: vision_model.*  (CLIPModel / CLIPVisionModel)
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Tests.Models;

/// <summary>How the CLIP folder is saved: a whole CLIPModel (text half included) or a CLIPVisionModel.</summary>
public enum ClipFolderForm { ClipModel, ClipVisionModel }

/// <summary>Variations of a written original-layout checkpoint.</summary>
internal sealed record OriginalLayoutOptions
{
    public ClipFolderForm ClipForm { get; init; } = ClipFolderForm.ClipModel;

    /// <summary>Shard the model folder's weights at this many bytes (null: one model.safetensors).</summary>
    public long? MaxShardBytes { get; init; }

    /// <summary>The config's mm_vision_tower; null writes the CLIP folder's full path.</summary>
    public string? MmVisionTower { get; init; }

    /// <summary>Changes config.json before it is written.</summary>
    public Action<JsonObject>? EditConfig { get; init; }

    /// <summary>Changes the model folder's tensors.</summary>
    public Func<List<(string Name, Weight W)>, List<(string Name, Weight W)>>? EditModel { get; init; }

    /// <summary>Changes the CLIP folder's tensors.</summary>
    public Func<List<(string Name, Weight W)>, List<(string Name, Weight W)>>? EditClip { get; init; }
}

internal static class OriginalLayoutCheckpoints
{
    private const string HfVision = "vision_tower.vision_model.";

    /// <summary>Writes the llava-hf model in <paramref name="hfModelDir"/> as an original-layout model folder plus CLIP folder.</summary>
    public static (string ModelDir, string ClipDir) Write(string hfModelDir, OriginalLayoutOptions? options = null)
    {
        options ??= new OriginalLayoutOptions();
        var root = TestModels.NewTempDir("original-layout");
        string modelDir = Path.Combine(root, "model"), clipDir = Path.Combine(root, "clip");
        Directory.CreateDirectory(modelDir);
        Directory.CreateDirectory(clipDir);

        var hfConfig = LlavaConfig.Load(Path.Combine(hfModelDir, "config.json"));
        var hfJson = JsonNode.Parse(File.ReadAllText(Path.Combine(hfModelDir, "config.json")))!.AsObject();
        using var store = WeightStore.Open(hfModelDir);
        var model = new List<(string, Weight)>();
        var clip = new List<(string, Weight)>();
        foreach (var name in store.Names.Order(StringComparer.Ordinal))
        {
            var w = store.Get(name);
            if (name.StartsWith(HfVision, StringComparison.Ordinal)) clip.Add(("vision_model." + name[HfVision.Length..], w));
            else model.Add((Rename(name), w));
        }
        if (options.ClipForm == ClipFolderForm.ClipModel)
        {
            // The text half of a CLIPModel, which LLaVA never reads.
            int d = hfConfig.Vision.HiddenSize;
            clip.Add(("text_model.embeddings.token_embedding.weight", Weight.FromFloats("t", Seq(16 * 8), DType.F32, 16, 8)));
            clip.Add(("text_projection.weight", Weight.FromFloats("p", Seq(8 * 8), DType.F32, 8, 8)));
            clip.Add(("visual_projection.weight", Weight.FromFloats("v", Seq(8 * d), DType.F32, 8, d)));
            clip.Add(("logit_scale", Weight.FromFloats("s", [2.6592f], DType.F32)));
        }
        if (options.EditModel is not null) model = options.EditModel(model);
        if (options.EditClip is not null) clip = options.EditClip(clip);
        WriteTensors(modelDir, model, options.MaxShardBytes);
        WriteTensors(clipDir, clip, null);

        var config = ModelConfig(hfJson, hfConfig, options.MmVisionTower ?? clipDir);
        options.EditConfig?.Invoke(config);
        File.WriteAllText(Path.Combine(modelDir, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(clipDir, "config.json"), ClipConfig(hfJson, options.ClipForm).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return (modelDir, clipDir);
    }

    /// <summary>The original-layout name of a llava-hf (transformers 4.x) tensor outside the vision tower.</summary>
    public static string Rename(string name) =>
        name.StartsWith("language_model.model.", StringComparison.Ordinal) ? "model." + name["language_model.model.".Length..]
        : name == "language_model.lm_head.weight" ? "lm_head.weight"
        : name.StartsWith("multi_modal_projector.linear_1.", StringComparison.Ordinal) ? "model.mm_projector.0." + name["multi_modal_projector.linear_1.".Length..]
        : name.StartsWith("multi_modal_projector.linear_2.", StringComparison.Ordinal) ? "model.mm_projector.2." + name["multi_modal_projector.linear_2.".Length..]
        : throw new ArgumentException($"no original-layout name for '{name}'", nameof(name));

    /// <summary>The LlamaConfig of the text model plus LLaVA-1.5's mm_* keys, as the original training code saves them.</summary>
    private static JsonObject ModelConfig(JsonObject hf, LlavaConfig hfConfig, string visionTower)
    {
        var root = hf["text_config"]?.DeepClone().AsObject() ?? new JsonObject();
        if (!root.ContainsKey("tie_word_embeddings") && hf["tie_word_embeddings"] is { } tie) root["tie_word_embeddings"] = tie.DeepClone();
        root["architectures"] = new JsonArray("LlavaLlamaForCausalLM");
        root["model_type"] = "llava_llama";
        root["mm_vision_tower"] = visionTower;
        root["mm_hidden_size"] = hfConfig.Vision.HiddenSize;
        root["mm_projector_type"] = "mlp2x_gelu";
        root["mm_vision_select_layer"] = hfConfig.VisionFeatureLayers[0];
        root["mm_vision_select_feature"] = hfConfig.VisionFeatureSelectStrategy == "full" ? "cls_patch" : "patch";
        root["mm_patch_merge_type"] = "flat";
        root["mm_use_im_start_end"] = false;
        root["mm_use_im_patch_token"] = false;
        root["image_aspect_ratio"] = "pad";
        root["use_mm_proj"] = true;
        root["tune_mm_mlp_adapter"] = false;
        root["freeze_mm_mlp_adapter"] = false;
        root["tokenizer_padding_side"] = "right";
        return root;
    }

    private static JsonObject ClipConfig(JsonObject hf, ClipFolderForm form)
    {
        var vision = hf["vision_config"]?.DeepClone().AsObject() ?? new JsonObject();
        if (form == ClipFolderForm.ClipVisionModel)
        {
            vision["architectures"] = new JsonArray("CLIPVisionModel");
            vision["model_type"] = "clip_vision_model";
            return vision;
        }
        vision.Remove("model_type");
        return new JsonObject
        {
            ["architectures"] = new JsonArray("CLIPModel"),
            ["model_type"] = "clip",
            ["projection_dim"] = 8,
            ["text_config"] = new JsonObject { ["hidden_size"] = 8, ["vocab_size"] = 16 },
            ["vision_config"] = vision,
        };
    }

    private static void WriteTensors(string dir, List<(string Name, Weight W)> tensors, long? maxShardBytes)
    {
        var specs = tensors.Select(t => new TensorSpec(t.Name, t.W.DType, [.. t.W.Shape])).ToList();
        var byName = tensors.ToDictionary(t => t.Name, t => t.W, StringComparer.Ordinal);
        void Data(TensorSpec s, Stream stream) => stream.Write(byName[s.Name].Bytes);
        if (maxShardBytes is long max) SafetensorsWriter.WriteSharded(dir, specs, Data, max);
        else SafetensorsWriter.Write(Path.Combine(dir, WeightStore.SingleFileName), specs, Data);
    }

    private static float[] Seq(int n) => Enumerable.Range(0, n).Select(i => (i % 7 - 3) * 0.25f).ToArray();
}
