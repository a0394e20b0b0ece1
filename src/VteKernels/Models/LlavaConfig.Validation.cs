// The bounds every size of a config.json must keep, checked as soon as each part is read and before any
// derived size (heads x head_dim, patches per side squared, ...) is computed or anything proportional to a
// size is allocated. The caps are far above any released model (LLaMA-3-405B: hidden 16384, FFN 53248,
// 126 layers, 128 heads; the largest vocabularies ~256k; CLIP/SigLIP towers at most ~1000 px, 48 layers)
// and keep every derived size inside int. Whether the checkpoint's tensors bear the sizes out is
// LlavaWeights' check, which compares the layer counts with the tensors present before listing any.
namespace VteKernels.Models;

public sealed partial record LlavaConfig
{
    /// <summary>Largest hidden, intermediate, head or projection width accepted (2^18).</summary>
    public const int MaxWidth = 1 << 18;

    /// <summary>Most layers accepted in either tower (1024).</summary>
    public const int MaxLayers = 1024;

    /// <summary>Most attention heads accepted (1024).</summary>
    public const int MaxHeads = 1024;

    /// <summary>Largest vocabulary accepted (2^24, the tokenizer's id cap plus one).</summary>
    public const int MaxVocab = 1 << 24;

    /// <summary>Largest vision input side in pixels (4096, as the image preprocessor's cap).</summary>
    public const int MaxImageSize = 4096;

    /// <summary>Largest context accepted (2^24 positions).</summary>
    public const int MaxPositions = 1 << 24;

    /// <summary>Most vision feature layers that may be concatenated.</summary>
    public const int MaxFeatureLayers = 64;

    private static void Check(bool ok, string? path, string problem)
    {
        if (!ok) throw new ModelConfigException(path, problem);
    }

    private static void CheckAtMost(int value, int max, string? path, string key) =>
        Check(value <= max, path, $"{key} {value} is larger than the {max} supported");

    /// <summary>The vision tower's sizes: each within its cap, hidden_size divisible by the heads, the patch grid inside int.</summary>
    private static void Validate(VisionConfig v, string? path, string prefix)
    {
        CheckAtMost(v.HiddenSize, MaxWidth, path, prefix + "hidden_size");
        CheckAtMost(v.IntermediateSize, MaxWidth, path, prefix + "intermediate_size");
        CheckAtMost(v.NumLayers, MaxLayers, path, prefix + "num_hidden_layers");
        CheckAtMost(v.NumHeads, MaxHeads, path, prefix + "num_attention_heads");
        CheckAtMost(v.ImageSize, MaxImageSize, path, prefix + "image_size");
        CheckAtMost(v.PatchSize, v.ImageSize, path, prefix + "patch_size");
        CheckAtMost(v.NumChannels, 64, path, prefix + "num_channels");
        Check(float.IsFinite(v.LayerNormEps) && v.LayerNormEps > 0, path, $"{prefix}layer_norm_eps {v.LayerNormEps} must be a positive finite float32");
    }

    /// <summary>The language model's sizes: each within its cap, the query/key widths inside <see cref="MaxWidth"/>,
    /// rope_theta and rms_norm_eps positive and finite as float32 (rope_theta 1e308 is infinity in float32).</summary>
    private static void Validate(TextConfig t, string? path, string prefix)
    {
        CheckAtMost(t.HiddenSize, MaxWidth, path, prefix + "hidden_size");
        CheckAtMost(t.IntermediateSize, MaxWidth, path, prefix + "intermediate_size");
        CheckAtMost(t.NumLayers, MaxLayers, path, prefix + "num_hidden_layers");
        CheckAtMost(t.NumHeads, MaxHeads, path, prefix + "num_attention_heads");
        CheckAtMost(t.NumKvHeads, MaxHeads, path, prefix + "num_key_value_heads");
        CheckAtMost(t.HeadDim, MaxWidth, path, prefix + "head_dim");
        Check((long)t.NumHeads * t.HeadDim <= MaxWidth, path, $"{prefix}num_attention_heads x head_dim = {(long)t.NumHeads * t.HeadDim} is larger than the {MaxWidth} supported");
        CheckAtMost(t.VocabSize, MaxVocab, path, prefix + "vocab_size");
        CheckAtMost(t.MaxPositionEmbeddings, MaxPositions, path, prefix + "max_position_embeddings");
        Check(float.IsFinite(t.RmsNormEps) && t.RmsNormEps > 0, path, $"{prefix}rms_norm_eps {t.RmsNormEps} must be a positive finite float32");
        Check(float.IsFinite(t.RopeTheta) && t.RopeTheta > 0, path, $"{prefix}rope_theta {t.RopeTheta} must be a positive finite float32");
    }
}
