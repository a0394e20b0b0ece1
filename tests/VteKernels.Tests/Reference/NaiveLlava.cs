// A deliberately naive float64 forward pass of a HF LlavaForConditionalGeneration model (CLIP vision
// tower, two-layer GELU projector, LLaMA), written with plain loops and its own weight reading so that it
// can serve as an independent oracle for the library's engine. Only LlavaConfig is shared with the
// library, for the model's shape. Speed is no concern: the models it runs are tiny.
using VteKernels.Models;

namespace VteKernels.Tests.Reference;

/// <summary>Reference LLaVA forward pass in double precision.</summary>
internal sealed class NaiveLlava
{
    /// <summary>Outputs of one forward pass.</summary>
    /// <param name="Logits">[seq, vocab], row-major.</param>
    /// <param name="HiddenStates">
    /// As HF returns them, L + 1 arrays for L decoder layers: index 0 = embeddings after the image merge,
    /// index i (0 &lt; i &lt; L) = output of decoder layer i - 1 (layers counted from 0), and index L = the
    /// final RMSNorm of the last layer's output. Each [seq, hidden], row-major.
    /// </param>
    /// <param name="ImageFeatures">Projector output of every image, concatenated: [images * tokensPerImage, hidden].</param>
    public sealed record Result(double[] Logits, double[][] HiddenStates, double[] ImageFeatures);

    private readonly NaiveSafetensors _w;
    private readonly string _vision;    // prefix of the CLIP tensors
    private readonly string _projector; // prefix of the projector tensors
    private readonly string _text;      // prefix of the LLaMA body tensors (embed_tokens, layers, norm)
    private readonly NaiveTensor _lmHead;

    /// <summary>The model's shape.</summary>
    public LlavaConfig Config { get; }

    /// <summary>Loads config.json and model.safetensors from a model directory (transformers 4.x or 5.x names).</summary>
    public NaiveLlava(string modelDir)
    {
        Config = LlavaConfig.Load(Path.Combine(modelDir, "config.json"));
        _w = NaiveSafetensors.Read(Path.Combine(modelDir, "model.safetensors"));
        if (_w.Has("language_model.model.embed_tokens.weight"))
        {
            // transformers 4.x (llava-hf) layout
            _vision = "vision_tower.vision_model.";
            _projector = "multi_modal_projector.";
            _text = "language_model.model.";
        }
        else if (_w.Has("model.language_model.embed_tokens.weight"))
        {
            // transformers 5.x layout
            _vision = "model.vision_tower.vision_model.";
            _projector = "model.multi_modal_projector.";
            _text = "model.language_model.";
        }
        else
        {
            throw new InvalidDataException($"{modelDir}: no embed_tokens tensor under either known naming layout");
        }

        if (_w.Has("language_model.lm_head.weight")) _lmHead = _w.Get("language_model.lm_head.weight");
        else if (_w.Has("lm_head.weight")) _lmHead = _w.Get("lm_head.weight");
        else if (Config.Text.TieWordEmbeddings) _lmHead = _w.Get(_text + "embed_tokens.weight");
        else throw new InvalidDataException($"{modelDir}: no lm_head weight and tie_word_embeddings is false");
    }

