// The table DyVTE, EAS and SAISA report, for the user's own questions: per setting the accuracy (mean
// score over the scored questions), agreement with the full model ("none"), mean exit layer, multiply-adds
// against the full model, KV bytes, time to first token and decode speed; and the Pareto front of quality
// against cost. Quality is the accuracy when every setting has scored questions, else the rate of answers
// identical to the full model's; cost is multiply-adds per question (prefill + decode) or wall time per
// question. A setting is on a front when no other setting is at least as good in quality at no more cost,
// and strictly better in one of the two.
// Built from the answers files' lines alone (see AnswerLines), so a resumed run summarizes every answer.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VteKernels.Evaluation;

/// <summary>One setting's aggregate over the questions.</summary>
public sealed record SettingSummary
{
    /// <summary>The setting's name.</summary>
    public required string Setting { get; init; }

    /// <summary>Questions answered.</summary>
    public required int Questions { get; init; }

    /// <summary>Questions with a score.</summary>
    public required int Scored { get; init; }

    /// <summary>Mean score over the scored questions; null when none is scored.</summary>
    public double? Accuracy { get; init; }

    /// <summary>Fraction of answers whose text equals the full model's; null without a "none" setting.</summary>
    public double? SameTextAsNone { get; init; }

    /// <summary>Fraction of answers whose first token equals the full model's; null without a "none" setting.</summary>
    public double? SameFirstTokenAsNone { get; init; }

    /// <summary>Mean number of decoder layers that saw the visual tokens (a question without exit counts the full depth).</summary>
    public required double MeanExitLayer { get; init; }

    /// <summary>Answers in which an exit fired.</summary>
    public required int Exits { get; init; }

    /// <summary>Summed prefill multiply-adds executed, and the full model's.</summary>
    public required long PrefillMacs { get; init; }

    /// <inheritdoc cref="PrefillMacs"/>
    public required long PrefillMacsFull { get; init; }

    /// <summary>Summed prefill and decode multiply-adds executed, and the full model's.</summary>
    public required long TotalMacs { get; init; }

    /// <inheritdoc cref="TotalMacs"/>
    public required long TotalMacsFull { get; init; }

    /// <summary>Mean KV bytes held after the prefill.</summary>
    public required double MeanKvBytes { get; init; }

    /// <summary>Mean time to first token, milliseconds.</summary>
    public required double MeanTimeToFirstTokenMs { get; init; }

    /// <summary>Decode tokens per second over all answers (tokens after the first / their time); null when no answer had two tokens.</summary>
    public double? DecodeTokensPerSecond { get; init; }

    /// <summary>Mean generation time per question, milliseconds.</summary>
    public required double MeanTimeMs { get; init; }

    /// <summary>Quality on the chart (accuracy or agreement, see <see cref="EvalSummary.Quality"/>).</summary>
    public double? QualityValue { get; init; }

    /// <summary>On the Pareto front of quality against multiply-adds.</summary>
    public bool ParetoMacs { get; init; }

    /// <summary>On the Pareto front of quality against time.</summary>
    public bool ParetoTime { get; init; }

    /// <summary>Prefill multiply-adds executed over the full model's.</summary>
    public double PrefillMacRatio => PrefillMacsFull == 0 ? 1 : (double)PrefillMacs / PrefillMacsFull;

    /// <summary>Prefill and decode multiply-adds executed over the full model's.</summary>
    public double TotalMacRatio => TotalMacsFull == 0 ? 1 : (double)TotalMacs / TotalMacsFull;

    /// <summary>Mean multiply-adds per question (prefill and decode).</summary>
    public double MeanMacs => Questions == 0 ? 0 : (double)TotalMacs / Questions;
}

/// <summary>The evaluation's table.</summary>
public sealed class EvalSummary
{
    private EvalSummary(IReadOnlyList<SettingSummary> settings, string? quality)
    {
        Settings = settings;
        Quality = quality;
    }

    /// <summary>The rows, in setting order.</summary>
    public IReadOnlyList<SettingSummary> Settings { get; }

    /// <summary>"accuracy", "agreement" (same text as none), or null when neither can be charted.</summary>
    public string? Quality { get; }

