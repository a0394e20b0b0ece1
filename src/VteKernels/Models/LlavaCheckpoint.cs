// Opens a LLaVA model folder in either on-disk layout and hands back what the engine needs: the config, the
// bound weights, and the weight stores that own them (mapped until Dispose).
//   llava-hf   config.json with text_config and vision_config; one store (model.safetensors or shards).
//   original   config.json with mm_* keys (haotian-liu/LLaVA; DyVTE and SAISA ship in it); the language model and
//              projector in the folder, the CLIP tower in a folder of its own: the visionTowerDir argument when
//              given, else mm_vision_tower when it names a local folder (a relative path is taken from the
//              current directory, as the original code's from_pretrained does). A hub id is never downloaded.
// The layout is read from config.json (mm_vision_tower or model_type "llava_llama"), never from a folder name.
// SAISA is recognised by its tensors (model.layers.N.mm_projector.*): its config.json has no key for it (the
// SAISA code switches on 'saisa' in the model's name), so the checkpoint's contents are the explicit signal.
using VteKernels.Formats;

namespace VteKernels.Models;

/// <summary>A LLaVA checkpoint opened from disk: config, bound weights and the files that hold them.</summary>
public sealed class LlavaCheckpoint : IDisposable
{
    /// <summary>Name of the configuration file in a model or vision tower folder.</summary>
    public const string ConfigFileName = "config.json";

    private readonly WeightStore[] _stores;

    /// <summary>The model folder (full path).</summary>
    public string ModelDir { get; }

    /// <summary>The model's configuration; for SAISA checkpoints <see cref="LlavaConfig.Saisa"/> is set.</summary>
    public LlavaConfig Config { get; }

    /// <summary>The bound weights; valid until this checkpoint is disposed.</summary>
    public LlavaWeights Weights { get; }

    /// <summary>The mm_* settings of an original-layout checkpoint; null for llava-hf.</summary>
    public OriginalLayoutSettings? Original { get; }

    /// <summary>The CLIP folder an original-layout checkpoint reads its vision tower config (and usually weights) from; null for llava-hf.</summary>
    public string? VisionTowerDir { get; }

    /// <summary>
    /// The preprocessor_config.json describing the image preprocessing, where there is one: the model folder's
    /// (llava-hf) or the CLIP folder's (original layout, whose model folder has none).
    /// </summary>
    public string? PreprocessorConfigPath { get; }

    private LlavaCheckpoint(string modelDir, LlavaConfig config, LlavaWeights weights, OriginalLayoutSettings? original,
        string? visionTowerDir, WeightStore[] stores)
    {
        ModelDir = modelDir;
        Config = config;
        Weights = weights;
        Original = original;
        VisionTowerDir = visionTowerDir;
        _stores = stores;
        var pre = Path.Combine(visionTowerDir ?? modelDir, "preprocessor_config.json");
        PreprocessorConfigPath = File.Exists(pre) ? pre : null;
    }

    /// <summary>
    /// Opens the model in <paramref name="modelDir"/>. For an original-layout checkpoint the CLIP tower is read from
    /// <paramref name="visionTowerDir"/> when given, else from the folder mm_vision_tower names.
    /// </summary>
    /// <param name="modelDir">The model folder: config.json plus safetensors (single or sharded).</param>
    /// <param name="visionTowerDir">The CLIP folder (config.json plus safetensors) of an original-layout checkpoint;
    /// overrides mm_vision_tower. Must be null for llava-hf checkpoints, which hold their own tower.</param>
    /// <exception cref="ModelConfigException">A config.json is missing or invalid, the configs disagree, or a vision tower folder is given for a llava-hf checkpoint.</exception>
    /// <param name="options">Whether the weight files are memory-mapped (the default) or read into memory; see <see cref="LoadOptions"/>.</param>
    /// <exception cref="ModelFormatException">A folder or weight file is missing, holds PyTorch .bin weights, is malformed, or disagrees with the config (the tensor is named).</exception>
    public static LlavaCheckpoint Open(string modelDir, string? visionTowerDir = null, LoadOptions? options = null)
    {
        var (dir, configPath) = ModelFolder(modelDir);
        var json = LlavaConfig.ReadText(configPath);
        var root = LlavaConfig.ParseObject(json, configPath);
        var original = LlavaConfig.Decoding(configPath, () => OriginalLayoutSettings.Describes(root) ? LlavaConfig.ReadOriginalLayoutSettings(root, configPath) : null);
        return original is not null
            ? OpenOriginal(dir, configPath, json, original, visionTowerDir, options)
            : OpenLlavaHf(dir, configPath, json, visionTowerDir, options);
    }