    // ------------------------------------------------------------------------------------------------
    // Vision tower
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// CLIP hidden states for one image [3, S, S]: index 0 = embeddings after pre_layrnorm, index i =
    /// output of encoder layer i - 1. NumLayers + 1 arrays, each [tokens, hidden] row-major.
    /// </summary>
    public double[][] VisionHiddenStates(float[] pixels)
    {
        var v = Config.Vision;
        int d = v.HiddenSize, p = v.PatchSize, side = v.PatchesPerSide, s = v.ImageSize, c = v.NumChannels;
        int n = v.NumPositions;
        if (pixels.Length != c * s * s)
            throw new ArgumentException($"pixels has {pixels.Length} values, expected {c}x{s}x{s}", nameof(pixels));
        string pre = _vision;
        double eps = Exact(v.LayerNormEps);

        // Patch convolution (kernel = stride = patch, no bias), class token first, then positions.
        var conv = W(pre + "embeddings.patch_embedding.weight"); // [d, c, p, p]
        var cls = W(pre + "embeddings.class_embedding");
        var pos = W(pre + "embeddings.position_embedding.weight"); // [n, d]
        var x = new double[n * d];
        for (int j = 0; j < d; j++) x[j] = cls[j];
        for (int py = 0; py < side; py++)
            for (int px = 0; px < side; px++)
            {
                int t = 1 + py * side + px;
                for (int o = 0; o < d; o++)
                {
                    double acc = 0;
                    for (int ch = 0; ch < c; ch++)
                        for (int ky = 0; ky < p; ky++)
                            for (int kx = 0; kx < p; kx++)
                                acc += conv[((o * c + ch) * p + ky) * p + kx]
                                     * pixels[(ch * s + py * p + ky) * s + px * p + kx];
                    x[t * d + o] = acc;
                }
            }
        for (int i = 0; i < n * d; i++) x[i] += pos[i];
        x = LayerNorm(x, n, d, W(pre + "pre_layrnorm.weight"), W(pre + "pre_layrnorm.bias"), eps);

        var states = new double[v.NumLayers + 1][];
        states[0] = x;
        for (int l = 0; l < v.NumLayers; l++)
        {
            string lp = $"{pre}encoder.layers.{l}.";
            var h = LayerNorm(x, n, d, W(lp + "layer_norm1.weight"), W(lp + "layer_norm1.bias"), eps);
            var q = Linear(h, n, d, lp + "self_attn.q_proj");
            var k = Linear(h, n, d, lp + "self_attn.k_proj");
            var val = Linear(h, n, d, lp + "self_attn.v_proj");
            var a = Attention(q, k, val, n, v.NumHeads, v.NumHeads, v.HeadDim, (_, _) => true);
            var o = Linear(a, n, d, lp + "self_attn.out_proj");
            x = Add(x, o);

            h = LayerNorm(x, n, d, W(lp + "layer_norm2.weight"), W(lp + "layer_norm2.bias"), eps);
            var f = Linear(h, n, d, lp + "mlp.fc1");
            for (int i = 0; i < f.Length; i++)
                f[i] = v.HiddenAct == "quick_gelu" ? f[i] * Sigmoid(1.702 * f[i]) : Gelu(f[i]);
            var m = Linear(f, n, v.IntermediateSize, lp + "mlp.fc2");
            x = Add(x, m);
            states[l + 1] = x;
        }
        return states;
    }

    /// <summary>Projector output for one image [3, S, S]: [TokensPerImage, text hidden] row-major.</summary>
    public double[] ImageFeatures(float[] pixels)
    {
        var sel = RawFeatures(pixels);
        int tokens = Config.TokensPerImage, width = sel.Length / tokens;
        var h = Linear(sel, tokens, width, _projector + "linear_1");
        for (int i = 0; i < h.Length; i++) h[i] = Gelu(h[i]);
        int mid = h.Length / tokens;
        return Linear(h, tokens, mid, _projector + "linear_2");
    }

    /// <summary>The selected vision features of one image before the projector: [TokensPerImage, feature width].</summary>
    public double[] RawFeatures(float[] pixels)
    {
        var v = Config.Vision;
        var states = VisionHiddenStates(pixels);
        var layers = Config.FeatureHiddenStateIndices;
        int d = v.HiddenSize, n = v.NumPositions;
        int skip = Config.VisionFeatureSelectStrategy == "full" ? 0 : 1;
        int tokens = n - skip, width = d * layers.Count;

        var sel = new double[tokens * width];
        for (int t = 0; t < tokens; t++)
            for (int li = 0; li < layers.Count; li++)
                Array.Copy(states[layers[li]], (t + skip) * d, sel, t * width + li * d, d);
        return sel;
    }

    // ------------------------------------------------------------------------------------------------
    // Language model
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// Full forward pass. Image tokens (config.ImageTokenIndex) are replaced, in order, by the features of
    /// the images: the first TokensPerImage of them by image 0, the next by image 1, and so on (HF's
    /// masked_scatter), so the prompt must hold exactly images.Count * TokensPerImage image tokens.
    /// </summary>
    public Result Forward(int[] inputIds, IReadOnlyList<float[]> images) => Forward(inputIds, images, null, null);

    /// <summary>
    /// Forward pass with a per-layer attention mask: key k is seen by query q in layer l only when k &lt;= q and
    /// <paramref name="visible"/>(l, q, k). <paramref name="probe"/>, when given, receives every attention
    /// probability row (layer, head, query, probabilities over all keys).
    /// </summary>
    public Result Forward(int[] inputIds, IReadOnlyList<float[]> images, Func<int, int, int, bool>? visible, Action<int, int, int, double[]>? probe) =>
        Forward(inputIds, images, new Variant { Visible = visible, Probe = probe });

