// The decoder loop's side of IDecoderObserver: three calls per layer (BeginLayer, Attention, EndLayer) that
// copy what the observer asked for and hand one DecoderLayerObservation over when the layer ends. The
// attention probabilities are recomputed on the host from the layer's own rotated queries and cached keys
// (float64 scores and softmax, 1/sqrt(head_dim) scale, grouped-query heads), with each query seeing the keys
// the engine's causal attention gave it: everything cached before the step and the step's rows up to its own.
// Cost: queries x keys x head_dim per head asked for (a 7B layer at 671 rows: ~1.8 G multiply-adds for all
// 32 heads), on top of the copies; nothing at all when no observer is set.
using VteKernels.Backends;
using VteKernels.Engine.Exit;
using VteKernels.Models;

namespace VteKernels.Engine.Observers;

internal sealed class DecoderObservation(IDecoderObserver observer, IBackend backend, TextConfig text, DecoderStep step)
{
    private readonly DecoderCapture _capture = observer.Capture;
    private DecoderLayerObservation? _pending;

    /// <summary>A layer starts: the rows entering it (<paramref name="x"/>), the runs that query, and whether attention is skipped.</summary>
    public void BeginLayer(int layer, Tensor x, (int Start, int Length)[] active, bool skipped, DecoderPass pass)
    {
        int n = x.Rows;
        var spans = pass.Exit?.Spans ?? [];
        _pending = new DecoderLayerObservation
        {
            Layer = layer, Step = step,
            Rows = pass.RowMap is { } map ? [.. map] : [.. Enumerable.Range(0, n)],
            Positions = [.. pass.Positions],
            VisualRows = [.. spans.SelectMany(s => Enumerable.Range(s.Start, s.Length))],
            QueryRows = skipped ? [] : [.. active.SelectMany(r => Enumerable.Range(r.Start, r.Length))],
            AttentionSkipped = skipped,
            CachedKeys = skipped ? 0 : pass.Cache.Length(layer),
            Input = _capture.InputRows && _capture.Wants(layer) ? ToHost(x) : null,
            ExitAfter = false,
        };
    }

    /// <summary>Attention ran: <paramref name="q"/> holds the querying rows' rotated queries, <paramref name="keys"/> the layer's whole cache.</summary>
    public void Attention(int layer, Tensor q, Tensor keys, int cached)
    {
        if (_pending is null || !_capture.AttentionProbabilities || !_capture.Wants(layer)) return;
        var t = text;
        var heads = _capture.Heads?.ToArray() ?? [.. Enumerable.Range(0, t.NumHeads)];
        foreach (var h in heads)
            if ((uint)h >= (uint)t.NumHeads) throw new InvalidInputException($"attention head {h} does not exist (the model has {t.NumHeads})");
        var qh = ToHost(q);
        var kh = ToHost(keys);
        _pending = _pending with
        {
            Attention = Probabilities(qh, _pending.QueryRows, kh, keys.Rows, cached, heads, t.NumHeads, t.NumKvHeads, t.HeadDim),
            AttentionHeads = heads,
        };
    }

    /// <summary>The layer ended; <paramref name="exitAfter"/>: the visual rows leave now.</summary>
    public void EndLayer(int layer, bool exitAfter, LayerTrace? trace)
    {
        if (_pending is null || _pending.Layer != layer) throw new InvalidOperationException($"layer {layer} ended without beginning");
        var o = _pending with { ExitAfter = exitAfter, Trace = trace };
        _pending = null;
        observer.OnLayer(o);
    }

    private float[] ToHost(Tensor t)
    {
        var a = new float[t.Rows * t.Cols];
        backend.CopyToHost(t, a);
        return a;
    }

    /// <summary>softmax(q·k / sqrt(d)) per chosen head over the keys each query row saw, [heads, queries, keys].</summary>
    internal static float[] Probabilities(float[] q, int[] queryRows, float[] k, int keyCount, int cached, int[] heads, int qHeads, int kvHeads, int headDim)
    {
        int nq = queryRows.Length, group = qHeads / kvHeads;
        int qStride = qHeads * headDim, kStride = kvHeads * headDim;
        double scale = 1 / Math.Sqrt(headDim);
        var p = new float[(long)heads.Length * nq * keyCount];
        Parallel.For(0, heads.Length * nq, item =>
        {
            int hi = item / nq, i = item % nq, h = heads[hi], kv = h / group;
            int visible = Math.Min(keyCount, cached + queryRows[i] + 1);
            var s = new double[visible];
            double max = double.NegativeInfinity;
            for (int j = 0; j < visible; j++)
            {
                double dot = 0;
                for (int e = 0; e < headDim; e++) dot += (double)q[i * qStride + h * headDim + e] * k[j * kStride + kv * headDim + e];
                s[j] = dot * scale;
                max = Math.Max(max, s[j]);
            }
            double sum = 0;
            for (int j = 0; j < visible; j++) sum += s[j] = Math.Exp(s[j] - max);
            long o = ((long)hi * nq + i) * keyCount;
            for (int j = 0; j < visible; j++) p[o + j] = (float)(s[j] / sum);
        });
        return p;
    }
}
