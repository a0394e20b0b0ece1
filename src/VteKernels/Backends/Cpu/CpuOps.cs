// Shared plumbing of the CPU reference ops (one op per file under Ops/): widening stored weight elements
// to float32, deciding when work is large enough to spread over threads, and argument checks.
// Constraints: all arithmetic is float32; weights are widened a block at a time as they are read, never
// converted whole (a 7B model's bf16 weights are a 13 GiB memory-mapped file; a float32 copy would need
// 26 GiB more). Spans cannot be captured by the lambdas Parallel.For runs, so callers pin them with
// `fixed` and pass pointers (as nint) into the parallel bodies.
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

    /// <summary>True when <paramref name="work"/> (multiply-adds or comparable units) is worth spreading over threads.</summary>
    internal static bool WorthParallel(long work, int blocks) =>
        blocks > 1 && Environment.ProcessorCount > 1 && work >= ParallelMinWork;

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
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WidenBf16(ushort* src, uint* dst, int count)
    {
        int i = 0;
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
