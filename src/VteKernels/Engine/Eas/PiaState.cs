// The per-sequence side of the PIA adapters. At a sequence's first prefill each adapted layer measures the
// mean m of its normed input rows; from m follow the expert mix and (for an adapter standing in for attention)
// the global term g, so the adapter becomes the affine map y = M h + beta with
//   M = I + W_up Down,   beta = W_up downBias + upBias,
//   W_up = s (w0 B + w1 D) (block diagonal),  upBias = s (w0 b + w1 dbias),  w = softmax((E m + e) / t),
//   Down = A, downBias = a                          (before a kept attention block)
//   Down = 0.5 C, downBias = 0.5 (c + A m + a)      (in place of a skipped one; A m + a is the mean of A h + a)
// Two ways to run it, equal up to rounding:
//   explicit: y = h + W_up (Down h + downBias) + upBias, two thin matrix products per row (rank H);
//   folded:   the next projections absorb it, W' = W M (W diag(gamma) M for the FFN of a skipped layer,
//             gamma = the post-attention norm weight) with bias W beta (W (gamma * beta)), as EAS's
//             re-parameterised code does per request. Folding costs out x d x H multiply-adds per matrix once
//             per sequence and then nothing per token.
// The host math runs in float64 and the results are stored as float32 weights for the backend.
using System.Numerics.Tensors;
using VteKernels.Backends;

namespace VteKernels.Engine.Eas;

/// <summary>How PIA adapters run.</summary>
public enum PiaMode
{
    /// <summary>As low-rank operations beside the frozen weights (cheap to set up; two thin products per row).</summary>
    Explicit,

    /// <summary>Folded into the projections that read the adapter's output, once per sequence.</summary>
    Folded,
}

/// <summary>One layer's adapter resolved for one sequence (backend weights owned here).</summary>
internal sealed class PiaLayer : IDisposable
{
    private readonly List<DeviceWeight> _owned = [];

    /// <summary>Explicit path: down-projection [H, d] and bias, mixed up-projection [d, H] and bias.</summary>
    public DeviceWeight? Down, DownBias, Up, UpBias;

    /// <summary>Explicit path of a skipped layer: gamma_in * gamma_post, so RmsNorm with it gives gamma_post * h.</summary>
    public DeviceWeight? NormGamma;

    /// <summary>Folded path: projections with their biases (Q/K/V before attention, gate/up of the FFN in a skipped layer).</summary>
    public DeviceWeight? Q, QBias, K, KBias, V, VBias, Gate, GateBias, FfnUp, FfnUpBias;

    /// <summary>The expert mix w (for reports and tests).</summary>
    public double[] ExpertMix { get; init; } = [];

    /// <summary>Extra multiply-adds per row of the explicit path (2 d H).</summary>
    public long MacsPerRow { get; init; }

    public DeviceWeight Own(IBackend backend, string name, double[] values, params int[] shape)
    {
        var f = new float[values.Length];
        for (int i = 0; i < f.Length; i++) f[i] = (float)values[i];
        var w = backend.Upload(Weight.FromFloats(name, f, DType.F32, shape));
        _owned.Add(w);
        return w;
    }

    public void Dispose()
    {
        foreach (var w in _owned) w.Dispose();
        _owned.Clear();
    }
}

/// <summary>The resolved adapters of one sequence, by layer; filled layer by layer during its first prefill.</summary>
internal sealed class PiaSequence : IDisposable
{
    private readonly PiaLayer?[] _layers;

    public PiaSequence(int layers) => _layers = new PiaLayer?[layers];

    public PiaLayer? this[int layer] => _layers[layer];

    public void Set(int layer, PiaLayer value)
    {
        _layers[layer]?.Dispose();
        _layers[layer] = value;
    }

    public void Dispose()
    {
        for (int i = 0; i < _layers.Length; i++)
        {
            _layers[i]?.Dispose();
            _layers[i] = null;
        }
    }
}

