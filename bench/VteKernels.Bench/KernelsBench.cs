// `kernels`: the CUDA kernels at LLaVA-1.5-7B shapes (prefill n = 640, decode n = 1, CLIP 577 × 1024).
// Order of business, as for every benchmark here: correctness first (each benched op against the CPU op on
// a small odd shape), then timings. Memory-bound kernels report GB/s (bytes each must read and write, once)
// and the share of the device-to-device copy bandwidth measured in the same run (read + write bytes);
// GEMMs report TFLOP/s and the share of a large square cuBLASLt GEMM measured in the same run.
//
// Timing: CUDA events around a CUDA graph that replays the op `reps` times, so host launch overhead is
// not counted (ops that copy from or to the host each call cannot be captured and run on the stream,
// marked "stream": their figure includes launch overhead and the copy). Median of 9 samples (5 with
// --quick) after a warm-up that loads the modules and makes the GEMM plans.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- kernels [--quick] [--small] [--out bench/results/cuda-kernels.json]
//
// --small: the same rows at tiny widths (d 256, FFN 352, 16 rows, a 256^3 reference GEMM) for the CPU emulator,
// which proves the harness and never the speed. Without a usable GPU it prints one "error:" line and exits 2.
using System.Text.Encodings.Web;
using System.Text.Json;
using VteKernels;
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using VteKernels.Cuda;

namespace VteKernels.Bench;

internal static class KernelsBench
{
    private sealed record Row(string Kernel, string Shape, string Mode, int Reps, double MedianMs, double MinMs,
        double GBps, double PercentOfCopy, double Tflops, double PercentOfGemm);

    /// <summary>The widths of one run: LLaVA-1.5-7B's, or tiny ones with --small.</summary>
    private sealed record Dims(int N, int D, int Ffn, int Vocab, int ClipRows, int ClipDim, int Image, int Gemm)
    {
        public static readonly Dims SevenB = new(640, 4096, 11008, 32064, 577, 1024, 336, 8192);
        public static readonly Dims Small = new(16, 256, 352, 512, 17, 64, 56, 256);
    }

    public static int Run(string[] args)
    {
        if (GpuBenchArgs.Parse(args, Path.Combine("bench", "results", "cuda-kernels.json")) is not { } a) return 2;
        bool quick = a.Quick;
        string outPath = a.OutPath;
        if (GpuTiming.OpenBackend(fusedFromEnvironment: false) is not { } b) return 2;
        using (b)
        {
            Console.WriteLine($"device: {b.Device}");
            b.LoadKernels();
            Console.WriteLine($"kernels: {b.KernelStats.Compiled} compiled by NVRTC, {b.KernelStats.CacheHits} from the cache, {b.KernelStats.Fatbins} fatbins");
            if (!CheckCorrectness(b)) return 1;
            var bench = new Bench(b, quick, a.Small ? Dims.Small : Dims.SevenB);
            return bench.RunAll(outPath);
        }
    }

    private sealed class Bench(CudaBackend b, bool quick, Dims z)
    {
        private readonly int _samples = z == Dims.Small ? 3 : quick ? 5 : 9;
        private readonly List<Row> _rows = [];
        private double _copyGBps, _gemmTflops;

