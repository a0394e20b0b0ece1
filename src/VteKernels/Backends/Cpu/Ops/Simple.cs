// Plain reference versions of the small CPU ops (norms, RoPE, activations, embedding, patch embedding,
// attention, linear), float32 throughout.
using System.Numerics.Tensors;

namespace VteKernels.Backends.Cpu;

/// <summary>CPU reference ops.</summary>
public static unsafe partial class CpuOps
{
    /// <summary>y = x Wᵀ + bias.</summary>
    public static void Linear(ReadOnlySpan<float> x, int n, Weight w, Weight? bias, Span<float> y)
    {
        int inF = w.Cols, outF = w.Rows;
        if (x.Length != n * inF) throw new ArgumentException("x", nameof(x));
        if (y.Length != n * outF) throw new ArgumentException("y", nameof(y));
        var b = bias?.ToFloatArray();
        fixed (float* px = x, py = y)
        {
            float* xp = px, yp = py;
            Parallel.For(0, (outF + 31) / 32, blk =>
            {
                var row = new float[inF];
                var xs = new ReadOnlySpan<float>(xp, n * inF);
                for (int o = blk * 32; o < Math.Min(outF, blk * 32 + 32); o++)
                {
                    w.RowsToFloat(o, row);
                    for (int i = 0; i < n; i++)
                        yp[(long)i * outF + o] = TensorPrimitives.Dot(xs.Slice(i * inF, inF), row) + (b is null ? 0 : b[o]);
                }
            });
        }
    }

    /// <summary>RMSNorm.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, int n, Weight gamma, float eps, Span<float> y)
    {
        var g = gamma.ToFloatArray();
        int d = g.Length;
        for (int i = 0; i < n; i++)
        {
            var xr = x.Slice(i * d, d);
            float ss = TensorPrimitives.SumOfSquares(xr);
            float inv = 1f / MathF.Sqrt(ss / d + eps);
            var yr = y.Slice(i * d, d);
            TensorPrimitives.Multiply(xr, inv, yr);
            TensorPrimitives.Multiply(yr, g, yr);
        }
    }

    /// <summary>LayerNorm.</summary>
    public static void LayerNorm(ReadOnlySpan<float> x, int n, Weight gamma, Weight beta, float eps, Span<float> y)
    {
        var g = gamma.ToFloatArray();
        var b = beta.ToFloatArray();
        int d = g.Length;
        for (int i = 0; i < n; i++)
        {
            var xr = x.Slice(i * d, d);
            float mean = TensorPrimitives.Sum(xr) / d;
            float v = 0;
            for (int j = 0; j < d; j++) v += (xr[j] - mean) * (xr[j] - mean);
            float inv = 1f / MathF.Sqrt(v / d + eps);
            var yr = y.Slice(i * d, d);
            for (int j = 0; j < d; j++) yr[j] = (xr[j] - mean) * inv * g[j] + b[j];
        }
    }

    /// <summary>RoPE, rotate_half convention.</summary>
    public static void Rope(Span<float> x, int n, int heads, int headDim, ReadOnlySpan<int> positions, float theta)
    {
        int half = headDim / 2;
        var inv = new float[half];
        for (int i = 0; i < half; i++) inv[i] = 1f / MathF.Pow(theta, 2 * i / (float)headDim);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < half; i++)
            {
                float ang = inv[i] * positions[t];
                float c = (float)Math.Cos(ang), s = (float)Math.Sin(ang);
                for (int h = 0; h < heads; h++)
                {
                    int o = (t * heads + h) * headDim;
                    float a = x[o + i], bb = x[o + i + half];
                    x[o + i] = a * c - bb * s;
                    x[o + i + half] = bb * c + a * s;
                }
            }
    }

    /// <summary>QuickGELU in place.</summary>
    public static void QuickGelu(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = x[i] / (1f + MathF.Exp(-1.702f * x[i]));
    }

    /// <summary>Exact GELU in place.</summary>
    public static void Gelu(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = (float)(0.5 * x[i] * (1 + Erf(x[i] / Math.Sqrt(2))));
    }

    private static double Erf(double x)
    {
        if (Math.Abs(x) > 6) return Math.Sign(x);
        if (Math.Abs(x) < 2.5)
        {
            double sum = 0, term = x;
            for (int k = 0; k < 80; k++) { sum += term / (2 * k + 1); term *= -x * x / (k + 1); }
            return 2 / Math.Sqrt(Math.PI) * sum;
        }
        double ax = Math.Abs(x), f = 0;
        for (int k = 60; k >= 1; k--) f = k / 2.0 / (ax + f);
        return Math.Sign(x) * (1 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / (ax + f));
    }

    /// <summary>SwiGLU.</summary>
    public static void SiluMul(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = gate[i] / (1f + MathF.Exp(-gate[i])) * up[i];
    }

    /// <summary>Embedding gather.</summary>
    public static void Embedding(Weight table, ReadOnlySpan<int> ids, Span<float> y)
    {
        int d = table.Cols;
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)table.Rows) throw new InvalidInputException($"token id {ids[i]} is outside the vocabulary of {table.Rows}");
            table.RowsToFloat(ids[i], y.Slice(i * d, d));
        }
    }

    /// <summary>Patch conv.</summary>
    public static void PatchEmbed(ReadOnlySpan<float> pixels, int channels, int height, int width, int patch, Weight conv, Span<float> y)
    {
        int ph = height / patch, pw = width / patch, k = channels * patch * patch;
        var cols = new float[ph * pw * k];
        for (int py = 0; py < ph; py++)
            for (int px = 0; px < pw; px++)
                for (int c = 0; c < channels; c++)
                    for (int ky = 0; ky < patch; ky++)
                        for (int kx = 0; kx < patch; kx++)
                            cols[(py * pw + px) * k + (c * patch + ky) * patch + kx] = pixels[(c * height + py * patch + ky) * width + px * patch + kx];
        Linear(cols, ph * pw, conv, null, y);
    }

    /// <summary>Attention.</summary>
    public static void Attention(ReadOnlySpan<float> q, int nq, int qHeads, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int nk, int kvHeads, int headDim, AttentionMask mask, Span<float> output)
    {
        int g = qHeads / kvHeads;
        float scale = 1f / MathF.Sqrt(headDim);
        var s = new float[nk];
        for (int h = 0; h < qHeads; h++)
        {
            int kh = h / g;
            for (int i = 0; i < nq; i++)
            {
                int visible = mask == AttentionMask.Causal ? nk - nq + i + 1 : nk;
                var qi = q.Slice((i * qHeads + h) * headDim, headDim);
                for (int j = 0; j < visible; j++) s[j] = TensorPrimitives.Dot(qi, k.Slice((j * kvHeads + kh) * headDim, headDim)) * scale;
                var sv = s.AsSpan(0, visible);
                float m = TensorPrimitives.Max(sv);
                float sum = 0;
                for (int j = 0; j < visible; j++) { sv[j] = MathF.Exp(sv[j] - m); sum += sv[j]; }
                var o = output.Slice((i * qHeads + h) * headDim, headDim);
                o.Clear();
                for (int j = 0; j < visible; j++)
                {
                    var vj = v.Slice((j * kvHeads + kh) * headDim, headDim);
                    for (int d = 0; d < headDim; d++) o[d] += sv[j] / sum * vj[d];
                }
            }
        }
    }
}
