// A loaded LLaVA-family model: its family's vision encoder (tower, projector, packing; built by
// config.Family, Families/*) and the family-blind language model (Engine/Text/TextDecoder), bound to one
// backend. InferenceSession drives them: encode the prompt's images, write their rows into the embeddings,
// run the decoder layers, the head.
using VteKernels.Backends;
using VteKernels.Engine.Vision;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Engine;

/// <summary>A loaded LLaVA-family model (LLaVA-1.5, LLaVA-NeXT) bound to a backend. Thread-safe for concurrent sessions only if the backend is.</summary>
public sealed class LlavaModel : IDisposable
{
    private readonly IDisposable? _owner;

    /// <summary>The model's configuration; <see cref="LlavaConfig.Family"/> says how images become prompt rows.</summary>
    public LlavaConfig Config { get; }

    /// <summary>The backend that runs it.</summary>
    public IBackend Backend { get; }

    /// <summary>The bound weights (as stored).</summary>
    public LlavaWeights Weights { get; }

    /// <summary>
    /// The generation defaults (the folder's generation_config.json as HF reads it; config.json's eos id without one)
    /// that <see cref="Generator"/> applies where a request leaves a value unset. Settable to change the defaults.
    /// </summary>
    public GenerationConfig GenerationConfig { get; set; }

    /// <summary>The family's vision side: image in, the rows of its prompt span out.</summary>
    internal VisionEncoder Vision { get; }

    /// <summary>The language model: embeddings, decoder layers, head.</summary>
    internal TextDecoder Text { get; }

    /// <summary>Binds <paramref name="weights"/> to <paramref name="backend"/>. The weights' owner must outlive the model.</summary>
    public LlavaModel(LlavaConfig config, LlavaWeights weights, IBackend backend) : this(config, weights, backend, null) { }

    private LlavaModel(LlavaConfig config, LlavaWeights weights, IBackend backend, IDisposable? owner)
    {
        Config = config;
        Weights = weights;
        Backend = backend;
        _owner = owner;
        GenerationConfig = GenerationConfig.FromModelConfig(config);
        Vision = config.Family.CreateEncoder(config, weights, backend);
        Text = new TextDecoder(config.Text, config.ImageTokenIndex, weights.Text, backend);
    }

    /// <summary>
    /// Loads a model directory: the HF llava-hf layout (config.json + safetensors, single or sharded; model_type
    /// llava or llava_next), or the original LLaVA layout (llava_llama config, `model.*` tensors) with its CLIP
    /// tower from <paramref name="visionTowerDir"/> or the config's mm_vision_tower folder. SAISA checkpoints
    /// (per-layer projectors) load in the original layout.
    /// </summary>
    /// <param name="modelDir">The model folder.</param>
    /// <param name="backend">The backend to run on.</param>
    /// <param name="visionTowerDir">The CLIP folder of an original-layout checkpoint, or null.</param>
    /// <param name="options">Whether the weight files are memory-mapped (the default) or read into memory; see <see cref="LoadOptions"/>.</param>
    /// <exception cref="ModelFormatException">The config or a weight file is malformed or disagrees with the config, or the vision tower cannot be found.</exception>
    public static LlavaModel Load(string modelDir, IBackend backend, string? visionTowerDir = null, LoadOptions? options = null)
    {
        var checkpoint = LlavaCheckpoint.Open(modelDir, visionTowerDir, options);
        try
        {
            return new LlavaModel(checkpoint.Config, checkpoint.Weights, backend, checkpoint)
            {
                GenerationConfig = GenerationConfig.Load(checkpoint.ModelDir, checkpoint.Config),
            };
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>A new session with an empty cache; <paramref name="options"/> sets sequence-wide methods (EAS).</summary>
    /// <exception cref="ModelFormatException">The EAS configuration does not fit the model, or leaves a layer without attention weights unskipped.</exception>
    public InferenceSession CreateSession(SessionOptions? options = null) => new(this, options);

    /// <summary>Throws if a memory-mapped weight file this model loaded changed since (nothing to check for weights it did not open).</summary>
    /// <exception cref="WeightFileChangedException">A file changed.</exception>
    public void CheckWeightsUnchanged() => (_owner as LlavaCheckpoint)?.CheckUnchanged();

    /// <summary>Releases what the model holds on the backend beyond its weights, and the weight files it opened.</summary>
    public void Dispose()
    {
        Vision.Dispose();
        _owner?.Dispose();
    }
}
