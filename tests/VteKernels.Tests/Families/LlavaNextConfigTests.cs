// LLaVA-NeXT configs, checkpoints and counts: llava-hf's real llava-v1.6 config.json files (vicuna and mistral,
// with the keys they omit), MistralConfig's defaults, bad family settings as typed errors, transformers 5.x
// tensor names, a missing image_newline, and the count rules of FACTS.md section 6 checked over every size:
// transformers 4.45.1's processor and model disagree for exactly 36 sizes of the real config in 1..1399
// squared (FACTS.md), never in the tiny fixture configs.
using System.Text.Json.Nodes;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Families;
using VteKernels.Families.Llava;
using VteKernels.Families.LlavaNext;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Families;

public sealed class LlavaNextConfigTests(ITestOutputHelper output)
{
    private static readonly IReadOnlyList<GridPinpoint> V16 = LlavaNextFamily.DefaultPinpoints;

    // llava-hf/llava-v1.6-mistral-7b-hf's config.json as published (keys equal to their defaults omitted).
    private const string MistralConfig = """
    {
      "architectures": ["LlavaNextForConditionalGeneration"],
      "ignore_index": -100,
      "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
      "image_token_index": 32000,
      "model_type": "llava_next",
      "projector_hidden_act": "gelu",
      "text_config": {
        "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
        "architectures": ["MistralForCausalLM"],
        "intermediate_size": 14336,
        "max_position_embeddings": 32768,
        "model_type": "mistral",
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": null,
        "torch_dtype": "bfloat16",
        "vocab_size": 32064
      },
      "torch_dtype": "float16",
      "transformers_version": "4.39.0.dev0",
      "use_image_newline_parameter": true,
      "vision_config": {
        "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
        "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768, "vocab_size": 32000
      },
      "vision_feature_layer": -2,
      "vision_feature_select_strategy": "default",
      "vocab_size": 32064
    }
    """;

    private static JsonObject Mistral() => JsonNode.Parse(MistralConfig)!.AsObject();

    [Fact]
    public void ReadsLlavaV16Mistral()
    {
        var c = LlavaConfig.Parse(MistralConfig);
        var family = Assert.IsType<LlavaNextFamily>(c.Family);
        Assert.Equal("llava_next", family.ModelType);
        Assert.Equal(V16, family.Pinpoints);
        Assert.Equal((32, 32, 8, 4096, 14336, 128), (c.Text.NumLayers, c.Text.NumHeads, c.Text.NumKvHeads, c.Text.HiddenSize, c.Text.IntermediateSize, c.Text.HeadDim));
        Assert.Equal(1e6f, c.Text.RopeTheta);
        Assert.Equal(32768, c.Text.MaxPositionEmbeddings);   // sliding_window null: no cap
        Assert.Equal(576, c.TokensPerImage);                 // per tile
        // 672 x 672: 4 grid tiles + the base, 576 + 48 rows of 48 + 1.
        Assert.Equal(5, family.TileCount(c, 672, 672));
        Assert.Equal(576 + 48 * 49, family.TokenCount(c, ImageInput.Tiled(new float[5 * 3 * 336 * 336], 5, 336, 672, 672)));
    }

    [Fact]
    public void MistralDefaultsApplyToOmittedKeys()
    {
        var o = Mistral();
        var t = o["text_config"]!.AsObject();
        foreach (var k in new[] { "intermediate_size", "num_key_value_heads", "max_position_embeddings", "sliding_window" }) t.Remove(k);
        var c = LlavaConfig.Parse(o.ToJsonString());
        // MistralConfig: FFN 14336, 8 KV heads, 131072 positions, sliding_window 4096 (which caps the usable context).
        Assert.Equal((14336, 8, 4096), (c.Text.IntermediateSize, c.Text.NumKvHeads, c.Text.MaxPositionEmbeddings));
        t["num_key_value_heads"] = null;   // explicit null: one KV head per query head
        Assert.Equal(32, LlavaConfig.Parse(o.ToJsonString()).Text.NumKvHeads);
        t["sliding_window"] = 0;
        Assert.Contains("sliding_window", Assert.Throws<ModelConfigException>(() => LlavaConfig.Parse(o.ToJsonString())).Message);
    }

