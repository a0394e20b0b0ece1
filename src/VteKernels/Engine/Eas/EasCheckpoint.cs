// Reads and writes EAS configurations (skip list + PIA adapters). Two layouts are read (docs/eas.md):
//
// The public release (LLaVA-EAS): the trainer saves the whole LLaVA model with the adapters inside it, as
// `[prefix]layers.{N}.adapter_attn.{conv_A,conv_B,conv_D}.{weight,bias}` + `expert_weights.weight` (the
// adapter before a kept attention block) and `[prefix]layers.{N}.replaced_adapter.{conv_A,conv_B,conv_C,conv_D}.*`
// + `expert_weights.{weight,bias}` (the adapter in place of a skipped one). Conv1d weights are [out, in, 1]
// (read as [out, in] too); B and D are grouped, [d, H / 2]. A fine-tuned checkpoint keeps exactly one adapter
// per layer (the trainer deletes the other), so which layers are skipped follows from the names; a
// search-stage checkpoint has both in every layer and records no skip list: the caller passes it. s and t
// are not stored; the release always runs s = 1, t = 10, groups = 2. The trainer writes PyTorch .bin
// shards, which are refused with a pointer to the converter: unpickling is not something a loader should do.
//
// Our own (format "vte-eas/1"): one safetensors file, tensors `eas.{l}.A`, `A_bias`, `C`, `C_bias`, `B`,
// `B_bias`, `D`, `D_bias`, `expert`, `expert_bias` (row-major, convolution dims dropped) and `__metadata__`
// {format, skipped_layers, scale, temperature, groups} with optional per-layer `scale.{l}`, `temperature.{l}`,
// `groups.{l}` where an adapter differs from the file's value.
//
// Every check names the file and the tensor (or metadata key); tensors are widened to float32 as they are read.
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using VteKernels.Formats;

namespace VteKernels.Engine.Eas;

/// <summary>Loads and saves <see cref="EasAdapters"/>.</summary>
public static partial class EasCheckpoint
{
    /// <summary>The "format" metadata value of our own files.</summary>
    public const string FormatName = "vte-eas/1";

    /// <summary>Output scale s of the public release (set_PIAdapter's default, never overridden by its scripts).</summary>
    public const float PublicScale = 1f;

    /// <summary>Router temperature t of the public release (set_PIAdapter's default).</summary>
    public const float PublicTemperature = 10f;

    /// <summary>Groups of B and D in the public release (the PIAdapter classes' default).</summary>
    public const int PublicGroups = 2;

    private const string FormatPrefix = "vte-eas/";
    private const string ConverterHint = "convert it to safetensors first with tools/convert/bin_to_safetensors.py (the EAS trainer saves PyTorch pytorch_model-*.bin shards)";
    private static readonly string[] PickleExtensions = [".bin", ".pt", ".pth", ".ckpt"];

    [GeneratedRegex(@"^(?<prefix>(?:.*\.)?)layers\.(?<layer>\d+)\.(?<kind>adapter_attn|replaced_adapter)\.(?<param>.+)$", RegexOptions.CultureInvariant)]
    private static partial Regex PublicName();

    [GeneratedRegex(@"^eas\.(?<layer>\d+)\.(?<param>[^.]+)$", RegexOptions.CultureInvariant)]
    private static partial Regex OurName();