        public int RunAll(string outPath)
        {
            _copyGBps = GpuTiming.CopyGBps(b, quick, _samples, z == Dims.Small);
            Console.WriteLine($"device-to-device copy: {_copyGBps:F0} GB/s (read + write bytes)");
            _gemmTflops = MeasureGemm($"reference gemm {z.Gemm}^3", z.Gemm, z.Gemm, z.Gemm, record: false);
            Console.WriteLine($"cuBLASLt bf16 GEMM {z.Gemm}^3: {_gemmTflops:F1} TFLOP/s");
            Console.WriteLine();

            int n = z.N, d = z.D, ffn = z.Ffn, vocab = z.Vocab, heads = d / 128, cr = z.ClipRows, cd = z.ClipDim, img = z.Image, patches = (img / 14) * (img / 14);
            var g4096 = Vector(d);
            var g1024 = Vector(cd);
            var b1024 = Vector(cd);
            using (var x = Filled(n, d))
            using (var y = Filled(n, d))
            using (var z = Filled(n, d))
            {
                Graph("rms_norm", $"[{n}, {d}]", Bytes(2 * n * d), () => b.RmsNorm(x, g4096, 1e-5f, y));
                Graph("add_rms_norm", $"[{n}, {d}]", Bytes(4 * n * d), () => b.AddRmsNorm(x, y, g4096, 1e-5f, z));
                Graph("add", $"[{n}, {d}]", Bytes(3 * n * d), () => b.Add(x, y, z));
                var positions = Enumerable.Range(0, n).ToArray();
                Graph("rope (q)", $"[{n}, {heads} x 128]", Bytes(2 * n * d), () => b.Rope(x, heads, 128, positions, 10000f));
                var ids = Enumerable.Range(0, n).Select(i => i * 37 % vocab).ToArray();
                var table = b.Upload(RandomWeight("embed", vocab, d));
                Stream("embedding", $"{n} ids x {d}", Bytes(2 * n * d), () => b.Embedding(table, ids, y));
            }
            using (var gate = Filled(n, ffn))
            using (var up = Filled(n, ffn))
            using (var h = Filled(n, ffn))
            {
                Graph("silu_mul", $"[{n}, {ffn}]", Bytes(3 * n * ffn), () => b.SiluMul(gate, up, h));
                Graph("gelu", $"[{n}, {ffn}]", Bytes(2 * n * ffn), () => b.Gelu(h));
                Graph("quick_gelu", $"[{n}, {ffn}]", Bytes(2 * n * ffn), () => b.QuickGelu(h));
            }
            using (var x = Filled(cr, cd))
            using (var y = Filled(cr, cd))
                Graph("layer_norm", $"[{cr}, {cd}]", Bytes(2 * cr * cd), () => b.LayerNorm(x, g1024, b1024, 1e-5f, y));
            using (var pt = Filled(patches, cd))
            {
                var conv = b.Upload(RandomWeight("conv", cd, 3 * 14 * 14));
                var pixels = new float[3 * img * img];
                Stream("im2col + gemm (patch embed)", $"[3, {img}, {img}] p14 -> [{patches}, {cd}]", 3 * img * img * 4 + Bytes(patches * 588 * 2 + cd * 588 + patches * cd),
                    () => b.PatchEmbed(pixels, 3, img, img, 14, conv, pt));
            }

            // Decode: GEMV against cuBLASLt on the same shapes.
            using var cublasOnly = new CudaBackend(new CudaBackendOptions { DType = DType.BF16, UseGemv = false });
            foreach (var (name, inF, outF) in new[] { ("q_proj", d, d), ("gate/up", d, ffn), ("down", ffn, d), ("lm_head", d, vocab) })
            {
                var w = RandomWeight(name, outF, inF);
                long bytes = Bytes((long)inF * outF + inF + outF);
                using (var x1 = Filled(1, inF))
                using (var y1 = Filled(1, outF))
                {
                    var wd = b.Upload(w);
                    Graph("gemv", $"{name} {inF}->{outF}", bytes, () => b.Linear(x1, wd, null, y1));
                }
                var wc = cublasOnly.Upload(w);
                using var xc = cublasOnly.Allocate(1, inF);
                using var yc = cublasOnly.Allocate(1, outF);
                Graph("cublasLt m=1", $"{name} {inF}->{outF}", bytes, () => cublasOnly.Linear(xc, wc, null, yc), cublasOnly);
            }

            // Prefill GEMMs.
            foreach (var (name, m, inF, outF) in new[] { ("q_proj", n, d, d), ("gate/up", n, d, ffn), ("down", n, ffn, d), ("clip fc1", cr, cd, 4 * cd) })
                MeasureGemm($"{name} {inF}->{outF}", m, inF, outF, record: true);

            using (var logits = Filled(1, vocab))
            {
                Stream("argmax", $"[1, {vocab}]", Bytes(vocab), () => b.ArgMax(logits));
                ulong step = 0;
                Stream("sample (T 0.7, top-k 50, top-p 0.9)", $"[1, {vocab}]", Bytes(vocab), () => b.Sample(logits, 0.7f, 50, 0.9f, 1, step++));
            }
            using (var q = Filled(1, d))
            using (var k = Filled(n, d))
            using (var v = Filled(n, d))
            using (var o = Filled(1, d))
                Graph("attention_reference (placeholder)", $"decode 1 x {n} keys, {heads} heads x 128", Bytes(2 * n * d + 2 * d),
                    () => b.Attention(q, heads, k, v, heads, 128, AttentionMask.Causal, o));

            Print();
            Write(outPath);
            return 0;
        }

        private static long Bytes(long elements) => elements * 2; // bf16