    [Fact]
    public void LlavaV16VicunaDefaultsToLlama()
    {
        var o = Mistral();
        o["text_config"] = new JsonObject { ["max_position_embeddings"] = 4096, ["model_type"] = "llama", ["pad_token_id"] = 0, ["rms_norm_eps"] = 1e-05, ["vocab_size"] = 32064 };
        o.Remove("image_grid_pinpoints");   // LlavaNextConfig's default is the same list
        var c = LlavaConfig.Parse(o.ToJsonString());
        Assert.Equal(V16, ((LlavaNextFamily)c.Family).Pinpoints);
        Assert.Equal((32, 32, 11008, 10000f, 4096), (c.Text.NumKvHeads, c.Text.NumHeads, c.Text.IntermediateSize, c.Text.RopeTheta, c.Text.MaxPositionEmbeddings));
    }

    public static TheoryData<string, string, string> BadConfigs => new()
    {
        { "empty pinpoints", """{"image_grid_pinpoints": []}""", "is empty" },
        { "not a multiple", """{"image_grid_pinpoints": [[336, 672], [500, 336]]}""", "not a multiple of the tile size" },
        { "not a pair", """{"image_grid_pinpoints": [[336, 672, 3]]}""", "[height, width] pair" },
        { "negative", """{"image_grid_pinpoints": [[336, -672]]}""", "positive integers" },
        { "not a list", """{"image_grid_pinpoints": "anyres"}""", "list of [height, width] pairs" },
        { "too many", """{"image_grid_pinpoints": [""" + string.Join(", ", Enumerable.Repeat("[336, 336]", 300)) + "]}", "more than the 256 supported" },
        { "side 2^30", """{"image_grid_pinpoints": [[336, 1073741760]]}""", "side larger than the 4096 supported" },
        { "full strategy", """{"vision_feature_select_strategy": "full"}""", "'full' cannot run with anyres" },
        { "newline flag type", """{"use_image_newline_parameter": "yes"}""", "use_image_newline_parameter must be true or false" },
        { "unknown family", """{"model_type": "llava_onevision"}""", "expected 'llava' or 'llava_next'" },
    };

    [Theory, MemberData(nameof(BadConfigs))]
    public void BadFamilySettingsAreTypedErrors(string what, string patch, string message)
    {
        var o = Mistral();
        foreach (var (k, v) in JsonNode.Parse(patch)!.AsObject()) o[k] = v?.DeepClone();
        var e = Assert.Throws<ModelConfigException>(() => LlavaConfig.Parse(o.ToJsonString(), "config.json"));
        output.WriteLine($"{what}: {e.Message}");
        Assert.Contains(message, e.Message);
        Assert.StartsWith("config.json: ", e.Message);
    }

    [Fact]
    public void ProcessorAndModelCountsDisagreeExactlyWhereFactsSay()
    {
        // FACTS.md section 6: 36 sizes of llava-v1.6's config in 1..1399 x 1..1399, e.g. 47 x 1128: 868 against 722.
        Assert.Equal(868, AnyRes.ProcessorTokenCount(47, 1128, V16, 336, 14));
        Assert.Equal(722, AnyRes.FeatureCount(47, 1128, V16, 336, 14));
        int disagree = 0;
        for (int h = 1; h < 1400; h++)
            for (int w = 1; w < 1400; w++)
                if (AnyRes.ProcessorTokenCount(h, w, V16, 336, 14) != AnyRes.FeatureCount(h, w, V16, 336, 14)) disagree++;
        Assert.Equal(36, disagree);
    }