/// <summary>The host math that turns an adapter and a sequence's mean input into M and beta.</summary>
internal static class PiaMath
{
    /// <summary>The affine map of <paramref name="a"/> for a sequence whose normed inputs average <paramref name="mean"/>.</summary>
    public static (double[] Mix, double[] Up, double[] UpBias, double[] Down, double[] DownBias) Resolve(PiaAdapter a, ReadOnlySpan<float> mean)
    {
        int d = a.ModelDim, h = a.HiddenDim, go = d / a.Groups, gi = h / a.Groups;
        // w = softmax((E m + e) / t)
        var z = new double[2];
        for (int k = 0; k < 2; k++)
        {
            double s = a.ExpertBias?[k] ?? 0;
            for (int j = 0; j < d; j++) s += (double)a.Expert[k * d + j] * mean[j];
            z[k] = s / a.Temperature;
        }
        double zmax = Math.Max(z[0], z[1]);
        double e0 = Math.Exp(z[0] - zmax), e1 = Math.Exp(z[1] - zmax);
        double w0 = e0 / (e0 + e1), w1 = e1 / (e0 + e1);

        var up = new double[d * h];   // block diagonal: output rows of group g read inputs [g gi, (g + 1) gi)
        var upBias = new double[d];
        for (int o = 0; o < d; o++)
        {
            int g = o / go;
            for (int j = 0; j < gi; j++)
                up[o * h + g * gi + j] = a.Scale * (w0 * a.B[o * gi + j] + w1 * a.D[o * gi + j]);
            upBias[o] = a.Scale * (w0 * a.BBias[o] + w1 * a.DBias[o]);
        }

        var down = new double[h * d];
        var downBias = new double[h];
        if (!a.ReplacesAttention)
        {
            for (int i = 0; i < down.Length; i++) down[i] = a.A[i];
            for (int i = 0; i < h; i++) downBias[i] = a.ABias[i];
        }
        else
        {
            for (int i = 0; i < down.Length; i++) down[i] = 0.5 * a.C![i];
            for (int r = 0; r < h; r++)
            {
                double g = a.ABias[r];   // the global term: mean of A h + a = A m + a
                for (int j = 0; j < d; j++) g += (double)a.A[r * d + j] * mean[j];
                downBias[r] = 0.5 * (a.CBias![r] + g);
            }
        }
        return ([w0, w1], up, upBias, down, downBias);
    }

    /// <summary>beta = up · downBias + upBias.</summary>
    public static double[] Beta(double[] up, double[] upBias, double[] downBias, int d, int h)
    {
        var beta = new double[d];
        for (int o = 0; o < d; o++)
        {
            double s = upBias[o];
            for (int j = 0; j < h; j++) s += up[o * h + j] * downBias[j];
            beta[o] = s;
        }
        return beta;
    }

    /// <summary>
    /// Folds into the projection <paramref name="w"/> [out, d]: W' = W diag(scale) M with M = I + up · down,
    /// and bias W (scale * beta). <paramref name="scale"/> null means ones.
    /// </summary>
    public static (double[] Weight, double[] Bias) Fold(Weight w, double[]? scale, double[] up, double[] down, double[] beta, int d, int h)
    {
        int rows = w.Rows;
        var folded = new double[rows * d];
        var bias = new double[rows];
        Parallel.For(0, rows, () => (Row: new float[d], Ws: new double[d], P: new double[h]), (r, _, buf) =>
        {
            w.RowsToFloat(r, buf.Row);
            var ws = buf.Ws;
            for (int j = 0; j < d; j++) ws[j] = scale is null ? buf.Row[j] : buf.Row[j] * scale[j];
            // p = ws · up [h]; folded row = ws + p · down
            var p = buf.P;
            Array.Clear(p);
            for (int j = 0; j < d; j++)
                if (ws[j] != 0) TensorPrimitives.MultiplyAdd(up.AsSpan(j * h, h), ws[j], p, p);
            bias[r] = TensorPrimitives.Dot<double>(ws, beta);
            var dst = folded.AsSpan(r * d, d);
            ws.CopyTo(dst);
            for (int k = 0; k < h; k++)
                if (p[k] != 0) TensorPrimitives.MultiplyAdd(down.AsSpan(k * d, d), p[k], dst, dst);
            return buf;
        }, _ => { });
        return (folded, bias);
    }
}
