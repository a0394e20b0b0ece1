// Hand-written backpropagation through one DyVTE router, and the AdamW update, on the host.
//   a = W1 x            W1 [H, 2d], x the gate input (2d)
//   h = gelu(a)         exact erf GELU, as ExitGate.Evaluate applies it
//   z = W2 h            W2 [2, H]; exit when z1 > z0
//   loss = -log softmax(z)[y]
// Backward: dz = softmax(z) - onehot(y); dW2 = dz hᵀ; dh = W2ᵀ dz; da = dh ⊙ gelu'(a); dW1 = da xᵀ, with
// gelu'(a) = Φ(a) + a φ(a). Weights and features are float32 (as the gate files store them); every sum is
// accumulated in float64 (rows widened, then TensorPrimitives' vectorized dot and multiply-add), so the
// gradient is exact to ~1e-15 relative against the float32 weights and a finite-difference check can be tight. Rows of W1 are independent, so the two passes over W1 (forward and
// dW1) run in parallel over rows when the gate is large; each row is summed by one thread in a fixed order,
// so the result does not depend on the thread count.
using System.Numerics.Tensors;
using VteKernels.Backends.Cpu;

namespace VteKernels.Engine.Exit;

internal static class GateBackprop
{
    private const double Sqrt1Over2 = 0.70710678118654752440;
    private const double InvSqrt2Pi = 0.39894228040143267794;

    /// <summary>Below this many W1 elements the row loops run on one thread (a parallel loop costs more than it saves).</summary>
    private const long ParallelElements = 1 << 18;

    /// <summary>gelu(a) = 0.5 · a · erfc(−a/√2) and its derivative Φ(a) + a φ(a).</summary>
    internal static (double Value, double Slope) Gelu(double a)
    {
        double cdf = 0.5 * CpuOps.Erfc(-a * Sqrt1Over2);
        return (a * cdf, cdf + a * InvSqrt2Pi * Math.Exp(-0.5 * a * a));
    }

    /// <summary>
    /// The summed loss of the pairs (<paramref name="features"/>[p], <paramref name="labels"/>[p]) and, into
    /// <paramref name="g1"/> [H, inputs] and <paramref name="g2"/> [2, H] (overwritten), the gradient of
    /// <paramref name="scale"/> · that sum. Also counts the pairs the gate gets right (exit when z1 &gt; z0).
    /// </summary>
    public static (double LossSum, int Correct) Gradient(ReadOnlySpan<float> w1, ReadOnlySpan<float> w2, int hidden, int inputs,
        IReadOnlyList<ReadOnlyMemory<float>> features, IReadOnlyList<int> labels, double scale, Span<double> g1, Span<double> g2)
    {
        if (w1.Length != hidden * inputs || w2.Length != 2 * hidden) throw new ArgumentException($"weights do not fit hidden {hidden} and {inputs} inputs");
        if (g1.Length != w1.Length || g2.Length != w2.Length) throw new ArgumentException("gradient buffers do not match the weights");
        if (features.Count != labels.Count) throw new ArgumentException("one label per feature vector");
        int n = features.Count;
        var da = new double[n * hidden];
        double lossSum = 0;
        int correct = 0;
        g2.Clear();
        var a = new double[hidden];
        var slope = new double[hidden];
        for (int p = 0; p < n; p++)
        {
            var x = features[p];
            if (x.Length != inputs) throw new ArgumentException($"feature {p} has {x.Length} values, expected {inputs}");
            Preactivations(w1, x, hidden, inputs, a);
            double z0 = 0, z1 = 0;
            for (int i = 0; i < hidden; i++)
            {
                var (h, s) = Gelu(a[i]);
                a[i] = h;
                slope[i] = s;
                z0 += w2[i] * h;
                z1 += w2[hidden + i] * h;
            }
            double m = Math.Max(z0, z1);
            double lse = m + Math.Log(Math.Exp(z0 - m) + Math.Exp(z1 - m));
            int y = labels[p];
            lossSum += lse - (y == 1 ? z1 : z0);
            if (z1 > z0 == (y == 1)) correct++;
            double p1 = Math.Exp(z1 - lse);
            double dz0 = scale * (1 - p1 - (y == 0 ? 1 : 0)), dz1 = scale * (p1 - (y == 1 ? 1 : 0));
            var dap = da.AsSpan(p * hidden, hidden);
            for (int i = 0; i < hidden; i++)
            {
                g2[i] += dz0 * a[i];
                g2[hidden + i] += dz1 * a[i];
                dap[i] = (w2[i] * dz0 + w2[hidden + i] * dz1) * slope[i];
            }
        }
        OuterSum(da, features, hidden, inputs, g1);
        return (lossSum, correct);
    }

