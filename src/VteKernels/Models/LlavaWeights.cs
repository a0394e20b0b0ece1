// Binds the tensors of a LLaVA checkpoint to the model's structure and checks them against the config.
// Two on-disk layouts exist: transformers 4.x (`language_model.model.layers.N...`, `language_model.lm_head`)
// and 5.x (`model.language_model.layers.N...`, `lm_head`); the layout is detected from the embedding
// table's name. Every expected tensor must be present with the shape the config implies, and a tensor the
// model does not use is an error too (a wrong or mixed-up checkpoint shows up here, not as garbage later).
using VteKernels.Formats;

namespace VteKernels.Models;

/// <summary>One CLIP encoder layer.</summary>
public sealed record VisionLayerWeights(
    Weight Ln1Weight, Weight Ln1Bias,
    Weight QWeight, Weight QBias, Weight KWeight, Weight KBias, Weight VWeight, Weight VBias,
    Weight OutWeight, Weight OutBias,
    Weight Ln2Weight, Weight Ln2Bias,
    Weight Fc1Weight, Weight Fc1Bias, Weight Fc2Weight, Weight Fc2Bias);

/// <summary>The CLIP vision tower.</summary>
public sealed record VisionWeights(
    Weight ClassEmbedding, Weight PatchEmbedding, Weight PositionEmbedding,
    Weight PreLnWeight, Weight PreLnBias,
    IReadOnlyList<VisionLayerWeights> Layers,
    Weight? PostLnWeight, Weight? PostLnBias);

/// <summary>The two-layer projector.</summary>
public sealed record ProjectorWeights(Weight Linear1Weight, Weight? Linear1Bias, Weight Linear2Weight, Weight? Linear2Bias);

/// <summary>One LLaMA decoder layer.</summary>
public sealed record TextLayerWeights(
    Weight InputNorm, Weight QProj, Weight KProj, Weight VProj, Weight OProj,
    Weight PostAttentionNorm, Weight GateProj, Weight UpProj, Weight DownProj);

/// <summary>The LLaMA language model.</summary>
public sealed record TextWeights(Weight EmbedTokens, IReadOnlyList<TextLayerWeights> Layers, Weight Norm, Weight LmHead);

/// <summary>All weights of a LLaVA model, bound by name and checked against the config.</summary>
public sealed record LlavaWeights(VisionWeights Vision, ProjectorWeights Projector, TextWeights Text, string Layout)
{
    private sealed record Prefixes(string Vision, string Projector, string Language, string LmHead);

    private static readonly Prefixes V4 = new("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head.weight");
    private static readonly Prefixes V5 = new("model.vision_tower.vision_model.", "model.multi_modal_projector.", "model.language_model.", "lm_head.weight");