    /// <summary>
    /// The methods that change the layer computation, written straight from their definitions:
    /// <see cref="Visible"/>(layer, query, key) masks attention (on top of causality); a <see cref="Frozen"/>(layer, row)
    /// row issues no query and skips the FFN, keeping its input state (NAAViT); a <see cref="SkipAttention"/> layer
    /// has no attention block; <see cref="Adapters"/> are EAS's PIA adapters in their convolution form (a grouped
    /// 1x1 convolution applied channel group by channel group), whose per-sequence means run over the first
    /// <see cref="StatRows"/> rows (the prefill).
    /// </summary>
    public sealed record Variant
    {
        public Func<int, int, int, bool>? Visible { get; init; }
        public Action<int, int, int, double[]>? Probe { get; init; }
        public Func<int, int, bool>? Frozen { get; init; }
        public Func<int, bool>? SkipAttention { get; init; }
        public IReadOnlyDictionary<int, VteKernels.Engine.Eas.PiaAdapter>? Adapters { get; init; }
        public int StatRows { get; init; }

        /// <summary>A KV cache's storage rounding, applied to every key (after RoPE) and value element before attention.</summary>
        public Func<double, double>? RoundKv { get; init; }

        /// <summary>SAISA: per decoder layer (W1 [d, f], b1, W2 [d, d], b2); before each layer the image rows become GELU-MLP(raw features).</summary>
        public IReadOnlyList<(float[] W1, float[] B1, float[] W2, float[] B2)>? Saisa { get; init; }

        internal double[]? SaisaRaw { get; init; }
        internal int[]? SaisaRows { get; init; }
    }

    /// <summary>Forward pass with the methods of <paramref name="variant"/>.</summary>
    public Result Forward(int[] inputIds, IReadOnlyList<float[]> images, Variant variant)
    {
        var visible = variant.Visible;
        var probe = variant.Probe;
        var t = Config.Text;
        int n = inputIds.Length, d = t.HiddenSize, per = Config.TokensPerImage;

        var feats = new double[images.Count * per * d];
        for (int k = 0; k < images.Count; k++)
        {
            var f = ImageFeatures(images[k]);
            Array.Copy(f, 0, feats, k * per * d, per * d);
        }

        var embed = W(_text + "embed_tokens.weight");
        var x = new double[n * d];
        int imageRow = 0;
        for (int i = 0; i < n; i++)
        {
            int id = inputIds[i];
            if (id == Config.ImageTokenIndex)
            {
                if (imageRow >= images.Count * per)
                    throw new ArgumentException($"more image tokens than {images.Count} image(s) of {per} tokens", nameof(inputIds));
                Array.Copy(feats, imageRow * d, x, i * d, d);
                imageRow++;
            }
            else
            {
                if (id < 0 || id >= t.VocabSize) throw new ArgumentOutOfRangeException(nameof(inputIds), $"token {id} outside vocabulary");
                Array.Copy(embed, id * d, x, i * d, d);
            }
        }
        if (imageRow != images.Count * per)
            throw new ArgumentException($"{imageRow} image tokens for {images.Count} image(s) of {per} tokens", nameof(inputIds));

        if (variant.Saisa is not null)
        {
            var raw = images.SelectMany(RawFeatures).ToArray();
            var rows = Enumerable.Range(0, n).Where(i => inputIds[i] == Config.ImageTokenIndex).ToArray();
            variant = variant with { SaisaRaw = raw, SaisaRows = rows };
        }
        return RunDecoder(x, n, feats, (l, q, k) => k <= q && (visible?.Invoke(l, q, k) ?? true), probe, variant);
    }

