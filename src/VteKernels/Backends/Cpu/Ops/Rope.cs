// CpuOps.Rope: rotary position embedding applied in place, in Hugging Face Llama's "rotate_half" layout:
// within each head, element i pairs with element i + headDim/2.
//
// The angles are computed exactly as HF's LlamaRotaryEmbedding does in float32 so that results match
// torch to ~1e-6 even at positions in the thousands, where the float32 rounding of the angle itself
// (about 2.4e-4 rad at position 4000) is far larger than that: inv_freq[i] = 1 / theta^(2i/headDim) in
// float32, angle = inv_freq[i] * (float)pos as one float32 product. cos and sin of that float angle are
// then evaluated in double and rounded once, which torch's float32 cos/sin approximate to an ulp.
// Nothing is cached between calls: the table costs headDim/2 cos/sin pairs per token, shared by all heads.
using System.Runtime.CompilerServices;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>
    /// Rotates x[n, heads, headDim] in place by the rotary embedding of each token's position: for
    /// i &lt; headDim/2, (x1, x2) = (x[i], x[i + headDim/2]) becomes (x1·cos − x2·sin, x2·cos + x1·sin) with
    /// angle = pos · theta^(−2i/headDim) computed in float32 as Hugging Face Llama does.
    /// </summary>
    /// <param name="x">Queries or keys, [n, heads, headDim], rotated in place.</param>
    /// <param name="n">Number of tokens.</param>
    /// <param name="heads">Heads per token.</param>
    /// <param name="headDim">Elements per head; even.</param>
    /// <param name="positions">Position of each token (n entries; gaps and any order allowed).</param>
    /// <param name="theta">Rotary base (10000 for LLaMA).</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    /// <exception cref="ArgumentException">A length disagrees, headDim is odd, or theta is not positive.</exception>
    public static void Rope(Span<float> x, int n, int heads, int headDim, ReadOnlySpan<int> positions, float theta, int threads = 0)
    {
        CheckNonNegative(n, nameof(n));
        CheckPositive(heads, nameof(heads));
        CheckPositive(headDim, nameof(headDim));
        if (headDim % 2 != 0) throw new ArgumentException($"headDim must be even, got {headDim}", nameof(headDim));
        if (!(theta > 0) || float.IsInfinity(theta)) throw new ArgumentOutOfRangeException(nameof(theta), theta, "must be a positive finite number");
        CheckLength(x.Length, (long)n * heads * headDim, nameof(x), $"[{n}, {heads}, {headDim}]");
        CheckLength(positions.Length, n, nameof(positions), $"[{n}]");
        if (n == 0) return;

        int half = headDim / 2;
        var invFreq = new float[half];
        for (int i = 0; i < half; i++) invFreq[i] = 1f / MathF.Pow(theta, (2 * i) / (float)headDim);

        fixed (float* px = x)
        fixed (int* pp = positions)
        {
            nint xp = (nint)px, pos = (nint)pp;
            void Token(int t, float* table)
            {
                float p = ((int*)pos)[t];
                for (int i = 0; i < half; i++)
                {
                    float angle = invFreq[i] * p;
                    table[i] = (float)Math.Cos(angle);
                    table[half + i] = (float)Math.Sin(angle);
                }
                float* row = (float*)xp + (long)t * heads * headDim;
                for (int h = 0; h < heads; h++, row += headDim) Rotate(row, table, half);
            }
            // cos/sin dominate: ~40 ns a pair, against ~1 ns per rotated element.
            For(n, (long)n * (half * 40 + heads * headDim), threads, t =>
            {
                var table = new float[headDim];
                fixed (float* pt = table) Token(t, pt);
            });
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rotate(float* head, float* table, int half)
    {
        for (int i = 0; i < half; i++)
        {
            float c = table[i], s = table[half + i];
            float x1 = head[i], x2 = head[half + i];
            head[i] = x1 * c - x2 * s;
            head[half + i] = x2 * c + x1 * s;
        }
    }
}
