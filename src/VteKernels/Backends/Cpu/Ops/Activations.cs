// CpuOps activations, in place or into a destination, float32:
// * QuickGelu: x · sigmoid(1.702 x), CLIP's activation (the LLaVA-1.5 vision tower uses it).
// * Gelu: the exact erf form 0.5 · x · (1 + erf(x / √2)) of torch's nn.GELU() default (the LLaVA-1.5
//   projector). .NET has no erf, so Erf/Erfc below implement W. J. Cody's rational Chebyshev
//   approximations ("Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969)
//   631-637; coefficients as in his SPECFUN CALERF), evaluated in double: relative error below 1e-15,
//   far under float32's 6e-8. Gelu is evaluated as 0.5 · x · erfc(−x/√2), which equals the erf form but
//   keeps its relative accuracy for large negative x where 1 + erf(·) cancels.
// * SiluMul: SwiGLU's silu(gate) · up, i.e. gate · sigmoid(gate) · up.
// Long spans are cut into chunks spread over threads; each chunk goes through a small stack buffer.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    private const int ActivationChunk = 4096;

    /// <summary>x ← x · sigmoid(1.702 · x), in place (CLIP's quick GELU).</summary>
    /// <param name="x">Values, replaced by the activation.</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    public static void QuickGelu(Span<float> x, int threads = 0)
    {
        fixed (float* px = x)
        {
            nint p = (nint)px;
            ForChunks(x.Length, costPerElement: 8, threads, (start, count) =>
            {
                var xs = new Span<float>((float*)p + start, count);
                Span<float> t = stackalloc float[count];
                TensorPrimitives.Multiply(xs, 1.702f, t);
                TensorPrimitives.Sigmoid(t, t);
                TensorPrimitives.Multiply(xs, t, xs);
            });
        }
    }

    /// <summary>x ← 0.5 · x · (1 + erf(x / √2)), in place: the exact GELU of torch's nn.GELU().</summary>
    /// <param name="x">Values, replaced by the activation.</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    public static void Gelu(Span<float> x, int threads = 0)
    {
        fixed (float* px = x)
        {
            nint p = (nint)px;
            ForChunks(x.Length, costPerElement: 30, threads, (start, count) =>
            {
                float* xs = (float*)p + start;
                for (int i = 0; i < count; i++)
                {
                    double v = xs[i];
                    xs[i] = (float)(0.5 * v * Erfc(-v * Sqrt1Over2));
                }
            });
        }
    }

    /// <summary>y ← gate · sigmoid(gate) · up (SwiGLU). <paramref name="y"/> may be the same memory as gate or up.</summary>
    /// <param name="gate">Gate projection.</param>
    /// <param name="up">Up projection, as long as gate.</param>
    /// <param name="y">Output, as long as gate; the same memory as gate or up, or disjoint from both.</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    /// <exception cref="ArgumentException">The lengths disagree, or y partially overlaps an input.</exception>
    public static void SiluMul(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y, int threads = 0)
    {
        CheckLength(up.Length, gate.Length, nameof(up), "as long as gate");
        CheckLength(y.Length, gate.Length, nameof(y), "as long as gate");
        CheckSameOrDisjoint(gate, y, nameof(y));
        CheckSameOrDisjoint(up, y, nameof(y));
        fixed (float* pg = gate)
        fixed (float* pu = up)
        fixed (float* py = y)
        {
            nint g = (nint)pg, u = (nint)pu, o = (nint)py;
            ForChunks(y.Length, costPerElement: 8, threads, (start, count) =>
            {
                var gs = new ReadOnlySpan<float>((float*)g + start, count);
                Span<float> t = stackalloc float[count];
                TensorPrimitives.Sigmoid(gs, t);
                TensorPrimitives.Multiply(t, gs, t);
                TensorPrimitives.Multiply(t, new ReadOnlySpan<float>((float*)u + start, count), new Span<float>((float*)o + start, count));
            });
        }
    }

    /// <summary>Runs <paramref name="body"/>(start, count) over chunks of at most ActivationChunk elements, in parallel when long.</summary>
    private static void ForChunks(int length, int costPerElement, int threads, Action<int, int> body)
    {
        int chunks = (length + ActivationChunk - 1) / ActivationChunk;
        void Chunk(int c)
        {
            int start = c * ActivationChunk;
            body(start, Math.Min(ActivationChunk, length - start));
        }
        For(chunks, (long)length * costPerElement, threads, Chunk);
    }

    private const double Sqrt1Over2 = 0.70710678118654752440;
    private const double OneOverSqrtPi = 0.56418958354775628695;

    // Cody's coefficients. erf(x) = x·A(x²)/B(x²) for |x| ≤ 0.5 (threshold 0.46875);
    // erfc(x) = exp(−x²)·C(x)/D(x) for 0.46875 < x ≤ 4; erfc(x) = exp(−x²)/x·(1/√π + P(1/x²)/Q(1/x²)/x²) beyond.
    private static ReadOnlySpan<double> ErfA => [3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03, 1.85777706184603153e-1];
    private static ReadOnlySpan<double> ErfB => [2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03];
    private static ReadOnlySpan<double> ErfC => [5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
        8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8];
    private static ReadOnlySpan<double> ErfD => [1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
        3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03];
    private static ReadOnlySpan<double> ErfP => [3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
        6.58749161529837803e-4, 1.63153871373020978e-2];
    private static ReadOnlySpan<double> ErfQ => [2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
        2.33520497626869185e-3];

    /// <summary>The error function, relative error below 1e-15 (W. J. Cody's rational approximations).</summary>
    internal static double Erf(double x)
    {
        double y = Math.Abs(x);
        if (y <= 0.46875) return x * SmallArgumentRatio(y);
        double r = 1.0 - ErfcPositive(y);
        return x < 0 ? -r : r;
    }

    /// <summary>The complementary error function 1 − erf(x), with relative accuracy kept in the upper tail.</summary>
    internal static double Erfc(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        double y = Math.Abs(x);
        if (y <= 0.46875) return 1.0 - x * SmallArgumentRatio(y);
        double r = ErfcPositive(y);
        return x < 0 ? 2.0 - r : r;
    }

    /// <summary>erf(y)/y for |y| ≤ 0.46875.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double SmallArgumentRatio(double y)
    {
        var a = ErfA;
        var b = ErfB;
        double z = y * y;
        double num = a[4] * z, den = z;
        for (int i = 0; i < 3; i++)
        {
            num = (num + a[i]) * z;
            den = (den + b[i]) * z;
        }
        return (num + a[3]) / (den + b[3]);
    }

    /// <summary>erfc(y) for y &gt; 0.46875.</summary>
    private static double ErfcPositive(double y)
    {
        double r;
        if (y <= 4.0)
        {
            var c = ErfC;
            var d = ErfD;
            double num = c[8] * y, den = y;
            for (int i = 0; i < 7; i++)
            {
                num = (num + c[i]) * y;
                den = (den + d[i]) * y;
            }
            r = (num + c[7]) / (den + d[7]);
        }
        else
        {
            if (y >= 27.3) return 0.0; // erfc(27.3) < 5e-326: below the smallest double
            var p = ErfP;
            var q = ErfQ;
            double z = 1.0 / (y * y);
            double num = p[5] * z, den = z;
            for (int i = 0; i < 4; i++)
            {
                num = (num + p[i]) * z;
                den = (den + q[i]) * z;
            }
            r = (OneOverSqrtPi - z * (num + p[4]) / (den + q[4])) / y;
        }
        // exp(−y²) with y² split as ys² + (y − ys)(y + ys), ys = y rounded down to 1/16: y² itself would
        // carry a rounding error that exp magnifies by y² (Cody's device).
        double ys = Math.Floor(y * 16.0) / 16.0;
        double del = (y - ys) * (y + ys);
        return Math.Exp(-ys * ys) * Math.Exp(-del) * r;
    }
}
