// The many-rows path of Linear (prefill, the vision tower): bound by the FMA units, not by memory.
//
// x is packed once per call into panels of 32 rows, transposed ([k][32 rows]), so that one k step of a
// panel is two 512-bit loads. A work item is BlockRows consecutive W rows of one part; it walks k in chunks
// of KBlock, widens its W chunk into scratch (float32, row-major [rows][WStride]: contiguous, no
// transposition), and for every panel runs a 32 (x rows) × 12 (W rows) kernel: per k, two loads of the
// panel, twelve broadcasts of W scalars, 24 FMAs into 24 accumulators (of the 32 vector registers), no
// horizontal sums. The W rows of a chunk lie a constant stride apart, so the kernel addresses all twelve
// from one pointer with fixed displacements: its loop holds three general registers (x, W, end) and
// nothing spills. (With twelve row pointers it kept twelve and spilled three, measured in the JIT's code.)
// Partial sums accumulate per item in a transposed tile [W rows][x rows] that is written to y at the end.
//
// Sizes (per item): W chunk 96 × 256 floats = 96 KiB and the tile 96 × n floats (n = 512: 192 KiB) stay in
// L2 (2 MiB a core here); a panel's chunk, 32 KiB, streams through L1 once per 12 W rows.
//
// Summation order of one output: per lane, k in order within each chunk, chunks added in order. It depends
// on K (and KBlock) alone.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>Prefill: x packed in 32-row panels, W widened chunk by chunk, 32 × 12 broadcast kernel.</summary>
    private sealed class PackedLinear
    {
        private const int Lanes = 32;       // x rows per panel: two 512-bit vectors
        private const int KernelRows = 12;  // W rows per kernel call: 24 accumulators
        private const int BlockRows = 96;   // W rows per work item (8 kernels)
        private const int KBlock = 256;     // input features per chunk
        internal const int WStride = KBlock + 16; // floats between widened W rows (one line more than a chunk, so rows 4 apart do not share L1 sets)

        private readonly float* _x;
        private readonly int _n, _k, _threads, _panels;
        private readonly LinearPart[] _parts;

        public PackedLinear(float* x, int n, int k, LinearPart[] parts, int threads)
        {
            _x = x;
            _n = n;
            _k = k;
            _parts = parts;
            _threads = threads;
            _panels = (n + Lanes - 1) / Lanes;
        }

        private int Padded => _panels * Lanes;

        public void Run()
        {
            long bytes = (long)Padded * _k * sizeof(float);
            var xp = (float*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            try
            {
                nint xpp = (nint)xp;
                int packThreads = WorthParallel((long)_n * _k * 4, _panels, _threads) ? _threads : 1;
                CpuWorkers.For(_panels, packThreads, (p, _) => PackPanel(p, (float*)xpp));
                var items = new PartItems(_parts, BlockRows);
                long work = _parts.Sum(q => (long)q.W.Rows) * _k * _n;
                int threads = WorthParallel(work, items.Count, _threads) ? _threads : 1;
                using var scratch = new ThreadScratch(CpuWorkers.Resolve(threads), (long)BlockRows * (WStride + Padded));
                CpuWorkers.For(items.Count, threads, (item, worker) =>
                {
                    var (p, r0) = items.Locate(item);
                    Block(_parts[p], r0, (float*)xpp, scratch.For(worker));
                });
            }
            finally
            {
                NativeMemory.AlignedFree(xp);
            }
        }

        /// <summary>xp[p][k][l] = x[32p + l, k], zero for rows past n.</summary>
        private void PackPanel(int p, float* xp)
        {
            float* dst = xp + (long)p * _k * Lanes;
            int rows = Math.Min(Lanes, _n - p * Lanes);
            float* src = _x + (long)p * Lanes * _k;
            for (int k = 0; k < _k; k++)
            {
                float* d = dst + (long)k * Lanes;
                int l = 0;
                for (; l < rows; l++) d[l] = src[(long)l * _k + k];
                for (; l < Lanes; l++) d[l] = 0f;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Block(LinearPart part, int r0, float* xp, float* scratch)
        {
            int rows = Math.Min(BlockRows, part.W.Rows - r0);
            int rowsPadded = (rows + KernelRows - 1) / KernelRows * KernelRows;
            int lanes = Padded;
            float* wc = scratch;
            float* yt = scratch + BlockRows * WStride;
            new Span<float>(yt, rowsPadded * lanes).Clear();
            for (int k0 = 0; k0 < _k; k0 += KBlock)
            {
                int kc = Math.Min(KBlock, _k - k0);
                for (int r = 0; r < rows; r++) WidenRow(part.W, r0 + r, k0, kc, wc + r * WStride);
                // Zero rows pad the block to whole kernels; their outputs are never stored.
                if (rowsPadded > rows) new Span<float>(wc + rows * WStride, (rowsPadded - rows) * WStride).Clear();
                for (int p = 0; p < _panels; p++)
                {
                    float* panel = xp + ((long)p * _k + k0) * Lanes;
                    for (int j = 0; j < rowsPadded; j += KernelRows)
                        Kernel32x12(panel, wc + j * WStride, kc, yt + j * lanes + p * Lanes, lanes);
                }
            }
            StoreTile(part, r0, rows, yt, lanes, _n);
        }
    }

    /// <summary>
    /// yt[r·yts + l] += Σ_k xp[k·32 + l] · w[r·WStride + k] for k &lt; kc, 32 lanes l and 12 W rows r. Each lane
    /// sums its k terms in order, so no horizontal reduction is needed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel32x12(float* xp, float* w, int kc, float* yt, nint yts)
    {
        const int S = PackedLinear.WStride;
        var c0a = Vector512<float>.Zero; var c0b = Vector512<float>.Zero;
        var c1a = Vector512<float>.Zero; var c1b = Vector512<float>.Zero;
        var c2a = Vector512<float>.Zero; var c2b = Vector512<float>.Zero;
        var c3a = Vector512<float>.Zero; var c3b = Vector512<float>.Zero;
        var c4a = Vector512<float>.Zero; var c4b = Vector512<float>.Zero;
        var c5a = Vector512<float>.Zero; var c5b = Vector512<float>.Zero;
        var c6a = Vector512<float>.Zero; var c6b = Vector512<float>.Zero;
        var c7a = Vector512<float>.Zero; var c7b = Vector512<float>.Zero;
        var c8a = Vector512<float>.Zero; var c8b = Vector512<float>.Zero;
        var c9a = Vector512<float>.Zero; var c9b = Vector512<float>.Zero;
        var cAa = Vector512<float>.Zero; var cAb = Vector512<float>.Zero;
        var cBa = Vector512<float>.Zero; var cBb = Vector512<float>.Zero;
        for (float* end = w + kc; w < end; w++, xp += 32)
        {
            var a = Vector512.Load(xp);
            var b = Vector512.Load(xp + 16);
            var s = Vector512.Create(w[0]); c0a = Vector512.FusedMultiplyAdd(a, s, c0a); c0b = Vector512.FusedMultiplyAdd(b, s, c0b);
            s = Vector512.Create(w[S]); c1a = Vector512.FusedMultiplyAdd(a, s, c1a); c1b = Vector512.FusedMultiplyAdd(b, s, c1b);
            s = Vector512.Create(w[2 * S]); c2a = Vector512.FusedMultiplyAdd(a, s, c2a); c2b = Vector512.FusedMultiplyAdd(b, s, c2b);
            s = Vector512.Create(w[3 * S]); c3a = Vector512.FusedMultiplyAdd(a, s, c3a); c3b = Vector512.FusedMultiplyAdd(b, s, c3b);
            s = Vector512.Create(w[4 * S]); c4a = Vector512.FusedMultiplyAdd(a, s, c4a); c4b = Vector512.FusedMultiplyAdd(b, s, c4b);
            s = Vector512.Create(w[5 * S]); c5a = Vector512.FusedMultiplyAdd(a, s, c5a); c5b = Vector512.FusedMultiplyAdd(b, s, c5b);
            s = Vector512.Create(w[6 * S]); c6a = Vector512.FusedMultiplyAdd(a, s, c6a); c6b = Vector512.FusedMultiplyAdd(b, s, c6b);
            s = Vector512.Create(w[7 * S]); c7a = Vector512.FusedMultiplyAdd(a, s, c7a); c7b = Vector512.FusedMultiplyAdd(b, s, c7b);
            s = Vector512.Create(w[8 * S]); c8a = Vector512.FusedMultiplyAdd(a, s, c8a); c8b = Vector512.FusedMultiplyAdd(b, s, c8b);
            s = Vector512.Create(w[9 * S]); c9a = Vector512.FusedMultiplyAdd(a, s, c9a); c9b = Vector512.FusedMultiplyAdd(b, s, c9b);
            s = Vector512.Create(w[10 * S]); cAa = Vector512.FusedMultiplyAdd(a, s, cAa); cAb = Vector512.FusedMultiplyAdd(b, s, cAb);
            s = Vector512.Create(w[11 * S]); cBa = Vector512.FusedMultiplyAdd(a, s, cBa); cBb = Vector512.FusedMultiplyAdd(b, s, cBb);
        }
        AddTo(yt, c0a, c0b); yt += yts;
        AddTo(yt, c1a, c1b); yt += yts;
        AddTo(yt, c2a, c2b); yt += yts;
        AddTo(yt, c3a, c3b); yt += yts;
        AddTo(yt, c4a, c4b); yt += yts;
        AddTo(yt, c5a, c5b); yt += yts;
        AddTo(yt, c6a, c6b); yt += yts;
        AddTo(yt, c7a, c7b); yt += yts;
        AddTo(yt, c8a, c8b); yt += yts;
        AddTo(yt, c9a, c9b); yt += yts;
        AddTo(yt, cAa, cAb); yt += yts;
        AddTo(yt, cBa, cBb);
    }

    /// <summary>A work item's transposed tile yt[r][i] (rows of <paramref name="lanes"/> floats) into y[i][r0 + r], adding the bias.</summary>
    private static void StoreTile(LinearPart part, int r0, int rows, float* yt, int lanes, int n)
    {
        float* y = (float*)part.Y;
        for (int r = 0; r < rows; r++)
        {
            float bias = part.Bias?[r0 + r] ?? 0f;
            float* src = yt + r * lanes;
            float* dst = y + r0 + r;
            for (int i = 0; i < n; i++) dst[i * part.YStride] = src[i] + bias;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo(float* p, Vector512<float> lo, Vector512<float> hi)
    {
        (Vector512.Load(p) + lo).Store(p);
        (Vector512.Load(p + 16) + hi).Store(p + 16);
    }
}
