// `attention`: CudaBackend.Attention and KvCache.RemoveRanges at LLaVA-1.5-7B shapes (32 heads x 128, bf16):
// prefill causal at 640 and 4096 tokens, NAAViT-shaped (95 text queries, the last rows of 671 keys), decode
// (one query) over 640 and 32768 keys, and the DyVTE compaction of a 7B cache (32 layers, 671 -> 95 rows).
// Correctness first: attention (causal GQA and decode) and RemoveRanges against the CPU backend on small odd
// shapes. Then CUDA events after warm-up, median of 9 samples (5 with --quick): attention replayed in a CUDA
// graph; compaction on the stream (it rents pool blocks on the host, so it cannot be captured) with the
// cache refilled outside the timed region. Attention reports TFLOP/s (4·hd·heads·Σ keys seen per query; causal
// counts only the keys each query sees) against a cuBLASLt 8192^3 GEMM, and GB/s (q, k, v, o once) against
// the device-to-device copy bandwidth, both measured in the same run. torch's scaled_dot_product_attention
// runs the same shapes through tools/bench/sdpa_reference.py when python3 with torch is there; otherwise the
// rows say why, and the benchmark still succeeds. Last, the bars: prefill >= 300 TFLOP/s causal at 4k tokens
// and >= torch SDPA at 640; decode >= 80% of copy bandwidth at 32k keys; compaction >= 70% of copy bandwidth.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- attention [--quick] [--small] [--only ID,...] [--no-torch]
//       [--out bench/results/cuda-attention.json]
//
// --small: 2 heads x 128 and tiny token counts under the same shape ids, for the CPU emulator (it proves the
// harness, never the speed). --only prefill640,prefill4k,naavit,decode640,decode32k,compaction: those rows alone,
// without the GEMM reference (what tools/gpu/verify.sh profiles with ncu). Without a usable GPU it prints one
// "error:" line and exits 2.
using System.Diagnostics;
using System.Text.Encodings.Web;
using System.Text.Json;
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using VteKernels.Cuda;

using static VteKernels.Bench.GpuTiming;

namespace VteKernels.Bench;

internal static class AttentionBench
{
    /// <summary>Heads, head dimension and the compacted cache's shape of one run (7B's, or tiny ones with --small).</summary>
    private sealed record Sizes(int Heads, int HeadDim, int Layers, int Prefix, int Image, int Text, int Gemm)
    {
        public int Dim => Heads * HeadDim;

        public static readonly Sizes SevenB = new(32, 128, 32, 35, 576, 60, 8192);
        public static readonly Sizes Small = new(2, 128, 2, 3, 24, 5, 256);
    }

    private sealed record Shape(string Id, string Name, int Nq, int Nk, bool Causal, Sizes Z)
    {
        /// <summary>Σ over queries of the keys each sees (queries are the last rows of the keys when causal).</summary>
        public double KeysSeen => Causal ? Enumerable.Range(0, Nq).Sum(i => (double)Math.Min(Nk, Nk - Nq + i + 1)) : (double)Nq * Nk;

        public double Flops => 4.0 * Z.HeadDim * Z.Heads * KeysSeen;

        public long Bytes => 2L * Z.Dim * (2L * Nq + 2L * Nk); // bf16 q, o, k, v once
    }

    private sealed record Row(string Op, string Id, string Shape, int Reps, double MedianMs, double MinMs, double Tflops, double PercentOfGemm,
        double GBps, double PercentOfCopy, double? TorchMs, double? TorchTflops, double? Speedup, string? TorchNote);

