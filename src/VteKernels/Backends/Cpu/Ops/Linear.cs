// CpuOps.Linear: y[n, out] = x[n, in] · Wᵀ + bias, with W stored [out, in] row-major (PyTorch nn.Linear;
// a conv weight [d, c, p, p] reads as [d, c*p*p]). This is where almost all CPU time goes.
//
// One call may compute several weights that share x (Q, K and V; gate and up): "parts", each with its
// own output. All their rows are work items of one parallel region, so a decoder layer runs two regions for
// its five input projections instead of five.
//
// Three inner paths, chosen by n and the hardware:
// * Few rows (decode; LinearRows.cs): every work item streams whole W rows from memory, four at a time, with
//   512-bit loads, widening bf16/f16 in registers; bound by memory bandwidth.
// * Many rows (prefill; LinearPacked.cs): x packed once into 32-row panels, W widened a chunk at a time
//   into scratch, a 32 × 12 broadcast kernel with 24 accumulators; bound by the FMA units. Q8_0 and Q4_0
//   weights take integer dot products instead where the CPU has AVX-512BW (LinearPackedInt8.cs), x quantized
//   per block as decode quantizes it, unless the caller asks for exact dequantized weights.
// * No 512-bit vectors (other machines): each W row widened into scratch and TensorPrimitives.Dot with
//   every row of x (whatever vector width the machine has).
//
// Determinism: blocking depends only on the shapes, never on the thread count or on which thread takes
// which item, and each output element is summed in a fixed order, so results are bitwise identical for any
// number of threads and from run to run. Accumulation is float32.
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>From this many rows of x on, the packed kernel is used (it computes 32 rows per panel).</summary>
    internal const int LinearPackedMinRows = 8;

    /// <summary>
    /// One weight of a Linear call and where its output goes: row i of y at <see cref="Y"/> + i·<see cref="YStride"/>
    /// floats, columns [0, W.Rows). Parts of one call share x.
    /// </summary>
    internal readonly record struct LinearPart(Weight W, float[]? Bias, nint Y, long YStride);

    /// <summary>
    /// y[n, w.Rows] = x[n, w.Cols] · Wᵀ + bias, where W is stored [out, in] row-major in any <see cref="DType"/>
    /// and read as float32 (widened in registers or a block at a time). Accumulation is float32.
    /// </summary>
    /// <param name="x">Input, [n, w.Cols] row-major.</param>
    /// <param name="n">Number of input rows (tokens).</param>
    /// <param name="w">Weight, [out, in] (a higher-rank weight counts as [shape[0], rest]).</param>
    /// <param name="bias">Optional bias of w.Rows elements.</param>
    /// <param name="y">Output, [n, w.Rows] row-major; must not overlap <paramref name="x"/>.</param>
    /// <param name="threads">Threads to use (0: all cores). The result does not depend on it.</param>
    /// <param name="exactQuantized">
    /// With a Q8_0 or Q4_0 weight and 8 rows or more: dequantize it exactly and keep x in float32, instead of
    /// quantizing x per block as decode does (the default where the CPU has AVX-512BW).
    /// </param>
    /// <exception cref="ArgumentException">A length disagrees with the shapes, or y overlaps x.</exception>
    public static void Linear(ReadOnlySpan<float> x, int n, Weight w, Weight? bias, Span<float> y, int threads = 0, bool exactQuantized = false)
    {
        ArgumentNullException.ThrowIfNull(w);
        CheckNonNegative(n, nameof(n));
        int inFeatures = w.Cols, outFeatures = w.Rows;
        CheckLength(x.Length, (long)n * inFeatures, nameof(x), $"[{n}, {inFeatures}]");
        CheckLength(y.Length, (long)n * outFeatures, nameof(y), $"[{n}, {outFeatures}]");
        if (x.Overlaps(y)) throw new ArgumentException("output must not overlap the input", nameof(y));
        float[]? b = bias is null ? null : WidenVector(bias, outFeatures, nameof(bias));
        fixed (float* px = x)
        fixed (float* py = y)
            LinearParts(px, n, inFeatures, [new LinearPart(w, b, (nint)py, outFeatures)], threads, exactQuantized);
    }

    /// <summary>
    /// Every part's y = x · Wᵀ + bias over the same x [n, k], in one parallel region. The caller has checked
    /// the shapes (each W is [*, k], each output holds n rows) and keeps x and the outputs pinned.
    /// <paramref name="exactQuantized"/> as in <see cref="Linear"/>.
    /// </summary>
    internal static void LinearParts(float* x, int n, int k, LinearPart[] parts, int threads, bool exactQuantized = false)
    {
        if (n == 0) return;
        if (k == 0)
        {
            foreach (var p in parts)
                for (int i = 0; i < n; i++)
                {
                    var row = new Span<float>((float*)p.Y + i * p.YStride, p.W.Rows);
                    if (p.Bias is null) row.Clear(); else p.Bias.CopyTo(row);
                }
            return;
        }
        if (!Vector512.IsHardwareAccelerated) LinearPortable(x, n, k, parts, threads);
        else if (n >= LinearPackedMinRows && !exactQuantized && Int8PrefillTakes(parts, k)) new PackedLinearInt8(x, n, k, parts, threads).Run();
        else if (n >= LinearPackedMinRows) new PackedLinear(x, n, k, parts, threads).Run();
        else new RowsLinear(x, n, k, parts, threads).Run();
    }

    /// <summary>Work items over the rows of several parts: part p owns items [First[p], First[p + 1]).</summary>
    private readonly struct PartItems
    {
        private readonly int[] _first;
        private readonly int _rowsPerItem;

        public PartItems(LinearPart[] parts, int rowsPerItem)
        {
            _rowsPerItem = rowsPerItem;
            _first = new int[parts.Length + 1];
            for (int p = 0; p < parts.Length; p++) _first[p + 1] = _first[p] + (parts[p].W.Rows + rowsPerItem - 1) / rowsPerItem;
        }

        public int Count => _first[^1];

        /// <summary>The part of item <paramref name="item"/> and its first W row.</summary>
        public (int Part, int Row) Locate(int item)
        {
            int p = 0;
            while (item >= _first[p + 1]) p++;
            return (p, (item - _first[p]) * _rowsPerItem);
        }
    }

    /// <summary>Per-thread native scratch, allocated on first use and freed with the job.</summary>
    private sealed class ThreadScratch(int threads, long floats) : IDisposable
    {
        private readonly nint[] _buffers = new nint[threads];

        public float* For(int worker)
        {
            if (_buffers[worker] == 0) _buffers[worker] = (nint)NativeMemory.AlignedAlloc((nuint)(Math.Max(1, floats) * sizeof(float)), 64);
            return (float*)_buffers[worker];
        }

        public void Dispose()
        {
            for (int i = 0; i < _buffers.Length; i++)
            {
                if (_buffers[i] != 0) NativeMemory.AlignedFree((void*)_buffers[i]);
                _buffers[i] = 0;
            }
        }
    }

    /// <summary>Without 512-bit vectors: one widened W row at a time, dotted with every row of x.</summary>
    private static void LinearPortable(float* x, int n, int k, LinearPart[] parts, int threads)
    {
        const int RowsPerItem = 16;
        var items = new PartItems(parts, RowsPerItem);
        threads = WorthParallel((long)n * k * parts.Sum(p => (long)p.W.Rows), items.Count, threads) ? threads : 1;
        using var scratch = new ThreadScratch(CpuWorkers.Resolve(threads), k);
        CpuWorkers.For(items.Count, threads, (item, worker) =>
        {
            var (p, r0) = items.Locate(item);
            var part = parts[p];
            float* row = scratch.For(worker);
            var rowSpan = new ReadOnlySpan<float>(row, k);
            for (int r = r0; r < Math.Min(part.W.Rows, r0 + RowsPerItem); r++)
            {
                WidenRow(part.W, r, 0, k, row);
                float bias = part.Bias?[r] ?? 0f;
                for (int i = 0; i < n; i++)
                    ((float*)part.Y)[i * part.YStride + r] = TensorPrimitives.Dot(new ReadOnlySpan<float>(x + (long)i * k, k), rowSpan) + bias;
            }
        });
    }

    /// <summary>Widens elements [k0, k0 + count) of W row <paramref name="row"/> to float32 (their real values).</summary>
    internal static void WidenRow(Weight w, int row, int k0, int count, float* dst)
    {
        if (!w.Interleaved || row >= BlockInterleave.GroupedRows(w.Rows))
        {
            Widen(w.Pointer + row * w.RowByteLength + w.DType.ByteCount(k0), w.DType, dst, count);
            return;
        }
        // An interleaved row: its blocks gathered into ggml's layout a few at a time, then dequantized as those are.
        const int Step = 64;
        int blockBytes = BlockQuant.BlockBytes(w.DType);
        var plain = stackalloc byte[Step * BlockQuant.Q8_0BlockBytes];
        int blocks = w.Cols / BlockQuant.BlockElements, b0 = k0 / BlockQuant.BlockElements, total = count / BlockQuant.BlockElements;
        for (int b = 0; b < total; b += Step)
        {
            int c = Math.Min(Step, total - b);
            BlockInterleave.RowBlocks(w.Pointer, row, blocks, blockBytes, b0 + b, c, plain);
            Widen(plain, w.DType, dst + (long)b * BlockQuant.BlockElements, c * BlockQuant.BlockElements);
        }
    }
}
