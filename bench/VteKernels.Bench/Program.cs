// Benchmarks: `kernels` (KernelsBench.cs) times the CUDA kernels on a GPU; `attention` (AttentionBench.cs) CUDA attention and KV compaction beside torch SDPA;
// `gpu-e2e` (GpuE2eBench.cs) the whole CUDA engine at LLaVA-1.5-7B's shape beside HF transformers; `tokenize` (TokenizeBench.cs) the tokenizer;
// `image` (ImageBench.cs) image decoding; `exit` (ExitBench.cs) visual-token exit; `next` (NextBench.cs) LLaVA-NeXT beside LLaVA-1.5. `matmul` times CpuOps.Linear at tiny shapes and at LLaVA-1.5-7B layer shapes
// (decode n = 1 and prefill n = 64, 640), with weights stored F32 and BF16, and compares the throughput with
// this machine's fp32 peak measured in the same run by a register-only Vector256 FMA loop.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- matmul [--quick] [--out bench/results/cpu-matmul.json]
//
// It checks Linear against a naive loop before timing anything (a fast wrong answer is worth nothing).
// Timings are the median of several runs after a warm-up; calls shorter than a few milliseconds are
// repeated inside each timed sample so that Stopwatch resolution and timer noise do not dominate.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Encodings.Web;
using System.Text.Json;
using VteKernels;
using VteKernels.Backends.Cpu;

namespace VteKernels.Bench;

internal static class Program
{
    private static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "tokenize") return TokenizeBench.Run(args[1..]);
        if (args.Length > 0 && args[0] == "cpu-e2e") return CpuE2eBench.Run(args[1..]);
        if (args.Length > 0 && args[0] == "quant-error") return QuantErrorBench.Run(args[1..]);
        if (args.Length > 0 && args[0] == "cpu-decode") return CpuDecodeBench.Run(args[1..]);
        if (args.Length > 0 && args[0] == "attention") return AttentionBench.Run(args[1..]);
        if (args.Length > 0 && args[0] == "kernels") return KernelsBench.Run(args[1..]);
        if (args.Length > 0 && args[0] == "gpu-e2e") return GpuE2eBench.Run(args[1..]);
        if (args.Length == 0 || args[0] is not ("matmul" or "exit" or "methods" or "next" or "image"))
        {
            Console.Error.WriteLine("usage: VteKernels.Bench matmul|exit|methods|next|image [--quick] [--out PATH]   (matmul: [--rows N,...])");
            Console.Error.WriteLine("       VteKernels.Bench attention [--quick] [--small] [--only ID,...] [--no-torch] [--out PATH]   (GPU; --small: emulator-sized)");
            Console.Error.WriteLine("       VteKernels.Bench kernels [--quick] [--small] [--out PATH]   (GPU)");
            Console.Error.WriteLine("       VteKernels.Bench gpu-e2e [--small] [--layers N] [--model DIR] [--write-only] [--no-hf] [--decode N] [--out PATH]   (GPU)");
            Console.Error.WriteLine("       VteKernels.Bench tokenize [--quick] [--data DIR] [--out PATH]");
            Console.Error.WriteLine("       VteKernels.Bench cpu-e2e [--quick] [--formats bf16,f16,q8_0,q4_0] [--reps N] [--threads N] [--out PATH]");
            Console.Error.WriteLine("       VteKernels.Bench quant-error [--small] [--tokens N] [--out PATH]");
            Console.Error.WriteLine("       VteKernels.Bench cpu-decode [--quick] [--threads N] [--formats bf16,f16,q8_0,q4_0] [--out PATH]");
            return 2;
        }
        bool quick = false;
        int[]? rows = null;
        string outPath = Path.Combine("bench", "results", $"cpu-{args[0]}.json");
        for (int i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick": quick = true; break;
                case "--out" when i + 1 < args.Length: outPath = args[++i]; break;
                case "--rows" when args[0] == "matmul" && i + 1 < args.Length: rows = args[++i].Split(',').Select(int.Parse).ToArray(); break;
                default:
                    Console.Error.WriteLine($"unknown argument '{args[i]}'");
                    return 2;
            }
        }
        return args[0] switch
        {
            "exit" => ExitBench.Run(quick, outPath),
            "methods" => MethodsBench.Run(quick, outPath),
            "next" => NextBench.Run(quick, outPath),
            "image" => ImageBench.Run(quick, outPath),
            _ => MatmulBench.Run(quick, outPath, rows),
        };
    }
}

