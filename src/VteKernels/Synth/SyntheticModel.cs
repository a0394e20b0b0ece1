// Writes a random-weight LLaVA-family model (llava or llava_next) in the llava-hf on-disk layout
// (transformers 4.x names): config.json, generation_config.json, preprocessor_config.json (plus
// processor_config.json for LLaVA-NeXT), tokenizer.json, tokenizer_config.json and safetensors (sharded like
// save_pretrained above 5 GB). Nothing is downloaded.
//
// Scaling, so that activations stay O(1) and logits are not degenerate at full depth: linear weights are
// uniform with std 1/sqrt(fan_in) (variance-preserving); the residual-branch outputs (o_proj, down_proj,
// out_proj, fc2) are further divided by sqrt(2 * layers) so the residual stream grows like O(1) over the
// depth instead of O(sqrt(layers)); norms' gains are 1 +- 0.1; embeddings have std 1; the LM head std
// 2/sqrt(hidden) gives logits with std ~2 after the final RMSNorm: peaked enough that sampling is not
// uniform, flat enough that greedy decoding does not repeat one token.
//
// Values come from a counter-based generator (SplitMix64 of seed, tensor name and chunk index), so the
// file is identical whatever the number of threads, and a 7B model (13.5 GB of bf16) streams out at disk
// speed with bounded memory.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Families.LlavaNext;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Synth;

/// <summary>Writes synthetic model directories.</summary>
public static class SyntheticModel
{
    private const int ChunkElements = 1 << 20;

    /// <summary>Shards above this size, as transformers' save_pretrained does by default.</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>
    /// Writes the model of <paramref name="preset"/> to <paramref name="outDir"/> (created; existing model
    /// files there are replaced). <paramref name="progress"/> receives bytes written so far and the total.
    /// </summary>
    public static void Write(SynthPreset preset, string outDir, ulong seed, DType dtype,
        Action<long, long>? progress = null, long maxShardBytes = DefaultMaxShardBytes)
    {
        var cfg = preset.Config;
        Directory.CreateDirectory(outDir);
        var expected = LlavaWeights.ExpectedTensors(cfg);
        var specs = expected.Select(e => new TensorSpec(e.Name, dtype, e.Shape)).ToList();
        long total = specs.Sum(s => s.ByteLength), done = 0;
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["vte.synth.preset"] = preset.Name, ["vte.synth.seed"] = seed.ToString(CultureInfo.InvariantCulture) };

        // Remove files of an earlier model so a single file and a sharded set never coexist.
        foreach (var old in Directory.EnumerateFiles(outDir, "model*.safetensors*")) File.Delete(old);
        SafetensorsWriter.WriteSharded(outDir, specs, (spec, stream) =>
        {
            WriteTensor(spec, InitFor(spec.Name, cfg), seed, stream);
            done += spec.ByteLength;
            progress?.Invoke(done, total);
        }, maxShardBytes, metadata);

