// The decode step's pieces at LLaVA-1.5-7B widths, one op at a time, against this machine's read bandwidth
// measured in the same run:
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- cpu-decode [--quick] [--no-interleave] [--threads N] [--formats bf16,q4_0] [--out bench/results/cpu-decode.json]
//
// Per weight format (bf16, f16, q8_0, q4_0), weights in huge-page memory as the backend holds them: the
// fused Q/K/V projection (3 x 4096x4096), O (4096x4096), gate/up (2 x 11008x4096), down (4096x11008) and the
// LM head (32064x4096), each for one row of x; then decode attention over 576 keys (32 heads of 128) with a
// float32, bf16 and f16 cache. Correctness first: every op's output against the float32 path on the same
// stored values (relative 1e-2 for the int8 decode of quantized weights, 1e-4 otherwise). Each figure is the
// median of 15 timed calls after a warm-up of at least a second, and GB/s counts the bytes the op must read (weights, or keys
// and values). Each matrix op is timed twice: "cache", the same weights every call (a few hundred MiB of
// last-level cache holds most of them: this is the kernel's arithmetic speed), and "memory", calls taking
// turns over copies of the weights that together exceed twice the last-level cache, as a model's layers do
// in decode (this is what a token costs). Q8_0 and Q4_0 matrices have their rows interleaved by sixteens, as the
// backend uploads them where the CPU has AVX2 (--no-interleave: the plain ggml layout).
using System.Diagnostics;
using System.Runtime.InteropServices;
using VteKernels.Backends;
using VteKernels.Backends.Cpu;

namespace VteKernels.Bench;

internal static unsafe class CpuDecodeBench
{
    public static int Run(string[] args)
    {
        bool quick = args.Contains("--quick");
        bool interleave = !args.Contains("--no-interleave");
        int threads = 0;
        DType[]? only = null;
        string outPath = Path.Combine("bench", "results", "cpu-decode.json");
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--threads" && i + 1 < args.Length) threads = int.Parse(args[++i]);
            else if (args[i] == "--out" && i + 1 < args.Length) outPath = args[++i];
            else if (args[i] == "--formats" && i + 1 < args.Length) only = args[++i].Split(',').Select(DTypes.Parse).ToArray();
            else if (args[i] is not ("--quick" or "--no-interleave"))
            {
                Console.Error.WriteLine($"unknown argument '{args[i]}'");
                return 2;
            }
        }
        int t = CpuWorkers.Resolve(threads);
        string load = CpuClock.LoadAverage();
        double bw = ReadBandwidth.Anonymous(t);
        long llc = LastLevelCacheBytes();
        Console.WriteLine($"cpu-decode: {CpuInfo.ProcessorName}, {t} threads; read bandwidth {bw:F1} GB/s (anonymous, huge pages); last-level cache {llc >> 20} MiB; load {load}");
        var rows = new List<object>();
        var shapes = new (string Name, (int Out, int In)[] Parts)[]
        {
            ("qkv", [(4096, 4096), (4096, 4096), (4096, 4096)]),
            ("o", [(4096, 4096)]),
            ("gate/up", [(11008, 4096), (11008, 4096)]),
            ("down", [(4096, 11008)]),
            ("lm head", [(32064, 4096)]),
        };
        var formats = only ?? (quick ? new[] { DType.BF16, DType.Q4_0 } : [DType.BF16, DType.F16, DType.Q8_0, DType.Q4_0]);
        Console.WriteLine($"{"op",-10} {"format",-6} {"cache ms",9} {"GB/s",7} {"memory ms",10} {"GB/s",7} {"% bw",6}");
        foreach (var format in formats)
        {
            double totalMs = 0, totalBytes = 0, totalCacheMs = 0;
            foreach (var (name, parts) in shapes)
            {
                var weights = parts.Select((p, i) => MakeWeight($"{name}.{i}", p.Out, p.In, format, t, interleave)).ToArray();
                int k = parts[0].In;
                var x = RandomValues(k, 1f, 11);
                var ys = parts.Select(p => new float[p.Out]).ToArray();
                var handles = ys.Select(y => GCHandle.Alloc(y, GCHandleType.Pinned)).ToArray();
                try
                {
                    var lp = weights.Select((w, i) => new CpuOps.LinearPart(w, null, handles[i].AddrOfPinnedObject(), w.Rows)).ToArray();
                    fixed (float* px = x)
                    {
                        nint xp = (nint)px;
                        if (!Check(xp, k, weights, ys, format, t, name)) return 1;
                        long bytes = weights.Sum(w => w.ByteLength);
                        double cacheMs = Median(() => CpuOps.LinearParts((float*)xp, 1, k, lp, t), quick ? 7 : 15);
                        // Copies of the weights (the same values) that together exceed twice the last-level cache.
                        int copies = (int)Math.Max(2, (2 * llc + bytes - 1) / bytes);
                        var sets = new CpuOps.LinearPart[copies][];
                        sets[0] = lp;
                        for (int c = 1; c < copies; c++) sets[c] = lp.Select(p => p with { W = CpuWeights.CopyToHugePages(p.W, t) }).ToArray();
                        int turn = 0;
                        double ms = Median(() => CpuOps.LinearParts((float*)xp, 1, k, sets[turn++ % copies], t), quick ? 7 : 15);
                        sets = null;
                        totalMs += ms;
                        totalCacheMs += cacheMs;
                        totalBytes += bytes;
                        double gbps = bytes / (ms / 1e3) / 1e9, cacheGbps = bytes / (cacheMs / 1e3) / 1e9;
                        Console.WriteLine($"{name,-10} {format.Name(),-6} {cacheMs,9:F3} {cacheGbps,7:F1} {ms,10:F3} {gbps,7:F1} {100 * gbps / bw,5:F0}%");
                        rows.Add(new
                        {
                            Op = name, Format = format.Name(), Bytes = bytes, Copies = copies,
                            Ms = Math.Round(ms, 4), GBps = Math.Round(gbps, 2), PercentOfBandwidth = Math.Round(100 * gbps / bw, 1),
                            CacheMs = Math.Round(cacheMs, 4), CacheGBps = Math.Round(cacheGbps, 2),
                        });
                    }
                }
                finally
                {
                    foreach (var h in handles) h.Free();
                }
            }
            double all = totalBytes / (totalMs / 1e3) / 1e9;
            Console.WriteLine($"{"one layer + head (x8 layers is the model)",-10}: {format.Name()} matrices {totalMs:F2} ms from memory, {all:F1} GB/s ({100 * all / bw:F0}%); {totalCacheMs:F2} ms in cache");
        }

