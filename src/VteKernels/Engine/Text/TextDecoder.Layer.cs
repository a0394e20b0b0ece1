// One decoder layer's two halves for TextDecoder: attention (through the PIA adapter when EAS gives one,
// the K/V of every row into the cache, queries from the active rows only, the text-to-image attention mass
// when the exit run asks for it) and the SwiGLU FFN (or EAS's replacement in a skipped layer), and the
// per-sequence resolution of PIA adapters.
using VteKernels.Backends;
using VteKernels.Engine.Eas;

namespace VteKernels.Engine;

internal sealed partial class TextDecoder
{
    /// <summary>
    /// Attn(RmsNorm(x)) for one layer: project (through the PIA adapter when there is one), rotate, append every
    /// row's K/V to the cache, then the active rows' queries attend causally; returns their output rows.
    /// </summary>
    private Tensor SelfAttention(TextLayer w, Tensor x, (int Start, int Length)[] active, DecoderPass pass, int layer, PiaLayer? pia, ref long macs)
    {
        var t = _t;
        var run = pass.Exit;
        int n = x.Rows, nq = active.Sum(r => r.Length);
        bool all = IsAll(active, n);
        using var h = B.Allocate(n, t.HiddenSize);
        B.RmsNorm(x, w.InputNorm, t.RmsNormEps, h);
        using var adapted = pia?.Down is not null ? Adapt(h, pia) : null;   // y = M h + beta, explicitly
        var src = adapted ?? h;
        if (adapted is not null) macs += n * pia!.MacsPerRow;
        bool folded = pia?.Q is not null;
        using var k = B.Allocate(n, t.KvDim);
        using var v = B.Allocate(n, t.KvDim);
        using var q = B.Allocate(nq, t.QDim);
        var qTarget = new LinearTarget(folded ? pia!.Q! : w.Q!, folded ? pia!.QBias : null, q);
        var kTarget = new LinearTarget(folded ? pia!.K! : w.K!, folded ? pia!.KBias : null, k);
        var vTarget = new LinearTarget(folded ? pia!.V! : w.V!, folded ? pia!.VBias : null, v);
        using var qIn = all ? null : DropRows(src, run!.Spans);
        if (qIn is null) B.LinearMany(src, [qTarget, kTarget, vTarget]);   // one pass over the normed rows
        else
        {
            B.LinearMany(src, [kTarget, vTarget]);
            B.Linear(qIn, qTarget.Weight, qTarget.Bias, q);
        }
        B.Rope(k, t.NumKvHeads, t.HeadDim, pass.Positions, t.RopeTheta);
        pass.Cache.Append(layer, k, v);
        B.Rope(q, t.NumHeads, t.HeadDim, all ? pass.Positions : Keep(pass.Positions, run!.Spans), t.RopeTheta);
        using var a = B.Allocate(nq, t.QDim);
        var (keys, values) = pass.Cache.View(layer);
        long seen = 0;
        using (keys)
        using (values)
        {
            int cached = keys.Rows - n;   // keys before this step's rows
            pass.Observer?.Attention(layer, q, keys, cached);                                                  // observer: the probabilities
            if (all)
            {
                B.Attention(q, t.NumHeads, keys, values, t.NumKvHeads, t.HeadDim, AttentionMask.Causal, a);
                if (run is { WantsMass: true } && run.TextRows(n) is { Length: > 0 } textRows)
                {
                    var mass = new float[textRows.Length * t.NumHeads];
                    B.AttentionMass(q, t.NumHeads, keys, t.NumKvHeads, t.HeadDim, textRows, run.VisualKeys(layer), mass);
                    run.RecordMass(mass, textRows.Length, t.NumHeads);
                }
                seen = (long)n * cached + (long)n * (n + 1) / 2;
            }
            else
            {
                // Each run of query rows is the last rows of the keys up to its end: plain causal attention there.
                var mass = new List<float>();
                int massRows = 0, offset = 0;
                foreach (var (start, length) in active)
                {
                    int visible = cached + start + length;
                    using var qs = q.Slice(offset, length);
                    using var os = a.Slice(offset, length);
                    using var ks = keys.Slice(0, visible);
                    using var vs = values.Slice(0, visible);
                    B.Attention(qs, t.NumHeads, ks, vs, t.NumKvHeads, t.HeadDim, AttentionMask.Causal, os);
                    if (run is { WantsMass: true } && start > run.Spans[0].Start)
                    {
                        var part = new float[length * t.NumHeads];
                        var seenVisual = run.VisualKeys(layer).Where(r => r.Start < visible)
                            .Select(r => (r.Start, Math.Min(r.Length, visible - r.Start))).ToArray();   // images before this run's end
                        B.AttentionMass(qs, t.NumHeads, ks, t.NumKvHeads, t.HeadDim, Enumerable.Range(0, length).ToArray(), seenVisual, part);
                        mass.AddRange(part);
                        massRows += length;
                    }
                    seen += (long)length * (cached + start) + (long)length * (length + 1) / 2;
                    offset += length;
                }
                if (massRows > 0) run!.RecordMass(mass.ToArray(), massRows, t.NumHeads);
            }
        }
        macs += Cost.Attention(t, nq, n, seen);
        var o = B.Allocate(nq, t.HiddenSize);
        B.Linear(a, w.O!, null, o);
        return o;
    }

    /// <summary>The explicit PIA adapter: h + Up (Down h + downBias) + upBias, a new tensor.</summary>
    private Tensor Adapt(Tensor h, PiaLayer pia)
    {
        int width = pia.Down!.Source.Rows;
        var y = B.Allocate(h.Rows, h.Cols);
        using var u = B.Allocate(h.Rows, width);
        B.Linear(h, pia.Down, pia.DownBias, u);
        B.Linear(u, pia.Up!, pia.UpBias, y);
        B.Add(y, h, y);
        return y;
    }

