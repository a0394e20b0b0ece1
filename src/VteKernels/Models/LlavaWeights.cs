// Binds the tensors of a LLaVA checkpoint to the model's structure and checks them against the config.
// Three on-disk layouts exist. llava-hf, transformers 4.x (`language_model.model.layers.N...`,
// `language_model.lm_head`) and 5.x (`model.language_model.layers.N...`, `lm_head`), one store holding
// everything; the layout is detected from the embedding table's name. The original LLaVA layout
// (`model.layers.N...`, `model.mm_projector.{0,2}.*`, `lm_head.weight`) keeps the CLIP tower in a folder of
// its own (`vision_model.*`, a second store; the text half of a CLIPModel there is ignored), and SAISA
// checkpoints in it add a projector per decoder layer (`model.layers.N.mm_projector.{0,2}.*`). Every
// expected tensor must be present with the shape the config implies, and a tensor the model does not use is
// an error too (a wrong or mixed-up checkpoint shows up here, not as garbage later). Before the expected
// tensors are listed, the config's layer counts are held against the number of tensors present (a CLIP
// layer is 16 tensors, a decoder layer at least 5), so a config claiming 10^7 layers costs one comparison,
// not a list of 1.6 x 10^8 names.
using System.Text.RegularExpressions;
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

/// <summary>
/// One LLaMA decoder layer. The attention projections are null in a layer whose checkpoint has none (EAS
/// checkpoints fine-tuned with that layer's attention skipped drop them); such a layer runs only when skipped.
/// </summary>
public sealed record TextLayerWeights(
    Weight InputNorm, Weight? QProj, Weight? KProj, Weight? VProj, Weight? OProj,
    Weight PostAttentionNorm, Weight GateProj, Weight UpProj, Weight DownProj)
{
    /// <summary>Whether the layer has its attention projections.</summary>
    public bool HasAttention => QProj is not null;
}

/// <summary>The LLaMA language model.</summary>
public sealed record TextWeights(Weight EmbedTokens, IReadOnlyList<TextLayerWeights> Layers, Weight Norm, Weight LmHead);

/// <summary>
/// SAISA's visual projector of one decoder layer: Linear(<see cref="W1"/> [d, in], <see cref="B1"/> [d]) -> GELU ->
/// Linear(<see cref="W2"/> [d, d], <see cref="B2"/> [d]), applied to the CLIP features (in = the vision hidden size,
/// 1024 for CLIP-L) to give that layer's visual rows.
/// </summary>
public sealed record SaisaLayerProjector(Weight W1, Weight B1, Weight W2, Weight B2);

/// <summary>SAISA's per-layer visual projectors, one per decoder layer in layer order.</summary>
public sealed record SaisaProjectors(IReadOnlyList<SaisaLayerProjector> Layers);

/// <summary>All weights of a LLaVA model, bound by name and checked against the config.</summary>
public sealed partial record LlavaWeights(VisionWeights Vision, ProjectorWeights Projector, TextWeights Text, string Layout)
{
    /// <summary>Layout name of llava-hf checkpoints saved by transformers 4.x.</summary>
    public const string TransformersV4 = "transformers-4";

    /// <summary>Layout name of llava-hf checkpoints saved by transformers 5.x.</summary>
    public const string TransformersV5 = "transformers-5";

    /// <summary>Layout name of the original LLaVA code's checkpoints (vision tower in a folder of its own).</summary>
    public const string Original = "original";

    /// <summary>Where an original-layout checkpoint keeps a vision tower of its own (saved when the tower was trained).</summary>
    public const string OriginalEmbeddedVisionPrefix = "model.vision_tower.vision_tower.vision_model.";

    /// <summary>SAISA's per-layer visual projectors; null unless the config marks the model as SAISA.</summary>
    public SaisaProjectors? Saisa { get; init; }

    private sealed record Names(string Layout, string Vision, string Projector1, string Projector2, string Language, string LmHead);