    /// <summary>
    /// Loads an EAS configuration from a safetensors file, or from every *.safetensors file of a folder (a whole
    /// EAS checkpoint folder, in which only the adapter tensors are read).
    /// </summary>
    /// <param name="path">A safetensors file or a folder.</param>
    /// <param name="skippedLayers">
    /// The layers whose attention is skipped, for files that do not record them (public search-stage
    /// checkpoints hold both adapters in every layer). Where the file records them, a list given here must agree.
    /// </param>
    /// <exception cref="ModelFormatException">
    /// The path is missing or a PyTorch pickle; no adapter tensors; a tensor is missing, misshapen, non-finite or
    /// unexpected; widths disagree; the metadata is missing, unknown or not finite; the skip list is missing
    /// (where the file does not record it), names layers the file has no adapter for, or disagrees with the file.
    /// </exception>
    public static EasAdapters Load(string path, IReadOnlyList<int>? skippedLayers = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        var files = new List<SafetensorsFile>();
        try
        {
            foreach (var f in ListFiles(path)) files.Add(SafetensorsFile.Open(f));
            var ours = new List<SafetensorsFile>();
            foreach (var f in files)
            {
                var format = f.Metadata.GetValueOrDefault("format");
                if (format is not null && format.StartsWith(FormatPrefix, StringComparison.Ordinal))
                {
                    if (format != FormatName) throw new ModelFormatException(f.FilePath, null, $"unknown format '{format}' in the metadata (this runtime reads {FormatName})");
                    ours.Add(f);
                }
                else if (f.Entries.FirstOrDefault(e => OurName().IsMatch(e.Name)) is { } stray)
                    throw new ModelFormatException(f.FilePath, stray.Name, $"an EAS tensor in a file whose metadata does not say format {FormatName} (found '{format ?? "none"}')");
            }
            if (ours.Count > 1) throw new ModelFormatException(path, null, $"{ours.Count} files with format {FormatName} ({string.Join(", ", ours.Select(f => Path.GetFileName(f.FilePath)))}); give one file");
            if (ours.Count == 1)
            {
                var mixed = files.Where(f => f != ours[0]).SelectMany(f => f.Entries.Select(e => (f, e))).FirstOrDefault(t => PublicName().IsMatch(t.e.Name));
                if (mixed.e is not null) throw new ModelFormatException(mixed.f.FilePath, mixed.e.Name, $"public-layout adapter tensors next to a {FormatName} file ({Path.GetFileName(ours[0].FilePath)}); give one of them");
                return LoadOurs(ours[0], skippedLayers);
            }
            return LoadPublic(path, files, skippedLayers);
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    /// <summary>
    /// Writes <paramref name="eas"/> in our own format (format "vte-eas/1", docs/eas.md) to one safetensors file.
    /// </summary>
    /// <param name="eas">The configuration.</param>
    /// <param name="path">Destination file; replaced once the whole file is written.</param>
    /// <param name="dtype">Element type of the tensors (float32 keeps every value).</param>
    /// <exception cref="ArgumentException">The configuration has adapters but a skipped layer has none (a file like that is refused by <see cref="Load"/>).</exception>
    public static void Save(EasAdapters eas, string path, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(eas);
        ArgumentNullException.ThrowIfNull(path);
        var adapters = eas.Adapters.Values.OrderBy(a => a.Layer).ToList();
        if (adapters.Count > 0 && eas.SkippedLayers.FirstOrDefault(l => !eas.Adapters.ContainsKey(l), -1) is var bare and >= 0)
            throw new ArgumentException($"layer {bare} is skipped but has no adapter while other layers have adapters", nameof(eas));

        float scale = adapters.Count > 0 ? adapters[0].Scale : PublicScale;
        float temperature = adapters.Count > 0 ? adapters[0].Temperature : PublicTemperature;
        int groups = adapters.Count > 0 ? adapters[0].Groups : PublicGroups;
        var metadata = new Dictionary<string, string>
        {
            ["format"] = FormatName,
            ["skipped_layers"] = EasAdapters.FormatLayers(eas.SkippedLayers),
            ["scale"] = Text(scale),
            ["temperature"] = Text(temperature),
            ["groups"] = Text(groups),
        };
        var specs = new List<TensorSpec>();
        var data = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var a in adapters)
        {
            if (a.Scale != scale) metadata[$"scale.{a.Layer}"] = Text(a.Scale);
            if (a.Temperature != temperature) metadata[$"temperature.{a.Layer}"] = Text(a.Temperature);
            if (a.Groups != groups) metadata[$"groups.{a.Layer}"] = Text(a.Groups);
            int d = a.ModelDim, h = a.HiddenDim, hg = a.HiddenDim / a.Groups;
            Add("A", a.A, h, d);
            Add("A_bias", a.ABias, h);
            if (a.C is not null)
            {
                Add("C", a.C, h, d);
                Add("C_bias", a.CBias!, h);
            }
            Add("B", a.B, d, hg);
            Add("B_bias", a.BBias, d);
            Add("D", a.D, d, hg);
            Add("D_bias", a.DBias, d);
            Add("expert", a.Expert, 2, d);
            if (a.ExpertBias is not null) Add("expert_bias", a.ExpertBias, 2);

            void Add(string param, float[] values, params int[] shape)
            {
                var name = $"eas.{a.Layer}.{param}";
                specs.Add(new TensorSpec(name, dtype, shape));
                data[name] = values;
            }
        }
        SafetensorsWriter.Write(path, specs, (spec, stream) =>
        {
            var values = data[spec.Name];
            if (dtype == DType.F32)
            {
                stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
                return;
            }
            var bytes = new byte[spec.ByteLength];
            DTypes.FromFloat(values, dtype, bytes);
            stream.Write(bytes);
        }, metadata);

        static string Text<T>(T v) where T : IFormattable => v.ToString(null, CultureInfo.InvariantCulture);
    }

    // ------------------------------------------------------------------ files

    private static string[] ListFiles(string path)
    {
        if (Directory.Exists(path))
        {
            var found = Directory.GetFiles(path, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
            if (found.Length > 0) return found;
            var pickles = Directory.GetFiles(path).Where(IsPickleName).Order(StringComparer.Ordinal).ToArray();
            if (pickles.Length > 0)
                throw new ModelFormatException(path, null, $"the folder holds PyTorch files ({string.Join(", ", pickles.Take(3).Select(Path.GetFileName))}) but no safetensors; {ConverterHint}");
            throw new ModelFormatException(path, null, "the folder holds no *.safetensors file");
        }
        if (!File.Exists(path)) throw new ModelFormatException(path, null, "EAS checkpoint does not exist");
        if (IsPickleName(path) || StartsWithZipMagic(path))
            throw new ModelFormatException(path, null, $"a PyTorch pickle checkpoint, which this runtime does not read; {ConverterHint}");
        return [path];
    }

    private static bool IsPickleName(string file) =>
        PickleExtensions.Any(e => file.EndsWith(e, StringComparison.OrdinalIgnoreCase));

    // torch.save writes a zip archive; a safetensors file starts with its header length, never "PK\x03\x04"
    // (that would be a 67 MB header followed by zip version bytes).
    private static bool StartsWithZipMagic(string file)
    {
        Span<byte> head = stackalloc byte[4];
        using var fs = File.OpenRead(file);
        return fs.ReadAtLeast(head, 4, throwOnEndOfStream: false) == 4 && head.SequenceEqual("PK\x03\x04"u8);
    }

    /// <summary>One stored tensor, with the file it lives in.</summary>
    private readonly record struct Stored(SafetensorsFile File, TensorEntry Entry)
    {
        public string Name => Entry.Name;
        public int[] Shape => Entry.Shape;
        public string ShapeText => $"[{string.Join(", ", Entry.Shape)}]";

        public ModelFormatException Error(string problem) => new(File.FilePath, Entry.Name, problem);

        /// <summary>The values as float32, all finite.</summary>
        public float[] Read()
        {
            var v = File.GetWeight(Entry.Name).ToFloatArray();
            for (int i = 0; i < v.Length; i++)
                if (!float.IsFinite(v[i])) throw Error($"holds a non-finite value ({v[i].ToString(CultureInfo.InvariantCulture)}) at flat index {i}");
            return v;
        }
    }

    // ------------------------------------------------------------------ the public release's layout

    private static readonly HashSet<string> PublicParams = new(StringComparer.Ordinal)
    {
        "conv_A.weight", "conv_A.bias", "conv_B.weight", "conv_B.bias", "conv_C.weight", "conv_C.bias",
        "conv_D.weight", "conv_D.bias", "expert_weights.weight", "expert_weights.bias",
    };

    private static EasAdapters LoadPublic(string path, List<SafetensorsFile> files, IReadOnlyList<int>? skippedLayers)
    {
        // (layer, replaced) -> param -> tensor
        var groups = new SortedDictionary<(int Layer, bool Replaced), Dictionary<string, Stored>>();
        string? prefix = null;
        foreach (var f in files)
            foreach (var e in f.Entries)
            {
                var m = PublicName().Match(e.Name);
                if (!m.Success) continue;
                var t = new Stored(f, e);
                if (!int.TryParse(m.Groups["layer"].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
                    throw t.Error("layer index out of range");
                var param = m.Groups["param"].Value;
                if (!PublicParams.Contains(param))
                    throw t.Error($"unexpected adapter tensor '{param}' (a PIA adapter holds conv_A..conv_D weight/bias and expert_weights)");
                bool replaced = m.Groups["kind"].Value == "replaced_adapter";
                if (!replaced && param.StartsWith("conv_C.", StringComparison.Ordinal))
                    throw t.Error("adapter_attn (the adapter before a kept attention block) has no conv_C; only replaced_adapter does");
                prefix ??= m.Groups["prefix"].Value;
                if (!groups.TryGetValue((layer, replaced), out var g)) groups[(layer, replaced)] = g = new(StringComparer.Ordinal);
                if (g.TryGetValue(param, out var other))
                    throw t.Error($"layer {layer}'s {m.Groups["kind"].Value}.{param} is stored twice (also as '{other.Name}' in {Path.GetFileName(other.File.FilePath)})");
                g[param] = t;
            }
        if (groups.Count == 0)
            throw new ModelFormatException(path, null,
                $"no EAS adapter tensors in {files.Count} safetensors file(s) (expected names like model.layers.N.adapter_attn.conv_A.weight, model.layers.N.replaced_adapter.conv_C.weight, or eas.N.A with format {FormatName})");

        var attn = groups.Keys.Where(k => !k.Replaced).Select(k => k.Layer).ToHashSet();
        var replacedLayers = groups.Keys.Where(k => k.Replaced).Select(k => k.Layer).ToHashSet();
        string Expected(int layer, bool replaced, string param) =>
            $"{prefix}layers.{layer}.{(replaced ? "replaced_adapter" : "adapter_attn")}.{param}";

        List<int> skipped;
        if (skippedLayers is null)
        {
            var both = attn.Intersect(replacedLayers).Order().ToList();
            if (both.Count > 0)
                throw new ModelFormatException(path, Expected(both[0], true, "conv_A.weight"),
                    $"layers {EasAdapters.FormatLayers(both)} hold both adapter_attn and replaced_adapter (a search-stage checkpoint), so the file does not record which layers are skipped: pass the skip list (e.g. --skip-attn 20-31)");
            skipped = replacedLayers.Order().ToList();
        }
        else
        {
            skipped = CheckedList(path, skippedLayers);
            foreach (var l in skipped)
                if (!replacedLayers.Contains(l))
                    throw new ModelFormatException(path, Expected(l, true, "conv_A.weight"),
                        $"layer {l} is in the skip list but the checkpoint has no replaced_adapter for it (replaced_adapter layers: {EasAdapters.FormatLayers(replacedLayers.Order().ToList())})");
            foreach (var l in replacedLayers.Except(attn).Order())
                if (skipped.BinarySearch(l) < 0)
                    throw new ModelFormatException(path, Expected(l, false, "conv_A.weight"),
                        $"layer {l} holds only a replaced_adapter (it was fine-tuned with its attention skipped) but the skip list keeps its attention");
        }

        var adapters = new List<PiaAdapter>();
        int? modelDim = null;
        string? dimSource = null;
        foreach (var ((layer, replaced), g) in groups)
        {
            bool isSkipped = skipped.BinarySearch(layer) >= 0;
            if (replaced != isSkipped) continue; // the other adapter of a search-stage layer
            var a = BuildPublic(layer, replaced, g, (param) => Expected(layer, replaced, param), path);
            if (modelDim is null) (modelDim, dimSource) = (a.ModelDim, g["conv_A.weight"].Name);
            else if (a.ModelDim != modelDim)
                throw g["conv_A.weight"].Error($"adapter is for hidden size {a.ModelDim}, but '{dimSource}' is for {modelDim}");
            adapters.Add(a);
        }
        return Build(path, skipped, adapters);
    }

    private static PiaAdapter BuildPublic(int layer, bool replaced, Dictionary<string, Stored> g, Func<string, string> expected, string path)
    {
        Stored Get(string param) => g.TryGetValue(param, out var t) ? t : throw new ModelFormatException(path, expected(param), "missing tensor");

        var a = Get("conv_A.weight");
        var (h, d) = ConvShape(a);
        if (d % PublicGroups != 0 || h % PublicGroups != 0)
            throw a.Error($"shape {a.ShapeText}: width {h} and hidden size {d} must both divide into the release's {PublicGroups} groups");
        int hg = h / PublicGroups;
        var aBias = Vector(Get("conv_A.bias"), h, "conv_A.weight");
        float[]? c = null, cBias = null;
        if (replaced)
        {
            var ct = Get("conv_C.weight");
            if (ConvShape(ct) != (h, d)) throw ct.Error($"shape {ct.ShapeText}, expected [{h}, {d}, 1] to match conv_A.weight {a.ShapeText}");
            c = ct.Read();
            cBias = Vector(Get("conv_C.bias"), h, "conv_C.weight");
        }
        var b = UpProjection(Get("conv_B.weight"));
        var bBias = Vector(Get("conv_B.bias"), d, "conv_A.weight");
        var dw = UpProjection(Get("conv_D.weight"));
        var dBias = Vector(Get("conv_D.bias"), d, "conv_A.weight");
        var e = Get("expert_weights.weight");
        if (e.Shape is not [2, var ed] || ed != d) throw e.Error($"shape {e.ShapeText}, expected [2, {d}] (two experts over hidden size {d})");
        float[]? eBias = g.TryGetValue("expert_weights.bias", out var eb) ? Vector(eb, 2, "expert_weights.weight") : null;

        return new PiaAdapter
        {
            Layer = layer, ModelDim = d, HiddenDim = h, Groups = PublicGroups,
            A = a.Read(), ABias = aBias, C = c, CBias = cBias,
            B = b, BBias = bBias, D = dw, DBias = dBias,
            Expert = e.Read(), ExpertBias = eBias,
            Scale = PublicScale, Temperature = PublicTemperature,
        };

        float[] UpProjection(Stored t)
        {
            if (ConvShape(t) != (d, hg))
                throw t.Error($"shape {t.ShapeText}, expected [{d}, {hg}, 1]: a grouped 1x1 convolution from width {h} (conv_A.weight {a.ShapeText}) in {PublicGroups} groups back to hidden size {d}");
            return t.Read();
        }

        float[] Vector(Stored t, int n, string of)
        {
            if (t.Shape is not [var len] || len != n) throw t.Error($"shape {t.ShapeText}, expected [{n}] to match {of}");
            return t.Read();
        }
    }

    // A Conv1d(kernel 1) weight [out, in, 1], or the same squeezed to [out, in].
    private static (int Out, int In) ConvShape(Stored t) => t.Shape switch
    {
        [var o, var i, 1] => (o, i),
        [var o, var i] => (o, i),
        _ => throw t.Error($"shape {t.ShapeText} is not a 1x1 convolution weight [out, in, 1] or a matrix [out, in]"),
    };

    // ------------------------------------------------------------------ our own format

    private static readonly HashSet<string> OurParams = new(StringComparer.Ordinal)
    {
        "A", "A_bias", "C", "C_bias", "B", "B_bias", "D", "D_bias", "expert", "expert_bias",
    };

    private static EasAdapters LoadOurs(SafetensorsFile f, IReadOnlyList<int>? callerList)
    {
        var file = f.FilePath;
        var byLayer = new SortedDictionary<int, Dictionary<string, Stored>>();
        foreach (var e in f.Entries)
        {
            var t = new Stored(f, e);
            var m = OurName().Match(e.Name);
            if (!m.Success || !OurParams.Contains(m.Groups["param"].Value))
                throw t.Error($"unexpected tensor in a {FormatName} file (expected eas.L.{{{string.Join(",", OurParams)}}})");
            if (!int.TryParse(m.Groups["layer"].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
                throw t.Error("layer index out of range");
            if (!byLayer.TryGetValue(layer, out var g)) byLayer[layer] = g = new(StringComparer.Ordinal);
            g[m.Groups["param"].Value] = t;
        }

        var text = Meta("skipped_layers") ?? throw new ModelFormatException(file, null, "metadata has no 'skipped_layers'");
        List<int> skipped;
        try
        {
            skipped = text is "none" or "" ? [] : [.. EasAdapters.ParseLayers(text)];
        }
        catch (FormatException ex)
        {
            throw new ModelFormatException(file, null, $"metadata 'skipped_layers': {ex.Message}", ex);
        }
        if (callerList is not null)
        {
            var given = CheckedList(file, callerList);
            if (!given.SequenceEqual(skipped))
                throw new ModelFormatException(file, null, $"the file records skipped layers {EasAdapters.FormatLayers(skipped)}, but {EasAdapters.FormatLayers(given)} was given");
        }
        if (byLayer.Count > 0)
            foreach (var l in skipped)
                if (!byLayer.ContainsKey(l))
                    throw new ModelFormatException(file, $"eas.{l}.C", $"missing tensor: layer {l} is skipped but the file has no adapter for it (adapters for layers {EasAdapters.FormatLayers(byLayer.Keys.ToList())})");

        var adapters = new List<PiaAdapter>();
        int? modelDim = null;
        foreach (var (layer, g) in byLayer)
        {
            bool isSkipped = skipped.BinarySearch(layer) >= 0;
            float scale = MetaFloat("scale", layer), temperature = MetaFloat("temperature", layer, positive: true);
            int groups = MetaGroups(layer);

            var a = Get("A");
            if (a.Shape is not [var h, var d] || h == 0 || d == 0) throw a.Error($"shape {a.ShapeText}, expected [H, d] (2-D, non-empty)");
            if (h % groups != 0 || d % groups != 0) throw a.Error($"shape {a.ShapeText} does not divide into {groups} groups");
            modelDim ??= d;
            if (d != modelDim) throw a.Error($"adapter is for hidden size {d}, others for {modelDim}");
            int hg = h / groups;
            if (isSkipped != g.ContainsKey("C"))
                throw isSkipped ? new ModelFormatException(file, $"eas.{layer}.C", $"missing tensor: layer {layer} is skipped, and its adapter replaces the attention block")
                    : Get("C").Error($"layer {layer} keeps its attention, so its adapter has no C (skipped layers: {EasAdapters.FormatLayers(skipped)})");
            if (!isSkipped && g.TryGetValue("C_bias", out var strayBias)) throw strayBias.Error($"layer {layer} keeps its attention, so its adapter has no C");

            adapters.Add(new PiaAdapter
            {
                Layer = layer, ModelDim = d, HiddenDim = h, Groups = groups,
                A = a.Read(), ABias = Read("A_bias", h),
                C = isSkipped ? Read("C", h, d) : null, CBias = isSkipped ? Read("C_bias", h) : null,
                B = Read("B", d, hg), BBias = Read("B_bias", d),
                D = Read("D", d, hg), DBias = Read("D_bias", d),
                Expert = Read("expert", 2, d), ExpertBias = g.ContainsKey("expert_bias") ? Read("expert_bias", 2) : null,
                Scale = scale, Temperature = temperature,
            });

            Stored Get(string param) => g.TryGetValue(param, out var t) ? t : throw new ModelFormatException(file, $"eas.{layer}.{param}", "missing tensor");

            float[] Read(string param, params int[] shape)
            {
                var t = Get(param);
                if (!t.Shape.SequenceEqual(shape))
                    throw t.Error($"shape {t.ShapeText}, expected [{string.Join(", ", shape)}] (H = {h} from eas.{layer}.A, d = {d}, groups = {groups})");
                return t.Read();
            }
        }
        if (byLayer.Count == 0)
        {
            // Still check the metadata a configuration without adapters carries.
            MetaFloat("scale", -1);
            MetaFloat("temperature", -1, positive: true);
            MetaGroups(-1);
        }
        return Build(file, skipped, adapters);

        string? Meta(string key) => f.Metadata.GetValueOrDefault(key);

        string MetaValue(string key, int layer, out string usedKey)
        {
            usedKey = $"{key}.{layer}";
            if (layer >= 0 && Meta(usedKey) is { } v) return v;
            usedKey = key;
            return Meta(key) ?? throw new ModelFormatException(file, null, $"metadata has no '{key}'");
        }

        float MetaFloat(string key, int layer, bool positive = false)
        {
            var s = MetaValue(key, layer, out var used);
            if (!float.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
                throw new ModelFormatException(file, null, $"metadata '{used}' = '{s}' is not a number");
            if (!float.IsFinite(v)) throw new ModelFormatException(file, null, $"metadata '{used}' = '{s}' is not finite");
            if (positive && !(v > 0)) throw new ModelFormatException(file, null, $"metadata '{used}' = '{s}' must be positive");
            return v;
        }

        int MetaGroups(int layer)
        {
            var s = MetaValue("groups", layer, out var used);
            if (!int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var v) || v <= 0)
                throw new ModelFormatException(file, null, $"metadata '{used}' = '{s}' is not a positive integer");
            return v;
        }
    }

    // ------------------------------------------------------------------ shared

    private static List<int> CheckedList(string path, IReadOnlyList<int> layers)
    {
        var list = layers.ToList();
        if (list.Any(l => l < 0)) throw new ModelFormatException(path, null, $"the skip list {string.Join(",", layers)} has a negative layer index");
        if (list.Distinct().Count() != list.Count) throw new ModelFormatException(path, null, $"the skip list {string.Join(",", layers)} names a layer twice");
        list.Sort();
        return list;
    }

    private static EasAdapters Build(string source, List<int> skipped, List<PiaAdapter> adapters)
    {
        try
        {
            return new EasAdapters(skipped, adapters, source);
        }
        catch (ArgumentException ex)
        {
            throw new ModelFormatException(source, null, ex.Message, ex);
        }
    }
}