internal static class MatmulBench
{
    private sealed record Row(string Name, int N, int In, int Out, string DType, double MedianMs, double MinMs, int Samples,
        double Gflops, double PercentOfPeak, double WeightGBps);

    /// <param name="rowCounts">Rows of x for the 7B shapes (default 1, 64 and 640; quick: 1 and 64); given, the small shapes are left out.</param>
    public static int Run(bool quick, string outPath, int[]? rowCounts = null)
    {
        var cpu = CpuInfo.ProcessorName;
        string loadBefore = LoadAverage();
        int threads = Environment.ProcessorCount;
        Console.WriteLine($"{cpu}, {threads} logical cores, {RuntimeInformation.FrameworkDescription}, " +
                          $"Vector256 {(Vector256.IsHardwareAccelerated ? "accelerated" : "emulated")}, FMA {(Fma.IsSupported ? "yes" : "no")}");

        if (!CheckCorrectness()) return 1;
        if (!Fma.IsSupported)
        {
            Console.Error.WriteLine("this benchmark measures peak with x86 FMA instructions, which this processor lacks");
            return 1;
        }

        // Peak is measured before and after the timings and the higher figure kept: when other processes
        // share the cores, the lower one says more about them than about the machine.
        var (peakAllBefore, peakOneBefore) = (MeasurePeak(threads), MeasurePeak(1));
        Console.WriteLine($"fp32 peak ({(Vector512.IsHardwareAccelerated ? "Vector512" : "Vector256")} FMA, registers only): {peakAllBefore:F1} GFLOP/s on {threads} threads, {peakOneBefore:F1} GFLOP/s on one");
        Console.WriteLine();
        double peakAll = peakAllBefore;

        var shapes = new List<(string Name, int N, int In, int Out)>
        {
            ("tiny 64->128", 1, 64, 128),
            ("tiny 64->128", 23, 64, 128),
            ("small 1024->1024", 23, 1024, 1024),
        };
        if (!quick) shapes.Add(("clip fc1 1024->4096", 577, 1024, 4096));
        if (rowCounts is not null) shapes.Clear();
        int[] ns = rowCounts ?? (quick ? [1, 64] : [1, 64, 640]);
        foreach (var (name, inF, outF) in new[] { ("q_proj 4096->4096", 4096, 4096), ("gate/up 4096->11008", 4096, 11008), ("down 11008->4096", 11008, 4096) })
            foreach (var n in ns) shapes.Add((name, n, inF, outF));

        var rows = new List<Row>();
        // Weights are generated once per [out, in] shape and stored in each dtype in turn.
        foreach (var group in shapes.GroupBy(s => (s.In, s.Out)))
        {
            var values = RandomValues(group.Key.In * group.Key.Out, 0.02f, seed: group.Key.In ^ group.Key.Out);
            foreach (var dtype in new[] { DType.F32, DType.BF16 })
            {
                var w = Weight.FromFloats("w", values, dtype, group.Key.Out, group.Key.In);
                foreach (var s in group)
                {
                    var row = Time(s.Name, s.N, w, dtype, peakAll, quick);
                    rows.Add(row);
                    Console.WriteLine($"  {s.Name} n={s.N} {row.DType}: {row.MedianMs:F3} ms");
                }
            }
        }

        var (peakAllAfter, peakOneAfter) = (MeasurePeak(threads), MeasurePeak(1));
        Console.WriteLine();
        Console.WriteLine($"fp32 peak measured again: {peakAllAfter:F1} GFLOP/s on {threads} threads, {peakOneAfter:F1} GFLOP/s on one");
        if (peakAllAfter > peakAll)
        {
            peakAll = peakAllAfter;
            rows = rows.Select(r => r with { PercentOfPeak = 100 * r.Gflops / peakAll }).ToList();
        }
        double peakOne = Math.Max(peakOneBefore, peakOneAfter);

        Console.WriteLine();
        Console.WriteLine($"peak {peakAll:F1} GFLOP/s on {threads} threads ({peakOne:F1} on one); ms is the median; W GB/s is weight bytes read per second");
        Console.WriteLine($"{"shape",-28} | {"dtype",-5} | {"ms",10} | {"GFLOP/s",8} | {"% of peak",9} | {"W GB/s",7}");
        Console.WriteLine(new string('-', 84));
        foreach (var row in rows)
            Console.WriteLine($"{$"{row.Name} n={row.N}",-28} | {row.DType,-5} | {row.MedianMs,10:F3} | {row.Gflops,8:F1} | {row.PercentOfPeak,8:F1}% | {row.WeightGBps,7:F1}");

        var dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        var doc = new
        {
            benchmark = "CpuOps.Linear (y = x·Wᵀ), float32 accumulation",
            date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            quick,
            note = (quick ? "quick run: prefill limited to n = 64, fewer samples. " : "full run. ") +
                   "Other processes may share the cores: see loadAverage (1, 5, 15 min) before and after.",
            loadAverage = new { before = loadBefore, after = LoadAverage() },
            machine = new
            {
                processor = cpu,
                logicalCores = threads,
                dotnet = RuntimeInformation.FrameworkDescription,
                os = RuntimeInformation.OSDescription,
                vector256 = Vector256.IsHardwareAccelerated,
                fma = Fma.IsSupported,
            },
            peak = new
            {
                method = $"register-only {(Vector512.IsHardwareAccelerated ? "Vector512" : "Vector256")} FMA loop (the Linear kernels' width), 12 independent accumulators per thread; best of the runs before and after the timings",
                allCoresGflops = Math.Round(peakAll, 2),
                singleCoreGflops = Math.Round(peakOne, 2),
                allCoresBeforeAfter = new[] { Math.Round(peakAllBefore, 2), Math.Round(peakAllAfter, 2) },
                singleCoreBeforeAfter = new[] { Math.Round(peakOneBefore, 2), Math.Round(peakOneAfter, 2) },
                threads,
            },
            rows = rows.Select(r => new
            {
                shape = r.Name, n = r.N, inFeatures = r.In, outFeatures = r.Out, dtype = r.DType,
                medianMs = Math.Round(r.MedianMs, 4), minMs = Math.Round(r.MinMs, 4), samples = r.Samples,
                gflops = Math.Round(r.Gflops, 2), percentOfPeak = Math.Round(r.PercentOfPeak, 1),
                weightGBps = Math.Round(r.WeightGBps, 2),
            }),
        };
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        File.WriteAllText(outPath, JsonSerializer.Serialize(doc, options) + "\n");
        Console.WriteLine();
        Console.WriteLine($"wrote {outPath}");
        return 0;
    }