    /// <summary>
    /// The configuration alone, without opening a weight file: what options can be checked against before a model loads.
    /// <see cref="LlavaConfig.Saisa"/> is not known here (the tensors decide it) and stays false.
    /// </summary>
    /// <exception cref="ModelConfigException">A config.json is missing or invalid, or the configs disagree.</exception>
    /// <exception cref="ModelFormatException">The folder (or the vision tower folder) is missing or is a file.</exception>
    public static LlavaConfig ReadConfig(string modelDir, string? visionTowerDir = null)
    {
        var (_, configPath) = ModelFolder(modelDir);
        var json = LlavaConfig.ReadText(configPath);
        var root = LlavaConfig.ParseObject(json, configPath);
        var original = LlavaConfig.Decoding(configPath, () => OriginalLayoutSettings.Describes(root) ? LlavaConfig.ReadOriginalLayoutSettings(root, configPath) : null);
        if (original is null) return LlavaConfig.Parse(json, configPath);
        var towerDir = FindVisionTower(configPath, original, visionTowerDir);
        var towerConfig = Path.Combine(towerDir, ConfigFileName);
        if (!File.Exists(towerConfig))
            throw new ModelFormatException(towerConfig, null, $"the vision tower folder {towerDir} has no {ConfigFileName}");
        return LlavaConfig.ParseOriginalLayout(json, LlavaConfig.ReadText(towerConfig), configPath, towerConfig);
    }

    /// <summary>The full folder path and its config.json; a file (a GGUF file, a single safetensors) is named as such.</summary>
    private static (string Dir, string ConfigPath) ModelFolder(string modelDir)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        var dir = Path.GetFullPath(modelDir);
        if (File.Exists(dir))
        {
            var name = Path.GetFileName(dir);
            throw new ModelFormatException(null, null, name.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)
                ? $"{name} is a GGUF file; give a model folder in the HF layout (config.json and safetensors weights): GGUF is not read"
                : $"{name} is a file; give the model folder that holds config.json and the safetensors weights");
        }
        if (!Directory.Exists(dir))
            throw new ModelFormatException(null, null, dir.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)
                ? $"{dir} does not exist (and GGUF files are not read: give a model folder in the HF layout)"
                : $"model directory {dir} does not exist");
        return (dir, Path.Combine(dir, ConfigFileName));
    }

    private static LlavaCheckpoint OpenLlavaHf(string dir, string configPath, string json, string? visionTowerDir, LoadOptions? options)
    {
        var config = LlavaConfig.Parse(json, configPath);
        if (visionTowerDir is not null)
            throw new ModelConfigException(configPath, "a llava-hf checkpoint holds its own vision tower; a separate vision tower folder applies only to the original LLaVA layout");
        var store = WeightStore.Open(dir, options);
        try
        {
            return new LlavaCheckpoint(dir, config, LlavaWeights.Bind(config, store), null, null, [store]);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    private static LlavaCheckpoint OpenOriginal(string dir, string configPath, string json, OriginalLayoutSettings settings, string? visionTowerDir, LoadOptions? options)
    {
        var towerDir = FindVisionTower(configPath, settings, visionTowerDir);
        var towerConfig = Path.Combine(towerDir, ConfigFileName);
        if (!File.Exists(towerConfig))
            throw new ModelFormatException(towerConfig, null, $"the vision tower folder {towerDir} has no {ConfigFileName}");
        var config = LlavaConfig.ParseOriginalLayout(json, LlavaConfig.ReadText(towerConfig), configPath, towerConfig);

        var model = WeightStore.Open(dir, options);
        WeightStore? tower = null;
        try
        {
            config = config with { Saisa = LlavaWeights.HasSaisaProjectors(model) };
            // With unfreeze_mm_vision_tower the original code loads the CLIP folder, then the checkpoint's own tower
            // weights over it: those win when the checkpoint has them.
            bool embedded = settings.UnfreezeVisionTower &&
                model.Names.Any(n => n.StartsWith(LlavaWeights.OriginalEmbeddedVisionPrefix, StringComparison.Ordinal));
            if (!embedded) tower = WeightStore.Open(towerDir, options);
            var weights = LlavaWeights.BindOriginal(config, model, tower);
            return new LlavaCheckpoint(dir, config, weights, settings, towerDir, tower is null ? [model] : [model, tower]);
        }
        catch
        {
            tower?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>The CLIP folder: the explicit one, else mm_vision_tower when it is a local folder.</summary>
    private static string FindVisionTower(string configPath, OriginalLayoutSettings settings, string? visionTowerDir)
    {
        if (visionTowerDir is not null)
        {
            var full = Path.GetFullPath(visionTowerDir);
            if (!Directory.Exists(full)) throw new ModelFormatException(full, null, $"vision tower folder {full} does not exist");
            return full;
        }
        if (Directory.Exists(settings.VisionTower)) return Path.GetFullPath(settings.VisionTower);
        throw new ModelFormatException(configPath, null,
            $"mm_vision_tower '{settings.VisionTower}' is not a local folder and no vision tower folder was given: " +
            "download that CLIP model (config.json and safetensors weights) and pass its folder (vte: --vision-tower DIR)");
    }

    /// <summary>Throws if a memory-mapped weight file changed since the checkpoint was opened (see <see cref="LoadOptions"/>).</summary>
    /// <exception cref="WeightFileChangedException">A file changed.</exception>
    public void CheckUnchanged()
    {
        foreach (var s in _stores) s.CheckUnchanged();
    }

    /// <summary>Unmaps the weight files. The weights must not be used afterwards.</summary>
    public void Dispose()
    {
        foreach (var s in _stores) s.Dispose();
    }
}