    /// <summary>
    /// Aggregates the answer lines of each setting (<paramref name="lines"/>[i] belongs to <paramref name="settings"/>[i])
    /// over <paramref name="questionKeys"/> (the questions of this run; lines of other questions are left out).
    /// </summary>
    /// <exception cref="ArgumentException">The lists differ in length, or <paramref name="quality"/> is not a known name.</exception>
    /// <param name="settings">The settings' names.</param>
    /// <param name="lines">Each setting's answer lines by question key.</param>
    /// <param name="questionKeys">The questions to aggregate over.</param>
    /// <param name="quality">"accuracy", "agreement", or null to take accuracy when every setting has scores, else agreement.</param>
    public static EvalSummary Build(IReadOnlyList<string> settings, IReadOnlyList<IReadOnlyDictionary<string, JsonObject>> lines, IReadOnlyCollection<string> questionKeys,
        string? quality = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(lines);
        ArgumentNullException.ThrowIfNull(questionKeys);
        if (settings.Count != lines.Count) throw new ArgumentException("one dictionary of lines per setting", nameof(lines));
        var rows = new List<SettingSummary>();
        for (int i = 0; i < settings.Count; i++)
        {
            var meta = questionKeys.Where(lines[i].ContainsKey).Select(k => lines[i][k]["metadata"] as JsonObject ?? new JsonObject()).ToList();
            rows.Add(Aggregate(settings[i], meta));
        }
        bool accuracy = rows.Count > 0 && rows.All(r => r.Accuracy is not null), agreement = rows.Count > 0 && rows.All(r => r.SameTextAsNone is not null);
        quality = quality switch
        {
            null => accuracy ? "accuracy" : agreement ? "agreement" : null,
            "accuracy" => accuracy ? quality : null,
            "agreement" => agreement ? quality : null,
            _ => throw new ArgumentException($"quality '{quality}' is not accuracy or agreement", nameof(quality)),
        };
        if (quality is not null)
        {
            var q = rows.Select(r => quality == "accuracy" ? r.Accuracy!.Value : r.SameTextAsNone!.Value).ToArray();
            var macs = rows.Select(r => r.MeanMacs).ToArray();
            var time = rows.Select(r => r.MeanTimeMs).ToArray();
            var onMacs = ParetoFront(macs, q);
            var onTime = ParetoFront(time, q);
            rows = rows.Select((r, k) => r with { QualityValue = q[k], ParetoMacs = onMacs[k], ParetoTime = onTime[k] }).ToList();
        }
        return new EvalSummary(rows, quality);
    }

    /// <summary>Which points (cost, quality) no other point dominates (no more cost, no less quality, one of them strictly).</summary>
    public static bool[] ParetoFront(IReadOnlyList<double> cost, IReadOnlyList<double> quality)
    {
        var front = new bool[cost.Count];
        for (int i = 0; i < cost.Count; i++)
        {
            front[i] = true;
            for (int j = 0; j < cost.Count && front[i]; j++)
                if (j != i && cost[j] <= cost[i] && quality[j] >= quality[i] && (cost[j] < cost[i] || quality[j] > quality[i]))
                    front[i] = false;
        }
        return front;
    }

    private static SettingSummary Aggregate(string setting, List<JsonObject> meta)
    {
        static double? D(JsonObject m, string k) => m[k] is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;
        static long L(JsonObject m, string k) => m[k] is JsonValue v && v.TryGetValue<long>(out var d) ? d : 0;
        static bool? B(JsonObject m, string k) => m[k] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;
        var scores = meta.Select(m => D(m, "score")).OfType<double>().ToList();
        var sameText = meta.Select(m => B(m, "same_text_as_none")).OfType<bool>().ToList();
        var sameFirst = meta.Select(m => B(m, "same_first_token_as_none")).OfType<bool>().ToList();
        double exitSum = 0;
        int exits = 0;
        foreach (var m in meta)
        {
            if (D(m, "exit_layer") is double k) { exitSum += k; exits++; }
            else exitSum += D(m, "num_layers") ?? 0;
        }
        double decodeTokens = 0, decodeSeconds = 0;
        foreach (var m in meta)
        {
            int n = m["tokens"] is JsonArray a ? a.Count : 0;
            if (n > 1 && D(m, "decode_tok_s") is double tps && tps > 0)
            {
                decodeTokens += n - 1;
                decodeSeconds += (n - 1) / tps;
            }
        }
        double Mean(string key) => meta.Count == 0 ? 0 : meta.Average(m => D(m, key) ?? 0);
        return new SettingSummary
        {
            Setting = setting, Questions = meta.Count, Scored = scores.Count,
            Accuracy = scores.Count > 0 ? scores.Average() : null,
            SameTextAsNone = sameText.Count > 0 && sameText.Count == meta.Count ? sameText.Average(b => b ? 1.0 : 0.0) : null,
            SameFirstTokenAsNone = sameFirst.Count > 0 && sameFirst.Count == meta.Count ? sameFirst.Average(b => b ? 1.0 : 0.0) : null,
            MeanExitLayer = meta.Count == 0 ? 0 : exitSum / meta.Count, Exits = exits,
            PrefillMacs = meta.Sum(m => L(m, "prefill_macs")), PrefillMacsFull = meta.Sum(m => L(m, "prefill_macs_full")),
            TotalMacs = meta.Sum(m => L(m, "prefill_macs") + L(m, "decode_macs")),
            TotalMacsFull = meta.Sum(m => L(m, "prefill_macs_full") + L(m, "decode_macs_full")),
            MeanKvBytes = Mean("kv_bytes"), MeanTimeToFirstTokenMs = Mean("ttft_ms"),
            DecodeTokensPerSecond = decodeSeconds > 0 ? decodeTokens / decodeSeconds : null, MeanTimeMs = Mean("time_ms"),
        };
    }

