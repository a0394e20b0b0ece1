// End-to-end CPU benchmark against llama.cpp on the same weights, in one run:
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- cpu-e2e [--quick] [--formats bf16,f16,q8_0,q4_0]
//       [--reps N] [--threads N] [--prompt N] [--decode N] [--max-others F] [--no-huge-pages] [--out bench/results/cpu-e2e.json]
//
// Model: LLaVA-1.5-7B's language model widths (d 4096, 32 heads of 128, FFN 11008, vocabulary 32064) cut to
// 8 decoder layers, random weights (vte synth's scaling), with a 2-layer CLIP tower that the text-only
// prompt never runs; written once per dtype under the cache folder, and converted to GGUF by our writer
// (Gguf.cs) so llama.cpp reads the very same bytes. Quantized formats: ours at load (CpuBackendOptions.Quantize)
// and the same blocks written to GGUF for llama.cpp; llama.cpp's Q4_K_M, made by its own quantizer from the
// bf16 GGUF, is the int4 row it is strongest at.
//
// Per format: both engines prefill the same 512 random token ids, then decode 64 tokens greedily; the
// tokens of both must agree (first 16 steps at least, counted and recorded) before anything is timed.
// Then --reps interleaved repetitions (ours, llama.cpp; then llama.cpp, ours; ...), each timing the prefill
// and the 64 decode steps separately, with the CPU time other processes used during each phase. A phase
// where others used more than --max-others of the machine (default 5%) is dropped; medians and minima are over
// the kept samples (all samples, flagged, when none is clean). Read bandwidth is measured before and after.
// Our KV cache is f16 here, as llama.cpp keeps its cache by default, so both engines store and round it alike.
using System.Diagnostics;
using System.Runtime.InteropServices;
using LLama;
using LLama.Native;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Models;
using VteKernels.Synth;

namespace VteKernels.Bench;

internal static class CpuE2eBench
{
    private sealed record Options(bool Quick, string[] Formats, int Reps, int Threads, int Prompt, int Decode, double MaxOthers,
        string OutPath, string CacheDir, bool LlamaMmap, bool Small, bool HugePages);

    private sealed record Sample(double PrefillSeconds, double DecodeSeconds, double PrefillOthers, double DecodeOthers);

    private interface IRunner : IDisposable
    {
        float[] Prefill(int[] ids);
        float[] Decode(int id);
        void Reset();
    }

    private sealed class OurRunner(LlavaModel model) : IRunner
    {
        private InferenceSession _session = model.CreateSession();

        public float[] Prefill(int[] ids) => _session.Prefill(new PromptInput(ids, [])).Logits.Last.ToArray();

        public float[] Decode(int id) => _session.Decode(id).Logits.Last.ToArray();

        public void Reset()
        {
            _session.Dispose();
            _session = model.CreateSession();
        }

        public void Dispose()
        {
            _session.Dispose();
            model.Dispose();
        }
    }

    private sealed class PeerRunner(LlamaCppPeer peer) : IRunner
    {
        public float[] Prefill(int[] ids) => peer.Feed(ids);

        public float[] Decode(int id) => peer.Feed([id]);

        public void Reset() => peer.Reset();

        public void Dispose() => peer.Dispose();
    }