    public static int Run(string[] args)
    {
        if (GpuBenchArgs.Parse(args, Path.Combine("bench", "results", "cuda-attention.json")) is not { } a) return 2;
        if (GpuTiming.OpenBackend(fusedFromEnvironment: true) is not { } b) return 2;
        using (b)
        {
            var z = a.Small ? Sizes.Small : Sizes.SevenB;
            bool emulated = b.Info.IsEmulator;
            Console.WriteLine($"device: {b.Device}{(emulated ? " (the CPU emulator of CUDA: semantics only, timings mean nothing)" : "")}; fused attention {b.Options.FusedAttention}");
            if (!CheckCorrectness(b)) return 1;
            int samples = a.Small ? 3 : a.Quick ? 5 : 9;
            double copy = CopyGBps(b, a.Quick, samples, a.Small);
            double gemm = a.Only.Count > 0 ? double.NaN : MeasureGemm(b, samples, z.Gemm);
            Console.WriteLine($"device-to-device copy: {copy:F0} GB/s (read + write bytes); cuBLASLt bf16 GEMM {z.Gemm}^3: {gemm:F1} TFLOP/s");

            int prompt = z.Prefix + z.Image + z.Text;
            Shape[] all = a.Small
                ?
                [
                    new("prefill640", "prefill causal", 64, 64, true, z),
                    new("prefill4k", "prefill causal", 128, 128, true, z),
                    new("naavit", "naavit text rows", z.Text + z.Prefix, prompt, true, z),
                    new("decode640", "decode", 1, 64, false, z),
                    new("decode32k", "decode", 1, 300, false, z),
                ]
                :
                [
                    new("prefill640", "prefill causal", 640, 640, true, z),
                    new("prefill4k", "prefill causal", 4096, 4096, true, z),
                    new("naavit", "naavit text rows", z.Text + z.Prefix, prompt, true, z),
                    new("decode640", "decode", 1, 640, false, z),
                    new("decode32k", "decode", 1, 32768, false, z),
                ];
            var shapes = all.Where(s => a.Only.Count == 0 || a.Only.Contains(s.Id)).ToArray();
            var rows = new List<Row>();
            foreach (var s in shapes)
            {
                using var q = Filled(b, s.Nq, z.Dim);
                using var k = Filled(b, s.Nk, z.Dim);
                using var v = Filled(b, s.Nk, z.Dim);
                using var o = b.Allocate(s.Nq, z.Dim);
                var mask = s.Causal ? AttentionMask.Causal : AttentionMask.None;
                void Op() => b.Attention(q, z.Heads, k, v, z.Heads, z.HeadDim, mask, o);
                Op();
                int reps = Reps(b, Op);
                using var graph = CudaGraph.Capture(b.Context, () => { for (int i = 0; i < reps; i++) Op(); });
                var (median, min) = Time(b, graph.Launch, reps, samples);
                double tflops = s.Flops / (median * 1e-3) / 1e12, gbps = s.Bytes / (median * 1e-3) / 1e9;
                rows.Add(new Row("attention", s.Id, Label(s), reps, median, min, tflops, 100 * tflops / gemm, gbps, 100 * gbps / copy, null, null, null, null));
                Console.WriteLine($"  attention {Label(s)}: {median:F4} ms, {tflops:F1} TFLOP/s, {gbps:F0} GB/s");
            }
            if (rows.Count > 0) rows = a.NoTorch ? rows.Select(r => r with { TorchNote = "--no-torch" }).ToList() : WithTorch(rows, shapes, samples);
            if (a.Only.Count == 0 || a.Only.Contains("compaction")) rows.Add(MeasureCompaction(b, copy, samples, z));

            Print(rows, copy, gemm);
            var bars = Bars(rows, a.Small);
            PrintBars(bars, emulated);
            Write(a.OutPath, b, a, copy, gemm, rows, bars);
            return 0;
        }
    }

    /// <summary>The attention bars (null figures where a row was not run or torch was missing).</summary>
    private static List<Bar> Bars(List<Row> rows, bool small)
    {
        Row? Get(string id) => rows.FirstOrDefault(r => r.Id == id);
        string tag = small ? " (--small shape)" : "";
        var p4 = Get("prefill4k");
        var p640 = Get("prefill640");
        var d32 = Get("decode32k");
        var c = Get("compaction");
        return
        [
            new($"prefill attention, causal hd128, 4096 tokens{tag}", ">= 300 TFLOP/s", p4 is null ? "-" : $"{p4.Tflops:F1} TFLOP/s", p4 is null ? null : p4.Tflops >= 300),
            new($"prefill attention, causal, 640 tokens{tag}", ">= torch SDPA (speedup >= 1)",
                p640?.Speedup is { } x ? $"{x:F2}x torch ({p640.MedianMs:F4} ms)" : "- (no torch figure)", p640?.Speedup is { } y ? y >= 1 : null),
            new($"decode attention, 32768 keys{tag}", ">= 80% of copy bandwidth", d32 is null ? "-" : $"{d32.PercentOfCopy:F0}% ({d32.GBps:F0} GB/s)", d32 is null ? null : d32.PercentOfCopy >= 80),
            new($"kv compaction (remove_ranges){tag}", ">= 70% of copy bandwidth", c is null ? "-" : $"{c.PercentOfCopy:F0}% ({c.GBps:F0} GB/s)", c is null ? null : c.PercentOfCopy >= 70),
        ];
    }

