// DyVTE's exit gates: one small router per decoder layer,
//   logits = W2 · GELU(W1 · [mean of the text states after the image (last token excluded) ; last prompt token state])
// with W1 [hidden, 2d] and W2 [2, hidden] (hidden = 2048 in the public release, no biases, exact erf GELU as CpuOps.Gelu computes it).
// The exit fires after layer l when logits[1] > logits[0]. The gates run on the host in float32: a check
// reads two d-vectors and costs 2d · 2048 + 2 · 2048 multiply-adds (16.8 M for a 7B model), next to ~4 G
// for one decoder layer over 640 tokens.
//
// Files: safetensors with the public release's names (`[model.]visual_gates_router.{l}.w1.weight`, `.w2.weight`,
// as the original LLaVA-layout checkpoints store them) or our own (`gates.{l}.w1.weight`, `gates.{l}.w2.weight`).
// A directory is searched file by file, so a whole original checkpoint folder can be given.
using System.Numerics.Tensors;
using System.Text.RegularExpressions;
using VteKernels.Backends.Cpu;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Engine.Exit;

/// <summary>The router of one decoder layer: W1 [hidden, 2d] and W2 [2, hidden], row-major float32.</summary>
public sealed record ExitGate(int Layer, int ModelDim, int Hidden, float[] W1, float[] W2)
{
    /// <summary>
    /// The two logits for the gate input <paramref name="feature"/> (length 2d); logit 1 &gt; logit 0 means exit.
    /// Effectively computes W2 · gelu(W1 · feature).
    /// </summary>
    public (float Stay, float Exit) Evaluate(ReadOnlySpan<float> feature)
    {
        if (feature.Length != 2 * ModelDim) throw new ArgumentException($"gate input has {feature.Length} values, expected {2 * ModelDim}", nameof(feature));
        var h = new float[Hidden];
        for (int i = 0; i < Hidden; i++) h[i] = TensorPrimitives.Dot(W1.AsSpan(i * 2 * ModelDim, 2 * ModelDim), feature);
        CpuOps.Gelu(h);
        return (TensorPrimitives.Dot(W2.AsSpan(0, Hidden), h), TensorPrimitives.Dot(W2.AsSpan(Hidden, Hidden), h));
    }
}

/// <summary>A set of DyVTE exit gates, one per decoder layer that has one.</summary>
public sealed partial class ExitGates
{
    private readonly ExitGate?[] _byLayer;

    /// <summary>Where the gates came from (a file path, or "memory").</summary>
    public string Source { get; }

    /// <summary>The language model's hidden size d (the gate input has 2d values).</summary>
    public int ModelDim { get; }

    /// <summary>The gates, by layer.</summary>
    public IReadOnlyList<ExitGate> Gates { get; }

    /// <summary>Wraps gates built in memory (tests, training).</summary>
    /// <exception cref="ArgumentException">Gates disagree on the model size, repeat a layer or have inconsistent shapes.</exception>
    public ExitGates(IEnumerable<ExitGate> gates, string source = "memory")
    {
        var list = gates.OrderBy(g => g.Layer).ToList();
        if (list.Count == 0) throw new ArgumentException("no gates given", nameof(gates));
        ModelDim = list[0].ModelDim;
        foreach (var g in list)
        {
            if (g.ModelDim != ModelDim) throw new ArgumentException($"gate of layer {g.Layer} is for hidden size {g.ModelDim}, others for {ModelDim}", nameof(gates));
            if (g.Layer < 0) throw new ArgumentException($"gate layer {g.Layer} is negative", nameof(gates));
            if (g.W1.Length != g.Hidden * 2 * g.ModelDim || g.W2.Length != 2 * g.Hidden)
                throw new ArgumentException($"gate of layer {g.Layer}: weight lengths {g.W1.Length}, {g.W2.Length} do not fit hidden {g.Hidden} and d {g.ModelDim}", nameof(gates));
        }
        if (list.Select(g => g.Layer).Distinct().Count() != list.Count) throw new ArgumentException("a layer has two gates", nameof(gates));
        _byLayer = new ExitGate?[list[^1].Layer + 1];
        foreach (var g in list) _byLayer[g.Layer] = g;
        Gates = list;
        Source = source;
    }

    /// <summary>The gate of <paramref name="layer"/>, or null when that layer has none.</summary>
    public ExitGate? ForLayer(int layer) => (uint)layer < (uint)_byLayer.Length ? _byLayer[layer] : null;