    public static int Run(string[] args)
    {
        if (ParseOptions(args) is not { } o) return 2;
        Console.WriteLine($"cpu-e2e: {CpuInfo.ProcessorName}, {Environment.ProcessorCount} logical cores, {RuntimeInformation.FrameworkDescription}");
        Console.WriteLine($"llama.cpp: {LlamaCppPeer.SystemInfo().Trim()}");
        Directory.CreateDirectory(o.CacheDir);
        string loadBefore = CpuClock.LoadAverage();
        var bwBefore = (Anon: ReadBandwidth.Anonymous(o.Threads), Mapped: ReadBandwidth.MappedFile(o.CacheDir, o.Threads));
        Console.WriteLine($"read bandwidth ({o.Threads} threads): {bwBefore.Anon:F1} GB/s anonymous huge-page memory, {bwBefore.Mapped:F1} GB/s memory-mapped file; load {loadBefore}");

        var preset = o.Small ? SmallPreset() : Preset();
        var prompt = PromptIds(preset.Config, o.Prompt);
        var rows = new List<Row>();
        var hugePages = new Dictionary<string, double?>();
        foreach (var format in o.Formats)
        {
            var (dir, gguf, cpuOptions) = Prepare(o, preset, format);
            Console.WriteLine($"\n== {format}: ours {dir}, llama.cpp {Path.GetFileName(gguf)}");
            var runners = new List<(string Engine, string Format, Func<IRunner> Open)>
            {
                ("ours", format, () => new OurRunner(LlavaModel.Load(dir, new CpuBackend(cpuOptions)))),
                ("llama.cpp", format, () => new PeerRunner(new LlamaCppPeer(gguf, o.Threads, o.Prompt + o.Decode + 16, o.Prompt, o.LlamaMmap))),
            };
            if (format == "q4_0")
                runners.Add(("llama.cpp", "q4_k_m", () => new PeerRunner(new LlamaCppPeer(QuantizeQ4KM(o, preset), o.Threads, o.Prompt + o.Decode + 16, o.Prompt, o.LlamaMmap))));
            var opened = new List<IRunner>();
            try
            {
                foreach (var r in runners)
                {
                    opened.Add(r.Open());
                    if (opened.Count > 1) continue;
                    // Ours is loaded first: what its weight copies got (anonymous memory on huge pages or not) shapes its decode speed.
                    var huge = ProcessMemory.AnonHugePagesGiB();
                    hugePages[format] = huge is { } h ? Math.Round(h, 2) : null;
                    Console.WriteLine($"ours loaded: {(huge is { } g ? $"{g:F2} GiB" : "unknown")} of anonymous memory on huge pages");
                }
                // Correctness first (also the warm-up): greedy tokens of every engine against ours.
                var firsts = opened.Select(r => Greedy(r, prompt, o.Decode, out _, out var first)).ToList();
                var tokens = firsts.Select(f => f.Tokens).ToList();
                var agreement = tokens.Select(t => Agreement(tokens[0], t)).ToList();
                var logitDiff = firsts.Select(f => LogitDifference(firsts[0].FirstLogits, f.FirstLogits)).ToList();
                for (int i = 1; i < runners.Count; i++)
                    Console.WriteLine($"greedy agreement {runners[i].Engine} {runners[i].Format} vs ours: first {agreement[i].Leading} of {tokens[0].Length} tokens equal ({agreement[i].Equal} positions equal); " +
                        $"prefill logits max |diff| {logitDiff[i].Max:E2}, mean {logitDiff[i].Mean:E2} (logits' std {logitDiff[i].Std:F2})");
                if (agreement[1].Leading < Math.Min(16, tokens[0].Length))
                    Console.WriteLine("warning: greedy tokens diverge within 16 steps: the engines do not compute the same model closely enough");

                var samples = runners.Select(_ => new List<Sample>()).ToList();
                for (int rep = 0; rep < o.Reps; rep++)
                {
                    var order = Enumerable.Range(0, runners.Count).ToList();
                    if (rep % 2 == 1) order.Reverse();
                    foreach (var i in order)
                    {
                        Greedy(opened[i], prompt, o.Decode, out var s, out _);
                        samples[i].Add(s);
                        Console.WriteLine($"  rep {rep} {runners[i].Engine,-9} {runners[i].Format,-6}: prefill {o.Prompt / s.PrefillSeconds,7:F1} tok/s (others {s.PrefillOthers:F2} s), " +
                            $"decode {o.Decode / s.DecodeSeconds,6:F2} tok/s (others {s.DecodeOthers:F2} s)");
                    }
                }
                long weightBytes = DecodeWeightBytes(dir, cpuOptions);
                for (int i = 0; i < runners.Count; i++)
                {
                    rows.Add(Summarise(o, runners[i].Engine, runners[i].Format, samples[i], agreement[i], i == 0 ? weightBytes : (long?)null) with { LogitsVsOurs = logitDiff[i] });
                }
            }
            finally
            {
                foreach (var r in opened) r.Dispose();
            }
        }

        var bwAfter = (Anon: ReadBandwidth.Anonymous(o.Threads), Mapped: ReadBandwidth.MappedFile(o.CacheDir, o.Threads));
        double bandwidth = Math.Max(bwBefore.Anon, bwAfter.Anon);
        string loadAfter = CpuClock.LoadAverage();
        Console.WriteLine($"\nread bandwidth after: {bwAfter.Anon:F1} GB/s anonymous, {bwAfter.Mapped:F1} GB/s mapped; load {loadAfter}");
        Console.WriteLine($"\nengine | format | prefill tok/s median (best) | decode tok/s median (best) | kept prefill/decode samples | ours decode GB/s (% of {bandwidth:F1})");
        foreach (var row in rows) Console.WriteLine(row.Line(bandwidth));

        BenchModels.WriteJson(new
        {
            Benchmark = "cpu-e2e: LLaVA-1.5-7B language-model widths, 8 decoder layers, random weights; ours vs llama.cpp (LLamaSharp 0.30.0 CPU backend) on the same weights",
            Date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            Machine = new { Processor = CpuInfo.ProcessorName, LogicalCores = Environment.ProcessorCount, Dotnet = RuntimeInformation.FrameworkDescription, LlamaCpp = LlamaCppPeer.SystemInfo().Trim() },
            Options = new { o.Quick, o.Formats, o.Reps, o.Threads, PromptTokens = o.Prompt, DecodeTokens = o.Decode, MaxOthersShare = o.MaxOthers, LlamaCppMmap = o.LlamaMmap, OursHugePages = o.HugePages },
            LoadAverage = new { Before = loadBefore, After = loadAfter },
            OursAnonHugePagesGiBAfterLoad = hugePages,
            ReadBandwidthGBps = new
            {
                Method = "8 sequential 64-byte-vector streams per thread over a 1 GiB buffer; best of 7",
                AnonymousHugePages = new[] { Math.Round(bwBefore.Anon, 2), Math.Round(bwAfter.Anon, 2) },
                MappedFile = new[] { Math.Round(bwBefore.Mapped, 2), Math.Round(bwAfter.Mapped, 2) },
                Reference = Math.Round(bandwidth, 2),
            },
            Note = "tok/s: prefill = prompt tokens / prefill time, decode = decode tokens / time of the decode steps. " +
                   "Samples where other processes used more than the max_others share of all cores during the phase are dropped. " +
                   "LLamaSharp's CPU build reports AVX512 but not AVX512_BF16 or AVX512_VNNI, so a llama.cpp built for this CPU could be faster.",
            Rows = rows.Select(r => r.Json(bandwidth)),
        }, o.OutPath);
        return 0;
    }

