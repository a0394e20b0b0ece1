// Shared plumbing of the CPU reference ops (one op per file under Ops/): widening stored weight elements
// to float32, deciding when work is large enough to spread over threads (CpuWorkers), and argument checks.
// Constraints: all arithmetic is float32; weights are widened a block at a time as they are read, never
// converted whole (a 7B model's bf16 weights are a 13 GiB memory-mapped file; a float32 copy would need
// 26 GiB more). Spans cannot be captured by the lambdas a parallel region runs, so callers pin them with
// `fixed` and pass pointers (as nint) into the parallel bodies. Every op that spreads over threads takes a
// thread count (0: all cores) and gives the same bits for any count.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

/// <summary>
/// Float32 reference implementations of the operators a LLaVA-1.5 forward pass needs (linear layers,
/// norms, rotary embeddings, attention, activations, embeddings, patch embedding). Inputs and outputs are
/// row-major float32 spans; weights are <see cref="Weight"/> views in their stored dtype, widened as read.
/// Large inputs are spread over all cores; results do not depend on the number of threads.
/// </summary>
public static unsafe partial class CpuOps
{
    /// <summary>
    /// Below this many multiply-adds an op runs on the calling thread: handing work to the thread pool
    /// costs a few microseconds, which a single core spends on about 2^17 fused multiply-adds.
    /// </summary>
    internal const long ParallelMinWork = 1L << 18;

    /// <summary>True when <paramref name="work"/> (multiply-adds or comparable units) is worth spreading over <paramref name="threads"/> threads.</summary>
    internal static bool WorthParallel(long work, int blocks, int threads) =>
        blocks > 1 && CpuWorkers.Resolve(threads) > 1 && work >= ParallelMinWork;

    /// <summary>Runs body(i) for i in [0, count), over <paramref name="threads"/> threads when <paramref name="work"/> is worth it.</summary>
    internal static void For(int count, long work, int threads, Action<int> body)
    {
        if (WorthParallel(work, count, threads)) CpuWorkers.For(count, threads, (i, _) => body(i));
        else for (int i = 0; i < count; i++) body(i);
    }

