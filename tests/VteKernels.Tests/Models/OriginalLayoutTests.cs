// The original LLaVA checkpoint layout (config.json with mm_* keys, model.* / model.mm_projector.* tensors, the CLIP
// tower in a folder of its own): the HF golden fixture rewritten in it loads to the same config and the same
// logits and greedy tokens as the llava-hf original, and both match HF transformers' outputs. Also: where the
// vision tower comes from (argument over mm_vision_tower, the checkpoint's own with unfreeze_mm_vision_tower),
// typed errors for a missing tower folder, missing tensors and PyTorch .bin weights, config keys this runtime
// refuses, and SAISA's per-layer projectors.
using System.Text.Json.Nodes;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Models;

public sealed class OriginalLayoutTests(ITestOutputHelper output)
{
    private static string FixtureModel => Path.Combine(FixturePaths.Case("basic"), "model");

    /// <summary>The fixture's prompt with its image placeholder replaced by <paramref name="config"/>'s.</summary>
    private static int[] FixtureIds(LlavaConfig hf, LlavaConfig config) =>
        FixturePaths.ReadIds(Path.Combine(FixturePaths.Case("basic"), "input_ids.txt"))
            .Select(id => id == hf.ImageTokenIndex ? config.ImageTokenIndex : id).ToArray();

    private static float[] FixturePixels => Npy.ReadFloat32(Path.Combine(FixturePaths.Case("basic"), "pixels.npy")).Data;

    private static float[] Logits(LlavaCheckpoint checkpoint, int[] ids, float[] pixels)
    {
        using var model = new LlavaModel(checkpoint.Config, checkpoint.Weights, new CpuBackend());
        using var session = model.CreateSession();
        var input = new PromptInput(ids, [ImageInput.Square(pixels, checkpoint.Config.Vision.ImageSize)]);
        return session.Prefill(input, new PrefillOptions { AllLogits = true }).Logits.Values;
    }

    public static TheoryData<ClipFolderForm, bool> Forms => new()
    {
        { ClipFolderForm.ClipModel, false },
        { ClipFolderForm.ClipVisionModel, false },
        { ClipFolderForm.ClipModel, true },
    };

    [Theory, MemberData(nameof(Forms))]
    public async Task LoadsToTheSameModelAsTheLlavaHfCheckpoint(ClipFolderForm form, bool sharded)
    {
        var (modelDir, clipDir) = OriginalLayoutCheckpoints.Write(FixtureModel, new OriginalLayoutOptions { ClipForm = form, MaxShardBytes = sharded ? 200_000 : null });
        if (sharded) Assert.True(File.Exists(Path.Combine(modelDir, WeightStore.IndexFileName)));
        using var hf = LlavaCheckpoint.Open(FixtureModel);
        using var orig = LlavaCheckpoint.Open(modelDir);

        // The configs agree but for the image placeholder id: vocab_size for the original layout.
        Assert.Equal(hf.Config.Vision, orig.Config.Vision);
        Assert.Equal(hf.Config.Text, orig.Config.Text);
        Assert.Equal(hf.Config.VisionFeatureLayers, orig.Config.VisionFeatureLayers);
        Assert.Equal(hf.Config.VisionFeatureSelectStrategy, orig.Config.VisionFeatureSelectStrategy);
        Assert.Equal(hf.Config.ProjectorHiddenAct, orig.Config.ProjectorHiddenAct);
        Assert.Equal(hf.Config.ProjectorBias, orig.Config.ProjectorBias);
        Assert.Equal(hf.Config.ImageSeqLength, orig.Config.ImageSeqLength);
        Assert.Equal(319, hf.Config.ImageTokenIndex);
        Assert.Equal(orig.Config.Text.VocabSize, orig.Config.ImageTokenIndex);
        Assert.False(orig.Config.Saisa);
        Assert.Null(orig.Weights.Saisa);

        Assert.Equal(LlavaWeights.TransformersV4, hf.Weights.Layout);
        Assert.Equal(LlavaWeights.Original, orig.Weights.Layout);
        Assert.Null(hf.Original);
        Assert.Equal(clipDir, orig.VisionTowerDir);
        Assert.True(orig.Original!.PadToSquare);
        Assert.Equal("llava_llama", orig.Original.ModelType);
        Assert.Equal(orig.Weights.Vision.Layers[1].Fc2Weight.Bytes, hf.Weights.Vision.Layers[1].Fc2Weight.Bytes);
        Assert.Equal(orig.Weights.Projector.Linear2Bias!.Bytes, hf.Weights.Projector.Linear2Bias!.Bytes);

        var ids = FixtureIds(hf.Config, hf.Config);
        var want = Logits(hf, ids, FixturePixels);
        var got = Logits(orig, FixtureIds(hf.Config, orig.Config), FixturePixels);
        Assert.Equal(want, got);
        var golden = Npy.ReadFloat32(Path.Combine(FixturePaths.Case("basic"), "logits.npy")).Data;
        Tolerance.AssertCloseToScale(got, golden.Select(x => (double)x).ToArray(), 2e-5, "original-layout logits vs HF", output);

        // Decoding through the KV cache gives HF's greedy tokens too.
        using var model = new LlavaModel(orig.Config, orig.Weights, new CpuBackend());
        using var session = model.CreateSession();
        var tokens = await Generator.GenerateAsync(session,
            new PromptInput(FixtureIds(hf.Config, orig.Config), [ImageInput.Square(FixturePixels, orig.Config.Vision.ImageSize)]),
            new GenerationOptions { MaxNewTokens = 8, StopTokens = [] }, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(FixturePaths.ReadIds(Path.Combine(FixturePaths.Case("basic"), "greedy8.txt")), tokens.Ids);
    }

    [Fact]
    public void VisionTowerArgumentStandsInForAHubId()
    {
        const string hubId = "openai/clip-vit-large-patch14-336";
        var (modelDir, clipDir) = OriginalLayoutCheckpoints.Write(FixtureModel, new OriginalLayoutOptions { MmVisionTower = hubId });

        var e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir));
        Assert.Contains($"mm_vision_tower '{hubId}' is not a local folder", e.Message);
        Assert.Contains("--vision-tower DIR", e.Message);
        Assert.StartsWith("config.json: ", e.Message);

