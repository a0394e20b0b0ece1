// All weights of a model: one model.safetensors, or the shards a model.safetensors.index.json lists
// ({"metadata": {...}, "weight_map": {tensor name: shard file name}}, as Hugging Face writes it).
// The index is checked against the shards before anything is handed out: shard names must be plain file
// names inside the model directory, every listed shard must exist, every tensor the index lists must be in
// the shard it names, every tensor a shard holds must be listed for that shard, and no tensor may be stored
// twice. Each shard is mapped once (or read into memory, LoadOptions.MemoryMap = false); weights stay valid
// until the store is disposed. CheckUnchanged detects a mapped file changed since (see LoadOptions). PyTorch pickle weights
// (pytorch_model*.bin) are not read: unpickling runs code, and tools/convert/bin_to_safetensors.py converts them.
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;

namespace VteKernels.Formats;

/// <summary>The weights of a model, from one safetensors file or a sharded set.</summary>
public sealed class WeightStore : IDisposable
{
    /// <summary>Name of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>Name of the index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, (SafetensorsFile File, TensorEntry Entry)> _tensors;
    private readonly List<string> _names;
    private bool _disposed;

    /// <summary>The file the store was opened from: the single safetensors file or the index.</summary>
    public string SourcePath { get; }

    /// <summary>Tensor names, shard by shard, in data-offset order within each shard.</summary>
    public IReadOnlyCollection<string> Names => _names;

    /// <summary>Full paths of the safetensors files, in shard order.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>Total size of all tensors in bytes (headers excluded).</summary>
    public long TotalBytes { get; }

    private WeightStore(string sourcePath, List<SafetensorsFile> files)
    {
        SourcePath = sourcePath;
        _files = files;
        Files = files.Select(f => f.FilePath).ToArray();
        _tensors = new Dictionary<string, (SafetensorsFile, TensorEntry)>(StringComparer.Ordinal);
        _names = new List<string>();
        long total = 0;
        foreach (var f in files)
            foreach (var e in f.Entries)
            {
                _tensors.Add(e.Name, (f, e));
                _names.Add(e.Name);
                total += e.ByteLength;
            }
        TotalBytes = total;
    }

    /// <summary>
    /// Opens the weights in a model directory: <c>model.safetensors</c> if present, else the shards that
    /// <c>model.safetensors.index.json</c> lists.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <param name="modelDir">The model folder.</param>
    /// <param name="options">Whether the files are memory-mapped (the default) or read into memory; see <see cref="LoadOptions"/>.</param>
    /// <exception cref="ModelFormatException">Neither file is there (the message says how to convert PyTorch .bin weights
    /// when those are what the folder holds), or the index or a shard is malformed or inconsistent.</exception>
    public static WeightStore Open(string modelDir, LoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        var dir = Path.GetFullPath(modelDir);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
        var single = Path.Combine(dir, SingleFileName);
        if (File.Exists(single)) return OpenFile(single, options);
        var index = Path.Combine(dir, IndexFileName);
        if (File.Exists(index)) return OpenIndex(index, options);
        if (PickleWeights(dir) is { } pickle)
            throw new ModelFormatException(pickle, null,
                $"PyTorch pickle weights are not read (safetensors only): convert {dir} with tools/convert/bin_to_safetensors.py");
        throw new ModelFormatException(dir, null, $"neither {SingleFileName} nor {IndexFileName} was found in {dir}");
    }

    /// <summary>
    /// The PyTorch pickle checkpoint in a folder that has no safetensors (pytorch_model.bin, its shards'
    /// index, or a shard), which original LLaVA checkpoints and older CLIP folders often are; null if none.
    /// </summary>
    private static string? PickleWeights(string dir)
    {
        foreach (var name in new[] { "pytorch_model.bin.index.json", "pytorch_model.bin" })
            if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return Directory.EnumerateFiles(dir, "pytorch_model*.bin").Order(StringComparer.Ordinal).FirstOrDefault();
    }

    /// <summary>Opens a single safetensors file as a store.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafetensorsException">The file is malformed.</exception>
    public static WeightStore OpenFile(string safetensorsPath, LoadOptions? options = null)
    {
        var f = SafetensorsFile.Open(safetensorsPath, options);
        return new WeightStore(f.FilePath, [f]);
    }

    private static WeightStore OpenIndex(string indexPath, LoadOptions? options)
    {
        var dir = Path.GetDirectoryName(indexPath)!;
        var weightMap = ReadWeightMap(indexPath);

        // Shards in name order (the numbered names sort into shard order); the first tensor listed for each
        // names it in errors.
        var firstTensor = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (tensor, shard) in weightMap) firstTensor.TryAdd(shard, tensor);
        foreach (var (shard, tensor) in firstTensor)
        {
            if (!File.Exists(Path.Combine(dir, shard)))
                throw new ModelFormatException(indexPath, tensor, $"shard {shard} does not exist in {dir}");
        }

        var files = new List<SafetensorsFile>();
        try
        {
            foreach (var shard in firstTensor.Keys) files.Add(SafetensorsFile.Open(Path.Combine(dir, shard), options));
            CheckAgainstIndex(indexPath, weightMap, files);
            return new WeightStore(indexPath, files);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        try
        {
            return ReadWeightMapCore(indexPath);
        }
        catch (InvalidOperationException e) when (e.Source == "System.Text.Json")
        {
            // A name or value System.Text.Json cannot decode: an escaped lone surrogate such as "\ud800".
            throw new ModelFormatException(indexPath, null, $"a string is not valid UTF-16: {e.Message}", e);
        }
    }