    /// <summary>Widens <paramref name="count"/> stored elements at <paramref name="src"/> to float32 at <paramref name="dst"/>.</summary>
    /// <remarks>
    /// bf16 is the upper half of a float32, so widening is a zero-extend and a 16-bit shift, 16 elements a
    /// step here (DTypes.ToFloat does it one element at a time, which is slower than the matmul that
    /// consumes it). f16 goes through TensorPrimitives, which is vectorized.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Widen(byte* src, DType type, float* dst, int count)
    {
        switch (type)
        {
            case DType.F32:
                Buffer.MemoryCopy(src, dst, (long)count * sizeof(float), (long)count * sizeof(float));
                break;
            case DType.F16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, count), new Span<float>(dst, count));
                break;
            case DType.BF16:
                WidenBf16((ushort*)src, (uint*)dst, count);
                break;
            case DType.Q8_0 or DType.Q4_0:
                // Whole blocks only (count and the start are block-aligned in every caller).
                DequantizeBlocks(src, type, dst, count);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    /// <summary>d · q for whole Q8_0 / Q4_0 blocks: 16 values a step where 512-bit vectors exist.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeBlocks(byte* src, DType type, float* dst, int count)
    {
        int blocks = count / BlockQuant.BlockElements, bytes = BlockQuant.BlockBytes(type);
        if (!Vector512.IsHardwareAccelerated)
        {
            BlockQuant.Dequantize(new ReadOnlySpan<byte>(src, blocks * bytes), type, new Span<float>(dst, count));
            return;
        }
        for (int b = 0; b < blocks; b++, src += bytes, dst += BlockQuant.BlockElements)
        {
            var d = Vector512.Create(BlockQuant.HalfToSingle(*(ushort*)src));
            if (type == DType.Q8_0)
            {
                var q = Vector256.Load((sbyte*)(src + 2));
                (d * Vector512.ConvertToSingle(Vector512.WidenLower(Vector512.WidenLower(q.ToVector512())))).Store(dst);
                (d * Vector512.ConvertToSingle(Vector512.WidenUpper(Vector512.WidenLower(q.ToVector512())))).Store(dst + 16);
            }
            else
            {
                var packed = Vector128.Load(src + 2);
                var wide = Vector512.WidenLower(Vector512.WidenLower(packed.ToVector256().ToVector512())).AsInt32();
                var eight = Vector512.Create(8);
                (d * Vector512.ConvertToSingle((wide & Vector512.Create(0xF)) - eight)).Store(dst);
                (d * Vector512.ConvertToSingle(Vector512.ShiftRightLogical(wide, 4) - eight)).Store(dst + 16);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WidenBf16(ushort* src, uint* dst, int count)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + Vector512<ushort>.Count <= count; i += Vector512<ushort>.Count)
            {
                var (lo, hi) = Vector512.Widen(Vector512.Load(src + i));
                Vector512.ShiftLeft(lo, 16).Store(dst + i);
                Vector512.ShiftLeft(hi, 16).Store(dst + i + Vector512<uint>.Count);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<ushort>.Count <= count; i += Vector256<ushort>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(src + i));
                Vector256.ShiftLeft(lo, 16).Store(dst + i);
                Vector256.ShiftLeft(hi, 16).Store(dst + i + Vector256<uint>.Count);
            }
        }
        for (; i < count; i++) dst[i] = (uint)src[i] << 16;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> acc) =>
        System.Runtime.Intrinsics.X86.Fma.IsSupported ? System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a, b, acc) : a * b + acc;

    /// <summary>
    /// Rounds float32 values to bfloat16 bits, to nearest even as torch does (NaN stays a quiet NaN), 16 at a
    /// time; the same results as <see cref="DTypes.ToBFloat16Bits"/>.
    /// </summary>
    internal static void ToBFloat16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        CheckLength(dst.Length, src.Length, nameof(dst), "as long as src");
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var one = Vector512.Create(1u);
            var half = Vector512.Create(0x7FFFu);
            var absMask = Vector512.Create(0x7FFFFFFFu);
            var inf = Vector512.Create(0x7F800000u);
            var quiet = Vector512.Create(0x40u);
            for (; i + 32 <= src.Length; i += 32)
            {
                var lo = Round(Vector512.Create(src.Slice(i, 16)).AsUInt32());
                var hi = Round(Vector512.Create(src.Slice(i + 16, 16)).AsUInt32());
                Vector512.Narrow(lo, hi).CopyTo(dst.Slice(i, 32));
            }

            Vector512<uint> Round(Vector512<uint> u)
            {
                var rounded = Vector512.ShiftRightLogical(u + half + (Vector512.ShiftRightLogical(u, 16) & one), 16);
                var nan = Vector512.GreaterThan(u & absMask, inf);
                return Vector512.ConditionalSelect(nan, Vector512.ShiftRightLogical(u, 16) | quiet, rounded);
            }
        }
        for (; i < src.Length; i++) dst[i] = DTypes.ToBFloat16Bits(src[i]);
    }

    /// <summary>Widens a whole 1-D weight (a norm scale, a bias) into a new array: these are a few thousand elements.</summary>
    internal static float[] WidenVector(Weight w, int expectedLength, string paramName)
    {
        ArgumentNullException.ThrowIfNull(w, paramName);
        if (w.ElementCount != expectedLength)
            throw new ArgumentException($"'{w.Name}' holds {w.ElementCount} elements, expected {expectedLength}", paramName);
        var v = new float[expectedLength];
        if (expectedLength > 0) fixed (byte* p = w.Bytes) fixed (float* d = v) Widen(p, w.DType, d, expectedLength);
        return v;
    }

    /// <summary>Throws unless <paramref name="output"/> is either the same memory as <paramref name="input"/> or disjoint from it.</summary>
    internal static void CheckSameOrDisjoint(ReadOnlySpan<float> input, ReadOnlySpan<float> output, string outputName)
    {
        if (input.Overlaps(output, out int offset) && offset != 0)
            throw new ArgumentException("output partially overlaps an input: it must be the same memory or disjoint", outputName);
    }

    /// <summary>Throws unless <paramref name="actual"/> equals <paramref name="expected"/> elements.</summary>
    internal static void CheckLength(int actual, long expected, string paramName, string shape)
    {
        if (actual != expected)
            throw new ArgumentException($"expected {expected} elements ({shape}), got {actual}", paramName);
    }

    /// <summary>Throws unless <paramref name="value"/> is non-negative.</summary>
    internal static void CheckNonNegative(int value, string paramName)
    {
        if (value < 0) throw new ArgumentOutOfRangeException(paramName, value, "must not be negative");
    }

    /// <summary>Throws unless <paramref name="value"/> is positive.</summary>
    internal static void CheckPositive(int value, string paramName)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(paramName, value, "must be positive");
    }
}
