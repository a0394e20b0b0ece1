// config.json parsing (transformers' defaults, both 4.x and 5.x keys) and the binding of checkpoint tensors
// to the model: missing, unexpected and mis-shaped tensors are typed errors naming the tensor; the 5.x
// tensor names and sharded checkpoints load to the same model.
using System.Text.Json.Nodes;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class ModelLoadingTests
{
    [Fact]
    public void OmittedKeysTakeTransformersDefaults()
    {
        // gqa-minimal-bf16's config omits every default, as llava-hf's files do.
        var cfg = LlavaConfig.Load(Path.Combine(FixturePaths.Case("gqa-minimal-bf16"), "model", "config.json"));
        Assert.Equal(2, cfg.Text.NumKvHeads);
        Assert.Equal(16, cfg.Text.HeadDim);
        Assert.Equal(10000f, cfg.Text.RopeTheta);
        Assert.Equal("quick_gelu", cfg.Vision.HiddenAct);
        Assert.Equal(1e-5f, cfg.Vision.LayerNormEps);
        Assert.Equal(64, cfg.TokensPerImage);
        Assert.Equal(2, cfg.VisionLayersNeeded);

        var empty = LlavaConfig.Parse("{}");
        Assert.Equal(1e-6f, empty.Text.RmsNormEps);        // LlamaConfig's default, not LLaVA's 1e-5
        Assert.Equal(32, empty.Text.NumKvHeads);
        Assert.Equal(336, empty.Vision.ImageSize);          // LLaVA's own CLIP-L/14-336 when vision_config is absent
        Assert.Equal(576, empty.TokensPerImage);
        Assert.Equal(32000, empty.ImageTokenIndex);
        Assert.Equal(23, empty.VisionLayersNeeded);

        var partialVision = LlavaConfig.Parse("""{"vision_config": {"hidden_size": 64, "num_attention_heads": 4}, "image_seq_length": 49}""");
        Assert.Equal(32, partialVision.Vision.PatchSize);    // CLIPVisionConfig's own default
        Assert.Equal(224, partialVision.Vision.ImageSize);
    }

    [Fact]
    public void TransformersFiveKeysAreRead()
    {
        var cfg = LlavaConfig.Parse("""
            {"image_token_id": 7, "vision_feature_layer": [-2, -5],
             "text_config": {"vocab_size": 100, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "eos_token_id": [2, 9]}}
            """);
        Assert.Equal(7, cfg.ImageTokenIndex);
        Assert.Equal(500000f, cfg.Text.RopeTheta);
        Assert.Equal([-2, -5], cfg.VisionFeatureLayers);
        Assert.Equal(2048, cfg.ProjectorInputSize);
        Assert.Equal(2, cfg.Text.EosTokenId);
    }

    public static TheoryData<string, string, string> BadConfigs => new()
    {
        { "not json", "{\"text_config\": ", "invalid JSON" },
        { "array", "[1, 2]", "not a JSON object" },
        { "repeated key", """{"image_token_index": 5, "image_token_index": 7}""", "invalid JSON" },
        { "other model", """{"model_type": "qwen2_vl"}""", "model_type 'qwen2_vl'" },
        { "string hidden", """{"text_config": {"hidden_size": "4096"}}""", "text_config.hidden_size must be an integer" },
        { "zero layers", """{"text_config": {"num_hidden_layers": 0}}""", "num_hidden_layers must be a positive integer" },
        { "gqa mismatch", """{"text_config": {"num_attention_heads": 32, "num_key_value_heads": 5}}""", "not a multiple of num_key_value_heads" },
        { "patch mismatch", """{"vision_config": {"image_size": 100, "patch_size": 14}}""", "not a multiple of patch_size" },
        { "feature layer", """{"vision_feature_layer": -30}""", "vision_feature_layer -30" },
        { "strategy", """{"vision_feature_select_strategy": "cls"}""", "vision_feature_select_strategy 'cls'" },
        { "rope scaling", """{"text_config": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}}""", "rope_scaling 'linear'" },
        { "image token", """{"image_token_index": -1}""", "image_token_index -1 is negative" },
        { "seq length", """{"image_seq_length": 100}""", "image_seq_length 100 disagrees" },
        { "activation", """{"text_config": {"hidden_act": "gelu"}}""", "hidden_act 'gelu'" },
    };

    [Theory, MemberData(nameof(BadConfigs))]
    public void BadConfigsAreTypedErrors(string label, string json, string expected)
    {
        var e = Assert.Throws<ModelConfigException>(() => LlavaConfig.Parse(json, "config.json"));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith("config.json: ", e.Message);
        Assert.NotNull(label);
    }

    /// <summary>Rewrites the tiny model's safetensors with <paramref name="edit"/> applied to the tensor list.</summary>
    private static string Rewritten(Func<List<(string Name, Weight W)>, List<(string Name, Weight W)>> edit)
    {
        var src = TestModels.Tiny();
        var dst = TestModels.CopyOf(src);
        File.Delete(Path.Combine(dst, "model.safetensors"));
        using var store = WeightStore.Open(src);
        var tensors = edit(store.Names.OrderBy(n => n, StringComparer.Ordinal).Select(n => (n, store.Get(n))).ToList());
        SafetensorsWriter.Write(Path.Combine(dst, "model.safetensors"),
            tensors.Select(t => new TensorSpec(t.Name, t.W.DType, [.. t.W.Shape])).ToList(),
            (spec, stream) => stream.Write(tensors.First(t => t.Name == spec.Name).W.Bytes));
        return dst;
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        const string victim = "language_model.model.layers.2.mlp.up_proj.weight";
        var dir = Rewritten(l => l.Where(t => t.Name != victim).ToList());
        var e = Assert.Throws<ModelFormatException>(() => LlavaModel.Load(dir, new CpuBackend()));
        Assert.Equal(victim, e.TensorName);
        Assert.Contains("missing tensor", e.Message);
    }

    [Fact]
    public void UnexpectedTensorIsNamed()
    {
        var dir = Rewritten(l => [.. l, ("language_model.model.layers.99.mlp.up_proj.weight", Weight.FromFloats("x", [1f, 2f], DType.F32, 2))]);
        var e = Assert.Throws<ModelFormatException>(() => LlavaModel.Load(dir, new CpuBackend()));
        Assert.Equal("language_model.model.layers.99.mlp.up_proj.weight", e.TensorName);
        Assert.Contains("unexpected tensor", e.Message);
    }

    [Fact]
    public void WrongShapeIsNamed()
    {
        const string victim = "language_model.model.layers.0.self_attn.k_proj.weight";
        var dir = Rewritten(l => l.Select(t => t.Name != victim ? t
            : (t.Name, Weight.FromFloats(victim, new float[t.W.Shape[0] * 2 * t.W.Shape[1]], DType.F32, t.W.Shape[0] * 2, t.W.Shape[1]))).ToList());
        var e = Assert.Throws<ModelFormatException>(() => LlavaModel.Load(dir, new CpuBackend()));
        Assert.Equal(victim, e.TensorName);
        Assert.Contains("does not match the config", e.Message);
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public void TransformersFiveNamesAndShardsLoadTheSameModel()
    {
        static string V5(string n) =>
            n.StartsWith("language_model.model.", StringComparison.Ordinal) ? "model.language_model." + n["language_model.model.".Length..]
            : n == "language_model.lm_head.weight" ? "lm_head.weight"
            : "model." + n;
        var dir = Rewritten(l => l.Select(t => (V5(t.Name), t.W)).ToList());
        var sharded = TestModels.Custom(SynthPreset.Get("tiny"), DType.F32, 0, maxShardBytes: 400_000);
        Assert.True(File.Exists(Path.Combine(sharded, "model.safetensors.index.json")));
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var ids = TestModels.PromptIds(cfg, 4);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 4), cfg.Vision.ImageSize);
        float[] Logits(string d)
        {
            using var m = LlavaModel.Load(d, new CpuBackend());
            using var s = m.CreateSession();
            return s.Prefill(new PromptInput(ids, [image]), new PrefillOptions { AllLogits = true }).Logits.Values;
        }
        using (var m5 = LlavaModel.Load(dir, new CpuBackend())) Assert.Equal("transformers-5", m5.Weights.Layout);
        var baseline = Logits(TestModels.Tiny());
        Assert.Equal(baseline, Logits(dir));
        Assert.Equal(baseline, Logits(sharded));
    }

    [Fact]
    public void SyntheticWritesAreDeterministicAndSeedDependent()
    {
        var a = TestModels.Tiny(DType.BF16, 1);
        var b = TestModels.CopyOf(a);
        File.Delete(Path.Combine(b, "model.safetensors"));
        SyntheticModel.Write(SynthPreset.Get("tiny"), b, 1, DType.BF16);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "model.safetensors")), File.ReadAllBytes(Path.Combine(b, "model.safetensors")));
        var c = TestModels.Tiny(DType.BF16, 2);
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(a, "model.safetensors")), File.ReadAllBytes(Path.Combine(c, "model.safetensors")));
    }

    [Fact]
    public void SyntheticTokenizerIsConsistent()
    {
        var dir = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var tok = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer.json")))!;
        var vocab = tok["model"]!["vocab"]!.AsObject().ToDictionary(kv => kv.Key, kv => (int)kv.Value!);
        Assert.Equal(cfg.ImageTokenIndex + 2, vocab.Count);
        Assert.Equal(Enumerable.Range(0, vocab.Count), vocab.Values.Order());     // ids are unique and dense
        Assert.Equal(cfg.ImageTokenIndex, vocab["<image>"]);
        Assert.Equal(3 + 0x41, vocab["<0x41>"]);
        foreach (var m in tok["model"]!["merges"]!.AsArray())
        {
            var parts = ((string)m!).Split(' ');
            Assert.Equal(2, parts.Length);
            Assert.True(vocab[parts[0]] < vocab[parts[0] + parts[1]] && vocab[parts[1]] < vocab[parts[0] + parts[1]],
                $"merge {m}: both halves must precede the merged piece");
        }
        var added = tok["added_tokens"]!.AsArray().Select(a => (int)a!["id"]!).ToList();
        Assert.Contains(cfg.ImageTokenIndex, added);
        Assert.True(JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!["chat_template"] is not null);
    }
}
