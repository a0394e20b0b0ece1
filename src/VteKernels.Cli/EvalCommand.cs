// `vte eval`: answers a question file (LLaVA's model_vqa JSONL, or ScienceQA's JSON array) into an answers
// file LLaVA's scoring scripts read, scoring each answer where the file gives gold answers. With --compare
// every question is answered under each listed setting (one image decode shared), one answers file per
// setting, and a summary table (terminal and JSON) and a Pareto chart of quality against cost follow.
// Runs resume: answers already in the files are kept and their questions skipped; every line is written
// whole. --num-chunks/--chunk-idx split the questions as LLaVA's scripts do (one process per GPU).
// The table and the files written go to stdout; the model, resume notes and progress (a Spectre.Console bar
// with the remaining time, when stderr is a terminal) to stderr.
using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Evaluation;
using VteKernels.Text;

namespace VteKernels.Cli;

internal static class EvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (default: the built-in synthetic tiny model, whose answers are noise)" };
        var data = new Option<string>("--data") { Description = "Questions: JSONL {\"question_id\", \"image\", \"text\"[, \"answer\" | \"answers\"]} (model_vqa), or ScienceQA's JSON array (llava_test_CQM-A.json)", Required = true };
        var images = new Option<string>("--images") { Description = "Folder the questions' image paths are relative to (default: the question file's folder)" };
        var output = new Option<string>("--out", "-o") { Description = "Answers file (JSONL, LLaVA's shape). With --compare: one file per setting, OUT's name + .SETTING.jsonl", Required = true };
        var compare = new Option<string>("--compare") { Description = "Settings to compare, e.g. none,layer:8,layer:16,gate:g.safetensors,attn:0.1,naavit,skip-attn:20-31 ('+' combines: layer:8+naavit)" };
        var chunks = new Option<int>("--num-chunks") { Description = "Split the questions into this many chunks (LLaVA's get_chunk)", DefaultValueFactory = _ => 1 };
        var chunk = new Option<int>("--chunk-idx") { Description = "Which chunk to answer (0-based)", DefaultValueFactory = _ => 0 };
        var style = new Option<string>("--prompt-style") { Description = "vicuna (LLaVA's eval conv mode vicuna_v1), llava (USER: <image>\\n{q} ASSISTANT:) or template", DefaultValueFactory = _ => "vicuna" };
        var imageMode = new Option<string>("--image-mode") { Description = "pad (LLaVA-1.5: pad to a square with the mean colour) or clip (HF CLIPImageProcessor)", DefaultValueFactory = _ => "pad" };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Most tokens per answer (greedy)", DefaultValueFactory = _ => 128 };
        var single = new Option<bool>("--single-pred-prompt") { Description = "Append \"Answer with the option's letter from the given choices directly.\" to every question (LLaVA's ScienceQA flag)" };
        var metric = new Option<string>("--metric") { Description = "auto (answers list: vqa; one answer: choice when the question lists A./B. options, else exact), vqa, textvqa, exact, choice or none", DefaultValueFactory = _ => "auto" };
        var summary = new Option<string>("--summary") { Description = "Summary JSON (default: OUT's name + .summary.json)" };
        var chart = new Option<string>("--chart") { Description = "Pareto chart, .svg or .png (default with --compare: OUT's name + .pareto.svg)" };
        var quality = new Option<string>("--chart-quality") { Description = "Quality in the Pareto fronts: auto (accuracy when every setting is scored, else agreement), accuracy, or agreement (same text as none)", DefaultValueFactory = _ => "auto" };
        var modelId = new Option<string>("--model-id") { Description = "model_id in the answers (default: the model folder's name)" };
        var device = new BackendOptions();
        var noMmap = NoMmapOption.Create();
        style.AcceptOnlyFromAmong("llava", "vicuna", "template");
        imageMode.AcceptOnlyFromAmong("clip", "pad");
        metric.AcceptOnlyFromAmong("auto", "vqa", "textvqa", "exact", "choice", "none");
        quality.AcceptOnlyFromAmong("auto", "accuracy", "agreement");
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var cmd = new Command("eval", "Answer a VQA question file (LLaVA's format), score it, and compare settings of the methods")
        {
            model, data, images, output, compare, chunks, chunk, style, imageMode, maxNew, single, metric, summary, chart, quality, modelId, noMmap,
            exit.Exit, exit.KvMode,
        };
        device.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction((p, ct) =>
        {
            int n = p.GetValue(chunks), k = p.GetValue(chunk);
            if (n < 1) throw new UsageException("--num-chunks must be >= 1");
            if (k < 0 || k >= n) throw new UsageException($"--chunk-idx must lie in [0, {n}) for --num-chunks {n}");
            if (p.GetValue(maxNew) < 1) throw new UsageException("--max-new-tokens must be >= 1");
            var outPath = p.GetValue(output)!;
            var chartPath = p.GetValue(chart);
            if (chartPath is not null && Path.GetExtension(chartPath).ToLowerInvariant() is not (".svg" or ".png"))
                throw new UsageException($"--chart '{chartPath}': the chart is written as .svg or .png");
            var pia = p.GetValue(methods.Pia) == "fold" ? PiaMode.Folded : PiaMode.Explicit;
            var settings = ReadSettings(p, compare, exit, methods).Select(s => s with { Session = s.Session with { PiaMode = pia } }).ToList();
            var forced = p.GetValue(metric) switch
            {
                "vqa" => ScoreMetric.Vqa, "textvqa" => ScoreMetric.TextVqa, "exact" => ScoreMetric.Exact, "choice" => ScoreMetric.Choice,
                "none" => ScoreMetric.None, _ => (ScoreMetric?)null,
            };
            var dataPath = p.GetValue(data)!;
            var all = VqaQuestions.Read(dataPath, p.GetValue(single));
            var questions = VqaQuestions.Chunk(all, n, k);
            var imagesDir = p.GetValue(images) ?? Path.GetDirectoryName(Path.GetFullPath(dataPath))!;
            CheckQuestions(questions, imagesDir, forced);

            var dir = p.GetValue(model) ?? BuiltInModel.EnsureTiny(stderr);
            if (!File.Exists(Path.Combine(dir, "tokenizer.json"))) throw new UsageException($"{dir} has no tokenizer.json: eval builds prompts from the questions' text");
            using var backend = device.Create(p);
            using var m = LlavaModel.Load(dir, backend, methods.VisionTowerDir(p), NoMmapOption.Read(p, noMmap));
            var tokenizer = Tokenizer.Load(dir);
            var options = new EvalOptions
            {
                PromptStyle = PromptFormat.ParseStyle(p.GetValue(style)!), PadToSquare = p.GetValue(imageMode) == "pad",
                MaxNewTokens = p.GetValue(maxNew), ExitKvMode = exit.ReadKvMode(p), Metric = forced,
            };
            // The full model runs first so that every other setting's agreement with it is known when its line is written.
            var order = settings.OrderBy(s => s.Name == "none" ? 0 : 1).ToList();
            bool compared = p.GetValue(compare) is not null;
            var files = order.Select(s => AnswersFile.Open(compared ? SettingPath(outPath, s.Slug) : outPath)).ToList();
            try
            {
                using var runner = new EvalRunner(m, tokenizer, dir, order, options);
                var id = p.GetValue(modelId) ?? ModelName(dir);
                stderr.WriteLine($"model {Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))} on {backend.Device}; {questions.Count} of {all.Count} questions (chunk {k} of {n}); " +
                    $"{order.Count} setting(s): {string.Join(", ", settings.Select(s => s.Name))}");
                if (p.GetValue(model) is null) stderr.WriteLine("(the built-in synthetic model has random weights: its answers are noise; give a real model with -m DIR)");
                foreach (var f in files)
                {
                    int done = questions.Count(q => f.Contains(q.Key));
                    if (done > 0 || f.DroppedBytes > 0)
                        stderr.WriteLine($"resuming {f.Path}: {done} of {questions.Count} answered" + (f.DroppedBytes > 0 ? $"; removed an unfinished last line ({f.DroppedBytes} bytes)" : ""));
                }
                var todo = questions.Where(q => files.Any(f => !f.Contains(q.Key))).ToList();
                int noneIndex = order.FindIndex(s => s.Name == "none");
                if (todo.Count > 0)
                {
                    // Warm-up, not recorded: the first question once under every setting, so that no setting's
                    // times carry the one-time costs (JIT compilation, first allocations) alone.
                    var warm = runner.BuildPrompt(todo[0], imagesDir);
                    for (int s = 0; s < order.Count; s++) runner.Answer(todo[0], warm, s, ct);
                }
                new CliProgress(stderr, quiet: false).Bytes("questions", report =>
                {
                    long total = (long)todo.Count * order.Count;
                    for (int i = 0; i < todo.Count; i++)
                    {
                        var q = todo[i];
                        var prompt = runner.BuildPrompt(q, imagesDir);
                        for (int s = 0; s < order.Count; s++)
                        {
                            if (files[s].Contains(q.Key)) continue;
                            var answer = runner.Answer(q, prompt, s, ct);
                            Agreement? agreement = noneIndex < 0 ? null
                                : s == noneIndex ? new Agreement(true, true)
                                : Agreement.With(answer.Text, answer.FirstToken, files[noneIndex].Lines[q.Key]);
                            files[s].Append(AnswerLines.ToLine(q, answer, id, agreement));
                            report((long)i * order.Count + s + 1, total);
                        }
                        report((long)(i + 1) * order.Count, total);
                    }
                });

                var keys = questions.Select(q => q.Key).ToList();
                var byUser = settings.Select(s => files[order.IndexOf(s)].Lines).ToList();
                var table = EvalSummary.Build(settings.Select(s => s.Name).ToList(), byUser, keys, p.GetValue(quality) is "auto" ? null : p.GetValue(quality));
                stdout.Write(table.Table());
                var summaryPath = p.GetValue(summary) ?? StemPath(outPath, ".summary.json");
                WriteAtomically(summaryPath, s => table.WriteJson(s, new Dictionary<string, string>
                {
                    ["model"] = Path.GetFullPath(dir), ["data"] = Path.GetFullPath(dataPath), ["chunk"] = $"{k}/{n}", ["device"] = backend.Device,
                }));
                foreach (var f in files) stdout.WriteLine($"answers: {f.Path}");
                stdout.WriteLine($"summary: {summaryPath}");
                chartPath ??= compared ? StemPath(outPath, ".pareto.svg") : null;
                if (chartPath is not null)
                {
                    if (table.Quality is null) stdout.WriteLine("chart: skipped (no quality to plot: give gold answers, or include none in --compare)");
                    else
                    {
                        var c = ParetoChart.Build(table);
                        WriteAtomically(chartPath, s =>
                        {
                            if (Path.GetExtension(chartPath).Equals(".png", StringComparison.OrdinalIgnoreCase)) s.Write(c.ToPng());
                            else s.Write(System.Text.Encoding.UTF8.GetBytes(c.ToSvg()));
                        });
                        stdout.WriteLine($"chart: {chartPath}");
                    }
                }
            }
            finally
            {
                foreach (var f in files) f.Dispose();
            }
            return Task.FromResult(0);
        });
        return cmd;
    }

    /// <summary>The settings: --compare's list, or the one that --exit, --naavit, --skip-attn and --eas give.</summary>
    private static List<EvalSetting> ReadSettings(ParseResult p, Option<string> compare, ExitOptions exit, MethodOptions methods)
    {
        if (p.GetValue(compare) is string list)
        {
            foreach (var o in new Option[] { exit.Exit, methods.Naavit, methods.SkipAttention, methods.Eas })
                if (p.GetResult(o) is { Implicit: false }) throw new UsageException($"--compare lists the settings itself: give {o.Name} inside it, not beside it");
            try
            {
                return [.. EvalSetting.ParseList(list, ExitGates.Load, EasCheckpoint.Load)];
            }
            catch (FormatException e)
            {
                throw new UsageException($"--compare: {e.Message}");
            }
        }
        var policy = exit.ReadPolicy(p);
        var (naavit, session) = methods.Read(p);
        var parts = new List<string> { policy.ToString() };
        if (naavit) parts.Add("naavit");
        if (session.Eas is { } eas) parts.Add(p.GetValue(methods.Eas) is string file ? $"eas:{file}" : $"skip-attn:{EasAdapters.FormatLayers(eas.SkippedLayers)}");
        if (parts.Count > 1 && parts[0] == "none") parts.RemoveAt(0);
        return [new EvalSetting(string.Join('+', parts), policy, naavit, session)];
    }

    /// <summary>Every image exists and, with a forced metric, every question has the gold answers it needs: checked before the model loads.</summary>
    private static void CheckQuestions(IReadOnlyList<VqaQuestion> questions, string imagesDir, ScoreMetric? forced)
    {
        foreach (var q in questions)
        {
            if (q.Image is not null && !File.Exists(EvalRunner.ImagePath(q, imagesDir)))
                throw new UsageException($"question {q.Key} (line {q.Line}): image '{q.Image}' does not exist in {imagesDir} (set --images)");
            bool lacks = forced switch
            {
                ScoreMetric.Vqa or ScoreMetric.TextVqa => q.Answers is null && q.Answer is null,
                ScoreMetric.Exact => q.Answer is null && q.Answers is null,
                ScoreMetric.Choice => q.Answer is null || VqaScoring.ChoiceLetter(q.Answer) is null,
                _ => false,
            };
            if (lacks) throw new UsageException($"question {q.Key} (line {q.Line}) has no gold answer for --metric {VqaScoring.Name(forced!.Value)}");
        }
    }

    /// <summary>LLaVA's get_model_name_from_path: the folder's name, or "parent_checkpoint-N" for a checkpoint folder.</summary>
    internal static string ModelName(string dir)
    {
        var parts = Path.GetFullPath(dir).TrimEnd('/', '\\').Split('/', '\\');
        return parts[^1].StartsWith("checkpoint-", StringComparison.Ordinal) && parts.Length > 1 ? parts[^2] + "_" + parts[^1] : parts[^1];
    }

    /// <summary>OUT's path with its extension replaced by <paramref name="suffix"/> (answers.jsonl -> answers.summary.json).</summary>
    internal static string StemPath(string outPath, string suffix)
    {
        var full = Path.GetFullPath(outPath);
        return Path.Combine(Path.GetDirectoryName(full)!, Path.GetFileNameWithoutExtension(full) + suffix);
    }

    /// <summary>A setting's answers file: answers.jsonl -> answers.layer-8.jsonl.</summary>
    internal static string SettingPath(string outPath, string slug)
    {
        var ext = Path.GetExtension(outPath);
        return StemPath(outPath, "." + slug + (ext.Length > 0 ? ext : ".jsonl"));
    }

    private static void WriteAtomically(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + ".tmp";
        using (var f = File.Create(tmp)) write(f);
        File.Move(tmp, full, overwrite: true);
    }
}