        // Decode attention: one query row over 576 keys, 32 heads of 128 (MHA, as LLaVA-1.5-7B).
        const int keys = 576, heads = 32, hd = 128, kvDim = heads * hd;
        var backend = new CpuBackend(new CpuBackendOptions { Threads = threads });
        using var kt = backend.Allocate(keys, kvDim);
        using var vt = backend.Allocate(keys, kvDim);
        backend.CopyFromHost(RandomValues(keys * kvDim, 2f, 12), kt);
        backend.CopyFromHost(RandomValues(keys * kvDim, 1f, 13), vt);
        using var q = backend.Allocate(1, kvDim);
        backend.CopyFromHost(RandomValues(kvDim, 2f, 14), q);
        using var o = backend.Allocate(1, kvDim);
        foreach (var storage in new[] { DType.F32, DType.BF16, DType.F16 })
        {
            using var cache = new CpuKvCache(1, kvDim, storage, hd);   // each head's rows together, as the backend stores a 16-bit cache
            cache.Append(0, kt, vt);
            var (k, v) = cache.View(0);
            double ms = Median(() => backend.Attention(q, heads, k, v, heads, hd, AttentionMask.Causal, o), quick ? 7 : 15);
            long bytes = 2L * keys * kvDim * storage.Size();
            double gbps = bytes / (ms / 1e3) / 1e9;
            Console.WriteLine($"{"attention",-10} {storage.Name(),-6} {ms,8:F3} {gbps,7:F1} {100 * gbps / bw,5:F0}%  ({keys} keys, {heads} heads of {hd})");
            rows.Add(new { Op = "attention 576 keys", Format = "kv " + storage.Name(), Ms = Math.Round(ms, 4), Bytes = bytes, GBps = Math.Round(gbps, 2), PercentOfBandwidth = Math.Round(100 * gbps / bw, 1) });
        }
        BenchModels.WriteJson(new
        {
            Benchmark = "cpu-decode: one decode row through each op at LLaVA-1.5-7B widths",
            Date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            Processor = CpuInfo.ProcessorName, Threads = t, LoadAverage = new { Before = load, After = CpuClock.LoadAverage() },
            ReadBandwidthGBps = Math.Round(bw, 2), LastLevelCacheMiB = llc >> 20, Rows = rows,
        }, outPath);
        return 0;
    }

    /// <summary>The largest CPU cache in bytes (sysfs), or 256 MiB where it cannot be read.</summary>
    private static long LastLevelCacheBytes()
    {
        long best = 0;
        try
        {
            foreach (var dir in Directory.EnumerateDirectories("/sys/devices/system/cpu/cpu0/cache", "index*"))
            {
                var text = File.ReadAllText(Path.Combine(dir, "size")).Trim();
                long scale = text.EndsWith('K') ? 1L << 10 : text.EndsWith('M') ? 1L << 20 : 1;
                if (long.TryParse(text.TrimEnd('K', 'M'), out long v)) best = Math.Max(best, v * scale);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return best > 0 ? best : 256L << 20;
    }

    /// <summary>A random [out, in] weight (std 1/sqrt(in)) stored as <paramref name="format"/>, in huge-page memory.</summary>
    private static Weight MakeWeight(string name, int rows, int cols, DType format, int threads, bool interleave)
    {
        var values = RandomValues(rows * cols, 1.7f / MathF.Sqrt(cols), rows ^ cols);
        var w = format.IsBlockQuantized() ? Weight.FromFloats(name, values, DType.BF16, rows, cols) : Weight.FromFloats(name, values, format, rows, cols);
        if (!format.IsBlockQuantized()) return CpuWeights.CopyToHugePages(w, threads);
        // Quantized as the CPU backend uploads a language-model matrix: rows interleaved by sixteens where the int8 kernels run.
        var quantized = CpuWeights.Quantize(w, format, threads);
        return interleave && CpuWeights.CanInterleave(quantized) ? CpuWeights.Interleave(quantized, inPlace: true, threads) : quantized;
    }

    /// <summary>The op against float32 math on the same stored values (widened weights, one plain dot product per output).</summary>
    private static bool Check(nint x, int k, Weight[] weights, float[][] ys, DType format, int threads, string name)
    {
        var lp = new CpuOps.LinearPart[weights.Length];
        var handles = ys.Select(y => GCHandle.Alloc(y, GCHandleType.Pinned)).ToArray();
        try
        {
            for (int i = 0; i < weights.Length; i++) lp[i] = new CpuOps.LinearPart(weights[i], null, handles[i].AddrOfPinnedObject(), weights[i].Rows);
            CpuOps.LinearParts((float*)x, 1, k, lp, threads);
        }
        finally
        {
            foreach (var h in handles) h.Free();
        }
        var xs = new ReadOnlySpan<float>((float*)x, k).ToArray();
        double tol = format.IsBlockQuantized() ? 1e-2 : 1e-4;
        for (int i = 0; i < weights.Length; i++)
        {
            var row = new float[k];
            double worst = 0, scale = 0;
            for (int r = 0; r < weights[i].Rows; r += 97)
            {
                fixed (float* pr = row) CpuOps.WidenRow(weights[i], r, 0, k, pr);
                double s = 0;
                for (int c = 0; c < k; c++) s += (double)row[c] * xs[c];
                worst = Math.Max(worst, Math.Abs(s - ys[i][r]));
                scale = Math.Max(scale, Math.Abs(s));
            }
            if (!(worst <= tol * Math.Max(1, scale)))
            {
                Console.Error.WriteLine($"{name} {format.Name()}: max |error| {worst:E2} against float64 on the stored values exceeds {tol} x {scale:F2}");
                return false;
            }
        }
        return true;
    }

    private static double Median(Action op, int samples)
    {
        // Warm-up of at least a second: .NET compiles a method first without optimization and recompiles it after
        // ~30 calls (tiered compilation); a few calls were not enough (decode attention measured 12 ms instead of 1.2).
        var warm = Stopwatch.StartNew();
        for (int i = 0; i < 3 || warm.ElapsedMilliseconds < 1000; i++) op();
        var times = new List<double>();
        var sw = new Stopwatch();
        for (int i = 0; i < samples; i++)
        {
            sw.Restart();
            op();
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        return BenchModels.Median(times);
    }

    private static float[] RandomValues(int count, float scale, int seed)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (int i = 0; i < v.Length; i++) v[i] = (rng.NextSingle() * 2 - 1) * scale;
        return v;
    }
}