    private static Row Time(string name, int n, Weight w, DType dtype, double peak, bool quick)
    {
        var x = RandomValues(n * w.Cols, 1f, seed: n);
        var y = new float[n * w.Rows];
        // Warm-up (JIT tiers, page faults, thread pool growth): at least three calls and 100 ms.
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 3 || sw.ElapsedMilliseconds < 100; i++) CpuOps.Linear(x, n, w, null, y);
        sw.Restart();
        CpuOps.Linear(x, n, w, null, y);
        double once = sw.Elapsed.TotalSeconds;
        // Repeat short calls inside one sample so each sample lasts ~20 ms.
        int reps = Math.Max(1, (int)(0.02 / Math.Max(once, 1e-7)));
        int samples = once > 1.0 ? 3 : quick ? 5 : 9;
        var times = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            sw.Restart();
            for (int r = 0; r < reps; r++) CpuOps.Linear(x, n, w, null, y);
            times[s] = sw.Elapsed.TotalSeconds / reps;
        }
        Array.Sort(times);
        double median = times[samples / 2];
        double gflops = 2.0 * n * w.Cols * w.Rows / median / 1e9;
        return new Row(name, n, w.Cols, w.Rows, dtype.ToString(), median * 1e3, times[0] * 1e3, samples, gflops,
            100 * gflops / peak, w.ByteLength / median / 1e9);
    }

    /// <summary>Linear against a naive float64 loop on small odd shapes, each dtype.</summary>
    private static bool CheckCorrectness()
    {
        foreach (var (n, inF, outF) in new[] { (7, 37, 29), (5, 1100, 101) })
        {
            foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
            {
                var w = Weight.FromFloats("w", RandomValues(inF * outF, 1f, 1), dtype, outF, inF);
                var b = Weight.FromFloats("b", RandomValues(outF, 1f, 2), dtype, outF);
                var x = RandomValues(n * inF, 1f, 3);
                var y = new float[n * outF];
                CpuOps.Linear(x, n, w, b, y);
                var wf = w.ToFloatArray();
                var bf = b.ToFloatArray();
                double maxErr = 0;
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < outF; j++)
                    {
                        double s = bf[j];
                        for (int k = 0; k < inF; k++) s += (double)x[i * inF + k] * wf[j * inF + k];
                        maxErr = Math.Max(maxErr, Math.Abs(s - y[i * outF + j]));
                    }
                double tol = 1e-6 * inF;
                if (!(maxErr <= tol))
                {
                    Console.Error.WriteLine($"Linear disagrees with the naive loop: n={n} {inF}->{outF} {dtype}: max |error| {maxErr:E2} > {tol:E2}");
                    return false;
                }
            }
        }
        Console.WriteLine("correctness: Linear matches a naive float64 loop (F32, F16, BF16; with bias)");
        return true;
    }

    /// <summary>
    /// Peak fp32 FLOP/s: each thread runs independent Vector256 FMA chains held in registers (12 chains hide
    /// the 4-5 cycle FMA latency on two FMA ports), so nothing touches memory. Best of three runs.
    /// </summary>
    private static double MeasurePeak(int threads)
    {
        const long iterations = 100_000_000;
        double best = 0;
        for (int run = 0; run < 3; run++)
        {
            using var start = new Barrier(threads + 1);
            var results = new float[threads];
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                start.SignalAndWait();
                results[t] = Vector512.IsHardwareAccelerated ? FmaLoop512(iterations, 1f + t * 1e-7f) : FmaLoop(iterations, 1f + t * 1e-7f);
            })).ToArray();
            foreach (var th in workers) th.Start();
            start.SignalAndWait();
            var sw = Stopwatch.StartNew();
            foreach (var th in workers) th.Join();
            double seconds = sw.Elapsed.TotalSeconds;
            if (results.Any(float.IsNaN)) Console.WriteLine("(peak loop produced NaN)");
            int lanes = Vector512.IsHardwareAccelerated ? Vector512<float>.Count : Vector256<float>.Count;
            best = Math.Max(best, threads * iterations * 12.0 * lanes * 2 / seconds / 1e9);
        }
        return best;
    }

    private static float FmaLoop(long iterations, float seed)
    {
        var m = Vector256.Create(0.999999f);
        var c = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(seed), a1 = a0 + c, a2 = a1 + c, a3 = a2 + c, a4 = a3 + c, a5 = a4 + c,
            a6 = a5 + c, a7 = a6 + c, a8 = a7 + c, a9 = a8 + c, a10 = a9 + c, a11 = a10 + c;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, c); a1 = Fma.MultiplyAdd(a1, m, c); a2 = Fma.MultiplyAdd(a2, m, c);
            a3 = Fma.MultiplyAdd(a3, m, c); a4 = Fma.MultiplyAdd(a4, m, c); a5 = Fma.MultiplyAdd(a5, m, c);
            a6 = Fma.MultiplyAdd(a6, m, c); a7 = Fma.MultiplyAdd(a7, m, c); a8 = Fma.MultiplyAdd(a8, m, c);
            a9 = Fma.MultiplyAdd(a9, m, c); a10 = Fma.MultiplyAdd(a10, m, c); a11 = Fma.MultiplyAdd(a11, m, c);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    /// <summary><see cref="FmaLoop"/> with 512-bit vectors (the width the Linear kernels use where the CPU has it).</summary>
    private static float FmaLoop512(long iterations, float seed)
    {
        var m = Vector512.Create(0.999999f);
        var c = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(seed), a1 = a0 + c, a2 = a1 + c, a3 = a2 + c, a4 = a3 + c, a5 = a4 + c,
            a6 = a5 + c, a7 = a6 + c, a8 = a7 + c, a9 = a8 + c, a10 = a9 + c, a11 = a10 + c;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, m, c); a1 = Vector512.FusedMultiplyAdd(a1, m, c); a2 = Vector512.FusedMultiplyAdd(a2, m, c);
            a3 = Vector512.FusedMultiplyAdd(a3, m, c); a4 = Vector512.FusedMultiplyAdd(a4, m, c); a5 = Vector512.FusedMultiplyAdd(a5, m, c);
            a6 = Vector512.FusedMultiplyAdd(a6, m, c); a7 = Vector512.FusedMultiplyAdd(a7, m, c); a8 = Vector512.FusedMultiplyAdd(a8, m, c);
            a9 = Vector512.FusedMultiplyAdd(a9, m, c); a10 = Vector512.FusedMultiplyAdd(a10, m, c); a11 = Vector512.FusedMultiplyAdd(a11, m, c);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    private static float[] RandomValues(int count, float scale, int seed)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (int i = 0; i < v.Length; i++) v[i] = (rng.NextSingle() * 2 - 1) * scale;
        return v;
    }

    internal static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException) { return "unknown"; }
        catch (UnauthorizedAccessException) { return "unknown"; }
    }
}
