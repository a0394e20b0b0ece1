// Decode (few rows) with Q8_0 and Q4_0 weights: int8 dot products, as llama.cpp computes them.
//
// Each row of x is quantized once per call to Q8_0's rule (per block of 32: d = max|x|/127, q = round(x/d)),
// so that a block's dot product with a weight block is a sum of 32 int8 x int8 (or int4 x int8) products,
// exact in int32; per block it is then scaled by d_w · d_x and accumulated in float32. With AVX-VNNI one
// vpdpbusd (unsigned x signed bytes, four products added into each of 8 int32 lanes) does a block; without it
// AVX2's vpmaddubsw + vpmaddwd give the same lanes (no int16 saturation: a pair is at most 2 · 127 · 127).
//
// * Q8_0: vpdpbusd wants one operand unsigned, so it takes |q_x| and the weights with the sign of q_x moved
//   onto them (vpsignb): Σ |x|·sign(x)·w = Σ x·w.
// * Q4_0: byte j of a block holds element j in its low nibble and element j + 16 in its high one. The 16
//   bytes are loaded into both halves of a 256-bit register (vbroadcasti128, a load with no shuffle); with
//   VNNI one AND keeps the low nibbles in the lower half and the high nibbles in place (16 · value, at most
//   240, still one unsigned byte) in the upper half, so the upper lanes hold 16x their sums; x stays in its
//   natural order. The offset of 8 is taken off exactly in int32: vpdpbusd adds its products to a start
//   value, and that is −8 · Σ q_x over each lane's four x elements (−128 · Σ q_x in the upper lanes),
//   computed once per x block. (Subtracting the offset in float32 after scaling instead cancels two sums
//   ~8x the result: 4x the error, measured.) The accumulator's upper lanes are multiplied by 1/16 before the
//   final sum: a power of two, exact, so the result is bit for bit what unscaled lanes give. Without VNNI the
//   products 240 · 127 would saturate vpmaddubsw's int16 pairs, so the upper half is shifted right by 4
//   instead (vpsrlvd) and no lane is scaled.
//
// The weights are read in ggml's block layout where they lie (34- or 18-byte blocks, the f16 scale first).
// Rows go eight at a time (eight streams from memory per thread: more lines in flight than four, ~15% faster
// from memory here, measured interleaved), the rest of a group one at a time; each row's sum is the same in
// both kernels.
// Before the dot products of a group of rows, their block scales are read (eight scalar loads into one vector:
// vpgatherdd is ~4x slower on AMD Zen 4, measured), widened exactly in registers and multiplied by x's block scales into a small table, so the
// inner loop takes each block's combined scale with one broadcast load (vbroadcastss from memory: a load,
// no shuffle). (Widening each scale in the inner loop with scalar code cost ~8 instructions per block and
// row, about as many as the block's dot product itself.) Per block and row the inner loop is then two loads
// and four vector instructions (AND or vpsignb, vpdpbusd, vcvtdq2ps, FMA); without VNNI seven or more.
//
// Q8_0 and Q4_0 matrices the CPU backend uploads have their rows interleaved by sixteens (BlockInterleave.cs)
// and take a kernel of their own (Groups512, or Groups256 without AVX-512BW): one 64-byte load holds four bytes
// of each of sixteen rows, so one broadcast of four x bytes and one vpmaddubsw serve sixteen rows; each row's
// exact block sum lands in its own int32 lane (Q4_0: the block's eight products summed in int16 first, no
// overflow for nibbles; Q8_0: the sign of x moved onto the weights, vpmaddubsw, vpmaddwd per chunk), and the
// rows' scales are applied as one vector: about 4.5 vector instructions per block and eight rows. Sixteen rows
// in one 512-bit register against eight in a 256-bit one (AMD Zen 4, single thread, a 1 MiB matrix in cache:
// 0.22 against 0.34 ns per block and row at q4_0, 0.34 against 0.49 at q8_0; 2 threads from memory, 256 MiB:
// 47 against 37 GB/s at q4_0, 48 against 42 at q8_0, measured alternated). Each group is one stream, prefetched
// a page ahead (GroupPrefetchBytes); eight-row groups read two at a time as two streams were slower from memory
// than one sixteen-row stream, even at 256 bits. Its sums differ from the plain kernels' in rounding only (a
// block's sum is scaled whole, where they keep eight partial lanes); its two widths give bitwise the same sums.
//
// The activation quantization is the only approximation beyond the weights' own. Prefill quantizes x the same
// way (LinearPackedInt8.cs) where the CPU has AVX-512BW, unless asked to dequantize the weights exactly and
// keep x in float32 (LinearPacked.cs; CpuBackendOptions.ExactQuantizedPrefill).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>True when the int8 decode kernels can run here (AVX2 at least; AVX-VNNI makes them faster).</summary>
    internal static bool Int8DotSupported => Avx2.IsSupported;

    /// <summary>
    /// x quantized to Q8_0's rule for the int8 kernels. Per row of x and block of 32 elements, a 128-byte record:
    /// q (32 signed bytes), |q| (32 unsigned bytes), Q4_0's eight int32 start values (−8 · Σ q over each
    /// lane's four elements, times <see cref="IByteDot.Q4HighScale"/> in the upper four lanes) and q's signs
    /// (32 bytes, 0xFF where q &lt; 0, else 0); and the block's scale d in <see cref="D"/>.
    /// </summary>
    internal sealed class QuantizedX : IDisposable
    {
        /// <summary>Bytes of one block's record, and where its parts start in it.</summary>
        public const int RecordBytes = 128, AbsAt = 32, StartAt = 64, SignAt = 96;

        public readonly byte* Records;
        public readonly float* D;

        /// <summary>Per row of x and block: −8 · Σ q over the block's 32 elements (Q4_0's offset, for the interleaved kernel).</summary>
        public readonly int* Offset;

        public readonly int Blocks;

        /// <param name="x">The rows to quantize, [n][k].</param>
        /// <param name="n">Rows of x.</param>
        /// <param name="k">Elements per row, a multiple of 32.</param>
        /// <param name="q4HighScale">The factor of Q4_0's upper lanes in the kernel that will read it (<see cref="IByteDot.Q4HighScale"/>).</param>
        public QuantizedX(float* x, int n, int k, int q4HighScale)
        {
            Blocks = k / BlockQuant.BlockElements;
            long count = (long)n * Blocks;
            Records = (byte*)NativeMemory.AlignedAlloc((nuint)(count * RecordBytes), 64);
            D = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
            Offset = (int*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(int)), 64);
            for (long b = 0; b < count; b++) QuantizeBlock(x + b * 32, Records + b * RecordBytes, out D[b], out Offset[b], q4HighScale);
        }

        /// <summary>Row i's first block record.</summary>
        public byte* Row(int i) => Records + (long)i * Blocks * RecordBytes;

        /// <summary>Q8_0's rule on one block (BlockQuant.Quantize, with the scale kept in float32).</summary>
        private static void QuantizeBlock(float* x, byte* record, out float d, out int offset, int q4HighScale)
        {
            sbyte* q = (sbyte*)record;
            byte* abs = record + AbsAt;
            int* start = (int*)(record + StartAt);
            d = QuantizeX8(x, q);
            for (int j = 0; j < 32; j++)
            {
                abs[j] = (byte)Math.Abs((int)q[j]);
                record[SignAt + j] = q[j] < 0 ? (byte)0xFF : (byte)0;
            }
            offset = 0;
            for (int l = 0; l < 8; l++)
            {
                int sum = q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3];
                start[l] = -8 * (l < 4 ? 1 : q4HighScale) * sum;
                offset -= 8 * sum;
            }
        }

        public void Dispose()
        {
            NativeMemory.AlignedFree(Records);
            NativeMemory.AlignedFree(D);
            NativeMemory.AlignedFree(Offset);
        }
    }

    /// <summary>
    /// One block of 32 x values quantized to Q8_0's rule (d = max|x| / 127, q = round(x / d), halves away from
    /// zero), the scale kept in float32: the q at <paramref name="q"/>, d returned. Decode and the integer
    /// prefill kernel both quantize x with it.
    /// </summary>
    internal static float QuantizeX8(float* x, sbyte* q)
    {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(x[j]));
        float d = amax / 127f;
        float id = d != 0 ? 1f / d : 0f;
        for (int j = 0; j < 32; j++) q[j] = (sbyte)(int)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        return d;
    }

    /// <summary>A block's byte dot products: with AVX-VNNI (<see cref="VnniDot"/>) or AVX2 alone (<see cref="Avx2Dot"/>).</summary>
    internal interface IByteDot
    {
        /// <summary>start + eight int32 lanes, each the sum of four adjacent products u[i]·s[i].</summary>
        static abstract Vector256<int> Dot(Vector256<int> start, Vector256<byte> u, Vector256<sbyte> s);

        /// <summary>A Q4_0 block's 16 bytes at p as 32 unsigned bytes: low nibbles (elements 0..15), then high ones (16..31) times <see cref="Q4HighScale"/>.</summary>
        static abstract Vector256<byte> Nibbles(byte* p);

        /// <summary>The factor on the upper lanes of <see cref="Nibbles"/> (16 or 1).</summary>
        static abstract int Q4HighScale { get; }
    }

    /// <summary>vpdpbusd; the high nibbles stay in place (16x).</summary>
    internal struct VnniDot : IByteDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dot(Vector256<int> start, Vector256<byte> u, Vector256<sbyte> s) => AvxVnni.MultiplyWideningAndAdd(start, u, s);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Nibbles(byte* p) =>
            Avx2.BroadcastVector128ToVector256(p) & Vector256.Create(Vector128.Create((byte)0x0F), Vector128.Create((byte)0xF0));

        public static int Q4HighScale => 16;
    }

    /// <summary>vpmaddubsw + vpmaddwd; the high nibbles shifted down (16x would saturate int16 pairs).</summary>
    internal struct Avx2Dot : IByteDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dot(Vector256<int> start, Vector256<byte> u, Vector256<sbyte> s) =>
            start + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256.Create((short)1));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Nibbles(byte* p) =>
            Avx2.ShiftRightLogicalVariable(Avx2.BroadcastVector128ToVector256(p).AsUInt32(), Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4)).AsByte() & Vector256.Create((byte)0x0F);

        public static int Q4HighScale => 1;
    }

    /// <summary>The <see cref="IByteDot.Q4HighScale"/> of the kernels <see cref="DecodeQuantized"/> runs here.</summary>
    internal static int Q4HighScaleHere => AvxVnni.IsSupported ? VnniDot.Q4HighScale : Avx2Dot.Q4HighScale;

    /// <summary>
    /// y[i·yStride + j] = x_i · W row (r0 + j) for rows [r0, r0 + rows) of a Q8_0 or Q4_0 weight and every row i
    /// of x (quantized with <see cref="Q4HighScaleHere"/>): interleaved weights sixteen rows at a time, plain ones eight (a shorter last group one by one), with VNNI where the CPU has it.
    /// </summary>
    internal static void DecodeQuantized(QuantizedX x, int n, Weight w, int r0, int rows, float* y, long yStride, float[]? bias)
    {
        if (AvxVnni.IsSupported) DecodeQuantized<VnniDot>(x, n, w, r0, rows, y, yStride, bias, WideGroups);
        else DecodeQuantized<Avx2Dot>(x, n, w, r0, rows, y, yStride, bias, WideGroups);
    }

    /// <summary>True when the interleaved kernel takes sixteen rows in one 512-bit register here (AVX-512BW).</summary>
    internal static bool WideGroups => Avx512BW.IsSupported;

    /// <summary>
    /// <see cref="DecodeQuantized"/> with the dot products of <typeparamref name="T"/> (x quantized with its Q4HighScale)
    /// and interleaved groups in 512-bit registers (<paramref name="wide"/>, which needs AVX-512BW) or 256-bit ones.
    /// </summary>
    internal static void DecodeQuantized<T>(QuantizedX x, int n, Weight w, int r0, int rows, float* y, long yStride, float[]? bias, bool wide) where T : struct, IByteDot
    {
        if (wide && !Avx512BW.IsSupported) throw new PlatformNotSupportedException("the 512-bit interleaved kernel needs AVX-512BW");
        if (w.DType == DType.Q8_0)
        {
            if (w.Interleaved) DecodeInterleaved<Q8Group, Q8Blocks<T>>(x, n, w, r0, rows, y, yStride, bias, wide);
            else DecodeRows<Q8Blocks<T>>(x, n, w, r0, rows, y, yStride, bias);
        }
        else if (w.Interleaved) DecodeInterleaved<Q4Group, Q4Blocks<T>>(x, n, w, r0, rows, y, yStride, bias, wide);
        else DecodeRows<Q4Blocks<T>>(x, n, w, r0, rows, y, yStride, bias);
    }

    private static void DecodeRows<B>(QuantizedX x, int n, Weight w, int r0, int rows, float* y, long yStride, float[]? bias) where B : struct, IQuantBlocks
    {
        long rowBytes = w.RowByteLength;
        var sums = stackalloc float[8];
        // The 8 rows' combined block scales (d_w · d_x): 8 · blocks floats, 11 KiB at 11008 columns.
        float[]? rented = x.Blocks > 512 ? System.Buffers.ArrayPool<float>.Shared.Rent(8 * x.Blocks) : null;
        var stack = rented is null ? stackalloc float[8 * x.Blocks] : default;
        try
        {
            fixed (float* scales = rented is null ? stack : rented.AsSpan())
                for (int j = 0; j < rows; j += 8)
                {
                    int count = Math.Min(8, rows - j);
                    byte* wj = w.Pointer + (r0 + j) * rowBytes;
                    for (int i = 0; i < n; i++)
                    {
                        BlockScales(wj, (nint)rowBytes, count, x.Blocks, B.BlockBytes, x.D + (long)i * x.Blocks, scales);
                        byte* xr = x.Row(i);
                        int r = 0;
                        if (count == 8)
                        {
                            QuantDot8<B>(xr, x.Blocks, wj, (nint)rowBytes, scales, sums);
                            r = 8;
                        }
                        for (; r < count; r++) sums[r] = QuantDot1<B>(xr, x.Blocks, wj + r * rowBytes, scales + r * x.Blocks);
                        float* yi = y + i * yStride + j;
                        for (r = 0; r < count; r++) yi[r] = sums[r] + (bias?[r0 + j + r] ?? 0f);
                    }
                }
        }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// scales[r·blocks + b] = d_w(row r, block b) · d_x(block b) for up to 8 rows at w + r·ws whose blocks are
    /// <paramref name="blockBytes"/> long, the f16 scale first; x's block scales at <paramref name="xd"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BlockScales(byte* w, nint ws, int rows, int blocks, int blockBytes, float* xd, float* scales)
    {
        nint bb = blockBytes;
        var mask = Vector256.Create(HalfPositionMask);
        for (int r = 0; r < rows; r++)
        {
            byte* row = w + r * ws;
            float* dst = scales + r * blocks;
            int b = 0;
            // Eight scales are read with scalar loads into one vector and widened together. (vpgatherdd at the
            // block stride costs ~100 cycles per eight on AMD Zen 4, measured: four times the row's dot products.)
            for (; b + 8 <= blocks; b += 8)
            {
                byte* at = row + (long)b * blockBytes;
                var raw = Vector256.Create(*(ushort*)at, *(ushort*)(at + bb), *(ushort*)(at + 2 * bb), *(ushort*)(at + 3 * bb),
                    *(ushort*)(at + 4 * bb), *(ushort*)(at + 5 * bb), *(ushort*)(at + 6 * bb), *(ushort*)(at + 7 * bb));
                var positioned = Vector256.ShiftRightArithmetic(Vector256.ShiftLeft(raw, 16), 3) & mask;
                (HalfPositionedToSingle(positioned) * Vector256.Load(xd + b)).Store(dst + b);
            }
            for (; b < blocks; b++) dst[b] = BlockQuant.HalfToSingle(*(ushort*)(row + (long)b * blockBytes)) * xd[b];
        }
    }

    /// <summary>
    /// <see cref="DecodeQuantized"/> for a weight interleaved by sixteens (BlockInterleave.cs): whole groups through
    /// <see cref="Groups512{G}"/> (<paramref name="wide"/>) or <see cref="Groups256{G}"/>, rows after the last whole
    /// group (stored plainly) through the plain kernels of <typeparamref name="B"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The rows cut a group.</exception>
    private static void DecodeInterleaved<G, B>(QuantizedX x, int n, Weight w, int r0, int rows, float* y, long yStride, float[]? bias, bool wide)
        where G : struct, IGroupBlocks where B : struct, IQuantBlocks
    {
        const int Rows = BlockInterleave.GroupRows;
        int grouped = Math.Max(r0, Math.Min(r0 + rows, BlockInterleave.GroupedRows(w.Rows)));
        if (r0 % Rows != 0 && grouped > r0 || (grouped - r0) % Rows != 0)
            throw new ArgumentException($"rows [{r0}, {r0 + rows}) are not whole groups of {Rows} interleaved rows", nameof(r0));
        long rowBytes = w.RowByteLength;
        var sums = stackalloc float[Rows];
        for (int j = r0; j < grouped; j += Rows)
            for (int i = 0; i < n; i++)
            {
                byte* xr = x.Row(i), group = w.Pointer + j * rowBytes;
                float* xd = x.D + (long)i * x.Blocks;
                int* offset = x.Offset + (long)i * x.Blocks;
                if (wide) Groups512<G>(xr, xd, offset, x.Blocks, group, sums);
                else Groups256<G>(xr, xd, offset, x.Blocks, group, sums);
                float* yi = y + i * yStride + (j - r0);
                for (int r = 0; r < Rows; r++) yi[r] = sums[r] + (bias?[j + r] ?? 0f);
            }
        if (grouped < r0 + rows) DecodeRows<B>(x, n, w, grouped, r0 + rows - grouped, y + (grouped - r0), yStride, bias);
    }

    /// <summary>
    /// How far ahead the interleaved kernels prefetch (one prefetch per 64 bytes of a block): one 4 KiB page,
    /// which the hardware prefetchers do not cross on their own. One layer + LM head read from memory ~14% faster
    /// at q4_0 and ~6% at q8_0 with it on Zen 4 without huge pages, and a few per cent with them (cpu-decode and a
    /// one-matrix micro-benchmark, alternated). Blocks are not line-aligned, so a few lines are asked for twice
    /// (cheap). Prefetches never fault, so those past a matrix's end are harmless.
    /// </summary>
    private const int GroupPrefetchBytes = 4096;

    /// <summary>
    /// sums[l] = x · row l of the interleaved group at <paramref name="w"/>, sixteen rows in one 512-bit register
    /// (AVX-512BW). x's block records at xr, scales at xd, Q4_0 offsets at offset.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Groups512<G>(byte* xr, float* xd, int* offset, int blocks, byte* w, float* sums) where G : struct, IGroupBlocks
    {
        var acc = Vector512<float>.Zero;
        for (int b = 0; b < blocks; b++, xr += QuantizedX.RecordBytes, w += G.BlockBytes)
        {
            for (int l = 0; l < G.BlockBytes; l += 64) Sse.Prefetch0(w + GroupPrefetchBytes + l);
            acc = Scaled(w, G.Sums(w + BlockInterleave.ScaleBytes, xr, offset[b]), xd[b], acc);
        }
        acc.Store(sums);
    }

    /// <summary>
    /// <see cref="Groups512{G}"/> with 256-bit registers (AVX2): the chunks' two halves, rows 0..7 and 8..15, as two
    /// vectors. Each row's sum is computed as the 512-bit kernel computes it, so the two give bitwise the same sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Groups256<G>(byte* xr, float* xd, int* offset, int blocks, byte* w, float* sums) where G : struct, IGroupBlocks
    {
        const int Half = BlockInterleave.GroupRows / 2;
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, xr += QuantizedX.RecordBytes, w += G.BlockBytes)
        {
            for (int l = 0; l < G.BlockBytes; l += 64) Sse.Prefetch0(w + GroupPrefetchBytes + l);
            byte* chunks = w + BlockInterleave.ScaleBytes;
            acc0 = Scaled(w, G.HalfSums(chunks, xr, offset[b]), xd[b], acc0);
            acc1 = Scaled(w + 2 * Half, G.HalfSums(chunks + 4 * Half, xr, offset[b]), xd[b], acc1);
        }
        acc0.Store(sums);
        acc1.Store(sums + Half);
    }

    /// <summary>
    /// acc + the rows' exact block sums (int32 lanes) times their scales: each row's d_w (the f16s at
    /// <paramref name="w"/>, positioned as float32 and multiplied by 2^112: exact, subnormal scales included)
    /// times d_x, accumulated in float32.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Scaled(byte* w, Vector512<int> sums, float xd, Vector512<float> acc)
    {
        // Sign-extended f16 bits shifted into float32 position: bits 30..28 hold copies of the sign, which the mask clears.
        var scale = (Vector512.ShiftLeft(Avx512F.ConvertToVector512Int32(Vector256.Load((short*)w)), 13) & Vector512.Create(HalfPositionMask)).AsSingle()
            * Vector512.Create(F16ScaledRows.Up) * Vector512.Create(xd);
        return Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sums), scale, acc);
    }

    /// <inheritdoc cref="Scaled(byte*, Vector512{int}, float, Vector512{float})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Scaled(byte* w, Vector256<int> sums, float xd, Vector256<float> acc)
    {
        var scale = (Vector256.ShiftLeft(Avx2.ConvertToVector256Int32((short*)w), 13) & Vector256.Create(HalfPositionMask)).AsSingle()
            * Vector256.Create(F16ScaledRows.Up) * Vector256.Create(xd);
        return Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(sums), scale, acc);
    }

    /// <summary>How the interleaved kernels read one group block of a format: its size and the rows' exact sums.</summary>
    private interface IGroupBlocks
    {
        /// <summary>Bytes of one block of a group.</summary>
        static abstract int BlockBytes { get; }

        /// <summary>Lane l: row l's block sum against x's block record at xr (exact, in int32); w is the block's first chunk.</summary>
        static abstract Vector512<int> Sums(byte* w, byte* xr, int offset);

        /// <summary>The same for the eight rows whose lanes start at w in each chunk (chunks <see cref="BlockInterleave.ChunkBytes"/> apart).</summary>
        static abstract Vector256<int> HalfSums(byte* w, byte* xr, int offset);
    }

    /// <summary>
    /// Q8_0 groups: per chunk (four values of each row) the rows take the sign of a broadcast of four x values
    /// (vpsignb; at 512 bits, which have no vpsignb, an XOR with x's sign bytes and a subtraction: −w as two's
    /// complement, the same bytes), vpmaddubsw multiplies them by the broadcast |x| (pairs at most 2 · 127 · 127,
    /// which two chunks would overflow in int16), vpmaddwd widens the pairs to int32, and the eight chunks add up
    /// there.
    /// </summary>
    private struct Q8Group : IGroupBlocks
    {
        private const int C = BlockInterleave.ChunkBytes;

        public static int BlockBytes => BlockInterleave.GroupRows * BlockQuant.Q8_0BlockBytes;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<int> Sums(byte* w, byte* xr, int offset)
        {
            byte* sign = xr + QuantizedX.SignAt, abs = xr + QuantizedX.AbsAt;
            var ones = Vector512.Create((short)1);
            var s0 = Chunk(w, sign, abs, ones) + Chunk(w + C, sign + 4, abs + 4, ones);
            var s1 = Chunk(w + 2 * C, sign + 8, abs + 8, ones) + Chunk(w + 3 * C, sign + 12, abs + 12, ones);
            var s2 = Chunk(w + 4 * C, sign + 16, abs + 16, ones) + Chunk(w + 5 * C, sign + 20, abs + 20, ones);
            var s3 = Chunk(w + 6 * C, sign + 24, abs + 24, ones) + Chunk(w + 7 * C, sign + 28, abs + 28, ones);
            return (s0 + s1) + (s2 + s3);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> HalfSums(byte* w, byte* xr, int offset)
        {
            sbyte* q = (sbyte*)xr;
            byte* abs = xr + QuantizedX.AbsAt;
            var ones = Vector256.Create((short)1);
            var s0 = Chunk(w, q, abs, ones) + Chunk(w + C, q + 4, abs + 4, ones);
            var s1 = Chunk(w + 2 * C, q + 8, abs + 8, ones) + Chunk(w + 3 * C, q + 12, abs + 12, ones);
            var s2 = Chunk(w + 4 * C, q + 16, abs + 16, ones) + Chunk(w + 5 * C, q + 20, abs + 20, ones);
            var s3 = Chunk(w + 6 * C, q + 24, abs + 24, ones) + Chunk(w + 7 * C, q + 28, abs + 28, ones);
            return (s0 + s1) + (s2 + s3);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<int> Chunk(byte* w, byte* sign, byte* abs, Vector512<short> ones)
        {
            var m = Vector512.Create(*(int*)sign).AsSByte();
            return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)abs).AsByte(), (Vector512.Load((sbyte*)w) ^ m) - m), ones);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<int> Chunk(byte* w, sbyte* q, byte* abs, Vector256<short> ones) =>
            Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Vector256.Create(*(int*)abs).AsByte(), Avx2.Sign(Vector256.Load((sbyte*)w), Vector256.Create(*(int*)q).AsSByte())), ones);
    }

    /// <summary>
    /// Q4_0 groups: four chunks give each row's four low and four high nibbles a 32-bit lane; each half is
    /// multiplied by a broadcast of the four x bytes it pairs with (vpmaddubsw: pairs of at most 2 · 15 · 127) and
    /// the eight products summed in int16 (at most 30480, no overflow); vpmaddwd then gives each row's block sum
    /// in an int32 lane, to which the offset −8 · Σ q is added.
    /// </summary>
    private struct Q4Group : IGroupBlocks
    {
        private const int C = BlockInterleave.ChunkBytes;

        public static int BlockBytes => BlockInterleave.GroupRows * BlockQuant.Q4_0BlockBytes;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<int> Sums(byte* w, byte* xr, int offset)
        {
            sbyte* q = (sbyte*)xr;
            var low = Vector512.Create((byte)0x0F);
            var c0 = Vector512.Load(w);
            var c1 = Vector512.Load(w + C);
            var c2 = Vector512.Load(w + 2 * C);
            var c3 = Vector512.Load(w + 3 * C);
            var s0 = Avx512BW.MultiplyAddAdjacent(c0 & low, Vector512.Create(*(int*)q).AsSByte());
            var s1 = Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(c0.AsUInt16(), 4).AsByte() & low, Vector512.Create(*(int*)(q + 16)).AsSByte());
            var s2 = Avx512BW.MultiplyAddAdjacent(c1 & low, Vector512.Create(*(int*)(q + 4)).AsSByte());
            var s3 = Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(c1.AsUInt16(), 4).AsByte() & low, Vector512.Create(*(int*)(q + 20)).AsSByte());
            var s4 = Avx512BW.MultiplyAddAdjacent(c2 & low, Vector512.Create(*(int*)(q + 8)).AsSByte());
            var s5 = Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(c2.AsUInt16(), 4).AsByte() & low, Vector512.Create(*(int*)(q + 24)).AsSByte());
            var s6 = Avx512BW.MultiplyAddAdjacent(c3 & low, Vector512.Create(*(int*)(q + 12)).AsSByte());
            var s7 = Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(c3.AsUInt16(), 4).AsByte() & low, Vector512.Create(*(int*)(q + 28)).AsSByte());
            return Avx512BW.MultiplyAddAdjacent((s0 + s1) + (s2 + s3) + ((s4 + s5) + (s6 + s7)), Vector512.Create((short)1)) + Vector512.Create(offset);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> HalfSums(byte* w, byte* xr, int offset)
        {
            sbyte* q = (sbyte*)xr;
            var low = Vector256.Create((byte)0x0F);
            var c0 = Vector256.Load(w);
            var c1 = Vector256.Load(w + C);
            var c2 = Vector256.Load(w + 2 * C);
            var c3 = Vector256.Load(w + 3 * C);
            var s0 = Avx2.MultiplyAddAdjacent(c0 & low, Vector256.Create(*(int*)q).AsSByte());
            var s1 = Avx2.MultiplyAddAdjacent(Vector256.ShiftRightLogical(c0.AsUInt16(), 4).AsByte() & low, Vector256.Create(*(int*)(q + 16)).AsSByte());
            var s2 = Avx2.MultiplyAddAdjacent(c1 & low, Vector256.Create(*(int*)(q + 4)).AsSByte());
            var s3 = Avx2.MultiplyAddAdjacent(Vector256.ShiftRightLogical(c1.AsUInt16(), 4).AsByte() & low, Vector256.Create(*(int*)(q + 20)).AsSByte());
            var s4 = Avx2.MultiplyAddAdjacent(c2 & low, Vector256.Create(*(int*)(q + 8)).AsSByte());
            var s5 = Avx2.MultiplyAddAdjacent(Vector256.ShiftRightLogical(c2.AsUInt16(), 4).AsByte() & low, Vector256.Create(*(int*)(q + 24)).AsSByte());
            var s6 = Avx2.MultiplyAddAdjacent(c3 & low, Vector256.Create(*(int*)(q + 12)).AsSByte());
            var s7 = Avx2.MultiplyAddAdjacent(Vector256.ShiftRightLogical(c3.AsUInt16(), 4).AsByte() & low, Vector256.Create(*(int*)(q + 28)).AsSByte());
            return Avx2.MultiplyAddAdjacent((s0 + s1) + (s2 + s3) + ((s4 + s5) + (s6 + s7)), Vector256.Create((short)1)) + Vector256.Create(offset);
        }
    }

    /// <summary>How the row kernels read one block format: its size, which part of x's record it needs beside q, and one block's int32 lanes.</summary>
    private interface IQuantBlocks
    {
        /// <summary>Bytes of one weight block.</summary>
        static abstract int BlockBytes { get; }

        /// <summary>Where in x's block record the second vector the format needs (beside q) starts.</summary>
        static abstract int OtherAt { get; }

        /// <summary>The block's eight int32 lanes of its dot product with x (q, and the vector at <see cref="OtherAt"/>).</summary>
        static abstract Vector256<int> Dot(byte* block, Vector256<sbyte> q, Vector256<byte> other);

        /// <summary>An accumulator's final sum.</summary>
        static abstract float Sum(Vector256<float> acc);
    }

    /// <summary>Q8_0: x's q and |q|; the weights take q's sign (vpsignb).</summary>
    private struct Q8Blocks<T> : IQuantBlocks where T : struct, IByteDot
    {
        public static int BlockBytes => BlockQuant.Q8_0BlockBytes;

        public static int OtherAt => QuantizedX.AbsAt;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dot(byte* block, Vector256<sbyte> q, Vector256<byte> abs) =>
            T.Dot(Vector256<int>.Zero, abs, Avx2.Sign(Vector256.Load((sbyte*)(block + 2)), q));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Sum(Vector256<float> acc) => Vector256.Sum(acc);
    }

    /// <summary>Q4_0: x's q and the int32 start values (−8 · Σ q per lane); the nibbles as <see cref="IByteDot.Nibbles"/> gives them.</summary>
    private struct Q4Blocks<T> : IQuantBlocks where T : struct, IByteDot
    {
        public static int BlockBytes => BlockQuant.Q4_0BlockBytes;

        public static int OtherAt => QuantizedX.StartAt;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dot(byte* block, Vector256<sbyte> q, Vector256<byte> start) => T.Dot(start.AsInt32(), T.Nibbles(block + 2), q);

        /// <summary>The upper four lanes (Q4HighScale times their value) scaled back exactly, then the sum.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Sum(Vector256<float> acc) =>
            T.Q4HighScale == 1 ? Vector256.Sum(acc) : Vector256.Sum(acc * Vector256.Create(Vector128.Create(1f), Vector128.Create(1f / T.Q4HighScale)));
    }

    /// <summary>acc + a block's int32 lanes times its combined scale (broadcast from memory).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate(Vector256<int> dot, float* scale, Vector256<float> acc) =>
        Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(dot), Avx.BroadcastScalarToVector256(scale), acc);

    /// <summary>sums[r] = x · W row r for the 8 rows at w + r·ws (x's block records at xr; scales from BlockScales): eight streams from memory at once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantDot8<B>(byte* xr, int blocks, byte* w, nint ws, float* scales, float* sums) where B : struct, IQuantBlocks
    {
        var acc0 = Vector256<float>.Zero; var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero; var acc3 = Vector256<float>.Zero;
        var acc4 = Vector256<float>.Zero; var acc5 = Vector256<float>.Zero;
        var acc6 = Vector256<float>.Zero; var acc7 = Vector256<float>.Zero;
        nint ws3 = 3 * ws, ss = blocks * sizeof(float), ss3 = 3 * ss;
        byte* v = w + 4 * ws;
        byte* s = (byte*)scales;
        byte* t = s + 4 * ss;
        byte* end = xr + (long)blocks * QuantizedX.RecordBytes;
        for (; xr < end; xr += QuantizedX.RecordBytes, w += B.BlockBytes, v += B.BlockBytes, s += sizeof(float), t += sizeof(float))
        {
            var q = Vector256.Load((sbyte*)xr);
            var o = Vector256.Load(xr + B.OtherAt);
            acc0 = Accumulate(B.Dot(w, q, o), (float*)s, acc0);
            acc1 = Accumulate(B.Dot(w + ws, q, o), (float*)(s + ss), acc1);
            acc2 = Accumulate(B.Dot(w + 2 * ws, q, o), (float*)(s + 2 * ss), acc2);
            acc3 = Accumulate(B.Dot(w + ws3, q, o), (float*)(s + ss3), acc3);
            acc4 = Accumulate(B.Dot(v, q, o), (float*)t, acc4);
            acc5 = Accumulate(B.Dot(v + ws, q, o), (float*)(t + ss), acc5);
            acc6 = Accumulate(B.Dot(v + 2 * ws, q, o), (float*)(t + 2 * ss), acc6);
            acc7 = Accumulate(B.Dot(v + ws3, q, o), (float*)(t + ss3), acc7);
        }
        sums[0] = B.Sum(acc0); sums[1] = B.Sum(acc1); sums[2] = B.Sum(acc2); sums[3] = B.Sum(acc3);
        sums[4] = B.Sum(acc4); sums[5] = B.Sum(acc5); sums[6] = B.Sum(acc6); sums[7] = B.Sum(acc7);
    }

    /// <summary>x · the row at w, summed as one row of <see cref="QuantDot8"/> (groups of fewer than eight rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float QuantDot1<B>(byte* xr, int blocks, byte* w, float* scales) where B : struct, IQuantBlocks
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, xr += QuantizedX.RecordBytes, w += B.BlockBytes)
            acc = Accumulate(B.Dot(w, Vector256.Load((sbyte*)xr), Vector256.Load(xr + B.OtherAt)), scales + b, acc);
        return B.Sum(acc);
    }
}
