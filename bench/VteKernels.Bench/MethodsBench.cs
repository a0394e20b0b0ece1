// NAAViT and EAS-style attention skipping on the CPU backend: multiply-adds and time against the full model.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- methods [--quick] [--out bench/results/cpu-methods.json]
//
// Models as in the exit benchmark: the tiny preset, and (without --quick) a LLaVA-1.5-7B-shaped slice with
// 4 decoder layers (d 4096, 32 heads of 128, FFN 11008) and 2 CLIP layers, bf16 random weights; prompt
// 35 prefix + 576 image + 60 question tokens. Configurations: full; NAAViT; attention skipped in every
// layer of the slice, training-free and with PIA adapters (the public widths 256 in place of attention; run
// explicitly, and folded into the FFN weights once per prompt). Per configuration: prefill wall time and
// decoder time (median of the samples after one warm-up; one sample for the folded 7B slice), the median
// decode-step time over 4 steps after each timed prefill, and the report's multiply-adds. A 32-layer model is then estimated from per-layer times: NAAViT in every layer,
// and EAS's LLaVA-1.5-7B setting (attention skipped in layers 20-31).
// Correctness first: each configuration's logits are finite and differ from the full model's (the method
// ran), and folded adapters give the explicit adapters' logits (relative 1e-4).
using System.Diagnostics;
using System.Text.Json;
using VteKernels;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Synth;

namespace VteKernels.Bench;

internal static class MethodsBench
{
    private sealed record Row(string Model, string Config, int Layers, int PromptTokens, double PrefillMedianMs, double DecoderMedianMs,
        double DecodeStepMs, int Samples, long MacsExecuted, long MacsFull, double MacRatio, double PrefillTimeRatio, double DecoderTimeRatio,
        double DecodeTimeRatio, long KvBytes);

    private sealed record Estimate(string Config, int Layers, string Detail, double DecoderMs, double Ratio, double DecodeStepMs, double DecodeRatio);

    public static int Run(bool quick, string outPath)
    {
        var rows = new List<Row>();
        var root = Path.Combine(Path.GetTempPath(), $"vte-methods-bench-{Environment.ProcessId}");
        try
        {
            var tinyDir = Path.Combine(root, "tiny");
            SyntheticModel.Write(SynthPreset.Get("tiny"), tinyDir, seed: 0, DType.F32);
            rows.AddRange(Measure("tiny", tinyDir, prefix: 5, question: 20, samples: quick ? 5 : 15, adapterDim: 16, replacedDim: 32));
            if (!quick)
            {
                var slice = BenchModels.SevenBSlice();
                var sliceDir = Path.Combine(root, "slice");
                Console.WriteLine("writing the LLaVA-1.5-7B-shaped 4-layer slice (bf16, ~2.2 GB) ...");
                SyntheticModel.Write(slice, sliceDir, seed: 0, DType.BF16);
                rows.AddRange(Measure(slice.Name, sliceDir, prefix: 35, question: 60, samples: 3,
                    adapterDim: SyntheticEas.PublicAdapterDim, replacedDim: SyntheticEas.PublicReplacedDim));
            }
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }

        Console.WriteLine();
        Console.WriteLine("model | configuration | prefill ms | decoder ms | decode step ms | MACs G (of full) | prefill time vs full");
        foreach (var r in rows)
            Console.WriteLine($"{r.Model} | {r.Config} | {r.PrefillMedianMs:F1} | {r.DecoderMedianMs:F1} | {r.DecodeStepMs:F1} | {r.MacsExecuted / 1e9:F2} ({100 * r.MacRatio:F1}%) | {r.PrefillTimeRatio:F3}");
        var estimate = EstimateFullDepth(rows.Where(r => r.Model.Contains("slice")).ToList());
        foreach (var e in estimate)
            Console.WriteLine($"estimate, 32-layer LLaVA-1.5-7B decoder on this CPU: {e.Config} ({e.Detail}) -> prefill decoder {e.DecoderMs / 1000:F1} s ({e.Ratio:F3} of full), decode step {e.DecodeStepMs:F0} ms ({e.DecodeRatio:F3})");

        var doc = new
        {
            benchmark = "cpu-methods",
            machine = Environment.MachineName,
            processor = CpuInfo.ProcessorName,
            threads = Environment.ProcessorCount,
            runtime = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
            date = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
            quick,
            note = "Synthetic random weights; CPU backend (float32 activations, weights as stored). The 7B slice has 4 decoder layers and 2 CLIP " +
                   "layers of the real shapes; skip-* configurations skip the attention of all 4 slice layers; estimates scale per-layer times to 32 layers.",
            rows,
            estimate_32_layers = estimate,
        };
        BenchModels.WriteJson(doc, outPath);
        return 0;
    }