    private static string Label(Shape s) => $"{s.Name} {s.Nq} x {s.Nk} keys, {s.Z.Heads} heads x {s.Z.HeadDim}";

    /// <summary>The 7B cache after DyVTE exits: 32 layers of 671 rows (35 prefix, 576 image, 60 text) lose the image.</summary>
    private static Row MeasureCompaction(CudaBackend b, double copy, int samples, Sizes z)
    {
        int layers = z.Layers, rows = z.Prefix + z.Image + z.Text, start = z.Prefix, image = z.Image, keep = rows - image, dim = z.Dim;
        using var k = Filled(b, rows, dim);
        using var v = Filled(b, rows, dim);
        (int, int)[] ranges = [(start, image)];
        var times = new double[samples + 1];
        using var t0 = new CudaEvent(b.Context);
        using var t1 = new CudaEvent(b.Context);
        for (int s = 0; s < times.Length; s++) // sample 0 is the warm-up (pool blocks of both sizes)
        {
            using var cache = b.CreateKvCache(layers, dim);
            for (int l = 0; l < layers; l++) cache.Append(l, k, v);
            t0.Record();
            for (int l = 0; l < layers; l++) cache.RemoveRanges(l, ranges);
            t1.Record();
            times[s] = CudaEvent.ElapsedMs(t0, t1);
        }
        var timed = times[1..];
        Array.Sort(timed);
        double median = timed[timed.Length / 2];
        long bytes = 2L * 2 * layers * keep * dim * 2; // K and V, kept rows read and written, bf16
        double gbps = bytes / (median * 1e-3) / 1e9;
        // A batch-1 decode step reads ~13.2 GB of weights; at the measured copy rate (read + write bytes) that is the floor.
        double decodeMs = 13.2e9 / (copy * 1e9) * 1e3;
        var note = $"{100 * median / decodeMs:F2}% of a 7B decode step at the measured copy rate ({decodeMs:F2} ms)";
        Console.WriteLine($"  remove_ranges {layers} layers {rows} -> {keep} rows: {median:F4} ms, {gbps:F0} GB/s, {note}");
        return new Row("kv remove_ranges", "compaction", $"{layers} layers x {rows} -> {keep} rows, kv {dim}", 1, median, timed[0], 0, 0, gbps, 100 * gbps / copy,
            null, null, null, note);
    }

    /// <summary>Adds torch SDPA's figures for the attention rows; never fails the benchmark.</summary>
    private static List<Row> WithTorch(List<Row> rows, Shape[] shapes, int samples)
    {
        var (result, why) = RunSdpa(shapes, samples);
        if (result is null)
        {
            Console.WriteLine($"  torch sdpa: {why}");
            return rows.Select(r => r with { TorchNote = why }).ToList();
        }
        var torchRows = result.RootElement.GetProperty("rows");
        var version = $"torch {result.RootElement.GetProperty("torch").GetString()} sdpa";
        return rows.Select((r, i) =>
        {
            var t = torchRows[i];
            double ms = t.GetProperty("median_ms").GetDouble();
            double tflops = shapes[i].Flops / (ms * 1e-3) / 1e12;
            Console.WriteLine($"  torch sdpa {r.Shape}: {ms:F4} ms ({t.GetProperty("mask").GetString()}), ours / torch time {r.MedianMs / ms:F2}");
            return r with { TorchMs = ms, TorchTflops = tflops, Speedup = ms / r.MedianMs, TorchNote = $"{version}, mask {t.GetProperty("mask").GetString()}" };
        }).ToList();
    }