        File.WriteAllText(Path.Combine(outDir, "config.json"), ConfigJson(cfg));
        File.WriteAllText(Path.Combine(outDir, "generation_config.json"), Json(new JsonObject
        {
            ["bos_token_id"] = cfg.Text.BosTokenId, ["eos_token_id"] = cfg.Text.EosTokenId, ["pad_token_id"] = cfg.ImageTokenIndex + 1,
        }));
        File.WriteAllText(Path.Combine(outDir, "preprocessor_config.json"), PreprocessorJson(cfg));
        if (cfg.Family is LlavaNextFamily)
            File.WriteAllText(Path.Combine(outDir, "processor_config.json"), Json(new JsonObject
            {
                ["image_token"] = "<image>", ["patch_size"] = cfg.Vision.PatchSize, ["processor_class"] = "LlavaNextProcessor",
                ["vision_feature_select_strategy"] = cfg.VisionFeatureSelectStrategy,
            }));
        File.WriteAllText(Path.Combine(outDir, "tokenizer.json"), SyntheticTokenizer.TokenizerJson(cfg.Text.VocabSize, cfg.ImageTokenIndex));
        File.WriteAllText(Path.Combine(outDir, "tokenizer_config.json"), SyntheticTokenizer.TokenizerConfigJson(cfg.ImageTokenIndex, cfg.Text.MaxPositionEmbeddings));
    }

    /// <summary>How one tensor is initialised: uniform with this mean and standard deviation.</summary>
    internal readonly record struct Init(float Mean, float Std);

    internal static Init InitFor(string name, LlavaConfig cfg)
    {
        int textLayers = cfg.Text.NumLayers, visionLayers = cfg.Vision.NumLayers;
        float Fan(int fanIn) => 1f / MathF.Sqrt(fanIn);
        bool vision = name.Contains("vision_tower", StringComparison.Ordinal);
        if (name.EndsWith("norm.weight", StringComparison.Ordinal) || name.EndsWith("layernorm.weight", StringComparison.Ordinal) ||
            name.Contains("layer_norm", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal) ||
            name.Contains("layrnorm.weight", StringComparison.Ordinal))
            return new(1f, 0.1f / MathF.Sqrt(3f));
        if (name.EndsWith(".bias", StringComparison.Ordinal)) return new(0f, 0.02f);
        if (name.EndsWith("class_embedding", StringComparison.Ordinal)) return new(0f, 1f);
        if (name.EndsWith("position_embedding.weight", StringComparison.Ordinal)) return new(0f, 0.5f);
        if (name.EndsWith("patch_embedding.weight", StringComparison.Ordinal))
            return new(0f, Fan(cfg.Vision.NumChannels * cfg.Vision.PatchSize * cfg.Vision.PatchSize));
        if (name.EndsWith("embed_tokens.weight", StringComparison.Ordinal)) return new(0f, 1f);
        if (name.EndsWith(LlavaNextFamily.ImageNewlineTensor, StringComparison.Ordinal)) return new(0f, 1f);   // a row beside embeddings of std 1
        if (name.EndsWith("lm_head.weight", StringComparison.Ordinal)) return new(0f, 2f * Fan(cfg.Text.HiddenSize));
        if (name.Contains("linear_1", StringComparison.Ordinal)) return new(0f, Fan(cfg.ProjectorInputSize));
        if (name.Contains("linear_2", StringComparison.Ordinal)) return new(0f, Fan(cfg.Text.HiddenSize));
        if (vision)
        {
            float residual = 1f / MathF.Sqrt(2f * visionLayers);
            if (name.Contains("out_proj", StringComparison.Ordinal)) return new(0f, Fan(cfg.Vision.HiddenSize) * residual);
            if (name.Contains("fc2", StringComparison.Ordinal)) return new(0f, Fan(cfg.Vision.IntermediateSize) * residual);
            if (name.Contains("fc1", StringComparison.Ordinal) || name.Contains("_proj", StringComparison.Ordinal)) return new(0f, Fan(cfg.Vision.HiddenSize));
        }
        else
        {
            float residual = 1f / MathF.Sqrt(2f * textLayers);
            if (name.Contains("o_proj", StringComparison.Ordinal)) return new(0f, Fan(cfg.Text.QDim) * residual);
            if (name.Contains("down_proj", StringComparison.Ordinal)) return new(0f, Fan(cfg.Text.IntermediateSize) * residual);
            if (name.Contains("_proj", StringComparison.Ordinal)) return new(0f, Fan(cfg.Text.HiddenSize));
        }
        throw new InvalidOperationException($"no initialisation rule for tensor '{name}'");
    }

    private static void WriteTensor(TensorSpec spec, Init init, ulong seed, Stream stream)
    {
        long count = spec.ByteLength / spec.DType.Size();
        ulong nameHash = Fnv1a(spec.Name);
        int chunks = (int)((count + ChunkElements - 1) / ChunkElements);
        int batch = Math.Max(1, Environment.ProcessorCount) * 2;
        var floats = new float[batch][];
        var bytes = new byte[batch][];
        for (int i = 0; i < batch; i++) { floats[i] = new float[ChunkElements]; bytes[i] = new byte[ChunkElements * spec.DType.Size()]; }
        for (int c0 = 0; c0 < chunks; c0 += batch)
        {
            int n = Math.Min(batch, chunks - c0);
            Parallel.For(0, n, j =>
            {
                int c = c0 + j;
                int len = (int)Math.Min(ChunkElements, count - (long)c * ChunkElements);
                Fill(floats[j].AsSpan(0, len), init, seed, nameHash, (ulong)c);
                DTypes.FromFloat(floats[j].AsSpan(0, len), spec.DType, bytes[j].AsSpan(0, len * spec.DType.Size()));
            });
            for (int j = 0; j < n; j++)
            {
                int len = (int)Math.Min(ChunkElements, count - (long)(c0 + j) * ChunkElements);
                stream.Write(bytes[j], 0, len * spec.DType.Size());
            }
        }
    }

    /// <summary>Uniform values with the given mean and std from a SplitMix64 stream keyed by (seed, name, chunk).</summary>
    internal static void Fill(Span<float> dst, Init init, ulong seed, ulong nameHash, ulong chunk)
    {
        ulong state = Mix(seed ^ Mix(nameHash ^ Mix(chunk + 0x9E3779B97F4A7C15UL)));
        float halfWidth = init.Std * MathF.Sqrt(3f);
        for (int i = 0; i < dst.Length; i++)
        {
            state += 0x9E3779B97F4A7C15UL;
            ulong z = Mix(state);
            float u = (z >> 40) * (1f / (1 << 24)); // [0, 1) with 24 random bits
            dst[i] = init.Mean + (2f * u - 1f) * halfWidth;
        }
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    internal static ulong Fnv1a(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (char ch in s) { h ^= ch; h *= 1099511628211UL; }
        return h;
    }

    /// <summary>config.json for <paramref name="cfg"/>, with every value written out.</summary>
    public static string ConfigJson(LlavaConfig cfg)
    {
        var v = cfg.Vision;
        var t = cfg.Text;
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray(cfg.Family is LlavaNextFamily ? "LlavaNextForConditionalGeneration" : "LlavaForConditionalGeneration"),
            ["model_type"] = cfg.Family.ModelType,
            ["image_token_index"] = cfg.ImageTokenIndex,
            ["image_seq_length"] = cfg.ImageSeqLength,
            ["projector_hidden_act"] = cfg.ProjectorHiddenAct,
            ["multimodal_projector_bias"] = cfg.ProjectorBias,
            ["vision_feature_layer"] = cfg.VisionFeatureLayers.Count == 1 ? cfg.VisionFeatureLayers[0] : new JsonArray(cfg.VisionFeatureLayers.Select(l => (JsonNode)l).ToArray()),
            ["vision_feature_select_strategy"] = cfg.VisionFeatureSelectStrategy,
            ["tie_word_embeddings"] = t.TieWordEmbeddings,
            ["torch_dtype"] = "float32",
            ["vision_config"] = new JsonObject
            {
                ["model_type"] = "clip_vision_model",
                ["hidden_size"] = v.HiddenSize,
                ["intermediate_size"] = v.IntermediateSize,
                ["num_hidden_layers"] = v.NumLayers,
                ["num_attention_heads"] = v.NumHeads,
                ["image_size"] = v.ImageSize,
                ["patch_size"] = v.PatchSize,
                ["num_channels"] = v.NumChannels,
                ["layer_norm_eps"] = v.LayerNormEps,
                ["hidden_act"] = v.HiddenAct,
                ["projection_dim"] = 768,
            },
            ["text_config"] = new JsonObject
            {
                ["model_type"] = t.ModelType,
                ["hidden_size"] = t.HiddenSize,
                ["intermediate_size"] = t.IntermediateSize,
                ["num_hidden_layers"] = t.NumLayers,
                ["num_attention_heads"] = t.NumHeads,
                ["num_key_value_heads"] = t.NumKvHeads,
                ["head_dim"] = t.HeadDim,
                ["vocab_size"] = t.VocabSize,
                ["rms_norm_eps"] = t.RmsNormEps,
                ["rope_theta"] = t.RopeTheta,
                ["max_position_embeddings"] = t.MaxPositionEmbeddings,
                ["hidden_act"] = t.HiddenAct,
                ["tie_word_embeddings"] = t.TieWordEmbeddings,
                ["bos_token_id"] = t.BosTokenId,
                ["eos_token_id"] = t.EosTokenId,
                ["pad_token_id"] = cfg.ImageTokenIndex + 1,
                ["attention_bias"] = false,
                ["mlp_bias"] = false,
            },
        };
        if (cfg.Family is LlavaNextFamily next)
        {
            root["image_grid_pinpoints"] = Pinpoints(next);
            root["use_image_newline_parameter"] = true;
        }
        if (t.ModelType == "mistral") root["text_config"]!["sliding_window"] = null;
        return Json(root);
    }

    private static JsonArray Pinpoints(LlavaNextFamily next) => new([.. next.Pinpoints.Select(p => (JsonNode)new JsonArray(p.Height, p.Width))]);

    private static string PreprocessorJson(LlavaConfig cfg)
    {
        var o = PreprocessorJson(cfg.Vision.ImageSize);
        if (cfg.Family is LlavaNextFamily next)
        {
            o["image_processor_type"] = "LlavaNextImageProcessor";
            o["image_grid_pinpoints"] = Pinpoints(next);
            o["do_pad"] = true;
        }
        return Json(o);
    }

    private static JsonObject PreprocessorJson(int size) => new JsonObject
    {
        ["image_processor_type"] = "CLIPImageProcessor",
        ["do_resize"] = true,
        ["size"] = new JsonObject { ["shortest_edge"] = size },
        ["resample"] = 3,
        ["do_center_crop"] = true,
        ["crop_size"] = new JsonObject { ["height"] = size, ["width"] = size },
        ["do_rescale"] = true,
        ["rescale_factor"] = 1.0 / 255,
        ["do_normalize"] = true,
        ["image_mean"] = new JsonArray(0.48145466, 0.4578275, 0.40821073),
        ["image_std"] = new JsonArray(0.26862954, 0.26130258, 0.27577711),
        ["do_convert_rgb"] = true,
    };

    private static string Json(JsonNode node) => node.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
}