        using var c = LlavaCheckpoint.Open(modelDir, clipDir);
        Assert.Equal(clipDir, c.VisionTowerDir);
        Assert.Equal(hubId, c.Original!.VisionTower);
        Assert.Equal(64, c.Config.Vision.HiddenSize);
    }

    [Fact]
    public void MissingVisionTowerFolderPartsAreTypedErrors()
    {
        var (modelDir, clipDir) = OriginalLayoutCheckpoints.Write(FixtureModel);
        var nowhere = Path.Combine(Path.GetDirectoryName(clipDir)!, "no-such-clip");
        var e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir, nowhere));
        Assert.Contains($"vision tower folder {nowhere} does not exist", e.Message);

        var noConfig = TestModels.CopyOf(clipDir);
        File.Delete(Path.Combine(noConfig, "config.json"));
        e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir, noConfig));
        Assert.Contains($"the vision tower folder {noConfig} has no config.json", e.Message);

        var noWeights = TestModels.CopyOf(clipDir);
        File.Delete(Path.Combine(noWeights, WeightStore.SingleFileName));
        e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir, noWeights));
        Assert.Contains($"neither model.safetensors nor model.safetensors.index.json was found in {noWeights}", e.Message);

        // A llava-hf checkpoint has its own tower: a second one is refused, not ignored.
        var c = Assert.Throws<ModelConfigException>(() => LlavaCheckpoint.Open(FixtureModel, clipDir));
        Assert.Contains("applies only to the original LLaVA layout", c.Message);
    }

    [Fact]
    public void MissingTensorsAreNamedWithTheirFolder()
    {
        const string textVictim = "model.layers.1.mlp.up_proj.weight";
        var (modelDir, _) = OriginalLayoutCheckpoints.Write(FixtureModel, new OriginalLayoutOptions { EditModel = l => l.Where(t => t.Name != textVictim).ToList() });
        var e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir));
        Assert.Equal(textVictim, e.TensorName);
        Assert.Contains("missing tensor", e.Message);

        const string visionVictim = "vision_model.encoder.layers.0.mlp.fc1.bias";
        var (modelDir2, clipDir2) = OriginalLayoutCheckpoints.Write(FixtureModel, new OriginalLayoutOptions { EditClip = l => l.Where(t => t.Name != visionVictim).ToList() });
        e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir2));
        Assert.Equal(visionVictim, e.TensorName);
        Assert.Contains($"missing tensor (vision tower folder {clipDir2})", e.Message);

        const string stray = "vision_model.encoder.layers.7.mlp.fc1.bias";
        var (modelDir3, _) = OriginalLayoutCheckpoints.Write(FixtureModel, new OriginalLayoutOptions
        {
            EditClip = l => [.. l, (stray, Weight.FromFloats(stray, [1f, 2f], DType.F32, 2))],
        });
        e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir3));
        Assert.Equal(stray, e.TensorName);
        Assert.Contains("unexpected tensor", e.Message);

        // The llava-hf loader names the layout it found.
        using var store = WeightStore.Open(modelDir);
        e = Assert.Throws<ModelFormatException>(() => LlavaWeights.Bind(LlavaConfig.Load(Path.Combine(FixtureModel, "config.json")), store));
        Assert.Contains("the original LLaVA layout, which LlavaCheckpoint.Open reads", e.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void UnfreezeVisionTowerReadsTheCheckpointsOwnTower(bool unfreeze)
    {
        // The correct tower sits where the original code reads it; the other copy is negated, so reading the
        // wrong one changes the logits.
        static List<(string Name, Weight W)> Negated(IEnumerable<(string Name, Weight W)> l, string prefix) =>
            l.Select(t => (prefix + t.Name["vision_model.".Length..], Weight.FromFloats(t.Name, t.W.ToFloatArray().Select(x => -x).ToArray(), t.W.DType, [.. t.W.Shape]))).ToList();
        using var hfStore = WeightStore.Open(FixtureModel);
        var tower = hfStore.Names.Where(n => n.StartsWith("vision_tower.vision_model.", StringComparison.Ordinal))
            .Select(n => (Name: "vision_model." + n["vision_tower.vision_model.".Length..], W: hfStore.Get(n))).ToList();
        const string embedded = LlavaWeights.OriginalEmbeddedVisionPrefix;
        var options = unfreeze
            ? new OriginalLayoutOptions
            {
                EditConfig = c => c["unfreeze_mm_vision_tower"] = true,
                EditModel = l => [.. l, .. tower.Select(t => (embedded + t.Name["vision_model.".Length..], t.W))],
                EditClip = l => [.. l.Where(t => !t.Name.StartsWith("vision_model.", StringComparison.Ordinal)), .. Negated(tower, "vision_model.")],
            }
            : new OriginalLayoutOptions { EditModel = l => [.. l, .. Negated(tower, embedded)] };
        var (modelDir, _) = OriginalLayoutCheckpoints.Write(FixtureModel, options);

        using var hf = LlavaCheckpoint.Open(FixtureModel);
        using var orig = LlavaCheckpoint.Open(modelDir);
        Assert.Equal(unfreeze, orig.Original!.UnfreezeVisionTower);
        var want = Logits(hf, FixtureIds(hf.Config, hf.Config), FixturePixels);
        Assert.Equal(want, Logits(orig, FixtureIds(hf.Config, orig.Config), FixturePixels));

        // With the flag flipped the negated copy is read: the test can tell the two apart.
        var configPath = Path.Combine(modelDir, "config.json");
        var flipped = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        flipped["unfreeze_mm_vision_tower"] = !unfreeze;
        File.WriteAllText(configPath, flipped.ToJsonString());
        using var other = LlavaCheckpoint.Open(modelDir);
        Assert.NotEqual(want, Logits(other, FixtureIds(hf.Config, other.Config), FixturePixels));
    }

    [Fact]
    public void PytorchBinWeightsAskForConversion()
    {
        var (modelDir, clipDir) = OriginalLayoutCheckpoints.Write(FixtureModel);
        // Sharded .bin checkpoint, as the original LLaVA-1.5 releases are.
        var binModel = TestModels.NewTempDir("bin-model");
        File.Copy(Path.Combine(modelDir, "config.json"), Path.Combine(binModel, "config.json"));
        File.WriteAllText(Path.Combine(binModel, "pytorch_model.bin.index.json"), """{"metadata": {}, "weight_map": {"lm_head.weight": "pytorch_model-00002-of-00002.bin"}}""");
        File.WriteAllBytes(Path.Combine(binModel, "pytorch_model-00001-of-00002.bin"), [0x80, 0x02]);
        File.WriteAllBytes(Path.Combine(binModel, "pytorch_model-00002-of-00002.bin"), [0x80, 0x02]);
        var e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(binModel, clipDir));
        Assert.Equal(Path.Combine(binModel, "pytorch_model.bin.index.json"), e.FilePath);
        Assert.Contains("PyTorch pickle weights are not read (safetensors only): convert", e.Message);
        Assert.Contains("tools/convert/bin_to_safetensors.py", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        // A CLIP folder with only pytorch_model.bin (openai's own upload).
        var binClip = TestModels.CopyOf(clipDir);
        File.Move(Path.Combine(binClip, WeightStore.SingleFileName), Path.Combine(binClip, "pytorch_model.bin"));
        e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir, binClip));
        Assert.Equal(Path.Combine(binClip, "pytorch_model.bin"), e.FilePath);
        Assert.Contains($"convert {binClip} with tools/convert/bin_to_safetensors.py", e.Message);

        // A lone shard without its index.
        var shardOnly = TestModels.NewTempDir("bin-shard");
        File.WriteAllBytes(Path.Combine(shardOnly, "pytorch_model-00001-of-00003.bin"), [0x80, 0x02]);
        e = Assert.Throws<ModelFormatException>(() => WeightStore.Open(shardOnly));
        Assert.Equal(Path.Combine(shardOnly, "pytorch_model-00001-of-00003.bin"), e.FilePath);
    }

    // ---------------------------------------------------------------- SAISA

    /// <summary>
    /// SAISA's projector tensors for every decoder layer of the tiny synthetic model (vision hidden 64, text
    /// hidden 128, so W1 [128, 64] and W2 [128, 128] cannot be confused), seeded values.
    /// </summary>
    internal static List<(string Name, Weight W)> SaisaTensors(LlavaConfig cfg, Func<int, string, int[], int[]>? reshape = null)
    {
        var list = new List<(string, Weight)>();
        var rng = new Random(7);
        for (int i = 0; i < cfg.Text.NumLayers; i++)
        {
            int d = cfg.Text.HiddenSize, f = cfg.Vision.HiddenSize;
            foreach (var (suffix, shape) in new (string, int[])[] { ("0.weight", [d, f]), ("0.bias", [d]), ("2.weight", [d, d]), ("2.bias", [d]) })
            {
                var name = $"model.layers.{i}.mm_projector.{suffix}";
                var s = reshape?.Invoke(i, suffix, shape) ?? shape;
                var values = new float[s.Aggregate(1, (a, b) => a * b)];
                for (int k = 0; k < values.Length; k++) values[k] = (float)(rng.NextDouble() - 0.5);
                list.Add((name, Weight.FromFloats(name, values, DType.F32, s)));
            }
        }
        return list;
    }

    [Fact]
    public void SaisaProjectorsBindPerLayer()
    {
        var tiny = TestModels.Tiny();
        var hfConfig = LlavaConfig.Load(Path.Combine(tiny, "config.json"));
        var saisa = SaisaTensors(hfConfig);
        var (modelDir, _) = OriginalLayoutCheckpoints.Write(tiny, new OriginalLayoutOptions { EditModel = l => [.. l, .. saisa] });

        using var c = LlavaCheckpoint.Open(modelDir);
        Assert.True(c.Config.Saisa);
        var p = c.Weights.Saisa!;
        Assert.Equal(hfConfig.Text.NumLayers, p.Layers.Count);
        int d = hfConfig.Text.HiddenSize;
        Assert.Equal(64, hfConfig.Vision.HiddenSize);
        for (int i = 0; i < p.Layers.Count; i++)
        {
            var l = p.Layers[i];
            Assert.Equal([d, hfConfig.ProjectorInputSize], l.W1.Shape);
            Assert.Equal([d], l.B1.Shape);
            Assert.Equal([d, d], l.W2.Shape);
            Assert.Equal([d], l.B2.Shape);
            Assert.Equal($"model.layers.{i}.mm_projector.2.weight", l.W2.Name);
        }
        Assert.Equal(saisa.Single(t => t.Name == "model.layers.2.mm_projector.0.weight").W.Bytes, p.Layers[2].W1.Bytes);
        Assert.Equal(saisa.Single(t => t.Name == "model.layers.3.mm_projector.2.bias").W.Bytes, p.Layers[3].B2.Bytes);
        // The main projector is still bound: the SAISA checkpoint saves it (LlavaMetaModel builds it).
        Assert.Equal([d, 64], c.Weights.Projector.Linear1Weight.Shape);
        Assert.Contains(LlavaWeights.ExpectedTensors(c.Config, LlavaWeights.Original), e => e.Name == "model.layers.0.mm_projector.0.weight");
    }

    public static TheoryData<string, int, string, int[]?, string> BadSaisaTensors => new()
    {
        { "W1 square", 1, "0.weight", [128, 128], "shape [128, 128] does not match the config, which implies [128, 64]" },
        { "W2 transposed-ish", 0, "2.weight", [128, 64], "shape [128, 64] does not match the config, which implies [128, 128]" },
        { "b1 long", 2, "0.bias", [129], "shape [129] does not match the config, which implies [128]" },
        { "b2 missing", 3, "2.bias", null, "missing tensor" },
    };

    [Theory, MemberData(nameof(BadSaisaTensors))]
    public void BadSaisaTensorsAreNamed(string label, int layer, string suffix, int[]? shape, string expected)
    {
        var tiny = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(tiny, "config.json"));
        var victim = $"model.layers.{layer}.mm_projector.{suffix}";
        var tensors = SaisaTensors(cfg, (i, s, dflt) => i == layer && s == suffix && shape is not null ? shape : dflt);
        if (shape is null) tensors = tensors.Where(t => t.Name != victim).ToList();
        var (modelDir, _) = OriginalLayoutCheckpoints.Write(tiny, new OriginalLayoutOptions { EditModel = l => [.. l, .. tensors] });
        var e = Assert.Throws<ModelFormatException>(() => LlavaCheckpoint.Open(modelDir));
        Assert.Equal(victim, e.TensorName);
        Assert.Contains(expected, e.Message);
        Assert.NotNull(label);
    }

    [Fact]
    public void SaisaTensorsNeedTheSaisaFlag()
    {
        var tiny = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(tiny, "config.json"));
        var (modelDir, clipDir) = OriginalLayoutCheckpoints.Write(tiny, new OriginalLayoutOptions { EditModel = l => [.. l, .. SaisaTensors(cfg)] });
        var plain = LlavaConfig.LoadOriginalLayout(Path.Combine(modelDir, "config.json"), Path.Combine(clipDir, "config.json"));
        Assert.False(plain.Saisa);
        using var model = WeightStore.Open(modelDir);
        using var clip = WeightStore.Open(clipDir);
        Assert.True(LlavaWeights.HasSaisaProjectors(model));
        var e = Assert.Throws<ModelFormatException>(() => LlavaWeights.BindOriginal(plain, model, clip));
        Assert.Equal("model.layers.0.mm_projector.0.bias", e.TensorName);
        Assert.Contains("a SAISA per-layer projector, but the config does not mark the model as SAISA", e.Message);
        Assert.NotNull(LlavaWeights.BindOriginal(plain with { Saisa = true }, model, clip).Saisa);
    }

    // ---------------------------------------------------------------- config.json

    private const string Clip = """{"model_type": "clip", "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 56, "patch_size": 14}}""";

    private static string Original(string extra) =>
        $$"""{"model_type": "llava_llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 320, "rms_norm_eps": 1e-5, "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2{{extra}}}""";

    [Fact]
    public void OriginalConfigMapsOntoLlavaConfig()
    {
        var c = LlavaConfig.ParseOriginalLayout(Original(""), Clip);
        Assert.Equal(320, c.ImageTokenIndex);
        Assert.Equal([-2], c.VisionFeatureLayers);
        Assert.Equal("default", c.VisionFeatureSelectStrategy);
        Assert.Equal(16, c.TokensPerImage);
        Assert.Equal(16, c.ImageSeqLength);
        Assert.Equal(1e-5f, c.Text.RmsNormEps);
        Assert.Equal(4, c.Text.NumKvHeads);               // LlamaConfig: num_key_value_heads defaults to the heads
        Assert.Equal(64, c.Vision.HiddenSize);
        Assert.Equal("quick_gelu", c.Vision.HiddenAct);

        var full = LlavaConfig.ParseOriginalLayout(Original(""", "mm_vision_select_feature": "cls_patch", "mm_hidden_size": 64"""), Clip);
        Assert.Equal("full", full.VisionFeatureSelectStrategy);
        Assert.Equal(17, full.ImageSeqLength);

        // A CLIPConfig without vision_config is CLIPVisionConfig's defaults (ViT-B/32 at 224), not LLaVA's CLIP-L.
        var bare = LlavaConfig.ParseOriginalLayout(Original(""), """{"model_type": "clip"}""");
        Assert.Equal((768, 12, 224, 32), (bare.Vision.HiddenSize, bare.Vision.NumLayers, bare.Vision.ImageSize, bare.Vision.PatchSize));

        var s = OriginalLayoutSettings.Parse(Original(""));
        Assert.Equal("square", s.ImageAspectRatio);
        Assert.False(s.PadToSquare);
        Assert.Equal("patch", s.VisionSelectFeature);
    }

    /// <summary>(label, key set in the original config or "" for none, its JSON value, CLIP config, expected message part).</summary>
    public static TheoryData<string, string, string, string, string> BadOriginalConfigs => new()
    {
        { "linear projector", "mm_projector_type", "\"linear\"", Clip, "mm_projector_type 'linear' is not supported" },
        { "anyres", "image_aspect_ratio", "\"anyres\"", Clip, "image_aspect_ratio 'anyres'" },
        { "spatial merge", "mm_patch_merge_type", "\"spatial_unpad\"", Clip, "mm_patch_merge_type 'spatial_unpad'" },
        { "start/end tokens", "mm_use_im_start_end", "true", Clip, "mm_use_im_start_end = true" },
        { "select feature", "mm_vision_select_feature", "\"cls\"", Clip, "mm_vision_select_feature 'cls'" },
        { "select layer", "mm_vision_select_layer", "-4", Clip, "mm_vision_select_layer -4 is outside the 3 hidden states" },
        { "select layer type", "mm_vision_select_layer", "\"-2\"", Clip, "config.json: mm_vision_select_layer must be an integer" },
        { "mm hidden", "mm_hidden_size", "1024", Clip, "mm_hidden_size 1024 disagrees with the vision tower, whose hidden_size is 64" },
        { "llama key", "hidden_act", "\"gelu\"", Clip, "config.json: hidden_act 'gelu' is not supported" },
        { "siglip", "", "", """{"model_type": "siglip_vision_model"}""", "clip.json: model_type 'siglip_vision_model' is not a CLIP model" },
        { "clip hidden", "", "", """{"model_type": "clip_vision_model", "hidden_size": "64"}""", "clip.json: hidden_size must be an integer" },
        { "clip nested", "", "", """{"model_type": "clip", "vision_config": {"patch_size": 0}}""", "clip.json: vision_config.patch_size must be a positive integer" },
        { "duplicate key", "", "", """{"model_type": "clip", "model_type": "clip"}""", "clip.json: invalid JSON" },
    };

    [Theory, MemberData(nameof(BadOriginalConfigs))]
    public void BadOriginalConfigsAreTypedErrors(string label, string key, string value, string clip, string expected)
    {
        var o = JsonNode.Parse(Original(""))!.AsObject();
        if (key.Length > 0) o[key] = JsonNode.Parse(value);
        var e = Assert.Throws<ModelConfigException>(() => LlavaConfig.ParseOriginalLayout(o.ToJsonString(), clip, "config.json", "clip.json"));
        Assert.Contains(expected, e.Message);
        Assert.NotNull(label);
    }

    [Fact]
    public void ConfigKeysTheOriginalCodeRequiresAreRequired()
    {
        var noLayer = JsonNode.Parse(Original(""))!.AsObject();
        noLayer.Remove("mm_vision_select_layer");
        var e = Assert.Throws<ModelConfigException>(() => LlavaConfig.ParseOriginalLayout(noLayer.ToJsonString(), Clip, "config.json"));
        Assert.Contains("mm_vision_select_layer is missing", e.Message);

        var noProjector = JsonNode.Parse(Original(""))!.AsObject();
        noProjector.Remove("mm_projector_type");
        e = Assert.Throws<ModelConfigException>(() => LlavaConfig.ParseOriginalLayout(noProjector.ToJsonString(), Clip, "config.json"));
        Assert.Contains("LLaVA reads an absent key as 'linear'", e.Message);

        e = Assert.Throws<ModelConfigException>(() => LlavaConfig.ParseOriginalLayout(Original("").Replace("llava_llama", "llava_mistral"), Clip, "config.json"));
        Assert.Contains("model_type 'llava_mistral' is not supported in the original LLaVA layout", e.Message);

        // The llava-hf parser refuses an original-layout file instead of reading LLaMA defaults into it.
        e = Assert.Throws<ModelConfigException>(() => LlavaConfig.Parse(Original("").Replace("llava_llama", "llava"), "config.json"));
        Assert.Contains("original LLaVA layout", e.Message);
        Assert.Contains("LlavaCheckpoint.Open", e.Message);
    }
}