    /// <summary>
    /// The gate input after a layer, from that layer's output rows on the host: [mean of the rows after the last
    /// image span up to the last row, the last row excluded ; the last row], 2d values, exactly as the engine
    /// forms it during a prefill (same summation order, so the same float32 bits). <paramref name="rows"/> holds
    /// <paramref name="rowCount"/> rows of <paramref name="modelDim"/> values (the prompt rows only; trailing
    /// data is ignored); <paramref name="spans"/> are the image spans in those rows. Null when no row lies
    /// between the last image and the last row: the mean is undefined and the engine's gate does not decide.
    /// </summary>
    /// <exception cref="ArgumentException">The rows are shorter than rowCount · modelDim, or a span lies outside them.</exception>
    public static float[]? Feature(ReadOnlySpan<float> rows, int rowCount, int modelDim, IReadOnlyList<ImageSpan> spans)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(modelDim);
        ArgumentOutOfRangeException.ThrowIfNegative(rowCount);
        if (rows.Length < (long)rowCount * modelDim)
            throw new ArgumentException($"{rows.Length} values hold fewer than {rowCount} rows of {modelDim}", nameof(rows));
        int d = modelDim;
        int first = spans.Count == 0 ? 0 : spans[^1].End;
        if (first > rowCount) throw new ArgumentException($"image span ends at row {first}, past the {rowCount} rows", nameof(spans));
        int textRows = rowCount - 1 - first;
        if (textRows <= 0) return null;
        var feature = new float[2 * d];
        for (int r = 0; r < textRows; r++)
            TensorPrimitives.Add(feature.AsSpan(0, d), rows.Slice((first + r) * d, d), feature.AsSpan(0, d));
        TensorPrimitives.Divide(feature.AsSpan(0, d), textRows, feature.AsSpan(0, d));
        rows.Slice((rowCount - 1) * d, d).CopyTo(feature.AsSpan(d));
        return feature;
    }

    /// <summary>Checks that the gates fit <paramref name="config"/>'s language model.</summary>
    /// <exception cref="ModelFormatException">Hidden size or layer indices disagree with the model.</exception>
    public void Validate(LlavaConfig config)
    {
        if (ModelDim != config.Text.HiddenSize)
            throw new ModelFormatException(Source, null, $"the gates take 2 x {ModelDim} inputs but the model's hidden size is {config.Text.HiddenSize}");
        var last = Gates[^1].Layer;
        if (last >= config.Text.NumLayers)
            throw new ModelFormatException(Source, null, $"a gate for layer {last} but the model has {config.Text.NumLayers} decoder layers");
    }

    [GeneratedRegex(@"^(?:.*\.)?(?:visual_gates_router|gates)\.(\d+)\.(w1|w2)\.weight$")]
    private static partial Regex GateName();

    /// <summary>
    /// Loads gates from a safetensors file, or from every *.safetensors file of a directory (an original
    /// DyVTE checkpoint folder). Tensors with other names are ignored.
    /// </summary>
    /// <exception cref="ModelFormatException">No gate tensors, a w1 without its w2, or shapes that do not fit together.</exception>
    public static ExitGates Load(string path)
    {
        string[] files = Directory.Exists(path)
            ? Directory.GetFiles(path, "*.safetensors").Order(StringComparer.Ordinal).ToArray()
            : File.Exists(path) ? [path] : throw new ModelFormatException(path, null, "gate file does not exist");
        var w1 = new Dictionary<int, (float[] Data, int[] Shape, string Name)>();
        var w2 = new Dictionary<int, (float[] Data, int[] Shape, string Name)>();
        foreach (var f in files)
        {
            using var st = SafetensorsFile.Open(f);
            foreach (var e in st.Entries)
            {
                var m = GateName().Match(e.Name);
                if (!m.Success) continue;
                int layer = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                var target = m.Groups[2].Value == "w1" ? w1 : w2;
                if (target.ContainsKey(layer)) throw new ModelFormatException(f, e.Name, $"a second {m.Groups[2].Value} for layer {layer}");
                if (e.Shape.Length != 2) throw new ModelFormatException(f, e.Name, $"gate weights must be 2-D, got [{string.Join(", ", e.Shape)}]");
                target[layer] = (st.GetWeight(e.Name).ToFloatArray(), e.Shape, e.Name);
            }
        }
        if (w1.Count == 0 && w2.Count == 0)
            throw new ModelFormatException(path, null, "no gate tensors found (expected names like visual_gates_router.N.w1.weight or gates.N.w1.weight)");
        var gates = new List<ExitGate>();
        foreach (var layer in w1.Keys.Union(w2.Keys).Order())
        {
            if (!w1.TryGetValue(layer, out var a)) throw new ModelFormatException(path, w2[layer].Name, $"layer {layer} has w2 but no w1");
            if (!w2.TryGetValue(layer, out var b)) throw new ModelFormatException(path, a.Name, $"layer {layer} has w1 but no w2");
            int hidden = a.Shape[0], input = a.Shape[1];
            if (input % 2 != 0) throw new ModelFormatException(path, a.Name, $"w1 takes {input} inputs; a gate takes 2d (an even number)");
            if (b.Shape[0] != 2 || b.Shape[1] != hidden)
                throw new ModelFormatException(path, b.Name, $"w2 is [{b.Shape[0]}, {b.Shape[1]}], expected [2, {hidden}] to follow w1 [{hidden}, {input}]");
            gates.Add(new ExitGate(layer, input / 2, hidden, a.Data, b.Data));
        }
        try
        {
            return new ExitGates(gates, path);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(path, null, e.Message);
        }
    }

    /// <summary>Writes the gates as safetensors in float32 with our own names (gates.{l}.w1.weight, gates.{l}.w2.weight).</summary>
    public void Save(string path)
    {
        var specs = new List<TensorSpec>();
        var data = new Dictionary<string, float[]>();
        foreach (var g in Gates)
        {
            specs.Add(new TensorSpec($"gates.{g.Layer}.w1.weight", DType.F32, [g.Hidden, 2 * g.ModelDim]));
            specs.Add(new TensorSpec($"gates.{g.Layer}.w2.weight", DType.F32, [2, g.Hidden]));
            data[$"gates.{g.Layer}.w1.weight"] = g.W1;
            data[$"gates.{g.Layer}.w2.weight"] = g.W2;
        }
        SafetensorsWriter.Write(path, specs, (spec, stream) => stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data[spec.Name].AsSpan())),
            new Dictionary<string, string> { ["format"] = "vte-dyvte-gates", ["model_dim"] = ModelDim.ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }
}