    /// <summary>Buffers some exporters save that carry no weights; tolerated and ignored.</summary>
    private static bool IsIgnorable(string name) =>
        name.EndsWith(".position_ids", StringComparison.Ordinal) || name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>Binds and validates every tensor of <paramref name="store"/> against <paramref name="config"/>.</summary>
    /// <exception cref="ModelFormatException">A tensor is missing, unexpected, or has the wrong shape.</exception>
    public static LlavaWeights Bind(LlavaConfig config, WeightStore store)
    {
        var p = store.Contains(V5.Language + "embed_tokens.weight") ? V5
            : store.Contains(V4.Language + "embed_tokens.weight") ? V4
            : throw new ModelFormatException(FileHint(store), null,
                $"no language-model embedding table found (looked for '{V4.Language}embed_tokens.weight' and '{V5.Language}embed_tokens.weight'): not a LLaVA checkpoint in the llava-hf layout");
        var layout = p == V5 ? "transformers-5" : "transformers-4";

        // Check names and shapes against the config first; then the records below only look names up.
        var expected = ExpectedTensors(config, layout, includeLmHead: !config.Text.TieWordEmbeddings || store.Contains(p.LmHead));
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape) in expected)
        {
            names.Add(name);
            if (!store.Contains(name))
            {
                if (IsOptional(name)) continue;
                throw new ModelFormatException(FileHint(store), name, "missing tensor");
            }
            var entry = store.GetEntry(name);
            if (!entry.Shape.SequenceEqual(shape))
                throw new ModelFormatException(store.FileOf(name), name,
                    $"shape [{string.Join(", ", entry.Shape)}] does not match the config, which implies [{string.Join(", ", shape)}]");
        }
        var unexpected = store.Names.Where(n => !names.Contains(n) && !IsIgnorable(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0)
            throw new ModelFormatException(store.FileOf(unexpected[0]), unexpected[0],
                $"unexpected tensor: the config describes no such weight{(unexpected.Count > 1 ? $" ({unexpected.Count - 1} more unexpected)" : "")}");

        Weight W(string name) => store.Get(name);
        Weight? Opt(string name) => store.Contains(name) ? store.Get(name) : null;
        string pv = p.Vision;
        var vision = new VisionWeights(
            W(pv + "embeddings.class_embedding"), W(pv + "embeddings.patch_embedding.weight"), W(pv + "embeddings.position_embedding.weight"),
            W(pv + "pre_layrnorm.weight"), W(pv + "pre_layrnorm.bias"),
            Enumerable.Range(0, config.Vision.NumLayers).Select(i => $"{pv}encoder.layers.{i}.").Select(l => new VisionLayerWeights(
                W(l + "layer_norm1.weight"), W(l + "layer_norm1.bias"),
                W(l + "self_attn.q_proj.weight"), W(l + "self_attn.q_proj.bias"),
                W(l + "self_attn.k_proj.weight"), W(l + "self_attn.k_proj.bias"),
                W(l + "self_attn.v_proj.weight"), W(l + "self_attn.v_proj.bias"),
                W(l + "self_attn.out_proj.weight"), W(l + "self_attn.out_proj.bias"),
                W(l + "layer_norm2.weight"), W(l + "layer_norm2.bias"),
                W(l + "mlp.fc1.weight"), W(l + "mlp.fc1.bias"), W(l + "mlp.fc2.weight"), W(l + "mlp.fc2.bias"))).ToList(),
            Opt(pv + "post_layernorm.weight"), Opt(pv + "post_layernorm.bias"));
        string pp = p.Projector;
        var projector = new ProjectorWeights(W(pp + "linear_1.weight"), Opt(pp + "linear_1.bias"), W(pp + "linear_2.weight"), Opt(pp + "linear_2.bias"));
        string pl = p.Language;
        var embed = W(pl + "embed_tokens.weight");
        var text = new TextWeights(
            embed,
            Enumerable.Range(0, config.Text.NumLayers).Select(i => $"{pl}layers.{i}.").Select(l => new TextLayerWeights(
                W(l + "input_layernorm.weight"),
                W(l + "self_attn.q_proj.weight"), W(l + "self_attn.k_proj.weight"), W(l + "self_attn.v_proj.weight"), W(l + "self_attn.o_proj.weight"),
                W(l + "post_attention_layernorm.weight"),
                W(l + "mlp.gate_proj.weight"), W(l + "mlp.up_proj.weight"), W(l + "mlp.down_proj.weight"))).ToList(),
            W(pl + "norm.weight"),
            store.Contains(p.LmHead) ? W(p.LmHead) : embed);
        return new LlavaWeights(vision, projector, text, layout);
    }

    /// <summary>Tensors a checkpoint may omit: CLIP's post-LayerNorm, which LLaVA never reads.</summary>
    private static bool IsOptional(string name) => name.Contains("post_layernorm.", StringComparison.Ordinal);

    private static string? FileHint(WeightStore store) => store.Files.Count == 1 ? store.Files[0] : null;

    /// <summary>Every tensor name of a checkpoint with its shape, in a canonical order.</summary>
    /// <param name="config">The model.</param>
    /// <param name="layout">"transformers-4" or "transformers-5".</param>
    /// <param name="includeLmHead">Whether the LM head is stored (it is not when tied to the embeddings and omitted).</param>
    public static IReadOnlyList<(string Name, int[] Shape)> ExpectedTensors(LlavaConfig config, string layout = "transformers-4", bool? includeLmHead = null)
    {
        var p = layout == "transformers-5" ? V5 : V4;
        var v = config.Vision;
        var t = config.Text;
        var list = new List<(string, int[])>();
        string pv = p.Vision;
        list.Add((pv + "embeddings.class_embedding", [v.HiddenSize]));
        list.Add((pv + "embeddings.patch_embedding.weight", [v.HiddenSize, v.NumChannels, v.PatchSize, v.PatchSize]));
        list.Add((pv + "embeddings.position_embedding.weight", [v.NumPositions, v.HiddenSize]));
        list.Add((pv + "pre_layrnorm.weight", [v.HiddenSize]));
        list.Add((pv + "pre_layrnorm.bias", [v.HiddenSize]));
        for (int i = 0; i < v.NumLayers; i++)
        {
            string l = $"{pv}encoder.layers.{i}.";
            int d = v.HiddenSize, f = v.IntermediateSize;
            list.Add((l + "layer_norm1.weight", [d])); list.Add((l + "layer_norm1.bias", [d]));
            foreach (var proj in new[] { "q_proj", "k_proj", "v_proj", "out_proj" })
            {
                list.Add(($"{l}self_attn.{proj}.weight", [d, d]));
                list.Add(($"{l}self_attn.{proj}.bias", [d]));
            }
            list.Add((l + "layer_norm2.weight", [d])); list.Add((l + "layer_norm2.bias", [d]));
            list.Add((l + "mlp.fc1.weight", [f, d])); list.Add((l + "mlp.fc1.bias", [f]));
            list.Add((l + "mlp.fc2.weight", [d, f])); list.Add((l + "mlp.fc2.bias", [d]));
        }
        list.Add((pv + "post_layernorm.weight", [v.HiddenSize]));
        list.Add((pv + "post_layernorm.bias", [v.HiddenSize]));
        list.Add((p.Projector + "linear_1.weight", [t.HiddenSize, config.ProjectorInputSize]));
        if (config.ProjectorBias) list.Add((p.Projector + "linear_1.bias", [t.HiddenSize]));
        list.Add((p.Projector + "linear_2.weight", [t.HiddenSize, t.HiddenSize]));
        if (config.ProjectorBias) list.Add((p.Projector + "linear_2.bias", [t.HiddenSize]));
        string pl = p.Language;
        list.Add((pl + "embed_tokens.weight", [t.VocabSize, t.HiddenSize]));
        for (int i = 0; i < t.NumLayers; i++)
        {
            string l = $"{pl}layers.{i}.";
            int d = t.HiddenSize, f = t.IntermediateSize;
            list.Add((l + "input_layernorm.weight", [d]));
            list.Add((l + "self_attn.q_proj.weight", [t.QDim, d]));
            list.Add((l + "self_attn.k_proj.weight", [t.KvDim, d]));
            list.Add((l + "self_attn.v_proj.weight", [t.KvDim, d]));
            list.Add((l + "self_attn.o_proj.weight", [d, t.QDim]));
            list.Add((l + "post_attention_layernorm.weight", [d]));
            list.Add((l + "mlp.gate_proj.weight", [f, d]));
            list.Add((l + "mlp.up_proj.weight", [f, d]));
            list.Add((l + "mlp.down_proj.weight", [d, f]));
        }
        list.Add((pl + "norm.weight", [t.HiddenSize]));
        if (includeLmHead ?? !t.TieWordEmbeddings) list.Add((p.LmHead, [t.VocabSize, t.HiddenSize]));
        return list;
    }
}
