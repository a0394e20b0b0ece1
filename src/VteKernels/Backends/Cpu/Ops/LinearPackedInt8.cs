// The many-rows path of Linear for Q8_0 and Q4_0 weights (prefill) where the CPU has AVX-512BW: integer dot
// products, with x quantized per block of 32 exactly as the decode kernels quantize it (LinearQuant.cs), so
// prefill and decode compute the same approximation of the product, the one llama.cpp computes.
//
// The weights' values are small integers (Q8_0: -127..127; Q4_0: nibbles 0..15, less 8) and so are x's
// (-127..127), and a block's dot product is exact in integers; it is then converted and scaled by d_x · d_w
// into a float32 accumulator.
// * Q8_0: both sides widen to int16, and vpmaddwd multiplies 32 pairs and adds adjacent products into 16 int32
//   lanes: twice the multiply-adds per instruction of a float32 FMA (a block's sum is at most 32 · 127 · 127).
// * Q4_0: the nibbles stay unsigned bytes and x signed ones, so vpmaddubsw multiplies 64 pairs into 32 int16
//   lanes (each pair at most 2 · 15 · 127); a block's eight such results add in int16 (at most 30480, no
//   overflow), one vpmaddwd by ones widens them to int32 per block, and the offset of 8 is taken off exactly
//   there: −8 · Σ q_x of the block, computed once per x row and block.
//
// Layout. x is quantized once per call into panels of 16 rows: per pair (Q8_0: int16) or quad (Q4_0: bytes)
// of k, 16 rows side by side (one 512-bit load), and per block the 16 rows' scales (and Q4_0's offsets). A work
// item is BlockRows consecutive W rows of one part; it walks k in chunks of KBlock, widens its W chunk into
// scratch (row-major [rows][WStride] int16 or bytes, and one float scale per row and block), and for every
// panel runs a 16 (x rows) × 12 (W rows) kernel: per k pair or quad one load of the panel, twelve broadcasts
// of a W row's four bytes (vpbroadcastd), twelve multiplies and twelve adds; per block twelve conversions and
// twelve FMAs by the combined scales (x's 16 scales times one W scale). 12 integer and 12 float32
// accumulators stay in registers. Partial sums accumulate per item in a transposed tile [W rows][x rows],
// written to y at the end.
//
// Summation order of one output: per block, the integer sum (exact); blocks in order into a float32 lane within
// each chunk; chunks added in order. It depends on the shapes alone, never on the thread count.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>True when the parts of a many-rows call (all Q8_0 or all Q4_0) can take the integer prefill kernel here.</summary>
    internal static bool Int8PrefillTakes(LinearPart[] parts, int k) =>
        Avx512BW.IsSupported && k % BlockQuant.BlockElements == 0 && parts[0].W.DType is DType.Q8_0 or DType.Q4_0
        && parts.All(p => p.W.DType == parts[0].W.DType);

    /// <summary>Prefill with Q8_0/Q4_0 weights: x quantized into 16-row panels, W widened chunk by chunk, 16 × 12 integer kernels.</summary>
    private sealed class PackedLinearInt8
    {
        private const int Lanes = 16;        // x rows per panel: one 512-bit vector of int32 sums
        private const int KernelRows = 12;   // W rows per kernel call: 12 int32 + 12 float32 accumulators
        private const int BlockRows = 96;    // W rows per work item (8 kernels)
        private const int KBlock = 512;      // input features per chunk
        internal const int ChunkBlocks = KBlock / BlockQuant.BlockElements;
        internal const int WStride = KBlock + 32; // elements between widened W rows (one line more than a chunk, as in PackedLinear)

        private readonly float* _x;
        private readonly int _n, _k, _threads, _panels, _blocks;
        private readonly bool _q4;
        private readonly LinearPart[] _parts;

        public PackedLinearInt8(float* x, int n, int k, LinearPart[] parts, int threads)
        {
            _x = x;
            _n = n;
            _k = k;
            _parts = parts;
            _threads = threads;
            _panels = (n + Lanes - 1) / Lanes;
            _blocks = k / BlockQuant.BlockElements;
            _q4 = parts[0].W.DType == DType.Q4_0;
        }

        private int Padded => _panels * Lanes;

        /// <summary>Bytes of one packed x value and one widened W value: 2 (int16) for Q8_0, 1 for Q4_0.</summary>
        private int ElementBytes => _q4 ? 1 : 2;

        public void Run()
        {
            // Per panel: k · 16 values (int16 for Q8_0, bytes for Q4_0); per panel and block, 16 scales (and Q4_0's 16 offsets).
            var xq = (byte*)NativeMemory.AlignedAlloc((nuint)((long)_panels * _k * Lanes * ElementBytes), 64);
            var dx = (float*)NativeMemory.AlignedAlloc((nuint)((long)_panels * _blocks * Lanes * sizeof(float)), 64);
            var offsets = (int*)NativeMemory.AlignedAlloc((nuint)((long)_panels * _blocks * Lanes * sizeof(int)), 64);
            try
            {
                nint xqp = (nint)xq, dxp = (nint)dx, op = (nint)offsets;
                int packThreads = WorthParallel((long)_n * _k * 4, _panels, _threads) ? _threads : 1;
                CpuWorkers.For(_panels, packThreads, (p, _) => PackPanel(p, (byte*)xqp, (float*)dxp, (int*)op));
                var items = new PartItems(_parts, BlockRows);
                long work = _parts.Sum(q => (long)q.W.Rows) * _k * _n;
                int threads = WorthParallel(work, items.Count, _threads) ? _threads : 1;
                // Per worker: the W chunk (int16), its scales, and the tile.
                long floats = BlockRows * WStride / 2 + BlockRows * ChunkBlocks + (long)BlockRows * Padded;
                using var scratch = new ThreadScratch(CpuWorkers.Resolve(threads), floats);
                CpuWorkers.For(items.Count, threads, (item, worker) =>
                {
                    var (p, r0) = items.Locate(item);
                    Block(_parts[p], r0, (byte*)xqp, (float*)dxp, (int*)op, scratch.For(worker));
                });
            }
            finally
            {
                NativeMemory.AlignedFree(xq);
                NativeMemory.AlignedFree(dx);
                NativeMemory.AlignedFree(offsets);
            }
        }

        /// <summary>
        /// Rows [16p, 16p + 16) of x quantized: for Q8_0 xq[p][k / 2][l][k % 2] (int16), for Q4_0 xq[p][k / 4][l][k % 4]
        /// (bytes), the q of row 16p + l at k; dx[p][b][l] its block scales and offsets[p][b][l] = −8 · Σ q over the
        /// block (Q4_0); rows past n are zero.
        /// </summary>
        private void PackPanel(int p, byte* xq, float* dx, int* offsets)
        {
            const int E = BlockQuant.BlockElements;
            int bytes = ElementBytes, group = 4 / bytes;   // values per 32-bit lane of a panel load
            byte* dst = xq + (long)p * _k * Lanes * bytes;
            long at = (long)p * _blocks * Lanes;
            int rows = Math.Min(Lanes, _n - p * Lanes);
            var q = stackalloc sbyte[E];
            for (int l = 0; l < Lanes; l++)
            {
                float* src = _x + (long)(p * Lanes + l) * _k;
                for (int b = 0; b < _blocks; b++)
                {
                    float d = 0f;
                    if (l < rows) d = QuantizeX8(src + b * E, q);
                    else new Span<sbyte>(q, E).Clear();
                    int sum = 0;
                    for (int e = 0; e < E; e++)
                    {
                        // Element e of block b: group (b·32 + e) / group of the panel, lane l, position e % group in it.
                        long index = ((long)(b * E + e) / group * Lanes + l) * group + e % group;
                        if (_q4) ((sbyte*)dst)[index] = q[e];
                        else ((short*)dst)[index] = q[e];
                        sum += q[e];
                    }
                    dx[at + b * Lanes + l] = d;
                    offsets[at + b * Lanes + l] = -8 * sum;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Block(LinearPart part, int r0, byte* xq, float* dx, int* offsets, float* scratch)
        {
            int rows = Math.Min(BlockRows, part.W.Rows - r0);
            int rowsPadded = (rows + KernelRows - 1) / KernelRows * KernelRows;
            int lanes = Padded, bytes = ElementBytes;
            byte* wc = (byte*)scratch;
            float* wd = scratch + BlockRows * WStride / 2;
            float* yt = wd + BlockRows * ChunkBlocks;
            new Span<float>(yt, rowsPadded * lanes).Clear();
            for (int k0 = 0; k0 < _k; k0 += KBlock)
            {
                int kc = Math.Min(KBlock, _k - k0), blocks = kc / BlockQuant.BlockElements, b0 = k0 / BlockQuant.BlockElements;
                for (int r = 0; r < rows; r++) WidenRowIntegers(part.W, r0 + r, b0, blocks, wc + r * WStride * bytes, wd + r * ChunkBlocks);
                // Zero rows (and scales) pad the block to whole kernels; their outputs are never stored.
                if (rowsPadded > rows)
                {
                    new Span<byte>(wc + rows * WStride * bytes, (rowsPadded - rows) * WStride * bytes).Clear();
                    new Span<float>(wd + rows * ChunkBlocks, (rowsPadded - rows) * ChunkBlocks).Clear();
                }
                for (int p = 0; p < _panels; p++)
                {
                    byte* panel = xq + ((long)p * _k + k0) * Lanes * bytes;
                    long at = ((long)p * _blocks + b0) * Lanes;
                    for (int j = 0; j < rowsPadded; j += KernelRows)
                    {
                        if (_q4) Kernel16x12Q4((sbyte*)panel, dx + at, offsets + at, wc + j * WStride, wd + j * ChunkBlocks, blocks, yt + j * lanes + p * Lanes, lanes);
                        else Kernel16x12Q8((short*)panel, dx + at, (short*)wc + j * WStride, wd + j * ChunkBlocks, blocks, yt + j * lanes + p * Lanes, lanes);
                    }
                }
            }
            StoreTile(part, r0, rows, yt, lanes, _n);
        }
    }

    /// <summary>
    /// Blocks [b0, b0 + count) of row <paramref name="row"/> of a Q8_0 or Q4_0 weight (plain or interleaved) as
    /// the integer kernels read them at <paramref name="q"/> (Q8_0: the values in int16; Q4_0: the nibbles, 0..15,
    /// in bytes, elements in order), and their scales at <paramref name="d"/>.
    /// </summary>
    private static void WidenRowIntegers(Weight w, int row, int b0, int count, byte* q, float* d)
    {
        int blockBytes = BlockQuant.BlockBytes(w.DType), blocks = w.Cols / BlockQuant.BlockElements;
        byte* plain;
        var gathered = stackalloc byte[PackedLinearInt8.ChunkBlocks * BlockQuant.Q8_0BlockBytes];
        if (w.Interleaved && row < BlockInterleave.GroupedRows(w.Rows))
        {
            BlockInterleave.RowBlocks(w.Pointer, row, blocks, blockBytes, b0, count, gathered);
            plain = gathered;
        }
        else plain = w.Pointer + row * w.RowByteLength + (long)b0 * blockBytes;
        for (int b = 0; b < count; b++, plain += blockBytes)
        {
            d[b] = BlockQuant.HalfToSingle(*(ushort*)plain);
            if (w.DType == DType.Q8_0)
            {
                Avx512BW.ConvertToVector512Int16(Vector256.Load((sbyte*)plain + 2)).Store((short*)q);
                q += 2 * BlockQuant.BlockElements;
            }
            else
            {
                var nibbles = Vector128.Load(plain + 2);
                (nibbles & Vector128.Create((byte)0x0F)).Store(q);
                (Sse2.ShiftRightLogical(nibbles.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F)).Store(q + 16);
                q += BlockQuant.BlockElements;
            }
        }
    }

    /// <summary>
    /// Q8_0: yt[r·yts + l] += Σ_b (Σ_{k in block b} xq[k][l] · w[r·WStride + k]) · dx[b][l] · wd[r·ChunkBlocks + b]
    /// for <paramref name="blocks"/> blocks, 16 lanes l and 12 W rows r.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel16x12Q8(short* xq, float* dx, short* w, float* wd, int blocks, float* yt, nint yts)
    {
        const int S = PackedLinearInt8.WStride, D = PackedLinearInt8.ChunkBlocks;
        var f0 = Vector512<float>.Zero; var f1 = Vector512<float>.Zero; var f2 = Vector512<float>.Zero; var f3 = Vector512<float>.Zero;
        var f4 = Vector512<float>.Zero; var f5 = Vector512<float>.Zero; var f6 = Vector512<float>.Zero; var f7 = Vector512<float>.Zero;
        var f8 = Vector512<float>.Zero; var f9 = Vector512<float>.Zero; var fA = Vector512<float>.Zero; var fB = Vector512<float>.Zero;
        for (int b = 0; b < blocks; b++, dx += 16, wd++)
        {
            var a = Vector512.Load(xq);
            var s0 = Pairs(a, w); var s1 = Pairs(a, w + S); var s2 = Pairs(a, w + 2 * S); var s3 = Pairs(a, w + 3 * S);
            var s4 = Pairs(a, w + 4 * S); var s5 = Pairs(a, w + 5 * S); var s6 = Pairs(a, w + 6 * S); var s7 = Pairs(a, w + 7 * S);
            var s8 = Pairs(a, w + 8 * S); var s9 = Pairs(a, w + 9 * S); var sA = Pairs(a, w + 10 * S); var sB = Pairs(a, w + 11 * S);
            xq += 32;
            w += 2;
            for (short* end = w + 30; w < end; w += 2, xq += 32)
            {
                a = Vector512.Load(xq);
                s0 += Pairs(a, w); s1 += Pairs(a, w + S); s2 += Pairs(a, w + 2 * S); s3 += Pairs(a, w + 3 * S);
                s4 += Pairs(a, w + 4 * S); s5 += Pairs(a, w + 5 * S); s6 += Pairs(a, w + 6 * S); s7 += Pairs(a, w + 7 * S);
                s8 += Pairs(a, w + 8 * S); s9 += Pairs(a, w + 9 * S); sA += Pairs(a, w + 10 * S); sB += Pairs(a, w + 11 * S);
            }
            var x = Vector512.Load(dx);
            f0 = Scaled(s0, x, wd[0], f0); f1 = Scaled(s1, x, wd[D], f1); f2 = Scaled(s2, x, wd[2 * D], f2); f3 = Scaled(s3, x, wd[3 * D], f3);
            f4 = Scaled(s4, x, wd[4 * D], f4); f5 = Scaled(s5, x, wd[5 * D], f5); f6 = Scaled(s6, x, wd[6 * D], f6); f7 = Scaled(s7, x, wd[7 * D], f7);
            f8 = Scaled(s8, x, wd[8 * D], f8); f9 = Scaled(s9, x, wd[9 * D], f9); fA = Scaled(sA, x, wd[10 * D], fA); fB = Scaled(sB, x, wd[11 * D], fB);
        }
        AddTo16(yt, f0); yt += yts; AddTo16(yt, f1); yt += yts; AddTo16(yt, f2); yt += yts; AddTo16(yt, f3); yt += yts;
        AddTo16(yt, f4); yt += yts; AddTo16(yt, f5); yt += yts; AddTo16(yt, f6); yt += yts; AddTo16(yt, f7); yt += yts;
        AddTo16(yt, f8); yt += yts; AddTo16(yt, f9); yt += yts; AddTo16(yt, fA); yt += yts; AddTo16(yt, fB);
    }

    /// <summary>
    /// Q4_0: as <see cref="Kernel16x12Q8"/> with w the nibbles (bytes) and x's bytes, each block's integer sum
    /// plus offsets[b][l] (−8 · Σ q_x: the nibbles' offset).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel16x12Q4(sbyte* xq, float* dx, int* offsets, byte* w, float* wd, int blocks, float* yt, nint yts)
    {
        const int S = PackedLinearInt8.WStride, D = PackedLinearInt8.ChunkBlocks;
        var f0 = Vector512<float>.Zero; var f1 = Vector512<float>.Zero; var f2 = Vector512<float>.Zero; var f3 = Vector512<float>.Zero;
        var f4 = Vector512<float>.Zero; var f5 = Vector512<float>.Zero; var f6 = Vector512<float>.Zero; var f7 = Vector512<float>.Zero;
        var f8 = Vector512<float>.Zero; var f9 = Vector512<float>.Zero; var fA = Vector512<float>.Zero; var fB = Vector512<float>.Zero;
        for (int b = 0; b < blocks; b++, dx += 16, offsets += 16, wd++)
        {
            var a = Vector512.Load(xq);
            var s0 = Quads(a, w); var s1 = Quads(a, w + S); var s2 = Quads(a, w + 2 * S); var s3 = Quads(a, w + 3 * S);
            var s4 = Quads(a, w + 4 * S); var s5 = Quads(a, w + 5 * S); var s6 = Quads(a, w + 6 * S); var s7 = Quads(a, w + 7 * S);
            var s8 = Quads(a, w + 8 * S); var s9 = Quads(a, w + 9 * S); var sA = Quads(a, w + 10 * S); var sB = Quads(a, w + 11 * S);
            xq += 64;
            w += 4;
            for (byte* end = w + 28; w < end; w += 4, xq += 64)
            {
                a = Vector512.Load(xq);
                s0 += Quads(a, w); s1 += Quads(a, w + S); s2 += Quads(a, w + 2 * S); s3 += Quads(a, w + 3 * S);
                s4 += Quads(a, w + 4 * S); s5 += Quads(a, w + 5 * S); s6 += Quads(a, w + 6 * S); s7 += Quads(a, w + 7 * S);
                s8 += Quads(a, w + 8 * S); s9 += Quads(a, w + 9 * S); sA += Quads(a, w + 10 * S); sB += Quads(a, w + 11 * S);
            }
            var x = Vector512.Load(dx);
            var o = Vector512.Load(offsets);
            f0 = Scaled(BlockSum(s0, o), x, wd[0], f0); f1 = Scaled(BlockSum(s1, o), x, wd[D], f1); f2 = Scaled(BlockSum(s2, o), x, wd[2 * D], f2); f3 = Scaled(BlockSum(s3, o), x, wd[3 * D], f3);
            f4 = Scaled(BlockSum(s4, o), x, wd[4 * D], f4); f5 = Scaled(BlockSum(s5, o), x, wd[5 * D], f5); f6 = Scaled(BlockSum(s6, o), x, wd[6 * D], f6); f7 = Scaled(BlockSum(s7, o), x, wd[7 * D], f7);
            f8 = Scaled(BlockSum(s8, o), x, wd[8 * D], f8); f9 = Scaled(BlockSum(s9, o), x, wd[9 * D], f9); fA = Scaled(BlockSum(sA, o), x, wd[10 * D], fA); fB = Scaled(BlockSum(sB, o), x, wd[11 * D], fB);
        }
        AddTo16(yt, f0); yt += yts; AddTo16(yt, f1); yt += yts; AddTo16(yt, f2); yt += yts; AddTo16(yt, f3); yt += yts;
        AddTo16(yt, f4); yt += yts; AddTo16(yt, f5); yt += yts; AddTo16(yt, f6); yt += yts; AddTo16(yt, f7); yt += yts;
        AddTo16(yt, f8); yt += yts; AddTo16(yt, f9); yt += yts; AddTo16(yt, fA); yt += yts; AddTo16(yt, fB);
    }

    /// <summary>16 lanes of x quads times one W row's four nibbles (broadcast), adjacent products added in int16: vpmaddubsw.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> Quads(Vector512<sbyte> x, byte* w) => Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)w).AsByte(), x);

    /// <summary>A block's int16 pair sums added into one int32 per lane (vpmaddwd by ones), plus the offsets.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> BlockSum(Vector512<short> sums, Vector512<int> offsets) => Avx512BW.MultiplyAddAdjacent(sums, Vector512<short>.One) + offsets;

    /// <summary>16 lanes of x pairs times one W row's pair (broadcast), adjacent products added: vpmaddwd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Pairs(Vector512<short> x, short* w) => Avx512BW.MultiplyAddAdjacent(x, Vector512.Create(*(int*)w).AsInt16());

    /// <summary>acc + float(sum) · (dx · dw), one rounding for the product of the scales and one for the FMA.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Scaled(Vector512<int> sum, Vector512<float> dx, float dw, Vector512<float> acc) =>
        Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum), dx * Vector512.Create(dw), acc);

    // (Twelve explicit stores: a span over the accumulators made the JIT keep them on the stack inside the kernel's loop.)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo16(float* p, Vector512<float> v) => (Vector512.Load(p) + v).Store(p);
}