    [Theory]
    [InlineData("anyres-basic")]
    [InlineData("anyres-gqa-bf16")]
    public void TinyConfigsNeverDisagree(string name)
    {
        var cfg = LlavaConfig.Load(Path.Combine(FixturePaths.NextCase(name), "model", "config.json"));
        var pins = ((LlavaNextFamily)cfg.Family).Pinpoints;
        int s = cfg.Vision.ImageSize, p = cfg.Vision.PatchSize;
        for (int h = 1; h <= 3 * s + 39; h++)
            for (int w = 1; w <= 3 * s + 39; w++)
                Assert.Equal(AnyRes.ProcessorTokenCount(h, w, pins, s, p), AnyRes.FeatureCount(h, w, pins, s, p));
    }

    [Fact]
    public void APromptExpandedByHfsProcessorCountIsATypedErrorWithTheReason()
    {
        // 47 x 1128 at llava-v1.6's pinpoints: HF's processor writes 868 placeholders, the model packs 722 rows.
        var cfg = LlavaConfig.Parse(MistralConfig);
        var image = ImageInput.Tiled(new float[4 * 3 * 336 * 336], 4, 336, 47, 1128);
        Assert.Equal(4, ((LlavaNextFamily)cfg.Family).TileCount(cfg, 47, 1128));
        var prompt = new PromptInput([1, .. Enumerable.Repeat(32000, 868), 5], [image]);
        var e = Assert.Throws<InvalidInputException>(() => prompt.FindImageSpans(cfg));
        output.WriteLine(e.Message);
        Assert.Contains("writes 868 tokens for a 47x1128 image, but the model packs 722", e.Message);
        var ok = new PromptInput([1, .. Enumerable.Repeat(32000, 722), 5], [image]);
        Assert.Equal([new ImageSpan(1, 722)], ok.FindImageSpans(cfg));
    }

    [Fact]
    public void AnyresImagesNeedTheirSourceSizeAndTileCount()
    {
        var cfg = LlavaConfig.Parse(MistralConfig);
        var noSize = ImageInput.Square(new float[3 * 336 * 336], 336);
        Assert.Contains("original size", Assert.Throws<InvalidInputException>(() => cfg.Family.TokenCount(cfg, noSize)).Message);
        var wrongTiles = ImageInput.Tiled(new float[3 * 3 * 336 * 336], 3, 336, 672, 672);
        Assert.Contains("makes 5 of it", Assert.Throws<InvalidInputException>(() => cfg.Family.CheckImage(cfg, wrongTiles)).Message);
        var tiles = ImageInput.Tiled(new float[5 * 3 * 336 * 336], 5, 336, 672, 672);
        Assert.Contains("LLaVA-NeXT", Assert.Throws<InvalidInputException>(() => LlavaFamily.Instance.CheckImage(cfg with { Family = LlavaFamily.Instance }, tiles)).Message);
        Assert.Contains("pad", Assert.Throws<InvalidInputException>(() => cfg.Family.CreatePreprocessor(cfg, null, padToSquare: true)).Message);
    }