    private static Options? ParseOptions(string[] args)
    {
        bool quick = args.Contains("--quick");
        string[] formats = ["bf16", "f16", "q8_0", "q4_0"];
        int reps = quick ? 3 : 7, threads = Environment.ProcessorCount, prompt = 512, decode = 64;
        double maxOthers = 0.05;
        bool mmap = true, small = false, huge = true;
        string outPath = Path.Combine("bench", "results", "cpu-e2e.json");
        string cache = DefaultCache();
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--quick": break;
                case "--formats": formats = Next().Split(','); break;
                case "--reps": reps = int.Parse(Next()); break;
                case "--threads": threads = int.Parse(Next()); break;
                case "--prompt": prompt = int.Parse(Next()); break;
                case "--decode": decode = int.Parse(Next()); break;
                case "--max-others": maxOthers = double.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                case "--out": outPath = Next(); break;
                case "--cache": cache = Next(); break;
                case "--llama-no-mmap": mmap = false; break;
                case "--small": small = true; break;
                case "--no-huge-pages": huge = false; break;
                default:
                    Console.Error.WriteLine($"unknown argument '{args[i]}'");
                    return null;
            }
        }
        foreach (var f in formats)
            if (f is not ("bf16" or "f16" or "q8_0" or "q4_0"))
            {
                Console.Error.WriteLine($"unknown format '{f}' (expected bf16, f16, q8_0, q4_0)");
                return null;
            }
        return new Options(quick, formats, reps, threads, prompt, decode, maxOthers, outPath, cache, mmap, small, huge);
    }

    /// <summary>Where the benchmark models live: $VTE_CACHE_DIR, else ~/.cache/vtekernels, then bench-cpu-e2e.</summary>
    internal static string DefaultCache() => Path.Combine(Environment.GetEnvironmentVariable("VTE_CACHE_DIR") is { Length: > 0 } c ? c
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "vtekernels"), "bench-cpu-e2e");

    /// <summary>LLaVA-1.5-7B with 8 decoder layers (the full CLIP tower, which text-only prompts never run).</summary>
    internal static SynthPreset Preset()
    {
        var seven = SynthPreset.Get("llava-1.5-7b").Config;
        return new SynthPreset("llava-1.5-7b-slice8", seven with { Text = seven.Text with { NumLayers = 8 } });
    }

    /// <summary>A small model with grouped-query attention, for checking the harness and the conversion in seconds (--small).</summary>
    internal static SynthPreset SmallPreset()
    {
        var seven = SynthPreset.Get("llava-1.5-7b").Config;
        return new SynthPreset("small-gqa", seven with
        {
            Vision = seven.Vision with { NumLayers = 2 },
            Text = new TextConfig(512, 1376, 4, 8, 4, 64, 4096, 1e-5f, 10000f, 4096, "silu", false, 1, 2),
            ImageTokenIndex = 4094,
        });
    }

    /// <summary>Seeded random ids in [3, image token), BOS first.</summary>
    private static int[] PromptIds(LlavaConfig cfg, int n)
    {
        var rng = new Random(7);
        var ids = new int[n];
        ids[0] = cfg.Text.BosTokenId ?? 1;
        for (int i = 1; i < n; i++) ids[i] = rng.Next(3, Math.Min(cfg.Text.VocabSize, cfg.ImageTokenIndex));
        return ids;
    }

    /// <summary>The model folder, GGUF and backend options of a format, writing what is missing.</summary>
    private static (string Dir, string Gguf, CpuBackendOptions Options) Prepare(Options o, SynthPreset preset, string format)
    {
        string dir = ModelDir(o.CacheDir, preset, format == "f16" ? DType.F16 : DType.BF16);
        DType? quantize = format switch { "q8_0" => DType.Q8_0, "q4_0" => DType.Q4_0, _ => null };
        // KV cache in f16, as llama.cpp keeps it by default (type_k = type_v = f16): the same bytes per step and the same rounding.
        var options = new CpuBackendOptions { Threads = o.Threads, Quantize = quantize, KvCache = DType.F16, HugePages = o.HugePages };
        string gguf = Path.Combine(o.CacheDir, $"{preset.Name}-{format}.gguf");
        if (!File.Exists(gguf))
        {
            Console.WriteLine($"writing {Path.GetFileName(gguf)} ...");
            using var checkpoint = LlavaCheckpoint.Open(dir);
            var tmp = gguf + ".tmp";
            // Quantized formats: the blocks our backend makes at load (CpuBackendOptions.Quantize), so both engines read the same weights.
            LlavaGguf.Write(checkpoint.Config, checkpoint.Weights, tmp, preset.Name,
                quantize is { } q ? w => CpuWeights.Quantize(w, q, o.Threads) : null);
            File.Move(tmp, gguf, overwrite: true);
        }
        return (dir, gguf, options);
    }

    /// <summary>The synthetic model of <paramref name="preset"/> stored as <paramref name="stored"/>, written once (seed 0).</summary>
    internal static string ModelDir(string cache, SynthPreset preset, DType stored)
    {
        string dir = Path.Combine(cache, $"{preset.Name}-{stored.Name()}");
        if (!File.Exists(Path.Combine(dir, ".complete")))
        {
            Console.WriteLine($"writing {preset.Name} ({stored.Name()}) to {dir} ...");
            SyntheticModel.Write(preset, dir, seed: 0, stored);
            File.WriteAllText(Path.Combine(dir, ".complete"), "");
        }
        return dir;
    }

    /// <summary>llama.cpp's own Q4_K_M of the bf16 GGUF (made once).</summary>
    private static string QuantizeQ4KM(Options o, SynthPreset preset)
    {
        string src = Path.Combine(o.CacheDir, $"{preset.Name}-bf16.gguf"), dst = Path.Combine(o.CacheDir, $"{preset.Name}-q4_k_m.gguf");
        if (!File.Exists(src)) Prepare(o, preset, "bf16");
        if (!File.Exists(dst))
        {
            Console.WriteLine("quantizing the bf16 GGUF to Q4_K_M with llama.cpp ...");
            if (!LLamaQuantizer.Quantize(src, dst + ".tmp", LLamaFtype.MOSTLY_Q4_K_M, o.Threads)) throw new InvalidOperationException("llama.cpp's quantizer failed");
            File.Move(dst + ".tmp", dst, overwrite: true);
        }
        return dst;
    }

    /// <summary>Prefill, then <paramref name="steps"/> greedy decode steps: the steps + 1 tokens, and the timings.</summary>
    private static (int[] Tokens, float[] FirstLogits) Greedy(IRunner r, int[] prompt, int steps, out Sample sample, out float[] firstLogits)
    {
        r.Reset();
        var tokens = new int[steps + 1];
        var start = CpuClock.Now();
        var sw = Stopwatch.StartNew();
        var logits = r.Prefill(prompt);
        double prefill = sw.Elapsed.TotalSeconds;
        double prefillOthers = CpuClock.OthersSince(start);
        firstLogits = logits;
        tokens[0] = Sampler.ArgMax(logits);
        start = CpuClock.Now();
        sw.Restart();
        for (int s = 0; s < steps; s++) tokens[s + 1] = Sampler.ArgMax(r.Decode(tokens[s]));
        double decode = sw.Elapsed.TotalSeconds;
        sample = new Sample(prefill, decode, prefillOthers, CpuClock.OthersSince(start));
        return (tokens, firstLogits);
    }

    /// <summary>Max and mean |a - b| of two logit rows, and the standard deviation of <paramref name="a"/> (their scale).</summary>
    private static (double Max, double Mean, double Std) LogitDifference(float[] a, float[] b)
    {
        double max = 0, sum = 0, mean = a.Average(v => (double)v), var = a.Sum(v => (v - mean) * (v - mean)) / a.Length;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs((double)a[i] - b[i]);
            max = Math.Max(max, d);
            sum += d;
        }
        return (max, sum / a.Length, Math.Sqrt(var));
    }

    private static (int Leading, int Equal) Agreement(int[] a, int[] b)
    {
        int leading = 0;
        while (leading < a.Length && a[leading] == b[leading]) leading++;
        return (leading, a.Zip(b).Count(p => p.First == p.Second));
    }

    /// <summary>Bytes of weights one decode step reads: every decoder matrix and the LM head.</summary>
    private static long DecodeWeightBytes(string dir, CpuBackendOptions options)
    {
        using var c = LlavaCheckpoint.Open(dir);
        long Bytes(Weight w) => options.Quantize is { } q ? q.ByteCount(w.ElementCount) : w.ByteLength;
        long bytes = Bytes(c.Weights.Text.LmHead);
        foreach (var l in c.Weights.Text.Layers)
            foreach (var w in new[] { l.QProj!, l.KProj!, l.VProj!, l.OProj!, l.GateProj, l.UpProj, l.DownProj })
                bytes += Bytes(w);
        return bytes;
    }

    private sealed record Row(string Engine, string Format, double PrefillMedian, double PrefillBest, double DecodeMedian, double DecodeBest,
        int Samples, int KeptPrefill, int KeptDecode, List<Sample> All, (int Leading, int Equal) Agreement, int Tokens, long? WeightBytes, double? WeightGBps)
    {
        public (double Max, double Mean, double Std) LogitsVsOurs { get; init; }

        public string Line(double bandwidth) =>
            $"{Engine} | {Format} | {PrefillMedian:F1} ({PrefillBest:F1}) | {DecodeMedian:F2} ({DecodeBest:F2}) | " +
            $"{(KeptPrefill == 0 ? "none clean" : $"{KeptPrefill}/{Samples}")} / {(KeptDecode == 0 ? "none clean" : $"{KeptDecode}/{Samples}")}" +
            (WeightGBps is { } g ? $" | {g:F1} GB/s ({100 * g / bandwidth:F0}%)" : " |");

        public object Json(double bandwidth) => new
        {
            Engine, Format,
            PrefillTokS = new { Median = Math.Round(PrefillMedian, 2), Best = Math.Round(PrefillBest, 2) },
            DecodeTokS = new { Median = Math.Round(DecodeMedian, 2), Best = Math.Round(DecodeBest, 2) },
            Samples, KeptPrefill, KeptDecode,
            OthersCpuSeconds = All.Select(s => new { Prefill = Math.Round(s.PrefillOthers, 3), Decode = Math.Round(s.DecodeOthers, 3) }),
            PrefillSeconds = All.Select(s => Math.Round(s.PrefillSeconds, 4)),
            DecodeSeconds = All.Select(s => Math.Round(s.DecodeSeconds, 4)),
            GreedyAgreementWithOurs = new { Agreement.Leading, Agreement.Equal, Of = Tokens },
            PrefillLogitsVsOurs = new { MaxAbsDiff = LogitsVsOurs.Max, MeanAbsDiff = LogitsVsOurs.Mean, OursStd = LogitsVsOurs.Std },
            DecodeWeightBytes = WeightBytes,
            DecodeWeightGBps = WeightGBps is { } g ? Math.Round(g, 2) : (double?)null,
            PercentOfReadBandwidth = WeightGBps is { } h ? Math.Round(100 * h / bandwidth, 1) : (double?)null,
        };
    }

    /// <summary>Medians and minima over the samples whose phase others left (nearly) alone; all samples when none is clean.</summary>
    private static Row Summarise(Options o, string engine, string format, List<Sample> samples, (int Leading, int Equal) agreement, long? weightBytes)
    {
        double limit = o.MaxOthers * Environment.ProcessorCount;
        var pre = samples.Where(s => s.PrefillOthers <= limit * s.PrefillSeconds).Select(s => s.PrefillSeconds).ToList();
        var dec = samples.Where(s => s.DecodeOthers <= limit * s.DecodeSeconds).Select(s => s.DecodeSeconds).ToList();
        int keptPre = pre.Count, keptDec = dec.Count;
        if (keptPre == 0) pre = samples.Select(s => s.PrefillSeconds).ToList();
        if (keptDec == 0) dec = samples.Select(s => s.DecodeSeconds).ToList();
        double decMedian = BenchModels.Median(dec);
        double? gbps = weightBytes is { } b ? b * o.Decode / decMedian / 1e9 : null;   // each decode step reads the weights once
        return new Row(engine, format, o.Prompt / BenchModels.Median(pre), o.Prompt / pre.Min(), o.Decode / decMedian, o.Decode / dec.Min(),
            samples.Count, keptPre, keptDec, samples, agreement, o.Decode + 1, weightBytes, gbps);
    }
}
