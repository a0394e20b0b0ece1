// CpuOps.RmsNorm: LLaMA's RMSNorm as Hugging Face's LlamaRMSNorm computes it in float32:
// y = (x * 1/sqrt(mean(x²) + eps)) * gamma, row by row. x and y may be the same memory (each row is read
// fully before it is written). Rows are spread over threads only when there are many of them.
using System.Numerics.Tensors;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>
    /// RMS normalization of each of the <paramref name="n"/> rows of <paramref name="x"/> (row length
    /// gamma.Cols): y = x · 1/√(mean(x²) + eps) · gamma, in float32. <paramref name="y"/> may be the same
    /// memory as <paramref name="x"/>.
    /// </summary>
    /// <param name="x">Input, [n, gamma.Cols].</param>
    /// <param name="n">Number of rows.</param>
    /// <param name="gamma">Scale, 1-D, stored in any dtype.</param>
    /// <param name="eps">Added to the mean square before the square root.</param>
    /// <param name="y">Output, [n, gamma.Cols]; the same memory as x or disjoint from it.</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    /// <exception cref="ArgumentException">A length disagrees, gamma is not 1-D, or y partially overlaps x.</exception>
    public static void RmsNorm(ReadOnlySpan<float> x, int n, Weight gamma, float eps, Span<float> y, int threads = 0)
    {
        ArgumentNullException.ThrowIfNull(gamma);
        CheckNonNegative(n, nameof(n));
        if (gamma.Shape.Count != 1) throw new ArgumentException($"'{gamma.Name}' must be 1-D, has shape [{string.Join(", ", gamma.Shape)}]", nameof(gamma));
        int cols = gamma.Cols;
        CheckLength(x.Length, (long)n * cols, nameof(x), $"[{n}, {cols}]");
        CheckLength(y.Length, (long)n * cols, nameof(y), $"[{n}, {cols}]");
        CheckSameOrDisjoint(x, y, nameof(y));
        if (n == 0 || cols == 0) return;
        var g = WidenVector(gamma, cols, nameof(gamma));

        fixed (float* px = x)
        fixed (float* py = y)
        {
            nint xp = (nint)px, yp = (nint)py;
            void Row(int i)
            {
                var src = new ReadOnlySpan<float>((float*)xp + (long)i * cols, cols);
                var dst = new Span<float>((float*)yp + (long)i * cols, cols);
                float meanSquare = TensorPrimitives.SumOfSquares(src) / cols;
                float inv = 1f / MathF.Sqrt(meanSquare + eps);
                TensorPrimitives.Multiply(src, inv, dst);
                TensorPrimitives.Multiply(dst, g, dst);
            }
            For(n, (long)n * cols * 4, threads, Row);
        }
    }
}
