// CpuOps.LayerNorm: torch.nn.LayerNorm over the last dimension in float32, with the biased variance
// (divide by the row length, as torch does): y = (x - mean) / sqrt(var + eps) * gamma + beta. Two passes
// over the row (mean, then the centred sum of squares) rather than E[x²] - mean², which loses precision
// when the mean is large against the spread. x and y may be the same memory.
using System.Numerics.Tensors;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>
    /// Layer normalization of each of the <paramref name="n"/> rows of <paramref name="x"/> (row length
    /// gamma.Cols): y = (x − mean) / √(var + eps) · gamma + beta with the biased variance, in float32.
    /// <paramref name="y"/> may be the same memory as <paramref name="x"/>.
    /// </summary>
    /// <param name="x">Input, [n, gamma.Cols].</param>
    /// <param name="n">Number of rows.</param>
    /// <param name="gamma">Scale, 1-D, stored in any dtype.</param>
    /// <param name="beta">Shift, 1-D, as long as gamma.</param>
    /// <param name="eps">Added to the variance before the square root.</param>
    /// <param name="y">Output, [n, gamma.Cols]; the same memory as x or disjoint from it.</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    /// <exception cref="ArgumentException">A length disagrees, gamma is not 1-D, or y partially overlaps x.</exception>
    public static void LayerNorm(ReadOnlySpan<float> x, int n, Weight gamma, Weight beta, float eps, Span<float> y, int threads = 0)
    {
        ArgumentNullException.ThrowIfNull(gamma);
        ArgumentNullException.ThrowIfNull(beta);
        CheckNonNegative(n, nameof(n));
        if (gamma.Shape.Count != 1) throw new ArgumentException($"'{gamma.Name}' must be 1-D, has shape [{string.Join(", ", gamma.Shape)}]", nameof(gamma));
        int cols = gamma.Cols;
        CheckLength(x.Length, (long)n * cols, nameof(x), $"[{n}, {cols}]");
        CheckLength(y.Length, (long)n * cols, nameof(y), $"[{n}, {cols}]");
        CheckSameOrDisjoint(x, y, nameof(y));
        var g = WidenVector(gamma, cols, nameof(gamma));
        var b = WidenVector(beta, cols, nameof(beta));
        if (n == 0 || cols == 0) return;

        fixed (float* px = x)
        fixed (float* py = y)
        {
            nint xp = (nint)px, yp = (nint)py;
            void Row(int i)
            {
                var src = new ReadOnlySpan<float>((float*)xp + (long)i * cols, cols);
                var dst = new Span<float>((float*)yp + (long)i * cols, cols);
                float mean = TensorPrimitives.Sum(src) / cols;
                TensorPrimitives.Subtract(src, mean, dst);          // dst = x - mean (x is not needed again)
                float variance = TensorPrimitives.SumOfSquares(dst) / cols;
                float rstd = 1f / MathF.Sqrt(variance + eps);
                TensorPrimitives.Multiply(dst, rstd, dst);
                TensorPrimitives.FusedMultiplyAdd(dst, g, b, dst);
            }
            For(n, (long)n * cols * 6, threads, Row);
        }
    }
}