    /// <summary>
    /// Ffn(RmsNorm(h)) = down(silu(gate(n)) * up(n)) with n = RmsNorm(h). In a layer whose attention is skipped
    /// with a PIA adapter, n = gamma_post * (M RmsNorm_in(h) + beta) instead (EAS's replacement).
    /// </summary>
    private Tensor FeedForward(TextLayer w, Tensor x, bool skipped, PiaLayer? pia, ref long macs)
    {
        var t = _t;
        int n = x.Rows;
        using var h = B.Allocate(n, t.HiddenSize);
        DeviceWeight gateW = w.Gate, upW = w.Up;
        DeviceWeight? gateB = null, upB = null;
        if (skipped && pia?.Gate is not null)
        {
            B.RmsNorm(x, w.InputNorm, t.RmsNormEps, h);   // the folded gate/up absorb gamma_post * (M h + beta)
            (gateW, gateB, upW, upB) = (pia.Gate, pia.GateBias, pia.FfnUp!, pia.FfnUpBias);
        }
        else if (skipped && pia?.Down is not null)
        {
            B.RmsNorm(x, w.InputNorm, t.RmsNormEps, h);
            using var z = B.Allocate(n, t.HiddenSize);
            using (var u = B.Allocate(n, pia.Down.Source.Rows))
            {
                B.Linear(h, pia.Down, pia.DownBias, u);
                B.Linear(u, pia.Up!, pia.UpBias, z);           // gamma_post * (Up u + upBias)
            }
            B.RmsNorm(x, pia.NormGamma!, t.RmsNormEps, h);     // gamma_post * RmsNorm_in(x)
            B.Add(h, z, h);
            macs += n * pia.MacsPerRow;
        }
        else
        {
            B.RmsNorm(x, w.PostAttentionNorm, t.RmsNormEps, h);
        }
        using var gate = B.Allocate(n, t.IntermediateSize);
        B.GatedLinear(h, gateW, gateB, upW, upB, gate);   // silu(gate(h)) * up(h)
        var y = B.Allocate(n, t.HiddenSize);
        B.Linear(gate, w.Down, null, y);
        macs += Cost.Ffn(t, n);
        return y;
    }

    /// <summary>
    /// The PIA adapter of <paramref name="layer"/> resolved for this sequence, or null. The first prefill resolves
    /// it from the mean of the layer's normed input rows; later steps reuse it.
    /// </summary>
    private PiaLayer? PiaFor(TextLayer w, Tensor x, int layer, DecoderPass pass, bool skipped)
    {
        if (pass.Eas?.AdapterFor(layer) is not { } adapter || pass.Pia is null) return null;
        if (pass.Pia[layer] is { } ready) return ready;
        var t = _t;
        int d = t.HiddenSize, hw = adapter.HiddenDim;
        var mean = new float[d];
        using (var h = B.Allocate(x.Rows, d))
        {
            B.RmsNorm(x, w.InputNorm, t.RmsNormEps, h);
            var host = ToHost(h);
            var acc = new double[d];
            for (int r = 0; r < x.Rows; r++)
                for (int j = 0; j < d; j++) acc[j] += host[r * d + j];
            for (int j = 0; j < d; j++) mean[j] = (float)(acc[j] / x.Rows);
        }
        var (mix, up, upBias, down, downBias) = PiaMath.Resolve(adapter, mean);
        var p = new PiaLayer { ExpertMix = mix, MacsPerRow = 2L * d * hw };
        string name = $"pia.{layer}";
        try
        {
            double[]? gamma = null;
            if (skipped) gamma = [.. w.PostAttentionNorm.Source.ToFloatArray().Select(f => (double)f)];
            if (pass.PiaMode == PiaMode.Explicit)
            {
                p.Down = p.Own(B, name + ".down", down, hw, d);
                p.DownBias = p.Own(B, name + ".down_bias", downBias, hw);
                if (gamma is not null)
                {
                    for (int o = 0; o < d; o++)
                    {
                        for (int k = 0; k < hw; k++) up[o * hw + k] *= gamma[o];
                        upBias[o] *= gamma[o];
                    }
                    var gIn = w.InputNorm.Source.ToFloatArray();
                    p.NormGamma = p.Own(B, name + ".norm", [.. gIn.Select((g, j) => g * gamma[j])], d);
                }
                p.Up = p.Own(B, name + ".up", up, d, hw);
                p.UpBias = p.Own(B, name + ".up_bias", upBias, d);
            }
            else
            {
                var beta = PiaMath.Beta(up, upBias, downBias, d, hw);
                (DeviceWeight, DeviceWeight) Fold(DeviceWeight weight, string what)
                {
                    var (fw, fb) = PiaMath.Fold(weight.Source, gamma, up, down, beta, d, hw);
                    return (p.Own(B, $"{name}.{what}", fw, weight.Source.Rows, d), p.Own(B, $"{name}.{what}_bias", fb, weight.Source.Rows));
                }
                if (skipped)
                {
                    (p.Gate, p.GateBias) = Fold(w.Gate, "gate");
                    (p.FfnUp, p.FfnUpBias) = Fold(w.Up, "up");
                }
                else
                {
                    (p.Q, p.QBias) = Fold(w.Q!, "q");
                    (p.K, p.KBias) = Fold(w.K!, "k");
                    (p.V, p.VBias) = Fold(w.V!, "v");
                }
            }
        }
        catch
        {
            p.Dispose();
            throw;
        }
        pass.Pia.Set(layer, p);
        return p;
    }
}
