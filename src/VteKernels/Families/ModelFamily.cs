// A model family's vision side as one unit. What differs between LLaVA-1.5 and LLaVA-NeXT (and would differ
// again for LLaVA-OneVision or Qwen2-VL) is how an image becomes rows of the prompt:
//   config        which config.json model_type the family reads and its own keys (LlavaConfig.Parse hands the
//                 JSON object over; the CLIP and LLaMA halves are common),
//   tensors       the weights it adds to the common ones (LLaVA-NeXT: image_newline),
//   preprocessing an image file to the tower's input (one CLIP tile; anyres tiles),
//   token count   how many prompt rows an image fills (a constant; a function of the image's size),
//   encoder       tower, projector and packing on a backend, producing exactly those rows,
//   cost          the vision side's multiply-adds for one image.
// Everything after the image rows are written into the prompt's embeddings - the decoder layer loop with
// visual-token exit, NAAViT, EAS and the KV cache - is family-blind (Engine/Text/TextDecoder.cs): it sees
// rows and image spans, never tiles. A new family is a new ModelFamily subclass with its files and one line
// in Known below.
using System.Text.Json.Nodes;
using VteKernels.Backends;
using VteKernels.Engine;
using VteKernels.Engine.Vision;
using VteKernels.Imaging;
using VteKernels.Models;

namespace VteKernels.Families;

/// <summary>
/// The family-specific part of a model: its config keys, extra tensors, image preprocessing, token count per
/// image and vision encoder. Instances carry the family's settings (LLaVA-NeXT: its grid pinpoints) and are
/// immutable; <see cref="LlavaConfig.Family"/> holds the model's.
/// </summary>
public abstract record ModelFamily
{
    /// <summary>The config.json model_type that selects this family ("llava", "llava_next").</summary>
    public abstract string ModelType { get; }

    /// <summary>The family's name for people ("LLaVA-1.5", "LLaVA-NeXT").</summary>
    public abstract string DisplayName { get; }

    /// <summary>
    /// How many prompt rows (image placeholder tokens) <paramref name="image"/> fills: the features the encoder
    /// produces for it, which is what the family's processor expands one image placeholder to.
    /// </summary>
    /// <exception cref="InvalidInputException">The image lacks what the family needs to count (LLaVA-NeXT: its source size).</exception>
    public abstract int TokenCount(LlavaConfig config, ImageInput image);

    /// <summary>Checks that <paramref name="image"/> is what the family's vision tower takes (tiles, sizes, finite values).</summary>
    /// <exception cref="InvalidInputException">It is not.</exception>
    public abstract void CheckImage(LlavaConfig config, ImageInput image);

    /// <summary>Multiply-adds of the vision side (patch embedding, tower layers, projector) for one image.</summary>
    public virtual long VisionMacs(LlavaConfig config, ImageInput image) => Cost.Vision(config, image.Tiles);

    /// <summary>
    /// The image preprocessing of this family, from the model's preprocessor_config.json
    /// (<paramref name="preprocessorConfigPath"/>, null for CLIP's defaults at the tower's size).
    /// </summary>
    /// <param name="config">The model.</param>
    /// <param name="preprocessorConfigPath">preprocessor_config.json, or null.</param>
    /// <param name="padToSquare">LLaVA-1.5's expand2square before CLIP preprocessing.</param>
    /// <exception cref="ModelFormatException">The preprocessor (or processor) config is malformed or disagrees with the model.</exception>
    /// <exception cref="InvalidInputException">The family does not support <paramref name="padToSquare"/>.</exception>
    public abstract ImagePreprocessor CreatePreprocessor(LlavaConfig config, string? preprocessorConfigPath, bool padToSquare);

    /// <summary>
    /// A hint for a prompt whose placeholder run holds <paramref name="tokens"/> tokens where
    /// <paramref name="image"/> needs <see cref="TokenCount"/>; null when the family knows no reason.
    /// </summary>
    public virtual string? CountMismatchHint(LlavaConfig config, ImageInput image, int tokens) => null;

    /// <summary>Lines describing the family's image handling, for `vte inspect`.</summary>
    public abstract IReadOnlyList<string> Describe(LlavaConfig config);

    /// <summary>
    /// Tensors the family adds to the common ones, named relative to the checkpoint's model prefix
    /// (transformers 4.x: none; 5.x: <c>model.</c>), with their shapes.
    /// </summary>
    internal virtual IEnumerable<(string Name, int[] Shape)> ExtraTensors(LlavaConfig config) => [];

    /// <summary>Checks the family's settings against the rest of the config.</summary>
    /// <exception cref="ModelConfigException">They do not fit.</exception>
    internal virtual void Validate(LlavaConfig config, string? path) { }

    /// <summary>The family's vision encoder on <paramref name="backend"/> (uploads its weights).</summary>
    internal abstract VisionEncoder CreateEncoder(LlavaConfig config, LlavaWeights weights, IBackend backend);

    /// <summary>The model_type values config.json may name, in order.</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = [.. Known.Select(k => k.ModelType)];

    // The registry: model_type -> the family's reader of its own config keys. The only place a family is named.
    private static (string ModelType, Func<JsonObject, string?, ModelFamily> Read)[] Known =>
    [
        ("llava", Llava.LlavaFamily.Read),
        ("llava_next", LlavaNext.LlavaNextFamily.Read),
    ];

    /// <summary>The family of a llava-hf config.json whose model_type is <paramref name="modelType"/>, its settings read from <paramref name="root"/>.</summary>
    /// <exception cref="ModelConfigException">Unknown model_type, or the family's keys are malformed.</exception>
    internal static ModelFamily Read(string modelType, JsonObject root, string? path)
    {
        foreach (var (type, read) in Known)
            if (type == modelType) return read(root, path);
        throw new ModelConfigException(path, $"model_type '{modelType}' is not supported (expected {string.Join(" or ", ModelTypes.Select(t => $"'{t}'"))})");
    }
}
