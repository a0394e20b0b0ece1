// Random PIA adapters of the sizes the public EAS release trains (H = 128 before a kept attention block,
// 256 in place of a skipped one, groups = 2, s = 1, t = 10), for engine tests and benchmarks.
//
// Magnitudes follow the release's initialisation, but for a trained adapter: A, C, B and D are all
// xavier-uniform (the release starts B and D of one of the two adapter kinds at zero; a trained adapter's are
// not zero, and zeros would hide every bug in the up-projection). Conv biases, zero at initialisation, get
// std 0.02. The router E uses std 1/sqrt(d), so with t = 10 the expert weights sit near 0.5 but differ per
// sequence; as in the release, only adapters that replace attention have a router bias. For d = 4096 and
// H = 128 the adapter moves its input by about 0.17x its RMS (from the variances: A h has 1.4x the input's
// RMS, each expert's B u 0.25x, their mix at w ~ 0.5 0.17x): a visible change, not a takeover.
//
// Values come from SyntheticModel's counter-based generator keyed by (seed, tensor name), so an adapter
// does not depend on which other layers were generated.
using VteKernels.Engine.Eas;
using VteKernels.Models;

namespace VteKernels.Synth;

/// <summary>Random EAS configurations for tests and benchmarks.</summary>
public static class SyntheticEas
{
    /// <summary>The release's width of the adapter before a kept attention block.</summary>
    public const int PublicAdapterDim = 128;

    /// <summary>The release's width of the adapter that replaces a skipped attention block (256 for ScienceQA; some LLaVA-1.5 scripts use 128).</summary>
    public const int PublicReplacedDim = 256;

    /// <summary>
    /// One adapter per decoder layer, as a fine-tuned EAS checkpoint holds them: a before-attention adapter
    /// (A, B, D, router without bias) in kept layers, an attention-replacing one (A, C, B, D, router with bias)
    /// in <paramref name="skippedLayers"/>.
    /// </summary>
    /// <param name="numLayers">Decoder layers of the model.</param>
    /// <param name="modelDim">The model's hidden size d (divisible by <paramref name="groups"/>).</param>
    /// <param name="skippedLayers">Layers whose attention is skipped.</param>
    /// <param name="seed">Seed; the same seed gives the same adapters.</param>
    /// <param name="adapterDim">Width H of the before-attention adapters.</param>
    /// <param name="replacedDim">Width H of the attention-replacing adapters.</param>
    /// <param name="groups">Groups of B and D.</param>
    /// <param name="scale">Output scale s.</param>
    /// <param name="temperature">Router temperature t.</param>
    /// <exception cref="ArgumentException">Sizes that do not fit, or a skipped layer outside 0..numLayers-1.</exception>
    public static EasAdapters Adapters(int numLayers, int modelDim, IReadOnlyList<int> skippedLayers, ulong seed,
        int adapterDim = PublicAdapterDim, int replacedDim = PublicReplacedDim, int groups = 2, float scale = 1f, float temperature = 10f)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(numLayers);
        ArgumentNullException.ThrowIfNull(skippedLayers);
        if (skippedLayers.Any(l => l < 0 || l >= numLayers))
            throw new ArgumentException($"skipped layers {string.Join(",", skippedLayers)} are not all in 0..{numLayers - 1}", nameof(skippedLayers));
        var skipped = skippedLayers.ToHashSet();
        var adapters = new List<PiaAdapter>(numLayers);
        for (int l = 0; l < numLayers; l++)
        {
            bool replaces = skipped.Contains(l);
            int d = modelDim, h = replaces ? replacedDim : adapterDim, hg = h / Math.Max(1, groups);
            adapters.Add(new PiaAdapter
            {
                Layer = l, ModelDim = d, HiddenDim = h, Groups = groups,
                A = Uniform("A", h * d, Xavier(d, h)),
                ABias = Uniform("A_bias", h, 0.02f),
                C = replaces ? Uniform("C", h * d, Xavier(d, h)) : null,
                CBias = replaces ? Uniform("C_bias", h, 0.02f) : null,
                B = Uniform("B", d * hg, Xavier(hg, d)),
                BBias = Uniform("B_bias", d, 0.02f),
                D = Uniform("D", d * hg, Xavier(hg, d)),
                DBias = Uniform("D_bias", d, 0.02f),
                Expert = Uniform("expert", 2 * d, 1f / MathF.Sqrt(d)),
                ExpertBias = replaces ? Uniform("expert_bias", 2, 1f / MathF.Sqrt(d)) : null,
                Scale = scale, Temperature = temperature,
            });

            float[] Uniform(string param, int n, float std)
            {
                var v = new float[n];
                SyntheticModel.Fill(v, new SyntheticModel.Init(0f, std), seed, SyntheticModel.Fnv1a($"eas.{l}.{param}"), 0);
                return v;
            }
        }
        return new EasAdapters(skippedLayers, adapters, $"synthetic EAS adapters, seed {seed}");

        static float Xavier(int fanIn, int fanOut) => MathF.Sqrt(2f / (fanIn + fanOut));
    }

    /// <summary>One adapter per decoder layer of <paramref name="text"/>'s model; see the other overload.</summary>
    public static EasAdapters Adapters(TextConfig text, IReadOnlyList<int> skippedLayers, ulong seed,
        int adapterDim = PublicAdapterDim, int replacedDim = PublicReplacedDim, int groups = 2, float scale = 1f, float temperature = 10f)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Adapters(text.NumLayers, text.HiddenSize, skippedLayers, seed, adapterDim, replacedDim, groups, scale, temperature);
    }
}
