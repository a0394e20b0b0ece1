// LLaVA-NeXT (anyres) beside LLaVA-1.5 on the CPU backend: prefill time and multiply-adds with the visual rows
// kept (exit none), leaving after 4, 8 or 16 layers, and with NAAViT.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- next [--quick] [--out bench/results/cpu-next.json]
//
// Models (synthetic random weights, bf16; the exit is forced with layer:K so the weights' quality does not
// matter), cut in depth as the exit and methods benchmarks cut them: the LLaVA-1.5-7B slice (Vicuna-7B's layer
// shape with 4 decoder layers, CLIP ViT-L/14-336's layer shape with 2 layers, of which one runs for feature
// layer -2) and the same slice as LLaVA-NeXT-7B (llava-v1.6-vicuna-7b: the five pinpoints, image_newline).
// One 672x672 picture: LLaVA-1.5 reads it as one 336px tile (576 rows); LLaVA-NeXT tiles it at 672x672 into
// the base image and a 2x2 grid, 5 tiles of 576 tower tokens (2,880) that pack into 576 + 48 x (48 + 1) = 2,928
// rows (the grid's 48 rows each end in image_newline). Prompt: 35 prefix tokens, the image, a 60-token question.
// Measured on each slice: the full prefill (the visual rows in all 4 layers), layer:0 (no visual row, no
// tower: the per-layer time of the rows that stay after an exit) and NAAViT. The 32-layer figures are then
// ESTIMATES from those per-layer times: exit after K layers = K dense layers + (32 - K) text-only layers; the
// tower's time scaled from the slice's 1 running layer to the real 23. Multiply-adds of the 32-layer models are
// exact: every decoder layer of a kind has the same count (taken from the slices' reports), the tower's from
// Cost.Vision at the real depth. Runs are interleaved (model by model, configuration by configuration, in
// rounds; the first round warms up) and the machine's load is recorded: /proc/loadavg and the CPU time other
// processes used during the timed rounds.
// Correctness first: layer:L gives the no-exit logits bit for bit, NAAViT's logits differ and are finite, every
// K leaves exactly the text rows, and the anyres image fills 2,928 rows.
using System.Diagnostics;
using VteKernels;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Families.LlavaNext;
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Synth;

namespace VteKernels.Bench;

internal static class NextBench
{
    private sealed record Row(string Model, string Config, int Layers, int PromptRows, int VisualRows, int Tiles, double PrefillMedianMs,
        double VisionMedianMs, double DecoderMedianMs, double HeadMedianMs, int Samples, long MacsExecuted, long MacsFull, double MacRatio);

    private sealed record Estimate(string Model, string Config, int Layers, int PromptRows, int VisualRows, double VisionMs, double DecoderMs, double HeadMs,
        double PrefillMs, double TimeRatio, long Macs, long MacsFull, double MacRatio, string Basis);

    private sealed record Measured(string Model, string Dir, LlavaModel Model_, PromptInput Prompt, int VisualRows, int Tiles);

    private const int FullLayers = 32, FullVisionLayers = 23;

