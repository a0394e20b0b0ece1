// What a prefill did, for research code, logs and the --trace file: where the visual tokens left, how many
// rows each layer processed, the multiply-adds executed against the full model, the cache it left behind
// and the time of each stage. Per layer, on request or when the policy needs it: the text rows' softmax
// mass on the visual keys (per head and averaged) and the gate's decision.
using System.Text.Json;

namespace VteKernels.Engine.Exit;

/// <summary>One decoder layer during a prefill.</summary>
public sealed record LayerTrace
{
    /// <summary>Decoder layer index.</summary>
    public required int Layer { get; init; }

    /// <summary>Rows (tokens) this layer processed.</summary>
    public required int Rows { get; init; }

    /// <summary>How many of those rows were visual tokens.</summary>
    public required int VisualRows { get; init; }

    /// <summary>
    /// Mean over the text rows (rows after the first image that are not visual) and the heads of the softmax
    /// mass on visual keys; null when it was not measured (no trace, no text rows, or no visual keys).
    /// </summary>
    public float? VisualMass { get; init; }

    /// <summary>The same mass per query head (averaged over the text rows); null when not measured.</summary>
    public float[]? VisualMassPerHead { get; init; }

    /// <summary>The gate's logits (stay, exit) after this layer; null when no gate ran.</summary>
    public float[]? GateLogits { get; init; }

    /// <summary>The gate's exit probability, softmax(logits)[1]; null when no gate ran.</summary>
    public float? GateExitProbability { get; init; }

    /// <summary>True when the visual tokens left after this layer.</summary>
    public bool ExitAfter { get; init; }
}

/// <summary>Multiply-adds of a prefill (matrix products only; see <see cref="Cost"/>).</summary>
public sealed record MacCount(long Vision, long Decoder, long Head)
{
    /// <summary>All stages.</summary>
    public long Total => Vision + Decoder + Head;
}

/// <summary>Wall time of a prefill's stages.</summary>
public sealed record StageTimes(TimeSpan Vision, TimeSpan Decoder, TimeSpan Head)
{
    /// <summary>All stages.</summary>
    public TimeSpan Total => Vision + Decoder + Head;
}

/// <summary>The report of one prefill.</summary>
public sealed record PrefillReport
{
    /// <summary>The policy in command-line notation.</summary>
    public required string Policy { get; init; }

    /// <summary>What happened to the early layers' visual K/V.</summary>
    public required ExitKvMode KvMode { get; init; }

    /// <summary>Prompt rows given (visual included).</summary>
    public required int PromptRows { get; init; }

    /// <summary>Visual rows in the prompt.</summary>
    public required int VisualRows { get; init; }

    /// <summary>Whether NAAViT ran (visual rows issued no queries and skipped the FFN).</summary>
    public bool Naavit { get; init; }

    /// <summary>Decoder layers whose attention was skipped (EAS), ascending.</summary>
    public int[] SkippedLayers { get; init; } = [];

    /// <summary>
    /// Number of decoder layers that saw the visual tokens (the K of layer:K) when an exit fired; null when
    /// every layer saw them (no exit, or a prompt without images).
    /// </summary>
    public int? ExitLayer { get; init; }

    /// <summary>Rows each decoder layer processed.</summary>
    public required int[] TokensPerLayer { get; init; }

    /// <summary>Multiply-adds executed.</summary>
    public required MacCount Executed { get; init; }

    /// <summary>Multiply-adds the same prefill costs with every layer seeing every token.</summary>
    public required MacCount Full { get; init; }

    /// <summary>Bytes of key/value rows held after the prefill (per-layer lengths × row bytes × 2).</summary>
    public required long KvBytes { get; init; }

    /// <summary>Bytes the cache has allocated (capacity) after the prefill.</summary>
    public required long KvBytesAllocated { get; init; }

    /// <summary>Tokens held per layer after the prefill.</summary>
    public required int[] KvLengths { get; init; }

    /// <summary>Wall time per stage.</summary>
    public required StageTimes Times { get; init; }

    /// <summary>Per-layer details (always present; masses and gate values only where measured).</summary>
    public required IReadOnlyList<LayerTrace> Layers { get; init; }

