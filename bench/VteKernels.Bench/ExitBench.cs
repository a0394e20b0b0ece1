// Visual-token exit on the CPU backend: prefill wall time and multiply-adds against the exit layer K.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- exit [--quick] [--out bench/results/cpu-exit.json]
//
// Two models, both synthetic (random weights; the exit is forced with layer:K so the weights' quality does
// not matter): the tiny preset, and a LLaVA-1.5-7B-shaped slice: Vicuna-7B's layer shape (d 4096, 32
// heads of 128, FFN 11008, vocabulary 32064) but 4 decoder layers, and CLIP ViT-L/14-336's layer shape with
// 2 layers (576 image tokens; one layer runs for feature layer -2). The prompt has LLaVA's layout: 35 prefix
// tokens, 576 image tokens, a 60-token question. A full 32-layer prefill at that shape is then estimated
// from the per-layer times measured with and without the visual rows (marked as an estimate in the output).
// Correctness first: layer:L must give the same logits as no exit, and every K the same row count.
using System.Diagnostics;
using System.Text.Json;
using VteKernels;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Models;
using VteKernels.Synth;

namespace VteKernels.Bench;

internal static class ExitBench
{
    private sealed record Row(string Model, int ExitLayer, int Layers, int PromptTokens, double PrefillMedianMs, double DecoderMedianMs,
        double VisionMedianMs, int Samples, long MacsExecuted, long MacsFull, double MacRatio, double TimeRatio, long KvBytes);

    public static int Run(bool quick, string outPath)
    {
        var rows = new List<Row>();
        var root = Path.Combine(Path.GetTempPath(), $"vte-exit-bench-{Environment.ProcessId}");
        try
        {
            var tiny = SynthPreset.Get("tiny");
            var tinyDir = Path.Combine(root, "tiny");
            SyntheticModel.Write(tiny, tinyDir, seed: 0, DType.F32);
            rows.AddRange(Measure("tiny", tinyDir, prefix: 5, question: 20, samples: quick ? 5 : 15));

            var slice = BenchModels.SevenBSlice();
            if (!quick)
            {
                var sliceDir = Path.Combine(root, "slice");
                Console.WriteLine("writing the LLaVA-1.5-7B-shaped 4-layer slice (bf16, ~2.2 GB) ...");
                SyntheticModel.Write(slice, sliceDir, seed: 0, DType.BF16);
                rows.AddRange(Measure(slice.Name, sliceDir, prefix: 35, question: 60, samples: 3));
            }
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }

        Console.WriteLine();
        Console.WriteLine("model | K (layers that see the image) | prefill ms | decoder ms | MACs G (of full) | time vs full");
        foreach (var r in rows)
            Console.WriteLine($"{r.Model} | {r.ExitLayer} of {r.Layers} | {r.PrefillMedianMs:F1} | {r.DecoderMedianMs:F1} | {r.MacsExecuted / 1e9:F2} ({100 * r.MacRatio:F1}%) | {r.TimeRatio:F3}");

        var estimate = EstimateFullDepth(rows.Where(r => r.Model.Contains("slice")).ToList(), fullLayers: 32);
        foreach (var e in estimate)
            Console.WriteLine($"estimate, 32-layer LLaVA-1.5-7B decoder on this CPU: exit after {e.K,2} layers -> {e.DecoderMs / 1000:F1} s ({e.Ratio:F3} of no exit)");

        var doc = new
        {
            benchmark = "cpu-exit",
            machine = Environment.MachineName,
            processor = CpuInfo.ProcessorName,
            threads = Environment.ProcessorCount,
            runtime = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
            date = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
            quick,
            note = "Synthetic random weights, exit forced with layer:K; CPU backend (float32 activations, weights as stored). " +
                   "The 7B slice has 4 decoder layers and 2 CLIP layers of the real shapes; estimates scale its per-layer times to 32 layers.",
            rows,
            estimate_32_layers = estimate,
        };
        BenchModels.WriteJson(doc, outPath);
        return 0;
    }

    private static IEnumerable<Row> Measure(string name, string dir, int prefix, int question, int samples)
    {
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        int L = cfg.Text.NumLayers;
        var (ids, prompt) = BenchModels.LlavaPrompt(cfg, prefix, question);

        // Correctness first.
        using (var a = model.CreateSession())
        using (var b = model.CreateSession())
        {
            var none = a.Prefill(prompt, new PrefillOptions { AllLogits = true }).Logits.Values;
            var last = b.Prefill(prompt, new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(L) }).Logits.Values;
            if (!none.AsSpan().SequenceEqual(last)) throw new InvalidOperationException($"{name}: layer:{L} differs from no exit");
            if (none.Any(v => !float.IsFinite(v))) throw new InvalidOperationException($"{name}: non-finite logits");
        }

        var results = new List<Row>();
        double fullMs = 0;
        foreach (int k in Enumerable.Range(0, L + 1).Reverse())
        {
            var prefill = new List<double>();
            var decoder = new List<double>();
            var vision = new List<double>();
            PrefillReport? report = null;
            for (int s = 0; s < samples + 1; s++)   // the first run warms up
            {
                using var session = model.CreateSession();
                var clock = Stopwatch.StartNew();
                var r = session.Prefill(prompt, new PrefillOptions { Exit = ExitPolicy.AtLayer(k) });
                clock.Stop();
                if (r.Rows.Count != 1) throw new InvalidOperationException("expected one logits row");
                report = r.Report!;
                int expectRows = k == L ? ids.Count : ids.Count - cfg.TokensPerImage;
                if (report.TokensPerLayer[^1] != expectRows) throw new InvalidOperationException($"{name} layer:{k}: last layer ran {report.TokensPerLayer[^1]} rows, expected {expectRows}");
                if (s == 0) continue;
                prefill.Add(clock.Elapsed.TotalMilliseconds);
                decoder.Add(report.Times.Decoder.TotalMilliseconds);
                vision.Add(report.Times.Vision.TotalMilliseconds);
            }
            double med = BenchModels.Median(prefill);
            if (k == L) fullMs = med;
            Console.WriteLine($"{name} layer:{k}: prefill {med:F1} ms (decoder {BenchModels.Median(decoder):F1} ms), MACs {report!.Executed.Total / 1e9:F3} G");
            results.Add(new Row(name, k, L, ids.Count, med, BenchModels.Median(decoder), BenchModels.Median(vision), samples, report.Executed.Total, report.Full.Total,
                report.MacRatio, med / fullMs, report.KvBytes));
        }
        results.Reverse();
        return results;
    }

    private sealed record Estimate(int K, double DecoderMs, double Ratio);

    private static List<Estimate> EstimateFullDepth(List<Row> slice, int fullLayers)
    {
        if (slice.Count == 0) return [];
        int L = slice[0].Layers;
        double withImage = slice.Single(r => r.ExitLayer == L).DecoderMedianMs / L;
        double withoutImage = slice.Single(r => r.ExitLayer == 0).DecoderMedianMs / L;
        double full = fullLayers * withImage;
        return new[] { 0, 8, 16, 24, fullLayers }.Select(k => new Estimate(k, k * withImage + (fullLayers - k) * withoutImage, (k * withImage + (fullLayers - k) * withoutImage) / full)).ToList();
    }

}