    private static (JsonDocument? Result, string Why) RunSdpa(Shape[] shapes, int samples)
    {
        var script = FindScript();
        if (script is null) return (null, "tools/bench/sdpa_reference.py not found");
        var spec = JsonSerializer.Serialize(shapes.Select(s => new { name = s.Name, nq = s.Nq, nk = s.Nk, heads = s.Z.Heads, kv_heads = s.Z.Heads, head_dim = s.Z.HeadDim, causal = s.Causal }));
        var start = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(script);
        start.ArgumentList.Add($"--samples={samples}");
        start.ArgumentList.Add(spec);
        try
        {
            using var p = Process.Start(start)!;
            var stderr = p.StandardError.ReadToEndAsync();
            string stdout = p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
            {
                p.Kill(entireProcessTree: true);
                return (null, "torch not available: sdpa_reference.py ran past 5 minutes");
            }
            var line = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "";
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException) { return (null, $"torch not available: sdpa_reference.py exited {p.ExitCode}: {stderr.Result.Trim().Split('\n').LastOrDefault()}"); }
            if (doc.RootElement.TryGetProperty("error", out var error)) return (null, error.GetString() ?? "torch not available");
            return (doc, "");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (null, $"torch not available: python3 could not be started ({e.Message})");
        }
    }

    private static string? FindScript()
    {
        foreach (var root in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(root); dir is not null; dir = dir.Parent)
            {
                var path = Path.Combine(dir.FullName, "tools", "bench", "sdpa_reference.py");
                if (File.Exists(path)) return path;
            }
        return null;
    }

    private static double MeasureGemm(CudaBackend b, int samples, int n)
    {
        using var x = Filled(b, n, n);
        using var y = b.Allocate(n, n);
        var values = new float[n * n];
        for (int i = 0; i < values.Length; i++) values[i] = (i % 97 - 48) * 1e-3f;
        var w = b.Upload(Weight.FromFloats("w", values, DType.BF16, n, n));
        void Op() => b.Linear(x, w, null, y);
        Op();
        int reps = Reps(b, Op);
        using var graph = CudaGraph.Capture(b.Context, () => { for (int i = 0; i < reps; i++) Op(); });
        var (median, _) = Time(b, graph.Launch, reps, samples);
        return 2.0 * n * n * n / (median * 1e-3) / 1e12;
    }

    /// <summary>Attention (causal GQA prefill and decode) and RemoveRanges against the CPU backend on small odd shapes.</summary>
    private static bool CheckCorrectness(CudaBackend b)
    {
        using var cpu = new CpuBackend();
        var rng = new Random(7);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => DTypes.FromBFloat16Bits(DTypes.ToBFloat16Bits(rng.NextSingle() * 2 - 1))).ToArray();
        var failures = new List<string>();
        float[] Get(IBackend on, Tensor t)
        {
            var a = new float[t.Rows * t.Cols];
            on.CopyToHost(t, a);
            return a;
        }
        Tensor Put(IBackend on, float[] values, int rows, int cols)
        {
            var t = on.Allocate(rows, cols);
            on.CopyFromHost(values, t);
            return t;
        }
        const int qHeads = 6, kvHeads = 2, hd = 128;
        foreach (var (nq, nk, mask) in new[] { (37, 53, AttentionMask.Causal), (1, 301, AttentionMask.None), (95, 95, AttentionMask.Causal) })
        {
            var (q, k, v) = (R(nq * qHeads * hd), R(nk * kvHeads * hd), R(nk * kvHeads * hd));
            var results = new List<float[]>();
            foreach (IBackend on in new IBackend[] { b, cpu })
            {
                using var qt = Put(on, q, nq, qHeads * hd);
                using var kt = Put(on, k, nk, kvHeads * hd);
                using var vt = Put(on, v, nk, kvHeads * hd);
                using var o = on.Allocate(nq, qHeads * hd);
                on.Attention(qt, qHeads, kt, vt, kvHeads, hd, mask, o);
                results.Add(Get(on, o));
            }
            double scale = results[1].Max(Math.Abs), err = 0;
            for (int i = 0; i < results[1].Length; i++) err = Math.Max(err, Math.Abs(results[0][i] - results[1][i]));
            if (!(err <= 1.0 / 64 * scale)) failures.Add($"attention {nq} x {nk} {mask}: max |device - cpu| {err:E2} against max |cpu| {scale:E2}");
        }

        const int kvDim = 40, n = 301;
        (int, int)[] ranges = [(0, 3), (35, 200), (240, 1), (290, 11)];
        var (kh, vh) = (R(n * kvDim), R(n * kvDim));
        var held = new List<float[]>();
        foreach (IBackend on in new IBackend[] { b, cpu })
        {
            using var cache = on.CreateKvCache(1, kvDim);
            using (var kt = Put(on, kh, n, kvDim)) using (var vt = Put(on, vh, n, kvDim)) cache.Append(0, kt, vt);
            cache.RemoveRanges(0, ranges);
            var (kv, vv) = cache.View(0);
            using (kv) using (vv) held.Add([.. Get(on, kv), .. Get(on, vv)]);
        }
        if (!held[0].SequenceEqual(held[1])) failures.Add("kv remove_ranges: the device cache differs from the CPU cache");

        if (failures.Count > 0)
        {
            foreach (var f in failures) Console.Error.WriteLine($"incorrect: {f}");
            return false;
        }
        Console.WriteLine("correctness: attention (causal GQA 37 x 53 and 95 x 95, decode 1 x 301; 6/2 heads x 128) and kv remove_ranges match the CPU backend");
        return true;
    }

    private static void Print(List<Row> rows, double copy, double gemm)
    {
        Console.WriteLine();
        Console.WriteLine($"copy {copy:F0} GB/s; GEMM reference {gemm:F1} TFLOP/s; ms is the median per call; torch = scaled_dot_product_attention");
        Console.WriteLine($"{"op",-18} | {"shape",-44} | {"ms",9} | {"TFLOP/s",7} | {"% gemm",6} | {"GB/s",6} | {"% copy",6} | {"torch ms",9} | {"torch/ours",10}");
        Console.WriteLine(new string('-', 140));
        foreach (var r in rows)
            Console.WriteLine($"{r.Op,-18} | {r.Shape,-44} | {r.MedianMs,9:F4} | {r.Tflops,7:F1} | {r.PercentOfGemm,5:F0}% | {r.GBps,6:F0} | {r.PercentOfCopy,5:F0}% | " +
                              $"{(r.TorchMs is { } t ? t.ToString("F4") : "-"),9} | {(r.Speedup is { } x ? x.ToString("F2") : "-"),10}");
    }

    private static void Write(string outPath, CudaBackend b, GpuBenchArgs a, double copy, double gemm, List<Row> rows, List<Bar> bars)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        var doc = new
        {
            benchmark = "CudaBackend.Attention and KvCache.RemoveRanges at LLaVA-1.5-7B shapes (32 heads x 128), bf16, beside torch SDPA",
            date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            quick = a.Quick,
            small = a.Small,
            only = a.Only.Count > 0 ? a.Only.Order().ToArray() : null,
            fusedAttention = b.Options.FusedAttention,
            device = DeviceJson(b),
            copyGBps = Math.Round(copy, 1),
            gemmReferenceTflops = double.IsNaN(gemm) ? (double?)null : Math.Round(gemm, 2),
            note = "attention: CUDA graph of reps calls; TFLOP/s = 4·hd·heads·Σ keys seen per query; GB/s counts q, k, v, o once. " +
                   "remove_ranges: stream, kept K/V rows read and written once. speedup = torch ms / our ms (> 1: ours faster). " +
                   "torch runs eagerly (launch overhead included) with reps calls per sample.",
            bars = bars.Select(x => new { name = x.Name, target = x.Target, measured = x.Measured, met = x.Met }),
            rows = rows.Select(r => new
            {
                op = r.Op, id = r.Id, shape = r.Shape, reps = r.Reps, medianMs = Math.Round(r.MedianMs, 5), minMs = Math.Round(r.MinMs, 5),
                tflops = Math.Round(r.Tflops, 2), percentOfGemm = double.IsNaN(r.PercentOfGemm) ? (double?)null : Math.Round(r.PercentOfGemm, 1), gbps = Math.Round(r.GBps, 1), percentOfCopy = Math.Round(r.PercentOfCopy, 1),
                torchMs = r.TorchMs is { } t ? Math.Round(t, 5) : (double?)null, torchTflops = r.TorchTflops is { } tt ? Math.Round(tt, 2) : (double?)null,
                speedup = r.Speedup is { } x ? Math.Round(x, 3) : (double?)null, note = r.TorchNote,
            }),
        };
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        File.WriteAllText(outPath, JsonSerializer.Serialize(doc, options) + "\n");
        Console.WriteLine();
        Console.WriteLine($"wrote {outPath}");
    }
}