/// <summary>
/// The Pareto chart of an evaluation: quality (accuracy, or agreement with the full model) against
/// multiply-adds per question (left) and against time per question (right), one dot per setting, the
/// front drawn through the settings on it.
/// </summary>
internal static class ParetoChart
{
    private const int Width = 1000, Height = 480, PanelW = 400, PanelH = 320, Top = 80, Gap = 110, Left = 60;
    private const uint Ink = 0x202020, Grid = 0xE0E0E0, FrontColor = 0x1F5FBF, OffColor = 0x9A9A9A, FrontLine = 0x7FA6E0;

    public static Chart Build(EvalSummary summary)
    {
        var c = new Chart(Width, Height);
        string quality = summary.Quality == "accuracy" ? "ACCURACY" : "AGREEMENT WITH NONE (SAME TEXT)";
        c.Label(Width / 2.0, 12, $"{quality} AGAINST COST, ONE POINT PER SETTING", Ink, 2, TextAnchor.Middle);
        c.Label(Width / 2.0, 40, "BLUE: ON THE PARETO FRONT (NO OTHER SETTING IS AT LEAST AS GOOD FOR LESS)", Ink, 1, TextAnchor.Middle);
        var rows = summary.Settings;
        Panel(c, Left, rows.Select(r => 100 * r.TotalMacRatio).ToArray(), rows.Select(r => r.ParetoMacs).ToArray(), rows,
            "MULTIPLY-ADDS PER QUESTION, % OF THE FULL MODEL (PREFILL + DECODE)", quality);
        Panel(c, Left + PanelW + Gap, rows.Select(r => r.MeanTimeMs).ToArray(), rows.Select(r => r.ParetoTime).ToArray(), rows, "TIME PER QUESTION (MS)", quality);
        return c;
    }