    /// <summary>Executed over full multiply-adds.</summary>
    public double MacRatio => Full.Total == 0 ? 1 : (double)Executed.Total / Full.Total;

    /// <summary>A one-line summary for logs.</summary>
    public string Summary()
    {
        string exit = ExitLayer is int k ? $"exit after {k} of {TokensPerLayer.Length} layers" : VisualRows == 0 ? "no image" : "no exit";
        string methods = (Naavit ? "; naavit" : "") + (SkippedLayers.Length > 0 ? $"; attention skipped in {SkippedLayers.Length} layers" : "");
        return FormattableString.Invariant(
            $"{Policy}: {exit}{methods}; rows/layer {TokensPerLayer[0]}->{TokensPerLayer[^1]}; MACs {Executed.Total / 1e9:F3} G of {Full.Total / 1e9:F3} G full ({100 * MacRatio:F1}%); KV {KvBytes / 1048576.0:F2} MiB; vision {Times.Vision.TotalMilliseconds:F0} ms, decoder {Times.Decoder.TotalMilliseconds:F0} ms, head {Times.Head.TotalMilliseconds:F0} ms");
    }

    /// <summary>Writes the report (and every layer's trace) as JSON.</summary>
    public void WriteJson(Stream stream, IReadOnlyDictionary<string, string>? context = null)
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("format", "vte-prefill-trace/1");
        if (context is not null)
            foreach (var (key, value) in context) w.WriteString(key, value);
        w.WriteString("policy", Policy);
        w.WriteString("kv_mode", KvMode == ExitKvMode.KeepEarly ? "keep" : "drop");
        w.WriteNumber("prompt_rows", PromptRows);
        w.WriteNumber("visual_rows", VisualRows);
        w.WriteBoolean("naavit", Naavit);
        w.WriteStartArray("skipped_layers");
        foreach (var l in SkippedLayers) w.WriteNumberValue(l);
        w.WriteEndArray();
        if (ExitLayer is int exitLayer) w.WriteNumber("exit_layer", exitLayer); else w.WriteNull("exit_layer");
        w.WriteNumber("num_layers", TokensPerLayer.Length);
        WriteMacs(w, "macs_executed", Executed);
        WriteMacs(w, "macs_full", Full);
        w.WriteNumber("mac_ratio", MacRatio);
        w.WriteNumber("kv_bytes", KvBytes);
        w.WriteNumber("kv_bytes_allocated", KvBytesAllocated);
        w.WriteStartArray("kv_lengths");
        foreach (var n in KvLengths) w.WriteNumberValue(n);
        w.WriteEndArray();
        w.WriteStartObject("time_ms");
        w.WriteNumber("vision", Times.Vision.TotalMilliseconds);
        w.WriteNumber("decoder", Times.Decoder.TotalMilliseconds);
        w.WriteNumber("head", Times.Head.TotalMilliseconds);
        w.WriteEndObject();
        w.WriteStartArray("layers");
        foreach (var l in Layers)
        {
            w.WriteStartObject();
            w.WriteNumber("layer", l.Layer);
            w.WriteNumber("rows", l.Rows);
            w.WriteNumber("visual_rows", l.VisualRows);
            if (l.VisualMass is float m) w.WriteNumber("visual_mass", m); else w.WriteNull("visual_mass");
            if (l.VisualMassPerHead is { } heads)
            {
                w.WriteStartArray("visual_mass_per_head");
                foreach (var h in heads) w.WriteNumberValue(h);
                w.WriteEndArray();
            }
            else w.WriteNull("visual_mass_per_head");
            if (l.GateLogits is { } g)
            {
                w.WriteStartArray("gate_logits");
                w.WriteNumberValue(g[0]);
                w.WriteNumberValue(g[1]);
                w.WriteEndArray();
                w.WriteNumber("gate_exit_probability", l.GateExitProbability ?? float.NaN);
            }
            w.WriteBoolean("exit_after", l.ExitAfter);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteMacs(Utf8JsonWriter w, string name, MacCount m)
    {
        w.WriteStartObject(name);
        w.WriteNumber("vision", m.Vision);
        w.WriteNumber("decoder", m.Decoder);
        w.WriteNumber("head", m.Head);
        w.WriteNumber("total", m.Total);
        w.WriteEndObject();
    }
}
