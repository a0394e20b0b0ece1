// What quantizing costs in accuracy, each format against the bf16 model it was made from:
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- quant-error [--small] [--tokens N] [--out bench/results/cpu-quant-error.json]
//
// Model: cpu-e2e's (LLaVA-1.5-7B widths, 8 decoder layers, the full 24-layer CLIP tower, random weights).
// Text: the first N tokens (default 512) of bench/data/english-gpl3.txt, tokenized with the model's
// tokenizer.json. Per format (f16 weights from the same seed, and bf16 quantized at load to q8_0 / q4_0):
//   * prefill logits of every text row against bf16's: max and mean |difference| (the default prefill
//     quantizes x per block of 32 as decode does; the "exact prefill" rows dequantize the weights exactly
//     and keep x in float32, CpuBackendOptions.ExactQuantizedPrefill: the weights' own error);
//   * perplexity of the text under the model (exp of the mean next-token cross-entropy): random weights give
//     a large value; what matters is how far each format moves it;
//   * greedy decoding of 64 tokens after the first 64 text tokens: how many agree with bf16's (leading and
//     in all), and the decode-step logits' max/mean |difference| while they agree (the decode path
//     quantizes x to int8 as well);
//   * the vision side: one image (seeded pixels) + a question, per format twice: the language model
//     quantized alone, and with the vision tower and projector quantized too (CpuBackendOptions.QuantizeVision):
//     the logits of the text rows against bf16's and 16 greedy tokens. What the vision side adds is the
//     difference between the two rows.
// Every configuration keeps the KV cache in bf16 (the default for a bf16 model), so the differences come
// from the weights (and, in decode, x's int8 rounding) alone.
using System.Diagnostics;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Text;

namespace VteKernels.Bench;

internal static class QuantErrorBench
{
    private sealed record Config(string Name, string Dir, CpuBackendOptions Options);

    public static int Run(string[] args)
    {
        bool small = args.Contains("--small");
        int tokens = 512;
        string outPath = Path.Combine("bench", "results", "cpu-quant-error.json");
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--tokens" && i + 1 < args.Length) tokens = int.Parse(args[++i]);
            else if (args[i] == "--out" && i + 1 < args.Length) outPath = args[++i];
            else if (args[i] != "--small")
            {
                Console.Error.WriteLine($"unknown argument '{args[i]}'");
                return 2;
            }
        }
        var preset = small ? CpuE2eBench.SmallPreset() : CpuE2eBench.Preset();
        var bf16Dir = CpuE2eBench.ModelDir(CpuE2eBench.DefaultCache(), preset, DType.BF16);
        var f16Dir = CpuE2eBench.ModelDir(CpuE2eBench.DefaultCache(), preset, DType.F16);
        var text = File.ReadAllText(Path.Combine("bench", "data", "english-gpl3.txt"));
        var ids = Tokenizer.Load(bf16Dir).Encode(text).Take(tokens).ToArray();
        Console.WriteLine($"quant-error: {preset.Name}, {ids.Length} tokens of english-gpl3.txt; load {CpuClock.LoadAverage()}");