    /// <summary>The anyres-basic fixture model with its tensors renamed or dropped.</summary>
    private static string Rewritten(Func<string, string?> rename)
    {
        var src = Path.Combine(FixturePaths.NextCase("anyres-basic"), "model");
        var dst = TestModels.NewTempDir("next-rewritten");
        foreach (var f in Directory.GetFiles(src).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        using var store = WeightStore.Open(src);
        var tensors = store.Names.Order(StringComparer.Ordinal).Select(n => (Name: rename(n), W: store.Get(n))).Where(t => t.Name is not null).ToList();
        SafetensorsWriter.Write(Path.Combine(dst, "model.safetensors"),
            tensors.Select(t => new TensorSpec(t.Name!, t.W.DType, [.. t.W.Shape])).ToList(),
            (spec, stream) => stream.Write(tensors.First(t => t.Name == spec.Name).W.Bytes));
        return dst;
    }

    [Fact]
    public void TransformersFiveNamesLoadTheSameModel()
    {
        static string V5(string n) =>
            n.StartsWith("language_model.model.", StringComparison.Ordinal) ? "model.language_model." + n["language_model.model.".Length..]
            : n == "language_model.lm_head.weight" ? "lm_head.weight"
            : "model." + n;   // model.vision_tower..., model.multi_modal_projector..., model.image_newline
        var dir = Rewritten(V5);
        var fixture = FixturePaths.NextCase("anyres-basic");
        var ids = FixturePaths.ReadIds(Path.Combine(fixture, "input_ids.txt"));
        using var model = LlavaModel.Load(dir, new CpuBackend());
        Assert.Equal(LlavaWeights.TransformersV5, model.Weights.Layout);
        var pre = MultimodalPrompt.PreprocessorFor(dir, model.Config, pad: false);
        var images = new[] { "img_a_37x61.png", "img_b_80x45.png" }.Select(f => MultimodalPrompt.LoadImage(Path.Combine(FixturePaths.NextRoot, "images", f), pre)).ToList();
        using var s = model.CreateSession();
        var got = s.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true }).Logits.Values;
        Tolerance.AssertCloseToScale(got, Npy.ReadFloat32(Path.Combine(fixture, "logits.npy")).Data.Select(x => (double)x).ToArray(), 2e-5, "v5 names", output);
    }

    [Fact]
    public void AMissingImageNewlineIsNamed()
    {
        var e = Assert.Throws<ModelFormatException>(() => LlavaModel.Load(Rewritten(n => n == "image_newline" ? null : n), new CpuBackend()));
        Assert.Equal("image_newline", e.TensorName);
        Assert.Contains("missing tensor", e.Message);
    }

    [Fact]
    public void PreprocessorPinpointsThatDifferFromTheModelsAreRefused()
    {
        var dir = Rewritten(n => n);
        var path = Path.Combine(dir, "preprocessor_config.json");
        var pre = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        pre["image_grid_pinpoints"] = new JsonArray(new JsonArray(28, 56));
        File.WriteAllText(path, pre.ToJsonString());
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        Assert.Contains("differ from config.json's", Assert.Throws<ModelFormatException>(() => MultimodalPrompt.PreprocessorFor(dir, cfg, pad: false)).Message);
        pre.Remove("image_grid_pinpoints");
        File.WriteAllText(path, pre.ToJsonString());
        var proc = Path.Combine(dir, "processor_config.json");
        var pc = JsonNode.Parse(File.ReadAllText(proc))!.AsObject();
        pc["patch_size"] = 14;
        File.WriteAllText(proc, pc.ToJsonString());
        Assert.Contains("patch_size 14", Assert.Throws<ModelFormatException>(() => MultimodalPrompt.PreprocessorFor(dir, cfg, pad: false)).Message);
    }

    // The shared config checks hold for the second family too: caps at parse, layer counts against the tensors at load.
    [Fact]
    public void SharedConfigChecksCoverLlavaNext()
    {
        var o = Mistral();
        o["text_config"]!["num_hidden_layers"] = 2147483647;
        Assert.Contains("num_hidden_layers 2147483647 is larger than the 1024 supported",
            Assert.Throws<ModelConfigException>(() => LlavaConfig.Parse(o.ToJsonString(), "config.json")).Message);
        var dir = TestModels.CopyOf(TestModels.Custom(SynthPreset.Get("next-tiny")));
        var path = Path.Combine(dir, "config.json");
        var cfg = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        cfg["text_config"]!["num_hidden_layers"] = 1000;
        File.WriteAllText(path, cfg.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => LlavaModel.Load(dir, new CpuBackend()));
        Assert.Contains("the checkpoint holds", e.Message);
    }

    [Fact]
    public void TheFamilyRegistryNamesBothFamilies() =>
        Assert.Equal(["llava", "llava_next"], ModelFamily.ModelTypes);
}
