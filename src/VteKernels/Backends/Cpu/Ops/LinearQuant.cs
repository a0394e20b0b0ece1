// Decode (few rows) with Q8_0 and Q4_0 weights: int8 dot products, as llama.cpp computes them.
//
// Each row of x is quantized once per call to Q8_0's rule (per block of 32: d = max|x|/127, q = round(x/d)),
// so that a block's dot product with a weight block is a sum of 32 int8 x int8 (or int4 x int8) products,
// exact in int32; per block it is then scaled by d_w · d_x and accumulated in float32. With AVX-VNNI one
// vpdpbusd (unsigned x signed bytes, four products into each of 8 int32 lanes) does a block; without it
// AVX2's vpmaddubsw + vpmaddwd give the same lanes (no int16 saturation: |q| <= 127, so a pair is at most
// 2 · 127 · 127 = 32258).
//
// * Q8_0: vpdpbusd wants one operand unsigned, so it takes |q_x| and the weights with the sign of q_x moved
//   onto them (vpsignb): Σ |x|·sign(x)·w = Σ x·w.
// * Q4_0: the nibbles are unsigned already: Σ q_w·q_x per lane, minus 8·Σ q_x over the lane's four x
//   elements (computed once per x block), gives Σ (q_w − 8)·q_x exactly in each int32 lane. (Subtracting
//   the offset in float32 after scaling instead cancels two sums ~8x the result: 4x the error, measured.)
//
// The weights are read in ggml's block layout where they lie (34- or 18-byte blocks, the f16 scale first).
// Before the dot products of four rows, their block scales are gathered eight at a time (vpgatherdd at the
// block stride), widened exactly in registers and multiplied by x's block scales into a small table, so the
// inner loop takes each block's combined scale with one broadcast load. (Widening each scale in the inner loop
// with scalar code cost ~8 instructions per block and row, about as many as the block's dot product itself.) The activation quantization is the only approximation
// beyond the weights' own; the prefill path (LinearPacked.cs) dequantizes the weights exactly instead and
// keeps x in float32.
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
    /// x quantized to Q8_0's rule for the int8 kernels, [n][k] bytes each: q (signed), |q| (unsigned), and per
    /// block the scale d and, per int32 lane of a block (4 elements), 8·Σ q (Q4_0's offset).
    /// </summary>
    internal sealed class QuantizedX : IDisposable
    {
        public readonly sbyte* Q;
        public readonly byte* Abs;
        public readonly float* D;
        public readonly int* Offset;
        public readonly int K, Blocks;

        public QuantizedX(float* x, int n, int k)
        {
            K = k;
            Blocks = k / BlockQuant.BlockElements;
            long count = (long)n * k;
            Q = (sbyte*)NativeMemory.AlignedAlloc((nuint)count, 64);
            Abs = (byte*)NativeMemory.AlignedAlloc((nuint)count, 64);
            D = (float*)NativeMemory.AlignedAlloc((nuint)((long)n * Blocks * sizeof(float)), 64);
            Offset = (int*)NativeMemory.AlignedAlloc((nuint)((long)n * Blocks * 8 * sizeof(int)), 64);
            for (long b = 0; b < (long)n * Blocks; b++) QuantizeBlock(x + b * 32, Q + b * 32, Abs + b * 32, out D[b], Offset + b * 8);
        }

        /// <summary>Q8_0's rule on one block (BlockQuant.Quantize, with the scale kept in float32).</summary>
        private static void QuantizeBlock(float* x, sbyte* q, byte* abs, out float d, int* offset)
        {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(x[j]));
            d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            for (int j = 0; j < 32; j++)
            {
                int v = (int)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
                q[j] = (sbyte)v;
                abs[j] = (byte)Math.Abs(v);
            }
            for (int l = 0; l < 8; l++) offset[l] = 8 * (q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3]);
        }

        public void Dispose()
        {
            NativeMemory.AlignedFree(Q);
            NativeMemory.AlignedFree(Abs);
            NativeMemory.AlignedFree(D);
            NativeMemory.AlignedFree(Offset);
        }
    }

    /// <summary>Eight int32 lanes, each the sum of four adjacent products u[i]·s[i] (vpdpbusd, or its AVX2 equivalent).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotBytes(Vector256<byte> u, Vector256<sbyte> s) =>
        AvxVnni.IsSupported
            ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, s)
            : Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256.Create((short)1));

    /// <summary>
    /// scales[r·blocks + b] = d_w(row r, block b) · d_x(block b) for up to 4 rows at w + r·ws whose blocks are
    /// <paramref name="blockBytes"/> long, the f16 scale first; x's block scales at <paramref name="xd"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BlockScales(byte* w, nint ws, int rows, int blocks, int blockBytes, float* xd, float* scales)
    {
        var offsets = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) * blockBytes;
        var mask = Vector256.Create(unchecked((int)0x8FFFE000));
        for (int r = 0; r < rows; r++)
        {
            byte* row = w + r * ws;
            float* dst = scales + r * blocks;
            int b = 0;
            // Each gather reads 4 bytes at a block's start: its 2-byte scale and the first 2 bytes of its values (masked off).
            for (; b + 8 <= blocks; b += 8)
            {
                var raw = Avx2.GatherVector256((int*)(row + (long)b * blockBytes), offsets, 1);
                var positioned = Vector256.ShiftRightArithmetic(Vector256.ShiftLeft(raw, 16), 3) & mask;
                (HalfPositionedToSingle(positioned) * Vector256.Load(xd + b)).Store(dst + b);
            }
            for (; b < blocks; b++) dst[b] = BlockQuant.HalfToSingle(*(ushort*)(row + (long)b * blockBytes)) * xd[b];
        }
    }

    /// <summary>sums[r] = x · W row r for up to 4 Q8_0 rows at w + r·ws (x quantized, row i of it; scales from BlockScales).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotQ8(QuantizedX x, int i, byte* w, nint ws, int rows, float* scales, float* sums)
    {
        var acc0 = Vector256<float>.Zero; var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero; var acc3 = Vector256<float>.Zero;
        int blocks = x.Blocks;
        sbyte* xq = x.Q + (long)i * x.K;
        byte* xa = x.Abs + (long)i * x.K;
        byte* w0 = w, w1 = w + ws, w2 = w + 2 * ws, w3 = w + 3 * ws;
        float* s0 = scales, s1 = s0 + blocks, s2 = s1 + blocks, s3 = s2 + blocks;
        for (int b = 0; b < blocks; b++, w0 += 34, w1 += 34, w2 += 34, w3 += 34)
        {
            var s = Vector256.Load(xq + b * 32);
            var a = Vector256.Load(xa + b * 32);
            acc0 = BlockQ8(w0, a, s, s0[b], acc0);
            if (rows > 1) acc1 = BlockQ8(w1, a, s, s1[b], acc1);
            if (rows > 2) acc2 = BlockQ8(w2, a, s, s2[b], acc2);
            if (rows > 3) acc3 = BlockQ8(w3, a, s, s3[b], acc3);
        }
        sums[0] = Vector256.Sum(acc0);
        if (rows > 1) sums[1] = Vector256.Sum(acc1);
        if (rows > 2) sums[2] = Vector256.Sum(acc2);
        if (rows > 3) sums[3] = Vector256.Sum(acc3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockQ8(byte* block, Vector256<byte> xAbs, Vector256<sbyte> xq, float scale, Vector256<float> acc)
    {
        var wq = Avx2.Sign(Vector256.Load((sbyte*)(block + 2)), xq);
        var dot = Avx.ConvertToVector256Single(DotBytes(xAbs, wq));
        return Vector256.FusedMultiplyAdd(dot, Vector256.Create(scale), acc);
    }

    /// <summary>sums[r] = x · W row r for up to 4 Q4_0 rows at w + r·ws (x quantized, row i of it; scales from BlockScales).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotQ4(QuantizedX x, int i, byte* w, nint ws, int rows, float* scales, float* sums)
    {
        var acc0 = Vector256<float>.Zero; var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero; var acc3 = Vector256<float>.Zero;
        int blocks = x.Blocks;
        sbyte* xq = x.Q + (long)i * x.K;
        int* xo = x.Offset + (long)i * blocks * 8;
        byte* w0 = w, w1 = w + ws, w2 = w + 2 * ws, w3 = w + 3 * ws;
        float* s0 = scales, s1 = s0 + blocks, s2 = s1 + blocks, s3 = s2 + blocks;
        for (int b = 0; b < blocks; b++, w0 += 18, w1 += 18, w2 += 18, w3 += 18)
        {
            var s = Vector256.Load(xq + b * 32);
            var offset = Vector256.Load(xo + b * 8);
            acc0 = BlockQ4(w0, s, offset, s0[b], acc0);
            if (rows > 1) acc1 = BlockQ4(w1, s, offset, s1[b], acc1);
            if (rows > 2) acc2 = BlockQ4(w2, s, offset, s2[b], acc2);
            if (rows > 3) acc3 = BlockQ4(w3, s, offset, s3[b], acc3);
        }
        sums[0] = Vector256.Sum(acc0);
        if (rows > 1) sums[1] = Vector256.Sum(acc1);
        if (rows > 2) sums[2] = Vector256.Sum(acc2);
        if (rows > 3) sums[3] = Vector256.Sum(acc3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockQ4(byte* block, Vector256<sbyte> xq, Vector256<int> offset, float scale, Vector256<float> acc)
    {
        var packed = Vector128.Load(block + 2);
        var low = Vector128.Create((byte)0x0F);
        var nibbles = Vector256.Create(packed & low, Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & low);   // elements 0..15, 16..31
        var dot = Avx.ConvertToVector256Single(DotBytes(nibbles, xq) - offset);
        return Vector256.FusedMultiplyAdd(dot, Vector256.Create(scale), acc);
    }
}