        var configs = new List<Config>
        {
            new("bf16", bf16Dir, new CpuBackendOptions()),
            new("f16", f16Dir, new CpuBackendOptions { KvCache = DType.BF16 }),
            new("q8_0", bf16Dir, new CpuBackendOptions { Quantize = DType.Q8_0 }),
            new("q4_0", bf16Dir, new CpuBackendOptions { Quantize = DType.Q4_0 }),
            new("q8_0 exact prefill", bf16Dir, new CpuBackendOptions { Quantize = DType.Q8_0, ExactQuantizedPrefill = true }),
            new("q4_0 exact prefill", bf16Dir, new CpuBackendOptions { Quantize = DType.Q4_0, ExactQuantizedPrefill = true }),
        };
        var textRuns = configs.Select(c => TextRun(c, ids)).ToList();
        var rows = new List<object>();
        var reference = textRuns[0];
        Console.WriteLine("\nformat | prefill logits max / mean |diff| vs bf16 | perplexity | greedy 64 agree (leading / all) | decode logits max / mean |diff|");
        for (int i = 0; i < configs.Count; i++)
        {
            var r = textRuns[i];
            var (max, mean) = Diff(r.PrefillLogits, reference.PrefillLogits);
            var (leading, equal) = Agreement(reference.Greedy, r.Greedy);
            var (dmax, dmean) = DecodeDiff(r, reference, leading);
            string decode = double.IsNaN(dmax) ? "n/a (the first token differs)" : $"{dmax:F4} / {dmean:F5}";
            Console.WriteLine($"{configs[i].Name} | {max:F4} / {mean:F5} | {r.Perplexity:F2} | {leading} / {equal} | {decode}");
            rows.Add(new
            {
                Format = configs[i].Name, PrefillLogitMaxAbsDiff = max, PrefillLogitMeanAbsDiff = mean, r.Perplexity,
                GreedyLeading = leading, GreedyEqual = equal, GreedyOf = r.Greedy.Length,
                DecodeLogitMaxAbsDiff = double.IsNaN(dmax) ? (double?)null : dmax, DecodeLogitMeanAbsDiff = double.IsNaN(dmean) ? (double?)null : dmean, Seconds = Math.Round(r.Seconds, 1),
            });
        }

        // The vision side: the language model quantized alone, then with the tower and projector.
        var vision = new[]
        {
            new Config("bf16", bf16Dir, new CpuBackendOptions()),
            new Config("q8_0 LM", bf16Dir, new CpuBackendOptions { Quantize = DType.Q8_0, HugePages = false }),
            new Config("q8_0 LM + vision", bf16Dir, new CpuBackendOptions { Quantize = DType.Q8_0, QuantizeVision = true, HugePages = false }),
            new Config("q4_0 LM", bf16Dir, new CpuBackendOptions { Quantize = DType.Q4_0, HugePages = false }),
            new Config("q4_0 LM + vision", bf16Dir, new CpuBackendOptions { Quantize = DType.Q4_0, QuantizeVision = true, HugePages = false }),
        };
        var visionRuns = vision.Select(c => ImageRun(c, ids)).ToList();
        var visionRows = new List<object>();
        Console.WriteLine("\nimage run, quantized | text-row logits max / mean |diff| vs bf16 | greedy 16 agree (leading / all)");
        for (int i = 1; i < vision.Length; i++)
        {
            var (max, mean) = Diff(visionRuns[i].Logits, visionRuns[0].Logits);
            var (leading, equal) = Agreement(visionRuns[0].Greedy, visionRuns[i].Greedy);
            Console.WriteLine($"{vision[i].Name} | {max:F4} / {mean:F5} | {leading} / {equal}");
            visionRows.Add(new { Format = vision[i].Name, LogitMaxAbsDiff = max, LogitMeanAbsDiff = mean, GreedyLeading = leading, GreedyEqual = equal, GreedyOf = visionRuns[i].Greedy.Length });
        }

