// Decode attention over a 16-bit KV cache, read where it is stored: one query row of one head, the scores
// q · k_j over the visible keys, a float32 softmax, then Σ_j p_j · v_j, widening 16 stored elements at a
// time in registers (vpmovzxwd / vpmovsxwd and an integer shift, as RowFormats.cs describes).
//
// f16 is widened exactly in registers (RowFormats.cs: HalfPositionedToSingle, which never makes a float32
// subnormal), so every product equals the float32 product of the widened values. This needs no Inf/NaN in the
// stored f16 rows (the cache knows; otherwise the caller widens into scratch).
//
// Where float32 subnormal inputs cost nothing (RowFormats.cs: SubnormalInputsAreFree), f16 is read as its
// positioned bits, w · 2^-112, against q · 2^112 for the scores and p · 2^112 for the values (F16ScaledKv):
// each product is the same real number, so scores and output are bit for bit the exact form's, at two integer
// ops per 16 elements instead of eight. q must stay below 2^16 in magnitude (the caller checks); p <= 1.
//
// Each key and value row is prefetched KvPrefetchKeys rows ahead (which pays where the cache stores each head's
// rows together, CpuKvCache.cs).
//
// Scores take four keys per pass and reduce their four accumulators together (Sum4: halves added, then three
// horizontal adds), every key's 16 lanes in the same tree, a leftover key's too: about a quarter of the
// operations of a Vector512.Sum per key, ~10% of decode attention's time from memory on Zen 4 (measured).
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>A 16-bit KV element type as the register kernels read it.</summary>
    internal interface IKvFormat
    {
        /// <summary>Elements [0, 16) at p in the kernel domain.</summary>
        static abstract Vector512<float> Load16(ushort* p);

        /// <summary>Element 0 at p in the kernel domain.</summary>
        static abstract float At(ushort* p);

        /// <summary>The factor the query and the probabilities are scaled by to meet the kernel domain (1: none).</summary>
        static abstract float Up { get; }
    }

    internal struct Bf16Kv : IKvFormat
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(ushort* p) => Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)), 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float At(ushort* p) => BitConverter.UInt32BitsToSingle((uint)*p << 16);

        public static float Up => 1f;
    }

    internal struct F16Kv : IKvFormat
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(ushort* p) =>
            HalfPositionedToSingle(PositionedHalves(p));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float At(ushort* p) => F16Rows.At((byte*)p, 0);

        public static float Up => 1f;
    }

    /// <summary>f16 read as w · 2^-112 (see the file header); valid for finite elements and |q| &lt; 2^16.</summary>
    internal struct F16ScaledKv : IKvFormat
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(ushort* p) => PositionedHalves(p).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float At(ushort* p) => F16ScaledRows.At((byte*)p, 0);

        public static float Up => F16ScaledRows.Up;
    }

    /// <summary>
    /// The lane sums of four vectors, [Σa0, Σa1, Σa2, Σa3]: halves added, then three horizontal adds, then the two
    /// 128-bit halves (about a quarter of the operations of four Vector512.Sum).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Sum4(Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3)
    {
        var h01 = Avx.HorizontalAdd(a0.GetLower() + a0.GetUpper(), a1.GetLower() + a1.GetUpper());
        var h23 = Avx.HorizontalAdd(a2.GetLower() + a2.GetUpper(), a3.GetLower() + a3.GetUpper());
        var h = Avx.HorizontalAdd(h01, h23);
        return h.GetLower() + h.GetUpper();
    }

    /// <summary>16 f16 at p, each sign, exponent and mantissa moved into float32 position (the exponent not rebiased).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> PositionedHalves(ushort* p) =>
        Vector512.ShiftLeft(Avx512F.ConvertToVector512Int32(Vector256.Load((short*)p)), 13) & Vector512.Create(HalfPositionMask);

    /// <summary>
    /// How many keys ahead decode attention prefetches each key and value row (prefetches never fault, so those
    /// past the last key are harmless). With each head's rows stored together (CpuKvCache), one layer's attention
    /// over 576 keys from memory took 0.108 ms with 32 keys ahead against 0.162 without (2 threads, Zen 4, measured);
    /// on row-major rows it made no difference.
    /// </summary>
    private const int KvPrefetchKeys = 32;

    /// <summary>
    /// output = softmax(scale · q·k_j) · v over <paramref name="count"/> keys at k + j·stride (elements), for one head;
    /// <paramref name="scaledQ"/>: room for headDim floats where T scales q.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DecodeHead16<T>(float* q, byte* k, byte* v, long stride, int count, int headDim, float scale,
        float* scores, float* output, float* scaledQ) where T : struct, IKvFormat
    {
        ushort* kp = (ushort*)k, vp = (ushort*)v;
        if (T.Up != 1f)
        {
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(q, headDim), T.Up, new Span<float>(scaledQ, headDim));
            q = scaledQ;
        }
        int j = 0, keyBytes = 2 * headDim;
        for (; j + 4 <= count; j += 4)
        {
            ushort* k0 = kp + j * stride, k1 = k0 + stride, k2 = k1 + stride, k3 = k2 + stride;
            for (int t = 0; t < 4; t++)
            {
                byte* ahead = (byte*)(k0 + (KvPrefetchKeys + t) * stride);
                for (int l = 0; l < keyBytes; l += 64) Sse.Prefetch0(ahead + l);
            }
            var a0 = Vector512<float>.Zero; var a1 = Vector512<float>.Zero;
            var a2 = Vector512<float>.Zero; var a3 = Vector512<float>.Zero;
            int d = 0;
            for (; d + 16 <= headDim; d += 16)
            {
                var qv = Vector512.Load(q + d);
                a0 = Vector512.FusedMultiplyAdd(qv, T.Load16(k0 + d), a0);
                a1 = Vector512.FusedMultiplyAdd(qv, T.Load16(k1 + d), a1);
                a2 = Vector512.FusedMultiplyAdd(qv, T.Load16(k2 + d), a2);
                a3 = Vector512.FusedMultiplyAdd(qv, T.Load16(k3 + d), a3);
            }
            var s = Sum4(a0, a1, a2, a3);
            if (d == headDim) (s * scale).Store(scores + j);
            else
            {
                float s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
                for (; d < headDim; d++)
                {
                    float qd = q[d];
                    s0 += qd * T.At(k0 + d); s1 += qd * T.At(k1 + d); s2 += qd * T.At(k2 + d); s3 += qd * T.At(k3 + d);
                }
                scores[j] = s0 * scale; scores[j + 1] = s1 * scale; scores[j + 2] = s2 * scale; scores[j + 3] = s3 * scale;
            }
        }
        for (; j < count; j++)
        {
            ushort* kj = kp + j * stride;
            var a = Vector512<float>.Zero;
            int d = 0;
            for (; d + 16 <= headDim; d += 16) a = Vector512.FusedMultiplyAdd(Vector512.Load(q + d), T.Load16(kj + d), a);
            float sum = Sum4(a, default, default, default).ToScalar();   // as the four-key pass sums each key
            for (; d < headDim; d++) sum += q[d] * T.At(kj + d);
            scores[j] = sum * scale;
        }
        var row = new Span<float>(scores, count);
        SoftmaxInPlace(row);
        if (T.Up != 1f) TensorPrimitives.Multiply(row, T.Up, row);

        // Σ_j p_j · v_j: 128 output elements (8 accumulators) per pass over the keys, then 16, then single ones.
        int e = 0;
        for (; e + 128 <= headDim; e += 128)
        {
            var c0 = Vector512<float>.Zero; var c1 = Vector512<float>.Zero; var c2 = Vector512<float>.Zero; var c3 = Vector512<float>.Zero;
            var c4 = Vector512<float>.Zero; var c5 = Vector512<float>.Zero; var c6 = Vector512<float>.Zero; var c7 = Vector512<float>.Zero;
            ushort* vj = vp + e;
            for (int t = 0; t < count; t++, vj += stride)
            {
                byte* ahead = (byte*)(vj + KvPrefetchKeys * stride);
                for (int l = 0; l < 128 * sizeof(ushort); l += 64) Sse.Prefetch0(ahead + l);   // this pass's 128 elements of the row
                var p = Vector512.Create(scores[t]);
                c0 = Vector512.FusedMultiplyAdd(T.Load16(vj), p, c0); c1 = Vector512.FusedMultiplyAdd(T.Load16(vj + 16), p, c1);
                c2 = Vector512.FusedMultiplyAdd(T.Load16(vj + 32), p, c2); c3 = Vector512.FusedMultiplyAdd(T.Load16(vj + 48), p, c3);
                c4 = Vector512.FusedMultiplyAdd(T.Load16(vj + 64), p, c4); c5 = Vector512.FusedMultiplyAdd(T.Load16(vj + 80), p, c5);
                c6 = Vector512.FusedMultiplyAdd(T.Load16(vj + 96), p, c6); c7 = Vector512.FusedMultiplyAdd(T.Load16(vj + 112), p, c7);
            }
            c0.Store(output + e); c1.Store(output + e + 16); c2.Store(output + e + 32); c3.Store(output + e + 48);
            c4.Store(output + e + 64); c5.Store(output + e + 80); c6.Store(output + e + 96); c7.Store(output + e + 112);
        }
        for (; e + 16 <= headDim; e += 16)
        {
            var c = Vector512<float>.Zero;
            ushort* vj = vp + e;
            for (int t = 0; t < count; t++, vj += stride) c = Vector512.FusedMultiplyAdd(T.Load16(vj), Vector512.Create(scores[t]), c);
            c.Store(output + e);
        }
        for (; e < headDim; e++)
        {
            float c = 0;
            ushort* vj = vp + e;
            for (int t = 0; t < count; t++, vj += stride) c += scores[t] * T.At(vj);
            output[e] = c;
        }
    }
}