    private static readonly Names V4 = new(TransformersV4, "vision_tower.vision_model.", "multi_modal_projector.linear_1.", "multi_modal_projector.linear_2.", "language_model.model.", "language_model.lm_head.weight");
    private static readonly Names V5 = new(TransformersV5, "model.vision_tower.vision_model.", "model.multi_modal_projector.linear_1.", "model.multi_modal_projector.linear_2.", "model.language_model.", "lm_head.weight");
    private static readonly Names Orig = new(Original, "vision_model.", "model.mm_projector.0.", "model.mm_projector.2.", "model.", "lm_head.weight");

    /// <summary>Tensors of the original layout that belong to the vision tower.</summary>
    private const string OriginalTowerTensors = "model.vision_tower.";

    [GeneratedRegex(@"^model\.layers\.\d+\.mm_projector\.", RegexOptions.CultureInvariant)]
    private static partial Regex SaisaTensorName();

    /// <summary>Buffers some exporters save that carry no weights; tolerated and ignored.</summary>
    private static bool IsIgnorable(string name) =>
        name.EndsWith(".position_ids", StringComparison.Ordinal) || name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)
        || EasAdapterTensorName().IsMatch(name);   // EAS's PIA adapters: read by EasCheckpoint, not part of the model

    [GeneratedRegex(@"(^|\.)layers\.\d+\.(adapter_attn|replaced_adapter)\.")]
    private static partial Regex EasAdapterTensorName();

    private static readonly string[] AttentionTensors = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight"];

    /// <summary>
    /// The expected tensors less the attention projections of layers that hold none of them (as EAS fine-tuning
    /// leaves skipped layers). A layer holding some but not all of them keeps them expected (the missing one is an error).
    /// </summary>
    private static IEnumerable<(string Name, int[] Shape)> WithoutAbsentAttention(WeightStore store, IEnumerable<(string Name, int[] Shape)> expected, string language, int layers)
    {
        var absent = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < layers; i++)
        {
            var names = AttentionTensors.Select(a => $"{language}layers.{i}.{a}").ToArray();
            if (!names.Any(store.Contains)) absent.UnionWith(names);
        }
        return expected.Where(e => !absent.Contains(e.Name));
    }

    /// <summary>Whether an original-layout checkpoint holds SAISA's per-layer projectors (any <c>model.layers.N.mm_projector.*</c> tensor).</summary>
    public static bool HasSaisaProjectors(WeightStore store) => store.Names.Any(n => SaisaTensorName().IsMatch(n));

    /// <summary>Binds and validates every tensor of a llava-hf checkpoint <paramref name="store"/> against <paramref name="config"/>.</summary>
    /// <exception cref="ModelFormatException">A tensor is missing, unexpected, or has the wrong shape; or the checkpoint is in another layout.</exception>
    public static LlavaWeights Bind(LlavaConfig config, WeightStore store)
    {
        var n = store.Contains(V5.Language + "embed_tokens.weight") ? V5
            : store.Contains(V4.Language + "embed_tokens.weight") ? V4
            : throw new ModelFormatException(FileHint(store), null,
                $"no language-model embedding table found (looked for '{V4.Language}embed_tokens.weight' and '{V5.Language}embed_tokens.weight'): not a LLaVA checkpoint in the llava-hf layout" +
                (store.Contains(Orig.Language + "embed_tokens.weight") ? $" ('{Orig.Language}embed_tokens.weight' is there: the original LLaVA layout, which LlavaCheckpoint.Open reads)" : ""));
        if (config.Saisa)
            throw new ModelFormatException(FileHint(store), null, "the config marks a SAISA model, whose per-layer projectors only original-layout checkpoints carry");

        // Check names and shapes against the config first; then the records below only look names up.
        CheckLayerCounts(config, store, store);
        bool lmHead = !config.Text.TieWordEmbeddings || store.Contains(n.LmHead);
        Check(store, ExpectedVision(config, n.Vision).Concat(WithoutAbsentAttention(store, ExpectedLanguage(config, n, lmHead), n.Language, config.Text.NumLayers)), _ => true, "");
        return Build(config, n, store, store, n.Vision);
    }

    /// <summary>
    /// Binds and validates an original-layout checkpoint: the language model, projector and (for SAISA) per-layer
    /// projectors from <paramref name="model"/>, the CLIP tower's <c>vision_model.*</c> tensors from
    /// <paramref name="visionTower"/> (the mm_vision_tower folder; its other tensors, the text half of a CLIPModel,
    /// are ignored, and so are tower tensors in <paramref name="model"/>, which the original code never reads). With
    /// <paramref name="visionTower"/> null the tower comes from <paramref name="model"/> itself, under
    /// <see cref="OriginalEmbeddedVisionPrefix"/> (checkpoints saved with unfreeze_mm_vision_tower).
    /// </summary>
    /// <exception cref="ModelFormatException">A tensor is missing, unexpected, or has the wrong shape; or the checkpoint is in another layout.</exception>
    public static LlavaWeights BindOriginal(LlavaConfig config, WeightStore model, WeightStore? visionTower)
    {
        if (!model.Contains(Orig.Language + "embed_tokens.weight"))
            throw new ModelFormatException(FileHint(model), null,
                $"no '{Orig.Language}embed_tokens.weight': not a LLaVA checkpoint in the original layout");
        CheckLayerCounts(config, model, visionTower ?? model);
        bool lmHead = !config.Text.TieWordEmbeddings || model.Contains(Orig.LmHead);
        var language = WithoutAbsentAttention(model, ExpectedLanguage(config, Orig, lmHead), Orig.Language, config.Text.NumLayers).ToList();
        if (visionTower is null)
        {
            Check(model, ExpectedVision(config, OriginalEmbeddedVisionPrefix).Concat(language), _ => true, "");
            return Build(config, Orig, model, model, OriginalEmbeddedVisionPrefix);
        }
        Check(model, language, name => !name.StartsWith(OriginalTowerTensors, StringComparison.Ordinal), "");
        Check(visionTower, ExpectedVision(config, Orig.Vision), name => name.StartsWith(Orig.Vision, StringComparison.Ordinal),
            $" (vision tower folder {Path.GetDirectoryName(visionTower.SourcePath)})");
        return Build(config, Orig, model, visionTower, Orig.Vision);
    }

    private const int TensorsPerVisionLayer = 16, MinTensorsPerTextLayer = 5;

    /// <summary>The layer counts of the config against the tensors present: no store can bear out more layers than it holds tensors for.</summary>
    private static void CheckLayerCounts(LlavaConfig config, WeightStore language, WeightStore vision)
    {
        long visionNeed = (long)config.Vision.NumLayers * TensorsPerVisionLayer, textNeed = (long)config.Text.NumLayers * MinTensorsPerTextLayer;
        if (ReferenceEquals(language, vision) && visionNeed + textNeed > language.Names.Count)
            throw new ModelFormatException(FileHint(vision), null,
                $"the config's {config.Vision.NumLayers} vision layers and {config.Text.NumLayers} decoder layers need at least {visionNeed + textNeed} tensors; the checkpoint holds {language.Names.Count}");
        if (visionNeed > vision.Names.Count)
            throw new ModelFormatException(FileHint(vision), null,
                $"the config's {config.Vision.NumLayers} vision layers need at least {visionNeed} tensors; the vision tower holds {vision.Names.Count}");
        if (textNeed > language.Names.Count)
            throw new ModelFormatException(FileHint(language), null,
                $"the config's {config.Text.NumLayers} decoder layers need at least {textNeed} tensors; the checkpoint holds {language.Names.Count}");
    }

    /// <summary>
    /// Checks that <paramref name="store"/> holds every expected tensor with its shape and, among the names
    /// <paramref name="considered"/> picks, nothing else. <paramref name="where"/> ends every message.
    /// </summary>
    private static void Check(WeightStore store, IEnumerable<(string Name, int[] Shape)> expected, Func<string, bool> considered, string where)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape) in expected)
        {
            names.Add(name);
            if (!store.Contains(name))
            {
                if (IsOptional(name)) continue;
                throw new ModelFormatException(FileHint(store), name, "missing tensor" + where);
            }
            var entry = store.GetEntry(name);
            if (!entry.Shape.SequenceEqual(shape))
                throw new ModelFormatException(store.FileOf(name), name,
                    $"shape [{string.Join(", ", entry.Shape)}] does not match the config, which implies [{string.Join(", ", shape)}]{where}");
        }
        var unexpected = store.Names.Where(n => considered(n) && !names.Contains(n) && !IsIgnorable(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0)
        {
            var first = unexpected[0];
            var why = SaisaTensorName().IsMatch(first)
                ? "unexpected tensor: a SAISA per-layer projector, but the config does not mark the model as SAISA (LlavaConfig.Saisa)"
                : "unexpected tensor: the config describes no such weight";
            throw new ModelFormatException(store.FileOf(first), first,
                $"{why}{(unexpected.Count > 1 ? $" ({unexpected.Count - 1} more unexpected)" : "")}{where}");
        }
    }

    /// <summary>The records, once <see cref="Check"/> has passed: the tower from <paramref name="visionStore"/> under <paramref name="pv"/>, the rest from <paramref name="store"/>.</summary>
    private static LlavaWeights Build(LlavaConfig config, Names n, WeightStore store, WeightStore visionStore, string pv)
    {
        Weight W(string name) => store.Get(name);
        Weight? Opt(string name) => store.Contains(name) ? store.Get(name) : null;
        Weight V(string name) => visionStore.Get(name);
        Weight? OptV(string name) => visionStore.Contains(name) ? visionStore.Get(name) : null;
        var vision = new VisionWeights(
            V(pv + "embeddings.class_embedding"), V(pv + "embeddings.patch_embedding.weight"), V(pv + "embeddings.position_embedding.weight"),
            V(pv + "pre_layrnorm.weight"), V(pv + "pre_layrnorm.bias"),
            Enumerable.Range(0, config.Vision.NumLayers).Select(i => $"{pv}encoder.layers.{i}.").Select(l => new VisionLayerWeights(
                V(l + "layer_norm1.weight"), V(l + "layer_norm1.bias"),
                V(l + "self_attn.q_proj.weight"), V(l + "self_attn.q_proj.bias"),
                V(l + "self_attn.k_proj.weight"), V(l + "self_attn.k_proj.bias"),
                V(l + "self_attn.v_proj.weight"), V(l + "self_attn.v_proj.bias"),
                V(l + "self_attn.out_proj.weight"), V(l + "self_attn.out_proj.bias"),
                V(l + "layer_norm2.weight"), V(l + "layer_norm2.bias"),
                V(l + "mlp.fc1.weight"), V(l + "mlp.fc1.bias"), V(l + "mlp.fc2.weight"), V(l + "mlp.fc2.bias"))).ToList(),
            OptV(pv + "post_layernorm.weight"), OptV(pv + "post_layernorm.bias"));
        var projector = new ProjectorWeights(W(n.Projector1 + "weight"), Opt(n.Projector1 + "bias"), W(n.Projector2 + "weight"), Opt(n.Projector2 + "bias"));
        string pl = n.Language;
        var embed = W(pl + "embed_tokens.weight");
        var text = new TextWeights(
            embed,
            Enumerable.Range(0, config.Text.NumLayers).Select(i => $"{pl}layers.{i}.").Select(l => new TextLayerWeights(
                W(l + "input_layernorm.weight"),
                Opt(l + "self_attn.q_proj.weight"), Opt(l + "self_attn.k_proj.weight"), Opt(l + "self_attn.v_proj.weight"), Opt(l + "self_attn.o_proj.weight"),
                W(l + "post_attention_layernorm.weight"),
                W(l + "mlp.gate_proj.weight"), W(l + "mlp.up_proj.weight"), W(l + "mlp.down_proj.weight"))).ToList(),
            W(pl + "norm.weight"),
            store.Contains(n.LmHead) ? W(n.LmHead) : embed);
        var saisa = !config.Saisa ? null : new SaisaProjectors(
            Enumerable.Range(0, config.Text.NumLayers).Select(i => $"{pl}layers.{i}.mm_projector.").Select(p => new SaisaLayerProjector(
                W(p + "0.weight"), W(p + "0.bias"), W(p + "2.weight"), W(p + "2.bias"))).ToList());
        return new LlavaWeights(vision, projector, text, n.Layout) { Saisa = saisa };
    }

    /// <summary>Tensors a checkpoint may omit: CLIP's post-LayerNorm, which LLaVA never reads.</summary>
    private static bool IsOptional(string name) => name.Contains("post_layernorm.", StringComparison.Ordinal);

    private static string? FileHint(WeightStore store) => store.Files.Count == 1 ? store.Files[0] : null;

    private static Names NamesOf(string layout) => layout switch
    {
        TransformersV4 => V4,
        TransformersV5 => V5,
        Original => Orig,
        _ => throw new ArgumentException($"unknown layout '{layout}' (expected '{TransformersV4}', '{TransformersV5}' or '{Original}')", nameof(layout)),
    };

    /// <summary>
    /// Every tensor name of a checkpoint with its shape, in a canonical order. For the original layout these are
    /// the tensors of the model folder only (language model, projector, SAISA's per-layer projectors when
    /// <see cref="LlavaConfig.Saisa"/>); the CLIP folder's are <see cref="ExpectedVisionTowerTensors"/>.
    /// </summary>
    /// <param name="config">The model.</param>
    /// <param name="layout"><see cref="TransformersV4"/>, <see cref="TransformersV5"/> or <see cref="Original"/>.</param>
    /// <param name="includeLmHead">Whether the LM head is stored (it is not when tied to the embeddings and omitted).</param>
    /// <exception cref="ArgumentException">The layout is unknown, or SAISA is asked of a llava-hf layout.</exception>
    public static IReadOnlyList<(string Name, int[] Shape)> ExpectedTensors(LlavaConfig config, string layout = TransformersV4, bool? includeLmHead = null)
    {
        var n = NamesOf(layout);
        if (config.Saisa && n != Orig) throw new ArgumentException("SAISA's per-layer projectors exist only in the original layout", nameof(layout));
        bool lmHead = includeLmHead ?? !config.Text.TieWordEmbeddings;
        return n == Orig ? ExpectedLanguage(config, n, lmHead) : [.. ExpectedVision(config, n.Vision), .. ExpectedLanguage(config, n, lmHead)];
    }

    /// <summary>The tensors of an original-layout checkpoint's CLIP folder that LLaVA reads (<c>vision_model.*</c>), with their shapes.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> ExpectedVisionTowerTensors(LlavaConfig config) => ExpectedVision(config, Orig.Vision);

    private static List<(string Name, int[] Shape)> ExpectedVision(LlavaConfig config, string pv)
    {
        var v = config.Vision;
        var list = new List<(string, int[])>();
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
        return list;
    }

    private static List<(string Name, int[] Shape)> ExpectedLanguage(LlavaConfig config, Names n, bool includeLmHead)
    {
        var t = config.Text;
        var list = new List<(string, int[])>();
        list.Add((n.Projector1 + "weight", [t.HiddenSize, config.ProjectorInputSize]));
        if (config.ProjectorBias) list.Add((n.Projector1 + "bias", [t.HiddenSize]));
        list.Add((n.Projector2 + "weight", [t.HiddenSize, t.HiddenSize]));
        if (config.ProjectorBias) list.Add((n.Projector2 + "bias", [t.HiddenSize]));
        string pl = n.Language;
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
            if (config.Saisa)
            {
                // SAISA (llava_llama.py): nn.Sequential(nn.Linear(1024, d), nn.GELU(), nn.Linear(d, d)) per decoder layer.
                list.Add((l + "mm_projector.0.weight", [d, config.ProjectorInputSize]));
                list.Add((l + "mm_projector.0.bias", [d]));
                list.Add((l + "mm_projector.2.weight", [d, d]));
                list.Add((l + "mm_projector.2.bias", [d]));
            }
        }
        list.Add((pl + "norm.weight", [t.HiddenSize]));
        if (includeLmHead) list.Add((n.LmHead, [t.VocabSize, t.HiddenSize]));
        return list;
    }
}
