// The few-rows path of Linear (decode: n = 1): y[i, j] = x_i · W_j for every row j of every part.
// (Q8_0 and Q4_0 weights take the int8 kernels of LinearQuant.cs from here.)
//
// Decode reads each weight once per token, so it is bound by memory bandwidth, not arithmetic. A work item
// is RowsPerItem consecutive W rows; its thread streams them whole, eight rows side by side (eight
// sequential streams, which the prefetchers follow: on a 2-core AMD Zen 4 one stream per thread reads
// ~19 GB/s in all, four ~29, eight ~31, measured), 64 bytes of each per step, widening in registers
// (RowFormats.cs) into 16 accumulators (two per row: independent FMA chains that cover the FMA latency).
// Groups under eight rows go one by one. x is prepared once per call for each stored dtype (permuted for
// bf16/f16, scaled for f16) and stays in L1/L2.
//
// Summation order of one output: lanes of the even and odd accumulators over the whole 32-element chunks in
// order, their sum reduced by Vector512.Sum, then the tail elements in order. It depends on K alone.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>Decode: whole W rows streamed per work item, x prepared per dtype.</summary>
    private sealed class RowsLinear
    {
        /// <summary>W rows per work item (a multiple of the 8-row kernel): 16 bf16 rows of 4096 are 128 KiB.</summary>
        private const int RowsPerItem = 16;

        private readonly float* _x;
        private readonly int _n, _k, _threads;
        private readonly LinearPart[] _parts;

        public RowsLinear(float* x, int n, int k, LinearPart[] parts, int threads)
        {
            _x = x;
            _n = n;
            _k = k;
            _parts = parts;
            _threads = threads;
        }

        private enum Path { F32, Bf16, F16, F16Scaled, Widened, Q8, Q4 }

        public void Run()
        {
            long work = _parts.Sum(p => (long)p.W.Rows) * _k * _n;
            var items = new PartItems(_parts, RowsPerItem);
            int threads = WorthParallel(work, items.Count, _threads) ? _threads : 1;
            // x in each kernel domain the parts need: [n][k] each.
            var paths = new Path[_parts.Length];
            float* bf16X = null, f16X = null, f16ScaledX = null;
            try
            {
                for (int p = 0; p < _parts.Length; p++)
                {
                    var w = _parts[p].W;
                    paths[p] = w.DType switch
                    {
                        DType.F32 => Path.F32,
                        DType.BF16 => Path.Bf16,
                        DType.F16 => Path.F16,
                        DType.Q8_0 => Int8DotSupported ? Path.Q8 : Path.Widened,
                        DType.Q4_0 => Int8DotSupported ? Path.Q4 : Path.Widened,
                        _ => throw new NotSupportedException($"'{w.Name}': Linear does not read {w.DType} weights"),
                    };
                    if (paths[p] == Path.Bf16 && bf16X is null) bf16X = Prepared<Bf16Rows>();
                    if (paths[p] == Path.F16)
                    {
                        if (!HalfWeightIsFinite(w, threads)) paths[p] = Path.Widened;
                        else if (SubnormalInputsAreFree && TensorPrimitives.MaxMagnitude(new ReadOnlySpan<float>(_x, checked(_n * _k))) < F16ScaledInputLimit)
                        {
                            paths[p] = Path.F16Scaled;
                            if (f16ScaledX is null) f16ScaledX = Prepared<F16ScaledRows>();
                        }
                        else if (f16X is null) f16X = Prepared<F16Rows>();
                    }
                }
                bool widened = paths.Contains(Path.Widened);
                using var scratch = new ThreadScratch(CpuWorkers.Resolve(threads), widened ? (long)Group * _k : 1);
                using var xq = paths.Contains(Path.Q8) || paths.Contains(Path.Q4) ? new QuantizedX(_x, _n, _k, Q4HighScaleHere) : null;
                nint xb = (nint)bf16X, xf = (nint)f16X, xs = (nint)f16ScaledX;
                CpuWorkers.For(items.Count, threads, (item, worker) =>
                {
                    var (p, r0) = items.Locate(item);
                    var part = _parts[p];
                    int rows = Math.Min(RowsPerItem, part.W.Rows - r0);
                    switch (paths[p])
                    {
                        case Path.F32: Item<F32Rows>(part, r0, rows, _x, null); break;
                        case Path.Bf16: Item<Bf16Rows>(part, r0, rows, (float*)xb, null); break;
                        case Path.F16: Item<F16Rows>(part, r0, rows, (float*)xf, null); break;
                        case Path.F16Scaled: Item<F16ScaledRows>(part, r0, rows, (float*)xs, null); break;
                        case Path.Q8 or Path.Q4: DecodeQuantized(xq!, _n, part.W, r0, rows, (float*)part.Y + r0, part.YStride, part.Bias); break;
                        default: Item<F32Rows>(part, r0, rows, _x, scratch.For(worker)); break;
                    }
                });
            }
            finally
            {
                NativeMemory.AlignedFree(bf16X);
                NativeMemory.AlignedFree(f16X);
                NativeMemory.AlignedFree(f16ScaledX);
            }
        }

        /// <summary>x in <typeparamref name="T"/>'s domain, [n][k].</summary>
        private float* Prepared<T>() where T : struct, IRowFormat
        {
            var dst = (float*)NativeMemory.AlignedAlloc((nuint)((long)_n * _k * sizeof(float)), 64);
            for (int i = 0; i < _n; i++) T.Prepare(_x + (long)i * _k, _k, dst + (long)i * _k);
            return dst;
        }

        /// <summary>
        /// Rows [r0, r0 + rows) of a part for every row of x. With <paramref name="widen"/> (f16 or quantized weights that the
        /// register path cannot take), eight rows at a time are widened there first and read as float32.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Item<T>(LinearPart part, int r0, int rows, float* x, float* widen) where T : struct, IRowFormat
        {
            var w = part.W;
            int k = _k;
            long rowBytes = widen is null ? w.RowByteLength : (long)k * sizeof(float);
            float* y = (float*)part.Y;
            var sums = stackalloc float[Group];
            for (int j = 0; j < rows; j += Group)
            {
                int count = Math.Min(Group, rows - j);
                byte* wj = w.Pointer + (r0 + j) * w.RowByteLength;
                if (widen is not null)
                {
                    for (int r = 0; r < count; r++) WidenRow(w, r0 + j + r, 0, k, widen + (long)r * k);
                    wj = (byte*)widen;
                }
                for (int i = 0; i < _n; i++)
                {
                    DotGroup<T>(x + (long)i * k, wj, (nint)rowBytes, count, k, sums);
                    float* yi = y + i * part.YStride + r0 + j;
                    for (int r = 0; r < count; r++) yi[r] = sums[r] + (part.Bias?[r0 + j + r] ?? 0f);
                }
            }
        }
    }

    /// <summary>
    /// y[i·m + j] = x_i · W row j for every row of <paramref name="w"/> (m rows of k elements, stored as T reads them) through
    /// the row kernels of <typeparamref name="T"/> on one thread, eight rows at a time as the decode path groups them.
    /// </summary>
    internal static void RowKernels<T>(float* x, int n, int k, Weight w, float* y) where T : struct, IRowFormat
    {
        int m = w.Rows;
        var xp = (float*)NativeMemory.AlignedAlloc((nuint)((long)n * k * sizeof(float)), 64);
        try
        {
            for (int i = 0; i < n; i++) T.Prepare(x + (long)i * k, k, xp + (long)i * k);
            var sums = stackalloc float[Group];
            for (int j = 0; j < m; j += Group)
            {
                int count = Math.Min(Group, m - j);
                byte* wj = w.Pointer + j * w.RowByteLength;
                for (int i = 0; i < n; i++)
                {
                    DotGroup<T>(xp + (long)i * k, wj, (nint)w.RowByteLength, count, k, sums);
                    for (int r = 0; r < count; r++) y[(long)i * m + j + r] = sums[r];
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(xp);
        }
    }

    /// <summary>Rows a decode kernel reads side by side.</summary>
    private const int Group = 8;

    /// <summary>sums[r] = x · W row r for the <paramref name="count"/> (at most <see cref="Group"/>) rows at w + r·ws.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotGroup<T>(float* x, byte* w, nint ws, int count, int k, float* sums) where T : struct, IRowFormat
    {
        if (count == Group) Dot8<T>(x, w, ws, k, sums);
        else for (int r = 0; r < count; r++) sums[r] = Dot1<T>(x, w + r * ws, k);
    }

    /// <summary>sums[r] = x · W row r for the 8 rows at w + r·ws (k elements, x prepared for T).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot8<T>(float* x, byte* w, nint ws, int k, float* sums) where T : struct, IRowFormat
    {
        var a0 = Vector512<float>.Zero; var b0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero; var b1 = Vector512<float>.Zero;
        var a2 = Vector512<float>.Zero; var b2 = Vector512<float>.Zero;
        var a3 = Vector512<float>.Zero; var b3 = Vector512<float>.Zero;
        var a4 = Vector512<float>.Zero; var b4 = Vector512<float>.Zero;
        var a5 = Vector512<float>.Zero; var b5 = Vector512<float>.Zero;
        var a6 = Vector512<float>.Zero; var b6 = Vector512<float>.Zero;
        var a7 = Vector512<float>.Zero; var b7 = Vector512<float>.Zero;
        int c = 0;
        for (; c + 32 <= k; c += 32)
        {
            var xa = Vector512.Load(x + c);
            var xb = Vector512.Load(x + c + 16);
            T.Load32(w, c, out var u, out var v);
            a0 = Vector512.FusedMultiplyAdd(u, xa, a0); b0 = Vector512.FusedMultiplyAdd(v, xb, b0);
            T.Load32(w + ws, c, out u, out v);
            a1 = Vector512.FusedMultiplyAdd(u, xa, a1); b1 = Vector512.FusedMultiplyAdd(v, xb, b1);
            T.Load32(w + 2 * ws, c, out u, out v);
            a2 = Vector512.FusedMultiplyAdd(u, xa, a2); b2 = Vector512.FusedMultiplyAdd(v, xb, b2);
            T.Load32(w + 3 * ws, c, out u, out v);
            a3 = Vector512.FusedMultiplyAdd(u, xa, a3); b3 = Vector512.FusedMultiplyAdd(v, xb, b3);
            T.Load32(w + 4 * ws, c, out u, out v);
            a4 = Vector512.FusedMultiplyAdd(u, xa, a4); b4 = Vector512.FusedMultiplyAdd(v, xb, b4);
            T.Load32(w + 5 * ws, c, out u, out v);
            a5 = Vector512.FusedMultiplyAdd(u, xa, a5); b5 = Vector512.FusedMultiplyAdd(v, xb, b5);
            T.Load32(w + 6 * ws, c, out u, out v);
            a6 = Vector512.FusedMultiplyAdd(u, xa, a6); b6 = Vector512.FusedMultiplyAdd(v, xb, b6);
            T.Load32(w + 7 * ws, c, out u, out v);
            a7 = Vector512.FusedMultiplyAdd(u, xa, a7); b7 = Vector512.FusedMultiplyAdd(v, xb, b7);
        }
        sums[0] = Vector512.Sum(a0 + b0); sums[1] = Vector512.Sum(a1 + b1); sums[2] = Vector512.Sum(a2 + b2); sums[3] = Vector512.Sum(a3 + b3);
        sums[4] = Vector512.Sum(a4 + b4); sums[5] = Vector512.Sum(a5 + b5); sums[6] = Vector512.Sum(a6 + b6); sums[7] = Vector512.Sum(a7 + b7);
        for (int r = 0; r < Group; r++)
        {
            byte* wr = w + r * ws;
            float s = sums[r];
            for (int t = c; t < k; t++) s += x[t] * T.At(wr, t);
            sums[r] = s;
        }
    }

    /// <summary>x · W row at w over k elements, summed in the same order as <see cref="Dot8"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1<T>(float* x, byte* w, int k) where T : struct, IRowFormat
    {
        var a = Vector512<float>.Zero;
        var b = Vector512<float>.Zero;
        int c = 0;
        for (; c + 32 <= k; c += 32)
        {
            T.Load32(w, c, out var u, out var v);
            a = Vector512.FusedMultiplyAdd(u, Vector512.Load(x + c), a);
            b = Vector512.FusedMultiplyAdd(v, Vector512.Load(x + c + 16), b);
        }
        float s = Vector512.Sum(a + b);
        for (; c < k; c++) s += x[c] * T.At(w, c);
        return s;
    }
}