        BenchModels.WriteJson(new
        {
            Benchmark = "quant-error: each weight format against the bf16 model it was made from (KV cache bf16 throughout)",
            Date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            Model = preset.Name, TextFile = "bench/data/english-gpl3.txt", Tokens = ids.Length,
            Note = "Language-model matrices (attention/FFN projections, LM head) quantized; embeddings and norms stay bf16. " +
                   "Decode, and prefill by default, quantize x to int8 per 32-block (as llama.cpp does); the 'exact prefill' rows prefill with the dequantized weights and float32 x. " +
                   "Vision rows: 'LM' quantizes the language model alone, 'LM + vision' the CLIP tower and projector too; their difference is what the vision side costs. " +
                   "Random weights give near-uniform logits, so greedy agreement breaks at the first near-tie and perplexity is near the vocabulary size: compare formats, not absolute values.",
            Text = rows, Vision = visionRows,
        }, outPath);
        return 0;
    }

    private sealed record TextResult(float[] PrefillLogits, double Perplexity, int[] Greedy, List<float[]> DecodeLogits, double Seconds);

    private static TextResult TextRun(Config c, int[] ids)
    {
        var clock = Stopwatch.StartNew();
        using var model = LlavaModel.Load(c.Dir, new CpuBackend(c.Options));
        float[] logits;
        double nll = 0;
        using (var session = model.CreateSession())
        {
            var r = session.Prefill(PromptInput.TextOnly(ids), new PrefillOptions { AllLogits = true });
            logits = r.Logits.Values;
            int vocab = r.Logits.Vocab;
            for (int i = 0; i + 1 < ids.Length; i++)
            {
                var row = r.Logits.Row(i);
                double max = double.NegativeInfinity, sum = 0;
                foreach (var v in row) max = Math.Max(max, v);
                foreach (var v in row) sum += Math.Exp(v - max);
                nll += max + Math.Log(sum) - row[ids[i + 1]];
            }
        }
        var greedy = new int[64];
        var decodeLogits = new List<float[]>();
        using (var session = model.CreateSession())
        {
            var step = session.Prefill(PromptInput.TextOnly(ids[..Math.Min(64, ids.Length)]));
            for (int t = 0; t < greedy.Length; t++)
            {
                greedy[t] = Sampler.ArgMax(step.Logits.Last);
                if (t + 1 < greedy.Length)
                {
                    step = session.Decode(greedy[t]);
                    decodeLogits.Add(step.Logits.Last.ToArray());
                }
            }
        }
        Console.WriteLine($"  {c.Name}: {clock.Elapsed.TotalSeconds:F1} s");
        return new TextResult(logits, Math.Exp(nll / (ids.Length - 1)), greedy, decodeLogits, clock.Elapsed.TotalSeconds);
    }

    private sealed record ImageResult(float[] Logits, int[] Greedy);

    private static ImageResult ImageRun(Config c, int[] textIds)
    {
        using var model = LlavaModel.Load(c.Dir, new CpuBackend(c.Options));
        var cfg = model.Config;
        var rng = new Random(3);
        var px = new float[3 * cfg.Vision.ImageSize * cfg.Vision.ImageSize];
        for (int i = 0; i < px.Length; i++) px[i] = (float)(rng.NextDouble() * 4 - 2);
        int[] ids = [.. textIds[..8], .. Enumerable.Repeat(cfg.ImageTokenIndex, cfg.TokensPerImage), .. textIds[8..40]];
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, [ImageInput.Square(px, cfg.Vision.ImageSize)]), new PrefillOptions { AllLogits = true });
        int vocab = r.Logits.Vocab, first = 8 + cfg.TokensPerImage;
        var textRows = r.Logits.Values[(first * vocab)..];
        var greedy = new int[16];
        var step = r;
        for (int t = 0; t < greedy.Length; t++)
        {
            greedy[t] = Sampler.ArgMax(step.Logits.Last);
            if (t + 1 < greedy.Length) step = session.Decode(greedy[t]);
        }
        Console.WriteLine($"  image run {c.Name} done");
        return new ImageResult(textRows, greedy);
    }

    private static (double Max, double Mean) Diff(float[] a, float[] b)
    {
        double max = 0, sum = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs(a[i] - b[i]);
            max = Math.Max(max, d);
            sum += d;
        }
        return (Math.Round(max, 5), Math.Round(sum / a.Length, 6));
    }

    /// <summary>Decode-step logits against the reference's over the steps where both saw the same tokens.</summary>
    private static (double Max, double Mean) DecodeDiff(TextResult r, TextResult reference, int leading)
    {
        int steps = Math.Min(Math.Max(0, leading - 1), Math.Min(r.DecodeLogits.Count, reference.DecodeLogits.Count));
        if (steps == 0) return (double.NaN, double.NaN);
        double max = 0, sum = 0;
        long n = 0;
        for (int s = 0; s < steps; s++)
        {
            var (m, mean) = Diff(r.DecodeLogits[s], reference.DecodeLogits[s]);
            max = Math.Max(max, m);
            sum += mean * r.DecodeLogits[s].Length;
            n += r.DecodeLogits[s].Length;
        }
        return (max, Math.Round(sum / n, 6));
    }

    private static (int Leading, int Equal) Agreement(int[] a, int[] b)
    {
        int leading = 0;
        while (leading < a.Length && a[leading] == b[leading]) leading++;
        return (leading, a.Zip(b).Count(p => p.First == p.Second));
    }
}