    private static IEnumerable<Row> Measure(string name, string dir, int prefix, int question, int samples, int adapterDim, int replacedDim)
    {
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        int L = cfg.Text.NumLayers;
        var (ids, prompt) = BenchModels.LlavaPrompt(cfg, prefix, question);

        var all = Enumerable.Range(0, L).ToArray();
        var adapters = SyntheticEas.Adapters(cfg.Text, all, seed: 3, adapterDim: adapterDim, replacedDim: replacedDim);
        var configs = new (string Name, SessionOptions Session, bool Naavit)[]
        {
            ("full", new SessionOptions(), false),
            ("naavit", new SessionOptions(), true),
            ($"skip-attn 0-{L - 1}", new SessionOptions { Eas = new EasAdapters(all) }, false),
            ($"skip-attn 0-{L - 1} + PIA explicit", new SessionOptions { Eas = adapters, PiaMode = PiaMode.Explicit }, false),
            ($"skip-attn 0-{L - 1} + PIA folded", new SessionOptions { Eas = adapters, PiaMode = PiaMode.Folded }, false),
        };

        // Correctness first.
        var logits = new Dictionary<string, float[]>();
        foreach (var (cname, session, naavit) in configs)
        {
            using var s = model.CreateSession(session);
            var v = s.Prefill(prompt, new PrefillOptions { Naavit = naavit }).Logits.Values;
            if (v.Any(x => !float.IsFinite(x))) throw new InvalidOperationException($"{name} {cname}: non-finite logits");
            logits[cname] = v;
        }
        foreach (var c in configs.Skip(1))
            if (logits[c.Name].AsSpan().SequenceEqual(logits["full"])) throw new InvalidOperationException($"{name} {c.Name}: same logits as the full model; the method did not run");
        var ex = logits[configs[3].Name];
        var fo = logits[configs[4].Name];
        double scale = ex.Max(Math.Abs), worst = ex.Zip(fo, (a, b) => Math.Abs(a - b)).Max();
        if (worst > 1e-4 * scale) throw new InvalidOperationException($"{name}: folded adapters differ from explicit ones by {worst} (scale {scale})");
        Console.WriteLine($"{name}: folded vs explicit adapters max |diff| {worst:G3} (logit scale {scale:G3})");

        var results = new List<Row>();
        Row? baseline = null;
        foreach (var (cname, session, naavit) in configs)
        {
            var prefill = new List<double>();
            var decoder = new List<double>();
            var steps = new List<double>();
            Engine.Exit.PrefillReport? report = null;
            long kv = 0;
            // Folding the 7B slice's FFN matrices takes tens of seconds per prompt: one timed sample is enough there.
            int n = session.PiaMode == PiaMode.Folded && cfg.Text.HiddenSize >= 1024 ? 1 : samples;
            for (int s = 0; s < n + 1; s++)   // the first run warms up
            {
                using var sess = model.CreateSession(session);
                var clock = Stopwatch.StartNew();
                var r = sess.Prefill(prompt, new PrefillOptions { Naavit = naavit });
                clock.Stop();
                report = r.Report!;
                if (s == 0) continue;
                prefill.Add(clock.Elapsed.TotalMilliseconds);
                decoder.Add(report.Times.Decoder.TotalMilliseconds);
                {
                    int next = 5;
                    for (int step = 0; step < 4; step++)
                    {
                        var c = Stopwatch.StartNew();
                        var d = sess.Decode(next);
                        steps.Add(c.Elapsed.TotalMilliseconds);
                        next = 3 + step;
                        if (!float.IsFinite(d.Logits.Last[0])) throw new InvalidOperationException($"{name} {cname}: non-finite decode logits");
                    }
                    kv = sess.Cache.BytesHeld;
                }
            }
            double med = BenchModels.Median(prefill), dec = BenchModels.Median(decoder), stepMs = BenchModels.Median(steps);
            var row = new Row(name, cname, L, ids.Count, med, dec, stepMs, n, report!.Executed.Total, report.Full.Total, report.MacRatio,
                med / (baseline?.PrefillMedianMs ?? med), dec / (baseline?.DecoderMedianMs ?? dec), stepMs / (baseline?.DecodeStepMs ?? stepMs), kv);
            baseline ??= row;
            Console.WriteLine($"{name} {cname}: prefill {med:F1} ms (decoder {dec:F1} ms), decode step {stepMs:F1} ms, MACs {report.Executed.Total / 1e9:F3} G");
            results.Add(row);
        }
        return results;
    }

    private static List<Estimate> EstimateFullDepth(List<Row> slice)
    {
        if (slice.Count == 0) return [];
        const int layers = 32, skipped = 12;
        int L = slice[0].Layers;
        Row Get(string prefix) => slice.First(r => r.Config.StartsWith(prefix, StringComparison.Ordinal));
        double dense = Get("full").DecoderMedianMs / L, denseStep = Get("full").DecodeStepMs / L;
        var list = new List<Estimate> { new("full", layers, "every layer dense", layers * dense, 1, layers * denseStep, 1) };
        var n = Get("naavit");
        list.Add(new("naavit", layers, "all 32 layers", layers * n.DecoderMedianMs / L, n.DecoderMedianMs / L / dense, layers * denseStep, 1));
        foreach (var c in slice.Where(r => r.Config.StartsWith("skip-attn", StringComparison.Ordinal)))
        {
            double per = c.DecoderMedianMs / L, perStep = c.DecodeStepMs / L;
            double ms = (layers - skipped) * dense + skipped * per, stepMs = (layers - skipped) * denseStep + skipped * perStep;
            list.Add(new(c.Config.Replace($"0-{L - 1}", "20-31", StringComparison.Ordinal), layers, "attention skipped in layers 20-31 (EAS's LLaVA-1.5-7B setting); adapters on skipped layers only",
                ms, ms / (layers * dense), stepMs, stepMs / (layers * denseStep)));
        }
        return list;
    }

}