    /// <summary>The LLaMA decoder on merged embeddings; <paramref name="visible"/>(query, key) is the attention mask.</summary>
    private Result RunDecoder(double[] x, int n, double[] feats, Func<int, int, int, bool> visible, Action<int, int, int, double[]>? probe, Variant variant)
    {
        var t = Config.Text;
        int d = t.HiddenSize, hd = t.HeadDim;
        double eps = Exact(t.RmsNormEps);

        var hidden = new double[t.NumLayers + 1][];
        hidden[0] = x;
        for (int l = 0; l < t.NumLayers; l++)
        {
            string lp = $"{_text}layers.{l}.";
            int layer = l;
            if (variant.Saisa is { } saisa)
            {
                var (w1, b1, w2, b2) = saisa[l];
                int rowsImg = variant.SaisaRows!.Length, f = variant.SaisaRaw!.Length / rowsImg;
                for (int r = 0; r < rowsImg; r++)
                {
                    var hid = new double[d];
                    for (int o = 0; o < d; o++)
                    {
                        double acc = b1[o];
                        for (int i = 0; i < f; i++) acc += (double)w1[o * f + i] * variant.SaisaRaw[r * f + i];
                        hid[o] = Gelu(acc);
                    }
                    for (int o = 0; o < d; o++)
                    {
                        double acc = b2[o];
                        for (int i = 0; i < d; i++) acc += (double)w2[o * d + i] * hid[i];
                        x[variant.SaisaRows[r] * d + o] = acc;
                    }
                }
            }
            bool frozenAny = variant.Frozen is not null;
            bool Frozen(int row) => variant.Frozen?.Invoke(layer, row) ?? false;
            var adapter = variant.Adapters?.GetValueOrDefault(l);
            bool skip = variant.SkipAttention?.Invoke(l) ?? false;
            var h = RmsNorm(x, n, d, W(lp + "input_layernorm.weight"), eps);
            if (!skip)
            {
                if (adapter is not null) h = Pia(adapter, h, n, d, variant.StatRows);
                var q = Linear(h, n, d, lp + "self_attn.q_proj");
                var k = Linear(h, n, d, lp + "self_attn.k_proj");
                var v = Linear(h, n, d, lp + "self_attn.v_proj");
                Rope(q, n, t.NumHeads, hd, t.RopeTheta);
                Rope(k, n, t.NumKvHeads, hd, t.RopeTheta);
                if (variant.RoundKv is { } round)
                    for (int i = 0; i < k.Length; i++) { k[i] = round(k[i]); v[i] = round(v[i]); }
                var a = Attention(q, k, v, n, t.NumHeads, t.NumKvHeads, hd, (qi, kj) => visible(layer, qi, kj),
                    probe is null ? null : (h, qi, p) => probe(layer, h, qi, p));
                var o = Linear(a, n, t.QDim, lp + "self_attn.o_proj");
                if (frozenAny)
                    for (int r = 0; r < n; r++) if (Frozen(r)) Array.Clear(o, r * d, d);
                x = Add(x, o);
            }

            var gammaPost = W(lp + "post_attention_layernorm.weight");
            if (skip && adapter is not null)
            {
                h = Pia(adapter, RmsNorm(x, n, d, W(lp + "input_layernorm.weight"), eps), n, d, variant.StatRows);
                for (int i = 0; i < h.Length; i++) h[i] *= gammaPost[i % d];
            }
            else
            {
                h = RmsNorm(x, n, d, gammaPost, eps);
            }
            var gate = Linear(h, n, d, lp + "mlp.gate_proj");
            var up = Linear(h, n, d, lp + "mlp.up_proj");
            for (int i = 0; i < gate.Length; i++) gate[i] = gate[i] * Sigmoid(gate[i]) * up[i];
            var ffn = Linear(gate, n, t.IntermediateSize, lp + "mlp.down_proj");
            if (frozenAny)
                for (int r = 0; r < n; r++) if (Frozen(r)) Array.Clear(ffn, r * d, d);
            x = Add(x, ffn);

            if (l + 1 < t.NumLayers) hidden[l + 1] = x;
        }
        x = RmsNorm(x, n, d, W(_text + "norm.weight"), eps);
        hidden[t.NumLayers] = x;

        var logits = new double[n * t.VocabSize];
        var head = _lmHead.Data;
        for (int i = 0; i < n; i++)
            for (int o = 0; o < t.VocabSize; o++)
            {
                double acc = 0;
                for (int j = 0; j < d; j++) acc += x[i * d + j] * head[o * d + j];
                logits[i * t.VocabSize + o] = acc;
            }
        return new Result(logits, hidden, feats);
    }

    // ------------------------------------------------------------------------------------------------
    // Building blocks, all on row-major [rows, cols] double arrays
    // ------------------------------------------------------------------------------------------------

    private double[] W(string name) => _w.Get(name).Data;