    private static void Panel(Chart c, double x0, double[] cost, bool[] front, IReadOnlyList<SettingSummary> rows, string xTitle, string yTitle)
    {
        var ci = CultureInfo.InvariantCulture;
        var (lo, hi) = Range(cost);
        double X(double v) => x0 + (v - lo) / (hi - lo) * PanelW;
        double Y(double q) => Top + PanelH * (1 - q);
        for (int i = 0; i <= 4; i++)
        {
            double q = i / 4.0, v = lo + (hi - lo) * i / 4;
            c.Line(x0, Y(q), x0 + PanelW, Y(q), 1, Grid);
            c.Label(x0 - 8, Y(q) - 4, q.ToString("0.00", ci), Ink, 1, TextAnchor.End);
            c.Line(X(v), Top, X(v), Top + PanelH, 1, Grid);
            c.Label(X(v), Top + PanelH + 8, v.ToString(hi - lo >= 20 ? "0" : hi - lo >= 2 ? "0.#" : "0.###", ci), Ink, 1, TextAnchor.Middle);
        }
        c.Line(x0, Top + PanelH, x0 + PanelW, Top + PanelH, 1.5, Ink);
        c.Line(x0, Top, x0, Top + PanelH, 1.5, Ink);
        c.Label(x0 + PanelW / 2.0, Top + PanelH + 28, xTitle, Ink, 1, TextAnchor.Middle);
        c.Label(x0, Top - 18, yTitle, Ink, 1);
        var on = Enumerable.Range(0, rows.Count).Where(i => front[i]).OrderBy(i => cost[i]).ToList();
        for (int j = 0; j + 1 < on.Count; j++)
            c.Line(X(cost[on[j]]), Y(rows[on[j]].QualityValue ?? 0), X(cost[on[j + 1]]), Y(rows[on[j + 1]].QualityValue ?? 0), 2, FrontLine, dashed: true);
        var taken = new List<(double X0, double Y0, double X1, double Y1)>();
        var points = Enumerable.Range(0, rows.Count).Select(i => (X: X(cost[i]), Y: Y(rows[i].QualityValue ?? 0))).ToArray();
        foreach (var (x, y) in points) taken.Add((x - 5, y - 5, x + 5, y + 5));
        for (int i = 0; i < rows.Count; i++)
        {
            var (x, y) = points[i];
            c.Dot(x, y, 4.5, front[i] ? FrontColor : OffColor);
            var text = rows[i].Setting;
            double w = Chart.TextWidth(text);
            // The first of these places whose box stays above the axis and meets no dot and no earlier label (else the first).
            (double Dx, double Dy, TextAnchor A)[] places =
            [
                (7, -13, TextAnchor.Start), (7, 5, TextAnchor.Start), (-7, -13, TextAnchor.End), (-7, 5, TextAnchor.End),
                (7, -25, TextAnchor.Start), (7, 17, TextAnchor.Start), (-7, -25, TextAnchor.End), (-7, 17, TextAnchor.End),
                (7, -37, TextAnchor.Start), (7, 29, TextAnchor.Start),
            ];
            var chosen = places[0];
            foreach (var place in places)
            {
                var box = Box(x + place.Dx, y + place.Dy, w, place.A);
                bool inside = box.Y0 >= Top - 10 && box.Y1 <= Top + PanelH - 2;   // not over the axis and its tick labels
                if (inside && !taken.Any(t => box.X0 < t.X1 && t.X0 < box.X1 && box.Y0 < t.Y1 && t.Y0 < box.Y1))
                {
                    chosen = place;
                    break;
                }
            }
            taken.Add(Box(x + chosen.Dx, y + chosen.Dy, w, chosen.A));
            c.Label(x + chosen.Dx, y + chosen.Dy, text, front[i] ? FrontColor : OffColor, 1, chosen.A);
        }

        static (double X0, double Y0, double X1, double Y1) Box(double x, double y, double w, TextAnchor a) =>
            a == TextAnchor.End ? (x - w - 1, y - 1, x + 1, y + 8) : (x - 1, y - 1, x + w + 1, y + 8);
    }

    /// <summary>An axis range around the values, padded and widened to round numbers.</summary>
    private static (double Lo, double Hi) Range(double[] values)
    {
        double min = values.DefaultIfEmpty(0).Min(), max = values.DefaultIfEmpty(1).Max();
        double pad = max > min ? (max - min) * 0.15 : Math.Max(Math.Abs(max) * 0.1, 1e-9);
        double step = Nice((max - min + 2 * pad) / 4);
        double lo = Math.Max(0, Math.Floor((min - pad) / step) * step);
        double hi = lo + 4 * step;
        while (hi < max + pad / 2) hi += step;   // keep four ticks' worth of room above the largest value
        return (lo, hi);
    }

    /// <summary>The smallest 1, 2 or 5 times a power of ten at or above <paramref name="v"/>.</summary>
    private static double Nice(double v)
    {
        if (!(v > 0)) return 1;
        double p = Math.Pow(10, Math.Floor(Math.Log10(v)));
        foreach (var m in new[] { 1.0, 2.0, 5.0, 10.0 })
            if (m * p >= v) return m * p;
        return 10 * p;
    }
}