    private static Dictionary<string, string> ReadWeightMapCore(string indexPath)
    {
        var bytes = File.ReadAllBytes(indexPath);
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new ModelFormatException(indexPath, null, "not valid UTF-8");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes);
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException(indexPath, null, $"not valid JSON: {ex.Message.ReplaceLineEndings(" ")}", ex);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(indexPath, null, $"index is not a JSON object (found {root.ValueKind})");
            JsonElement? mapEl = null;
            foreach (var p in root.EnumerateObject())
            {
                if (p.Name != "weight_map") continue;
                if (mapEl is not null) throw new ModelFormatException(indexPath, null, "duplicate 'weight_map' key");
                mapEl = p.Value;
            }
            if (mapEl is not { } map) throw new ModelFormatException(indexPath, null, "index has no 'weight_map'");
            if (map.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(indexPath, null, $"'weight_map' is not a JSON object (found {map.ValueKind})");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new ModelFormatException(indexPath, p.Name, $"'weight_map' value is not a string (found {p.Value.ValueKind})");
                var shard = p.Value.GetString()!;
                if (ShardNameProblem(shard) is { } problem)
                    throw new ModelFormatException(indexPath, p.Name, $"shard file name '{shard}' is not a plain file name in the model directory ({problem})");
                if (!result.TryAdd(p.Name, shard))
                    throw new ModelFormatException(indexPath, p.Name, "tensor is listed twice in 'weight_map'");
            }
            return result;
        }
    }

    private static string? ShardNameProblem(string name)
    {
        if (name.Length == 0) return "it is empty";
        if (Path.IsPathRooted(name)) return "it is an absolute path";
        if (name.Contains('/') || name.Contains('\\')) return "it contains a directory separator";
        if (name is "." or "..") return "it names a directory";
        if (name.AsSpan().IndexOfAny(Path.GetInvalidFileNameChars()) >= 0) return "it contains a character not allowed in file names";
        return null;
    }

    private static void CheckAgainstIndex(string indexPath, Dictionary<string, string> weightMap, List<SafetensorsFile> files)
    {
        var holder = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        foreach (var f in files)
            foreach (var e in f.Entries)
            {
                if (holder.TryGetValue(e.Name, out var other))
                    throw new ModelFormatException(indexPath, e.Name,
                        $"tensor is stored in two shards, {Path.GetFileName(other.FilePath)} and {Path.GetFileName(f.FilePath)}");
                holder.Add(e.Name, f);
            }
        foreach (var f in files)
        {
            var shard = Path.GetFileName(f.FilePath);
            foreach (var e in f.Entries)
            {
                if (!weightMap.TryGetValue(e.Name, out var listed))
                    throw new ModelFormatException(indexPath, e.Name, $"shard {shard} holds this tensor but the index does not list it");
                if (listed != shard)
                    throw new ModelFormatException(indexPath, e.Name, $"shard {shard} holds this tensor but the index assigns it to {listed}");
            }
        }
        foreach (var (tensor, shard) in weightMap)
        {
            if (!holder.ContainsKey(tensor))
                throw new ModelFormatException(indexPath, tensor, $"the index assigns this tensor to {shard}, which does not hold it");
        }
    }

    /// <summary>Throws if a memory-mapped file of the store changed since it was opened (<see cref="SafetensorsFile.CheckUnchanged"/>).</summary>
    /// <exception cref="WeightFileChangedException">A file changed.</exception>
    /// <exception cref="ObjectDisposedException">The store has been disposed.</exception>
    public void CheckUnchanged()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var f in _files) f.CheckUnchanged();
    }

    /// <summary>Whether the model has a tensor of this name.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>A view of a tensor's stored bytes; valid until the store is disposed.</summary>
    /// <exception cref="ModelFormatException">The model has no such tensor.</exception>
    public Weight Get(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Find(name).File.GetWeight(name);
    }

    /// <summary>A view of a tensor's stored bytes, if the model has it.</summary>
    public bool TryGet(string name, [NotNullWhen(true)] out Weight? weight)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        weight = _tensors.TryGetValue(name, out var t) ? t.File.GetWeight(name) : null;
        return weight is not null;
    }

    /// <summary>The header entry of a tensor (offsets are relative to its file's data section).</summary>
    /// <exception cref="ModelFormatException">The model has no such tensor.</exception>
    public TensorEntry GetEntry(string name) => Find(name).Entry;

    /// <summary>Full path of the file that holds a tensor.</summary>
    /// <exception cref="ModelFormatException">The model has no such tensor.</exception>
    public string FileOf(string name) => Find(name).File.FilePath;

    private (SafetensorsFile File, TensorEntry Entry) Find(string name) =>
        _tensors.TryGetValue(name, out var t) ? t : throw new ModelFormatException(SourcePath, name, "no such tensor in the model");

    /// <summary>Unmaps every file. Weights obtained from the store must not be used afterwards.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var f in _files) f.Dispose();
    }
}