    public static int Run(bool quick, string outPath)
    {
        var root = Path.Combine(Path.GetTempPath(), $"vte-next-bench-{Environment.ProcessId}");
        var models = new List<Measured>();
        try
        {
            var presets = quick
                ? new[] { SynthPreset.Get("tiny"), SynthPreset.Get("next-tiny") }
                : new[] { BenchModels.SevenBSlice(), Slice(SynthPreset.Get("llava-v1.6-vicuna-7b"), "llava-v1.6-vicuna-7b-slice4") };
            foreach (var preset in presets)
            {
                var dir = Path.Combine(root, preset.Name);
                Console.WriteLine($"writing {preset.Name} ...");
                SyntheticModel.Write(preset, dir, seed: 0, quick ? DType.F32 : DType.BF16);
                var model = LlavaModel.Load(dir, new CpuBackend());
                int size = quick ? 2 * model.Config.Vision.ImageSize : 672;
                var image = MultimodalPrompt.PreprocessorFor(dir, model.Config, pad: false).Preprocess(Picture(size, size));
                var prompt = Prompt(model.Config, image, prefix: quick ? 5 : 35, question: quick ? 20 : 60);
                models.Add(new Measured(preset.Name, dir, model, prompt, model.Config.Family.TokenCount(model.Config, image), image.Tiles));
                Console.WriteLine($"{preset.Name}: {image.Tiles} tile(s), {models[^1].VisualRows} visual rows, prompt {prompt.TokenIds.Length} rows");
            }
            if (!quick && models[1].VisualRows != 576 + 48 * 49) throw new InvalidOperationException($"a 672x672 image should fill 2928 rows, got {models[1].VisualRows}");
            foreach (var m in models) CheckCorrectness(m);

            var configs = new (string Name, PrefillOptions Options)[]
            {
                ("none", new PrefillOptions()),
                ("layer:0", new PrefillOptions { Exit = ExitPolicy.AtLayer(0) }),
                ("naavit", new PrefillOptions { Naavit = true }),
            };
            int samples = quick ? 3 : 2;
            var times = new Dictionary<(string, string), List<PrefillReport>>();
            var walls = new Dictionary<(string, string), List<double>>();
            string loadBefore = CpuClock.LoadAverage();
            var clockBefore = CpuClock.Now();
            var timed = Stopwatch.StartNew();
            for (int round = 0; round <= samples; round++)   // round 0 warms up
                foreach (var m in models)
                    foreach (var (name, options) in configs)
                    {
                        using var s = m.Model_.CreateSession();
                        var clock = Stopwatch.StartNew();
                        var r = s.Prefill(m.Prompt, options);
                        clock.Stop();
                        Console.WriteLine($"round {round} {m.Model} {name}: {clock.Elapsed.TotalMilliseconds:F0} ms");
                        if (round == 0) continue;
                        (times.TryGetValue((m.Model, name), out var l) ? l : times[(m.Model, name)] = []).Add(r.Report!);
                        (walls.TryGetValue((m.Model, name), out var w) ? w : walls[(m.Model, name)] = []).Add(clock.Elapsed.TotalMilliseconds);
                    }
            timed.Stop();
            double otherCpuSeconds = CpuClock.OthersSince(clockBefore);
            string loadAfter = CpuClock.LoadAverage();

            var rows = new List<Row>();
            foreach (var m in models)
                foreach (var (name, _) in configs)
                {
                    var reports = times[(m.Model, name)];
                    var rep = reports[^1];
                    rows.Add(new Row(m.Model, name, m.Model_.Config.Text.NumLayers, m.Prompt.TokenIds.Length, m.VisualRows, m.Tiles,
                        BenchModels.Median(walls[(m.Model, name)]), BenchModels.Median([.. reports.Select(x => x.Times.Vision.TotalMilliseconds)]),
                        BenchModels.Median([.. reports.Select(x => x.Times.Decoder.TotalMilliseconds)]), BenchModels.Median([.. reports.Select(x => x.Times.Head.TotalMilliseconds)]),
                        reports.Count, rep.Executed.Total, rep.Full.Total, rep.MacRatio));
                }

            Console.WriteLine();
            Console.WriteLine("measured slices: model | configuration | rows (visual) | prefill ms | vision ms | decoder ms | MACs G (of full)");
            foreach (var r in rows)
                Console.WriteLine($"{r.Model} | {r.Config} | {r.PromptRows} ({r.VisualRows}) | {r.PrefillMedianMs:F0} | {r.VisionMedianMs:F0} | {r.DecoderMedianMs:F0} | {r.MacsExecuted / 1e9:F1} ({100 * r.MacRatio:F1}%)");

            var estimates = quick ? [] : models.SelectMany(m => EstimateFullDepth(m, rows.Where(r => r.Model == m.Model).ToList(), times[(m.Model, "none")][^1], times[(m.Model, "layer:0")][^1], times[(m.Model, "naavit")][^1])).ToList();
            if (estimates.Count > 0)
            {
                Console.WriteLine();
                Console.WriteLine("32-layer 7B models on this CPU (prefill time: ESTIMATE from the slices' per-layer times; MACs: exact):");
                Console.WriteLine("model | configuration | rows (visual) | prefill s (est.) | vs none | MACs T | vs none");
                foreach (var e in estimates)
                    Console.WriteLine($"{e.Model} | {e.Config} | {e.PromptRows} ({e.VisualRows}) | {e.PrefillMs / 1000:F1} | {e.TimeRatio:F3} | {e.Macs / 1e12:F2} | {e.MacRatio:F3}");
            }
            Console.WriteLine($"load average before {loadBefore}, after {loadAfter}; other processes used {otherCpuSeconds:F0} CPU-seconds during the {timed.Elapsed.TotalSeconds:F0} s of timed rounds ({Environment.ProcessorCount} cores)");

            var doc = new
            {
                load = new { load_average_before = loadBefore, load_average_after = loadAfter, other_processes_cpu_seconds = otherCpuSeconds, timed_seconds = timed.Elapsed.TotalSeconds },
                note = "Synthetic random weights (bf16), CPU backend (float32 activations), exits forced with layer:K. Slices: 4 decoder layers and 2 CLIP layers " +
                       "(1 runs) of the 7B shapes. One 672x672 picture: LLaVA-1.5 one 336px tile, LLaVA-NeXT 5 tiles packed into 2928 rows. Rounds interleaved, first round " +
                       "discarded; medians. estimate_32_layers: times are estimates (per-layer times of the slices scaled to 32 decoder and 23 tower layers), MACs exact.",
                rows,
                estimate_32_layers = estimates,
            };
            BenchModels.WriteJson("cpu-next", quick, doc, outPath);
            return 0;
        }
        finally
        {
            foreach (var m in models) m.Model_.Dispose();
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The preset with 4 decoder layers and 2 CLIP layers (one runs for feature layer -2).</summary>
    private static SynthPreset Slice(SynthPreset p, string name) =>
        new(name, p.Config with { Vision = p.Config.Vision with { NumLayers = 2 }, Text = p.Config.Text with { NumLayers = 4 } });

    /// <summary>A smooth picture with some edges (the weights are random; only the sizes matter).</summary>
    private static RgbImage Picture(int width, int height)
    {
        var img = new RgbImage(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                var px = img[x, y];
                px[0] = (byte)(x * 255 / width);
                px[1] = (byte)(y * 255 / height);
                px[2] = (byte)((x / 48 + y / 48) % 2 == 0 ? 210 : 40);
            }
        return img;
    }

    private static PromptInput Prompt(LlavaConfig cfg, ImageInput image, int prefix, int question)
    {
        var rng = new Random(1);
        int Text() => rng.Next(3, Math.Min(cfg.Text.VocabSize, cfg.ImageTokenIndex));
        var ids = new List<int> { 1 };
        ids.AddRange(Enumerable.Range(0, prefix - 1).Select(_ => Text()));
        ids.Add(cfg.ImageTokenIndex);
        ids.AddRange(Enumerable.Range(0, question).Select(_ => Text()));
        return MultimodalPrompt.Expand(cfg, [.. ids], [image]);
    }

    private static void CheckCorrectness(Measured m)
    {
        var cfg = m.Model_.Config;
        int L = cfg.Text.NumLayers, n = m.Prompt.TokenIds.Length;
        float[] Logits(PrefillOptions o)
        {
            using var s = m.Model_.CreateSession();
            var r = s.Prefill(m.Prompt, o with { AllLogits = false });
            if (o.Exit is FixedLayerExit f && f.Layers < L && r.Report!.TokensPerLayer[^1] != n - m.VisualRows)
                throw new InvalidOperationException($"{m.Model} layer:{f.Layers}: the last layer ran {r.Report.TokensPerLayer[^1]} rows, expected {n - m.VisualRows}");
            return r.Logits.Values;
        }
        var none = Logits(new PrefillOptions());
        if (none.Any(v => !float.IsFinite(v))) throw new InvalidOperationException($"{m.Model}: non-finite logits");
        if (!none.AsSpan().SequenceEqual(Logits(new PrefillOptions { Exit = ExitPolicy.AtLayer(L) }))) throw new InvalidOperationException($"{m.Model}: layer:{L} differs from no exit");
        var naavit = Logits(new PrefillOptions { Naavit = true });
        if (naavit.Any(v => !float.IsFinite(v)) || naavit.AsSpan().SequenceEqual(none)) throw new InvalidOperationException($"{m.Model}: NAAViT did not run");
        Logits(new PrefillOptions { Exit = ExitPolicy.AtLayer(1) });
        Console.WriteLine($"{m.Model}: correctness checks passed");
    }

    /// <summary>The 32-layer figures from one slice's measurements (see the file header).</summary>
    private static IEnumerable<Estimate> EstimateFullDepth(Measured m, List<Row> rows, PrefillReport none, PrefillReport textOnly, PrefillReport naavit)
    {
        var cfg = m.Model_.Config;
        int L = cfg.Text.NumLayers;
        Row Get(string c) => rows.Single(r => r.Config == c);
        double dense = Get("none").DecoderMedianMs / L, text = Get("layer:0").DecoderMedianMs / L, free = Get("naavit").DecoderMedianMs / L;
        double vision = Get("none").VisionMedianMs * FullVisionLayers / Math.Max(1, cfg.VisionLayersNeeded), head = Get("none").HeadMedianMs;
        long denseMacs = none.Executed.Decoder / L, textMacs = textOnly.Executed.Decoder / L, naavitMacs = naavit.Executed.Decoder / L;
        var full = cfg with { Vision = cfg.Vision with { NumLayers = FullVisionLayers + 1 } };   // feature layer -2 of 24: 23 layers run
        long visionMacs = cfg.Family.VisionMacs(full, m.Prompt.Images[0]), headMacs = none.Executed.Head;
        double noneMs = vision + FullLayers * dense + head;
        long noneMacs = visionMacs + FullLayers * denseMacs + headMacs;
        Estimate E(string c, double visionMs, double decoderMs, long decoderMacs, long vMacs, string basis) => new(m.Model.Replace("-slice4", "", StringComparison.Ordinal), c, FullLayers,
            m.Prompt.TokenIds.Length, m.VisualRows, visionMs, decoderMs, head, visionMs + decoderMs + head, (visionMs + decoderMs + head) / noneMs,
            vMacs + decoderMacs + headMacs, noneMacs, (double)(vMacs + decoderMacs + headMacs) / noneMacs, basis);
        yield return E("none", vision, FullLayers * dense, FullLayers * denseMacs, visionMacs, "32 dense layers");
        foreach (int k in new[] { 4, 8, 16 })
            yield return E($"layer:{k}", vision, k * dense + (FullLayers - k) * text, k * denseMacs + (FullLayers - k) * textMacs, visionMacs,
                $"{k} dense layers + {FullLayers - k} layers of the {m.Prompt.TokenIds.Length - m.VisualRows} text rows");
        yield return E("naavit", vision, FullLayers * free, FullLayers * naavitMacs, visionMacs, "32 NAAViT layers (K/V for every row, the rest for text rows)");
    }
}
