// Plain reference versions of the small CPU ops (norms, RoPE, activations, embedding, patch embedding,
// attention, linear), float32 throughout.
using System.Numerics.Tensors;

namespace VteKernels.Backends.Cpu;

/// <summary>CPU reference ops.</summary>
public static unsafe partial class CpuOps
{
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
}