    /// <summary>y = x W^T + b for the linear layer named <paramref name="prefix"/> (weight [out, in], optional bias).</summary>
    private double[] Linear(double[] x, int rows, int inDim, string prefix)
    {
        var wt = _w.Get(prefix + ".weight");
        if (wt.Shape.Length != 2 || wt.Shape[1] != inDim)
            throw new InvalidDataException($"{prefix}.weight has shape [{string.Join(",", wt.Shape)}], expected [*, {inDim}]");
        int outDim = wt.Shape[0];
        double[]? bias = _w.Has(prefix + ".bias") ? W(prefix + ".bias") : null;
        var y = new double[rows * outDim];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outDim; o++)
            {
                double acc = bias?[o] ?? 0;
                for (int i = 0; i < inDim; i++) acc += x[r * inDim + i] * wt.Data[o * inDim + i];
                y[r * outDim + o] = acc;
            }
        return y;
    }

    /// <summary>
    /// A PIA adapter in its convolution form: x_ = A h + a (before attention) or 0.5 (C h + c + mean of (A h + a))
    /// (in place of attention), then h + s (w0 (B * x_ + b) + w1 (D * x_ + dbias)) with grouped B, D and
    /// w = softmax((E mean(h) + e) / t); means over the first <paramref name="statRows"/> rows.
    /// </summary>
    private static double[] Pia(VteKernels.Engine.Eas.PiaAdapter p, double[] h, int n, int d, int statRows)
    {
        int hw = p.HiddenDim, go = d / p.Groups, gi = hw / p.Groups;
        if (statRows <= 0 || statRows > n) throw new ArgumentOutOfRangeException(nameof(statRows));
        double[] Conv(float[] w, float[] b, double[] input, int rows, int inDim, int outDim)
        {
            var y = new double[rows * outDim];
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < outDim; o++)
                {
                    double acc = b[o];
                    for (int i = 0; i < inDim; i++) acc += Exact(w[o * inDim + i]) * input[r * inDim + i];
                    y[r * outDim + o] = acc;
                }
            return y;
        }
        var mean = new double[d];
        for (int r = 0; r < statRows; r++) for (int j = 0; j < d; j++) mean[j] += h[r * d + j] / statRows;
        var z = new double[2];
        for (int k = 0; k < 2; k++)
        {
            double acc = p.ExpertBias is null ? 0 : Exact(p.ExpertBias[k]);
            for (int j = 0; j < d; j++) acc += Exact(p.Expert[k * d + j]) * mean[j];
            z[k] = acc / p.Temperature;
        }
        double w0 = 1 / (1 + Math.Exp(z[1] - z[0])), w1 = 1 - w0;
        var a = Conv(p.A, p.ABias, h, n, d, hw);
        double[] xs;
        if (p.C is null)
        {
            xs = a;
        }
        else
        {
            var g = new double[hw];
            for (int r = 0; r < statRows; r++) for (int j = 0; j < hw; j++) g[j] += a[r * hw + j] / statRows;
            var c = Conv(p.C, p.CBias!, h, n, d, hw);
            xs = new double[n * hw];
            for (int r = 0; r < n; r++) for (int j = 0; j < hw; j++) xs[r * hw + j] = 0.5 * (c[r * hw + j] + g[j]);
        }
        var y = new double[n * d];
        for (int r = 0; r < n; r++)
            for (int o = 0; o < d; o++)
            {
                int grp = o / go;
                double bAcc = p.BBias[o], dAcc = p.DBias[o];
                for (int j = 0; j < gi; j++)
                {
                    double xv = xs[r * hw + grp * gi + j];
                    bAcc += Exact(p.B[o * gi + j]) * xv;
                    dAcc += Exact(p.D[o * gi + j]) * xv;
                }
                y[r * d + o] = h[r * d + o] + p.Scale * (w0 * bAcc + w1 * dAcc);
            }
        return y;
    }

    private static double[] Add(double[] a, double[] b)
    {
        var y = new double[a.Length];
        for (int i = 0; i < a.Length; i++) y[i] = a[i] + b[i];
        return y;
    }

    private static double[] LayerNorm(double[] x, int rows, int d, double[] g, double[] b, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double mean = 0;
            for (int j = 0; j < d; j++) mean += x[r * d + j];
            mean /= d;
            double var = 0;
            for (int j = 0; j < d; j++) var += (x[r * d + j] - mean) * (x[r * d + j] - mean);
            var /= d;
            double inv = 1 / Math.Sqrt(var + eps);
            for (int j = 0; j < d; j++) y[r * d + j] = (x[r * d + j] - mean) * inv * g[j] + b[j];
        }
        return y;
    }

    private static double[] RmsNorm(double[] x, int rows, int d, double[] g, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double ms = 0;
            for (int j = 0; j < d; j++) ms += x[r * d + j] * x[r * d + j];
            ms /= d;
            double inv = 1 / Math.Sqrt(ms + eps);
            for (int j = 0; j < d; j++) y[r * d + j] = x[r * d + j] * inv * g[j];
        }
        return y;
    }

    /// <summary>
    /// Rotary embedding in place, HF rotate_half convention: dimension i pairs with i + hd/2,
    /// inv_freq_i = theta^(-2i/hd), angle = position * inv_freq_i, positions 0..n-1.
    /// </summary>
    private static void Rope(double[] x, int n, int heads, int hd, double theta)
    {
        int half = hd / 2;
        for (int p = 0; p < n; p++)
            for (int h = 0; h < heads; h++)
            {
                int o = (p * heads + h) * hd;
                for (int i = 0; i < half; i++)
                {
                    double angle = p * Math.Pow(theta, -2.0 * i / hd);
                    double cos = Math.Cos(angle), sin = Math.Sin(angle);
                    double a = x[o + i], b = x[o + i + half];
                    x[o + i] = a * cos - b * sin;
                    x[o + i + half] = b * cos + a * sin;
                }
            }
    }

    /// <summary>
    /// Softmax attention: q [n, heads*hd], k and v [n, kvHeads*hd]; query head h reads kv head
    /// h / (heads / kvHeads); scale 1/sqrt(hd); key j is seen by query i only when visible(i, j).
    /// </summary>
    private static double[] Attention(double[] q, double[] k, double[] v, int n, int heads, int kvHeads, int hd,
        Func<int, int, bool> visible, Action<int, int, double[]>? probe = null)
    {
        int group = heads / kvHeads, qw = heads * hd, kw = kvHeads * hd;
        double scale = 1 / Math.Sqrt(hd);
        var y = new double[n * qw];
        var scores = new double[n];
        for (int h = 0; h < heads; h++)
        {
            int kh = h / group;
            for (int i = 0; i < n; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < n; j++)
                {
                    if (!visible(i, j)) { scores[j] = double.NegativeInfinity; continue; }
                    double s = 0;
                    for (int e = 0; e < hd; e++) s += q[i * qw + h * hd + e] * k[j * kw + kh * hd + e];
                    scores[j] = s * scale;
                    max = Math.Max(max, scores[j]);
                }
                double sum = 0;
                for (int j = 0; j < n; j++)
                {
                    scores[j] = visible(i, j) ? Math.Exp(scores[j] - max) : 0;
                    sum += scores[j];
                }
                for (int e = 0; e < hd; e++)
                {
                    double acc = 0;
                    for (int j = 0; j < n; j++) acc += scores[j] * v[j * kw + kh * hd + e];
                    y[i * qw + h * hd + e] = acc / sum;
                }
                if (probe is not null)
                {
                    var probs = new double[n];
                    for (int j = 0; j < n; j++) probs[j] = scores[j] / sum;
                    probe(h, i, probs);
                }
            }
        }
        return y;
    }

    private static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    /// <summary>Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).</summary>
    internal static double Gelu(double x) => 0.5 * x * (1 + Erf(x / Math.Sqrt(2)));

    /// <summary>
    /// The error function in double precision (~1e-16 absolute). For |x| &lt; 3 the all-positive series
    /// erf x = 2/sqrt(pi) e^(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)), which has no cancellation;
    /// for 3 &lt;= |x| &lt; 6 one minus the continued fraction of erfc; beyond that erfc is under 2e-17.
    /// </summary>
    internal static double Erf(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        if (x < 0) return -Erf(-x);
        if (x < 3)
        {
            double x2 = x * x, term = x, sum = x;
            for (int n = 1; n < 200; n++)
            {
                term *= 2 * x2 / (2 * n + 1);
                sum += term;
                if (term < 1e-17 * sum) break;
            }
            return 2 / Math.Sqrt(Math.PI) * Math.Exp(-x2) * sum;
        }
        if (x >= 6) return 1;
        // erfc x = e^(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))), evaluated from the tail.
        double f = x;
        for (int k = 120; k >= 1; k--) f = x + k / 2.0 / f;
        return 1 - Math.Exp(-x * x) / Math.Sqrt(Math.PI) / f;
    }

    /// <summary>
    /// A config value stored as float, widened to the double its decimal text denotes (1e-5f becomes 1e-5,
    /// as the Python float in the HF config), not to the float's own binary value.
    /// </summary>
    private static double Exact(float f) => double.Parse(f.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        System.Globalization.CultureInfo.InvariantCulture);
}
