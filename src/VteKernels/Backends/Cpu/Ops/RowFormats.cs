// How the Linear kernels read each stored dtype straight from the weight rows, 32 elements per step as two
// 512-bit float vectors, widening in registers (a scratch copy would add memory traffic to a step that is
// bound by it).
//
// * bf16 is the upper half of a float32. A 64-byte load holds 32 of them; `u << 16` gives the 16 even
//   elements as floats and `u & 0xFFFF0000` the 16 odd ones: two integer ops, no shuffles. The input row x
//   is permuted once per call to match (each 32-chunk as its 16 even then 16 odd elements).
// * f16: `(sign-extended h) << 13 & 0x8FFFE000` moves sign, exponent and mantissa into float32 position with the
//   exponent still biased for f16; HalfPositionedToSingle then rebiases the exponent (+112) and reads subnormals
//   (exponent 0) as 2^-14 · (1 + m/1024) − 2^-14 = m · 2^-24, so every weight widens to its exact float32 value
//   and no float32 subnormal is ever made or read (x86 takes a microcode assist for each: measured here, an f16
//   matrix with small weights decoded 3x slower when the weights were read as the subnormal floats w · 2^-112
//   against an x scaled by 2^112). One condition keeps it exact and the caller checks it: no f16 weight is Inf
//   or NaN (exponent 31 would read as a finite 2^16 · 1.m; each weight is scanned once and the answer kept);
//   otherwise the rows are widened by TensorPrimitives into scratch instead.
// * f16, scaled (F16ScaledRows): where the CPU reads float32 subnormals at full speed (AMD Zen 4 does: a probe
//   times it once per process, SubnormalInputsAreFree), the positioned bits are used as they are, as the float32
//   value w · 2^-112 (exact, subnormal for subnormal f16), and x is prepared as x · 2^112 (exact while
//   |x| < 2^16, which the caller checks). Each product is then the same real number w · x, so every sum is
//   bit for bit the exact form's, at three integer ops per 16 weights instead of eleven.
// * f32 needs nothing: two consecutive 16-element loads, x as it is.
//
// Each format also widens whole rows to float32 (the real values, for the packed prefill kernel) and
// reads single elements in the kernel's domain (row tails shorter than 32).
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>A stored dtype as the 512-bit row kernels read it.</summary>
    internal interface IRowFormat
    {
        /// <summary>Writes x (k elements) in this format's kernel domain (the order its loads produce) to dst.</summary>
        static abstract void Prepare(float* x, int k, float* dst);

        /// <summary>Elements [k, k + 32) of a row: the vectors that multiply prepared x[k..k+16) and x[k+16..k+32).</summary>
        static abstract void Load32(byte* row, int k, out Vector512<float> a, out Vector512<float> b);

        /// <summary>Element k of a row in the kernel domain (for tails past the last whole 32).</summary>
        static abstract float At(byte* row, int k);
    }

    /// <summary>float32 rows: no permutation, no scaling.</summary>
    internal struct F32Rows : IRowFormat
    {
        public static void Prepare(float* x, int k, float* dst)
        {
            Buffer.MemoryCopy(x, dst, (long)k * sizeof(float), (long)k * sizeof(float));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Load32(byte* row, int k, out Vector512<float> a, out Vector512<float> b)
        {
            a = Vector512.Load((float*)row + k);
            b = Vector512.Load((float*)row + k + 16);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float At(byte* row, int k) => ((float*)row)[k];
    }

    /// <summary>bf16 rows: even elements from the low halves of 32-bit lanes, odd ones from the high halves.</summary>
    internal struct Bf16Rows : IRowFormat
    {
        public static void Prepare(float* x, int k, float* dst)
        {
            DeinterleaveChunks(x, k, 1f, dst);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Load32(byte* row, int k, out Vector512<float> a, out Vector512<float> b)
        {
            var u = Vector512.Load((uint*)((ushort*)row + k));
            a = Vector512.ShiftLeft(u, 16).AsSingle();
            b = (u & Vector512.Create(0xFFFF0000u)).AsSingle();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float At(byte* row, int k) => BitConverter.UInt32BitsToSingle((uint)((ushort*)row)[k] << 16);
    }

    /// <summary>Keeps sign, exponent and mantissa of a sign-extended f16 shifted left by 13 (float32 position).</summary>
    internal const int HalfPositionMask = unchecked((int)0x8FFFE000);

    /// <summary>f16 rows widened exactly in registers; valid for finite weights.</summary>
    internal struct F16Rows : IRowFormat
    {
        public static void Prepare(float* x, int k, float* dst)
        {
            DeinterleaveChunks(x, k, 1f, dst);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Load32(byte* row, int k, out Vector512<float> a, out Vector512<float> b)
        {
            var u = Vector512.Load((int*)((ushort*)row + k));
            var mask = Vector512.Create(HalfPositionMask);
            a = HalfPositionedToSingle(Vector512.ShiftRightArithmetic(Vector512.ShiftLeft(u, 16), 3) & mask);
            b = HalfPositionedToSingle(Vector512.ShiftRightArithmetic(u, 3) & mask);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float At(byte* row, int k) => BlockQuant.HalfToSingle(((ushort*)row)[k]);
    }

    /// <summary>
    /// f16 rows read as w · 2^-112 (the positioned bits as a float32, subnormal for subnormal f16) against x · 2^112;
    /// valid for finite weights and |x| &lt; <see cref="F16ScaledInputLimit"/>, fast only where <see cref="SubnormalInputsAreFree"/>.
    /// </summary>
    internal struct F16ScaledRows : IRowFormat
    {
        /// <summary>The scale of prepared x (2^112, exact) and of the positioned bits against the value (2^-112); constants, so kernel loops read no static field.</summary>
        internal const float Up = 5192296858534827628530496329220096f, Down = 1f / Up;

        public static void Prepare(float* x, int k, float* dst)
        {
            DeinterleaveChunks(x, k, Up, dst);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Load32(byte* row, int k, out Vector512<float> a, out Vector512<float> b)
        {
            var u = Vector512.Load((int*)((ushort*)row + k));
            var mask = Vector512.Create(HalfPositionMask);
            a = (Vector512.ShiftRightArithmetic(Vector512.ShiftLeft(u, 16), 3) & mask).AsSingle();
            b = (Vector512.ShiftRightArithmetic(u, 3) & mask).AsSingle();
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float At(byte* row, int k) => BlockQuant.HalfToSingle(((ushort*)row)[k]) * Down;
    }

    /// <summary>x · 2^112 stays finite and exact below this magnitude (2^16).</summary>
    internal const float F16ScaledInputLimit = 65536f;

    /// <summary>
    /// True when FMAs with float32 subnormal inputs run as fast as with normal ones here (AMD Zen 4: yes; Intel cores
    /// take a microcode assist per instruction, ~3x slower f16 decode measured). Timed once per process: the best of
    /// five runs of 32 Ki FMAs over L1-resident subnormal and normal operands, free when within 1.5x.
    /// </summary>
    internal static bool SubnormalInputsAreFree => LazySubnormalProbe.Value;

    private static readonly Lazy<bool> LazySubnormalProbe = new(ProbeSubnormalInputs);

    private static bool ProbeSubnormalInputs()
    {
        const int n = 1024;
        var buffer = (float*)NativeMemory.AlignedAlloc(3 * n * sizeof(float), 64);
        try
        {
            float* normal = buffer, subnormal = buffer + n, x = buffer + 2 * n;
            for (int i = 0; i < n; i++)
            {
                normal[i] = 1e-30f;
                subnormal[i] = 1e-40f;
                x[i] = 1f;
            }
            double tn = double.MaxValue, ts = double.MaxValue;
            for (int run = 0; run < 5; run++)
            {
                tn = Math.Min(tn, TimeFma(normal, x, n));
                ts = Math.Min(ts, TimeFma(subnormal, x, n));
            }
            return ts < 1.5 * tn;
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static double TimeFma(float* w, float* x, int n)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        for (int rep = 0; rep < 16; rep++)
            for (int i = 0; i < n; i += 32)
            {
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w + i + 16), Vector512.Load(x + i + 16), a1);
            }
        long ticks = System.Diagnostics.Stopwatch.GetTimestamp() - start;
        return Vector512.Sum(a0 + a1) == -1f ? double.MaxValue : ticks;
    }

    /// <summary>
    /// Finite f16 values whose bits sit in float32 position (sign at bit 31, exponent at bits 27..23, mantissa at 22..13,
    /// the rest zero) to their float32 values, exactly, with no float32 subnormal on the way (BlockQuant.HalfToSingle's rule).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> HalfPositionedToSingle(Vector512<int> p)
    {
        var magnitude = p & Vector512.Create(0x0FFFE000);
        var subnormal = Vector512.Equals(magnitude & Vector512.Create(0x0F800000), Vector512<int>.Zero);
        var normal = magnitude + Vector512.Create(112 << 23);
        var small = ((magnitude + Vector512.Create(113 << 23)).AsSingle() - Vector512.Create(BlockQuant.SmallestNormalHalf)).AsInt32();
        return (Vector512.ConditionalSelect(subnormal, small, normal) | (p & Vector512.Create(int.MinValue))).AsSingle();
    }

    /// <summary>The 256-bit form of <see cref="HalfPositionedToSingle(Vector512{int})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> HalfPositionedToSingle(Vector256<int> p)
    {
        var magnitude = p & Vector256.Create(0x0FFFE000);
        var subnormal = Vector256.Equals(magnitude & Vector256.Create(0x0F800000), Vector256<int>.Zero);
        var normal = magnitude + Vector256.Create(112 << 23);
        var small = ((magnitude + Vector256.Create(113 << 23)).AsSingle() - Vector256.Create(BlockQuant.SmallestNormalHalf)).AsInt32();
        return (Vector256.ConditionalSelect(subnormal, small, normal) | (p & Vector256.Create(int.MinValue))).AsSingle();
    }

    /// <summary>
    /// dst = scale · x with each whole 32-element chunk reordered as its 16 even then its 16 odd elements
    /// (the order the bf16 and f16 loads produce); the tail past the last whole chunk keeps its order.
    /// </summary>
    private static void DeinterleaveChunks(float* x, int k, float scale, float* dst)
    {
        int c = 0;
        for (; c + 32 <= k; c += 32)
            for (int i = 0; i < 16; i++)
            {
                dst[c + i] = x[c + 2 * i] * scale;
                dst[c + 16 + i] = x[c + 2 * i + 1] * scale;
            }
        for (; c < k; c++) dst[c] = x[c] * scale;
    }

    /// <summary>f16 weights known to hold no Inf or NaN (scanned once each).</summary>
    private static readonly ConditionalWeakTable<Weight, object> FiniteHalfWeights = new();

    /// <summary>True when no element of an f16 weight is Inf or NaN (exponent bits all ones); remembered per weight.</summary>
    internal static bool HalfWeightIsFinite(Weight w, int threads)
    {
        if (FiniteHalfWeights.TryGetValue(w, out var known)) return (bool)known;
        const long Chunk = 1 << 20;
        long count = w.ElementCount;
        int chunks = (int)((count + Chunk - 1) / Chunk);
        int bad = 0;
        byte* data = w.Pointer;
        CpuWorkers.For(chunks, threads, (c, _) =>
        {
            long start = c * Chunk, end = Math.Min(count, start + Chunk);
            ushort* p = (ushort*)data;
            long i = start;
            var exp = Vector512.Create((ushort)0x7C00);
            for (; i + 32 <= end; i += 32)
                if (Vector512.EqualsAny(Vector512.Load(p + i) & exp, exp)) { Volatile.Write(ref bad, 1); return; }
            for (; i < end; i++)
                if ((p[i] & 0x7C00) == 0x7C00) { Volatile.Write(ref bad, 1); return; }
        });
        bool finite = bad == 0;
        FiniteHalfWeights.AddOrUpdate(w, finite);
        return finite;
    }
}