    /// <summary>a[i] = Σ_j W1[i, j] · x[j], summed in float64 (each row widened into a per-thread buffer, then one vectorized dot).</summary>
    private static unsafe void Preactivations(ReadOnlySpan<float> w1, ReadOnlyMemory<float> x, int hidden, int inputs, double[] a)
    {
        var xd = new double[inputs];
        TensorPrimitives.ConvertChecked<float, double>(x.Span, xd);
        fixed (float* pw = w1)
        {
            nint w = (nint)pw;
            var rows = new ThreadLocal<double[]>(() => new double[inputs]);
            void Row(int i)
            {
                var row = rows.Value!;
                TensorPrimitives.ConvertChecked<float, double>(new ReadOnlySpan<float>((float*)w + (long)i * inputs, inputs), row);
                a[i] = TensorPrimitives.Dot<double>(row, xd);
            }
            if ((long)hidden * inputs < ParallelElements) for (int i = 0; i < hidden; i++) Row(i);
            else Parallel.For(0, hidden, Row);
            rows.Dispose();
        }
    }

    /// <summary>g1[i, j] = Σ_p da[p, i] · x_p[j].</summary>
    private static unsafe void OuterSum(double[] da, IReadOnlyList<ReadOnlyMemory<float>> features, int hidden, int inputs, Span<double> g1)
    {
        var xd = features.Select(f =>
        {
            var d = new double[inputs];
            TensorPrimitives.ConvertChecked<float, double>(f.Span, d);
            return d;
        }).ToArray();
        fixed (double* pg = g1)
        {
            nint g = (nint)pg;
            void Row(int i)
            {
                var row = new Span<double>((double*)g + (long)i * inputs, inputs);
                row.Clear();
                for (int p = 0; p < xd.Length; p++)
                    if (da[p * hidden + i] is var d and not 0) TensorPrimitives.MultiplyAdd(xd[p], d, row, row);
            }
            if ((long)hidden * inputs < ParallelElements) for (int i = 0; i < hidden; i++) Row(i);
            else Parallel.For(0, hidden, Row);
        }
    }

    /// <summary>
    /// One AdamW step as torch.optim.AdamW takes it (decoupled weight decay p ← p − lr·wd·p, then the Adam
    /// step with bias corrections for step <paramref name="t"/>, 1-based), in float64 on float32 storage.
    /// </summary>
    public static unsafe void AdamW(Span<float> p, Span<float> m, Span<float> v, ReadOnlySpan<double> g, double lr, double beta1, double beta2,
        double eps, double weightDecay, long t)
    {
        if (m.Length != p.Length || v.Length != p.Length || g.Length != p.Length) throw new ArgumentException("parameter, moments and gradient lengths differ");
        double bc1 = 1 - Math.Pow(beta1, t), sqrtBc2 = Math.Sqrt(1 - Math.Pow(beta2, t));
        double step = lr / bc1, decay = 1 - lr * weightDecay;
        fixed (float* pp = p, pm = m, pv = v)
        fixed (double* pg = g)
        {
            nint ap = (nint)pp, am = (nint)pm, av = (nint)pv, ag = (nint)pg;
            void Range(long start, long end)
            {
                float* P = (float*)ap, M = (float*)am, V = (float*)av;
                double* G = (double*)ag;
                for (long i = start; i < end; i++)
                {
                    double gi = G[i];
                    double mi = beta1 * M[i] + (1 - beta1) * gi;
                    double vi = beta2 * V[i] + (1 - beta2) * gi * gi;
                    M[i] = (float)mi;
                    V[i] = (float)vi;
                    P[i] = (float)(P[i] * decay - step * mi / (Math.Sqrt(vi) / sqrtBc2 + eps));
                }
            }
            const int Chunk = 1 << 16;
            long n = p.Length;
            if (n < ParallelElements) Range(0, n);
            else Parallel.For(0, (int)((n + Chunk - 1) / Chunk), c => Range((long)c * Chunk, Math.Min(n, (long)(c + 1) * Chunk)));
        }
    }
}