    /// <summary>The table as aligned text, one row per setting, and a line saying what the quality column and the fronts are.</summary>
    public string Table()
    {
        var ci = CultureInfo.InvariantCulture;
        string[] head = ["setting", "n", "accuracy", "same text", "same 1st", "exit layer", "prefill MACs", "total MACs", "KV MiB", "TTFT ms", "decode tok/s", "pareto"];
        var rows = new List<string[]> { head };
        foreach (var r in Settings)
        {
            string F(double? v, string fmt) => v is double d ? d.ToString(fmt, ci) : "-";
            string front = (r.ParetoMacs ? "M" : "") + (r.ParetoTime ? "T" : "");
            rows.Add([
                r.Setting, r.Questions.ToString(ci), r.Accuracy is null ? "-" : $"{F(r.Accuracy, "F3")} ({r.Scored})",
                F(r.SameTextAsNone, "F3"), F(r.SameFirstTokenAsNone, "F3"), F(r.MeanExitLayer, "F1"),
                string.Create(ci, $"{Giga(r.PrefillMacs)} ({100 * r.PrefillMacRatio:F1}%)"), string.Create(ci, $"{Giga(r.TotalMacs)} ({100 * r.TotalMacRatio:F1}%)"),
                F(r.MeanKvBytes / 1048576.0, "F2"), F(r.MeanTimeToFirstTokenMs, "F1"), F(r.DecodeTokensPerSecond, "F1"), front.Length == 0 ? "-" : front,
            ]);
        }
        var widths = Enumerable.Range(0, head.Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        var sb = new StringBuilder();
        foreach (var r in rows)
            sb.AppendLine(string.Join("  ", r.Select((cell, c) => c == 0 ? cell.PadRight(widths[c]) : cell.PadLeft(widths[c]))).TrimEnd());
        sb.Append(Quality switch
        {
            "accuracy" => "pareto: M = on the front of accuracy against multiply-adds, T = against time per question",
            "agreement" => "pareto: M = on the front of agreement with none (same text) against multiply-adds, T = against time per question",
            _ => "pareto: no front (the chosen quality is missing: give gold answers, or put none in --compare for agreement)",
        });
        sb.AppendLine();
        return sb.ToString();

        static string Giga(long macs) => string.Create(CultureInfo.InvariantCulture, $"{macs / 1e9:F3} G");
    }

    /// <summary>Writes the summary as JSON ("vte-eval-summary/1").</summary>
    public void WriteJson(Stream stream, IReadOnlyDictionary<string, string>? context = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("format", "vte-eval-summary/1");
        if (context is not null)
            foreach (var (k, v) in context) w.WriteString(k, v);
        if (Quality is null) w.WriteNull("quality"); else w.WriteString("quality", Quality);
        w.WriteStartArray("settings");
        foreach (var r in Settings)
        {
            w.WriteStartObject();
            w.WriteString("setting", r.Setting);
            w.WriteNumber("questions", r.Questions);
            w.WriteNumber("scored", r.Scored);
            Num("accuracy", r.Accuracy);
            Num("same_text_as_none", r.SameTextAsNone);
            Num("same_first_token_as_none", r.SameFirstTokenAsNone);
            w.WriteNumber("mean_exit_layer", r.MeanExitLayer);
            w.WriteNumber("exits", r.Exits);
            w.WriteNumber("prefill_macs", r.PrefillMacs);
            w.WriteNumber("prefill_macs_full", r.PrefillMacsFull);
            w.WriteNumber("prefill_mac_ratio", r.PrefillMacRatio);
            w.WriteNumber("total_macs", r.TotalMacs);
            w.WriteNumber("total_macs_full", r.TotalMacsFull);
            w.WriteNumber("total_mac_ratio", r.TotalMacRatio);
            w.WriteNumber("mean_kv_bytes", r.MeanKvBytes);
            w.WriteNumber("mean_ttft_ms", r.MeanTimeToFirstTokenMs);
            Num("decode_tok_s", r.DecodeTokensPerSecond);
            w.WriteNumber("mean_time_ms", r.MeanTimeMs);
            Num("quality", r.QualityValue);
            w.WriteBoolean("pareto_macs", r.ParetoMacs);
            w.WriteBoolean("pareto_time", r.ParetoTime);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();

        void Num(string name, double? v)
        {
            if (v is double d) w.WriteNumber(name, d); else w.WriteNull(name);
        }
    }
}