        private DeviceWeight Vector(int length) => b.Upload(RandomWeight("v", length));

        private Tensor Filled(int rows, int cols) => GpuTiming.Filled(b, rows, cols);

        private double MeasureGemm(string label, int m, int k, int n, bool record)
        {
            using var x = Filled(m, k);
            using var y = b.Allocate(m, n);
            var w = b.Upload(RandomWeight("w", n, k));
            b.Linear(x, w, null, y); // makes the plan
            double flops = 2.0 * m * n * k;
            int reps = GpuTiming.Reps(b, () => b.Linear(x, w, null, y));
            using var graph = CudaGraph.Capture(b.Context, () => { for (int i = 0; i < reps; i++) b.Linear(x, w, null, y); });
            var (median, min) = GpuTiming.Time(b, graph.Launch, reps, _samples);
            double tflops = flops / (median * 1e-3) / 1e12;
            if (record)
            {
                _rows.Add(new Row("gemm (cuBLASLt)", $"{label}, m={m}", "graph", reps, median, min, 0, 0, tflops, 100 * tflops / _gemmTflops));
                Console.WriteLine($"  gemm {label} m={m}: {median:F3} ms, {tflops:F1} TFLOP/s");
            }
            return tflops;
        }

        private void Graph(string kernel, string shape, long bytes, Action op, CudaBackend? on = null)
        {
            var backend = on ?? b;
            op(); // loads, plans, cached uploads
            int reps = GpuTiming.Reps(backend, op);
            using var graph = CudaGraph.Capture(backend.Context, () => { for (int i = 0; i < reps; i++) op(); });
            var (median, min) = GpuTiming.Time(backend, graph.Launch, reps, _samples);
            Add(kernel, shape, "graph", reps, median, min, bytes);
        }

        private void Stream(string kernel, string shape, long bytes, Action op)
        {
            op();
            int reps = GpuTiming.Reps(b, op);
            var (median, min) = GpuTiming.Time(b, () => { for (int i = 0; i < reps; i++) op(); }, reps, _samples);
            Add(kernel, shape, "stream", reps, median, min, bytes);
        }

        private void Add(string kernel, string shape, string mode, int reps, double median, double min, long bytes)
        {
            double gbps = bytes / (median * 1e-3) / 1e9;
            _rows.Add(new Row(kernel, shape, mode, reps, median, min, gbps, 100 * gbps / _copyGBps, 0, 0));
            Console.WriteLine($"  {kernel} {shape}: {median * 1e3:F1} us, {gbps:F0} GB/s");
        }

        private void Print()
        {
            Console.WriteLine();
            Console.WriteLine($"copy {_copyGBps:F0} GB/s; GEMM reference {_gemmTflops:F1} TFLOP/s; ms is the median per call");
            Console.WriteLine($"{"kernel",-36} | {"shape",-36} | {"mode",-6} | {"ms",9} | {"GB/s",7} | {"% copy",6} | {"TFLOP/s",7} | {"% gemm",6}");
            Console.WriteLine(new string('-', 132));
            foreach (var r in _rows)
                Console.WriteLine($"{r.Kernel,-36} | {r.Shape,-36} | {r.Mode,-6} | {r.MedianMs,9:F4} | {r.GBps,7:F0} | {r.PercentOfCopy,5:F0}% | {r.Tflops,7:F1} | {r.PercentOfGemm,5:F0}%");
        }

        private void Write(string outPath)
        {
            var dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
            if (dir is not null) Directory.CreateDirectory(dir);
            var doc = new
            {
                benchmark = "CUDA kernels at LLaVA-1.5-7B shapes, bf16 storage, float32 accumulation",
                date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
                quick,
                small = z == Dims.Small,
                shapes = z,
                device = GpuTiming.DeviceJson(b),
                nvrtc = VteKernels.Cuda.Kernels.NvrtcCompiler.IsAvailable(out _) ? VteKernels.Cuda.Kernels.NvrtcCompiler.Instance.Version : null,
                cublasLtVersion = CublasLtGemm.Version,
                copyGBps = Math.Round(_copyGBps, 1),
                gemmReferenceTflops = Math.Round(_gemmTflops, 2),
                note = "GB/s counts the bytes each kernel must read and write once; copy GB/s counts read + write bytes. " +
                       "'graph' rows replay the op in a CUDA graph (no host overhead); 'stream' rows include host copies and launch overhead.",
                rows = _rows.Select(r => new
                {
                    kernel = r.Kernel, shape = r.Shape, mode = r.Mode, reps = r.Reps, medianMs = Math.Round(r.MedianMs, 5), minMs = Math.Round(r.MinMs, 5),
                    gbps = Math.Round(r.GBps, 1), percentOfCopy = Math.Round(r.PercentOfCopy, 1), tflops = Math.Round(r.Tflops, 2), percentOfGemm = Math.Round(r.PercentOfGemm, 1),
                }),
            };
            var options = new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
            File.WriteAllText(outPath, JsonSerializer.Serialize(doc, options) + "\n");
            Console.WriteLine();
            Console.WriteLine($"wrote {outPath}");
        }
    }

    private static Weight RandomWeight(string name, params int[] shape)
    {
        int count = shape.Aggregate(1, (a, c) => a * c);
        var rng = new Random(count);
        var v = new float[count];
        for (int i = 0; i < v.Length; i++) v[i] = (rng.NextSingle() * 2 - 1) * 0.05f;
        return Weight.FromFloats(name, v, DType.BF16, shape);
    }

    /// <summary>Each benched op against the CPU op on a small odd shape (a fast wrong kernel is worth nothing).</summary>
    private static bool CheckCorrectness(CudaBackend b)
    {
        const int rows = 7, cols = 4104, outF = 33;
        var rng = new Random(5);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => DTypes.FromBFloat16Bits(DTypes.ToBFloat16Bits(rng.NextSingle() * 2 - 1))).ToArray();
        var x = R(rows * cols);
        var gamma = Weight.FromFloats("g", R(cols), DType.BF16, cols);
        var w = Weight.FromFloats("w", R(outF * cols).Select(v => v * 0.02f).ToArray(), DType.BF16, outF, cols);
        var failures = new List<string>();
        void Compare(string op, float[] device, float[] cpu)
        {
            double scale = cpu.Max(Math.Abs), err = 0;
            for (int i = 0; i < cpu.Length; i++) err = Math.Max(err, Math.Abs(device[i] - cpu[i]));
            if (!(err <= 1.0 / 64 * scale)) failures.Add($"{op}: max |device - cpu| {err:E2} against max |cpu| {scale:E2}");
        }
        float[] Get(Tensor t)
        {
            var a = new float[t.Rows * t.Cols];
            b.CopyToHost(t, a);
            return a;
        }
        using var xd = b.Allocate(rows, cols);
        b.CopyFromHost(x, xd);

        var cpuNorm = new float[x.Length];
        CpuOps.RmsNorm(x, rows, gamma, 1e-5f, cpuNorm);
        using (var yd = b.Allocate(rows, cols))
        {
            b.RmsNorm(xd, b.Upload(gamma), 1e-5f, yd);
            Compare("rms_norm", Get(yd), cpuNorm);
        }
        var cpuLinear = new float[rows * outF];
        CpuOps.Linear(x, rows, w, null, cpuLinear);
        var wd = b.Upload(w);
        using (var yd = b.Allocate(rows, outF))
        {
            b.Linear(xd, wd, null, yd);
            Compare("gemm", Get(yd), cpuLinear);
        }
        using (var x1 = xd.Slice(0, 1))
        using (var yd = b.Allocate(1, outF))
        {
            b.Linear(x1, wd, null, yd);
            Compare("gemv", Get(yd), cpuLinear[..outF]);
        }
        var cpuSilu = new float[x.Length];
        CpuOps.SiluMul(x, x, cpuSilu);
        using (var yd = b.Allocate(rows, cols))
        {
            b.SiluMul(xd, xd, yd);
            Compare("silu_mul", Get(yd), cpuSilu);
        }
        var cpuRope = (float[])x.Clone();
        var positions = Enumerable.Range(1000, rows).ToArray();
        CpuOps.Rope(cpuRope, rows, cols / 72, 72, positions, 10000f);
        using (var yd = b.Allocate(rows, cols))
        {
            b.CopyFromHost(x, yd);
            b.Rope(yd, cols / 72, 72, positions, 10000f);
            Compare("rope", Get(yd), cpuRope);
        }
        if (failures.Count > 0)
        {
            foreach (var f in failures) Console.Error.WriteLine($"incorrect: {f}");
            return false;
        }
        Console.WriteLine("correctness: rms_norm, gemm, gemv, silu_mul, rope match the CPU ops (bf16, 7 x 4104)");
        return true;
    }
}
