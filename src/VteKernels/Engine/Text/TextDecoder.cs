// The language model of every LLaVA-family model, family-blind: token embeddings with the image spans
// overwritten by whatever rows the family's vision encoder produced, the LLaMA/Mistral decoder layers, the
// final norm and the LM head. The decoder block is the two lines of math h = x + Attn(Norm(x));
// x = h + Ffn(Norm(h)); prefill and decode share the layer loop and differ in how many rows they feed and
// which positions those rows have. The methods that change the loop are explicit calls in it, with their
// state in the DecoderPass: visual-token exit (ExitRun: measure, decide, drop the rows, compact the cache),
// NAAViT (visual rows issue no queries and skip the FFN), EAS (skipped attention, PIA adapters) and visual
// rows a family re-derives per layer (ILayerVisualRows: SAISA). Visual rows are only rows inside image
// spans here: tiles, newlines and packing are the family's business. The per-layer math (attention, FFN,
// adapters) is in TextDecoder.Layer.cs.
using VteKernels.Backends;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Models;

namespace VteKernels.Engine;

/// <summary>The decoder-only language model on a backend, shared by every model family.</summary>
internal sealed partial class TextDecoder
{
    private readonly IBackend B;
    private readonly TextConfig _t;
    private readonly int _imageToken;
    private readonly TextLayer[] _text;
    private readonly DeviceWeight _embedTokens, _finalNorm, _lmHead;

    private sealed record TextLayer(
        DeviceWeight InputNorm, DeviceWeight? Q, DeviceWeight? K, DeviceWeight? V, DeviceWeight? O,
        DeviceWeight PostAttentionNorm, DeviceWeight Gate, DeviceWeight Up, DeviceWeight Down);

    /// <summary>Uploads the language model's weights to <paramref name="backend"/>.</summary>
    /// <param name="config">The language model's shape.</param>
    /// <param name="imageTokenIndex">The placeholder id of image rows (never looked up in the embedding table).</param>
    /// <param name="t">The weights.</param>
    /// <param name="backend">Where it runs.</param>
    public TextDecoder(TextConfig config, int imageTokenIndex, TextWeights t, IBackend backend)
    {
        B = backend;
        _t = config;
        _imageToken = imageTokenIndex;
        DeviceWeight U(Weight w) => backend.Upload(w);
        DeviceWeight UL(Weight w) => backend.UploadLinear(w, LinearRole.LanguageModel);   // matrices Linear multiplies by
        DeviceWeight? ULOpt(Weight? w) => w is null ? null : UL(w);
        _embedTokens = U(t.EmbedTokens);
        _text = t.Layers.Select(l => new TextLayer(U(l.InputNorm), ULOpt(l.QProj), ULOpt(l.KProj), ULOpt(l.VProj), ULOpt(l.OProj),
            U(l.PostAttentionNorm), UL(l.GateProj), UL(l.UpProj), UL(l.DownProj))).ToArray();
        _finalNorm = U(t.Norm);
        _lmHead = ReferenceEquals(t.LmHead, t.EmbedTokens) ? _embedTokens : UL(t.LmHead);
    }

    /// <summary>Input embeddings of <paramref name="ids"/> with each image span overwritten by its features.</summary>
    internal Tensor Embed(ReadOnlySpan<int> ids, IReadOnlyList<ImageSpan> spans, IReadOnlyList<Tensor> imageFeatures)
    {
        var x = B.Allocate(ids.Length, _t.HiddenSize);
        try
        {
            // Placeholder rows are overwritten below; look them up as row 0 in case the id lies past the table.
            if (_imageToken >= _t.VocabSize && ids.Contains(_imageToken))
            {
                var gather = ids.ToArray();
                for (int i = 0; i < gather.Length; i++) if (gather[i] == _imageToken) gather[i] = 0;
                ids = gather;
            }
            B.Embedding(_embedTokens, ids, x);
            for (int i = 0; i < spans.Count; i++)
                B.CopyBlock(imageFeatures[i], 0, 0, x, spans[i].Start, 0, spans[i].Length, _t.HiddenSize);
            return x;
        }
        catch
        {
            x.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs every decoder layer over the rows <paramref name="x"/>; <paramref name="pass"/> holds their positions,
    /// the cache their keys and values go to, and the methods in effect. Queries attend causally to everything
    /// the layer's cache holds. With an exit run the policy is asked after each layer and, when it fires, the
    /// visual rows leave (with their positions and row numbers); the early layers' visual K/V are compacted away
    /// in <see cref="ExitKvMode.DropAll"/>. With NAAViT the visual rows issue no queries and skip the FFN (they
    /// still give keys and values), and leave after the last layer. Layers whose attention EAS skips run only
    /// their FFN and hold no cache. Consumes <paramref name="x"/> and returns the final rows, which the caller
    /// disposes.
    /// </summary>
    internal Tensor Run(Tensor x, DecoderPass pass)
    {
        try
        {
            var run = pass.Exit;
            pass.HiddenStates?.Add(ToHost(x));
            for (int l = 0; l < _text.Length; l++)
            {
                pass.BeforeLayer(l, _text.Length);   // cancellation and progress, between layers
                var w = _text[l];
                bool skip = pass.Skips(l);
                if (pass.LayerVisualRows is { } visual && run is { Spans.Count: > 0 })
                    pass.VisualRowMacs += visual.Write(l, x, run.Spans);   // the family's rows for this layer (SAISA)
                // Rows that issue queries and run the FFN: all of them, or with NAAViT the non-visual ones.
                var active = pass.Naavit && run is { Spans.Count: > 0 } ? Runs(x.Rows, run.Spans) : [(0, x.Rows)];
                run?.BeginLayer(x.Rows);
                pass.Observer?.BeginLayer(l, x, active, skip, pass);                                          // observer: the layer's input
                var pia = PiaFor(w, x, l, pass, skip);
                long macs = 0;
                if (!skip)
                    using (var a = SelfAttention(w, x, active, pass, l, pia, ref macs)) AddRows(x, a, active);   // h = x + Attn(Norm(x))
                using (var xs = Gather(x, active, run))
                using (var f = FeedForward(w, xs ?? x, skip, pia, ref macs)) AddRows(x, f, active);            // x = h + Ffn(Norm(h))
                if (pass.LayerMacs is not null) pass.LayerMacs[l] = macs;
                bool exits = run is not null && run.EndLayer(l, () => GateInput(x, run.Spans));                 // the exit check
                pass.Observer?.EndLayer(l, exits || (pass.Naavit && l == _text.Length - 1 && run is { Spans.Count: > 0 }), run?.Layers[^1]);   // observer: the decision
                if (exits)
                {
                    if (run!.KvMode == ExitKvMode.DropAll)
                        for (int e = 0; e <= l; e++)
                            if (!pass.Skips(e))   // skipped layers hold no cache
                                pass.Cache.RemoveRanges(e, run.VisualKeys(e));   // every image span in one compaction
                    x = DropVisualRows(x, pass);
                    run.Exited();
                }
                if (pass.HiddenStates is not null && l < _text.Length - 1) pass.HiddenStates.Add(ToHost(x));
            }
            if (pass.Naavit && run is { Spans.Count: > 0 })
            {
                // The visual rows asked nothing: their last state is their input. Only the rows that queried go on.
                x = DropVisualRows(x, pass);
                run.Exited();
            }
            return x;
        }
        catch
        {
            x.Dispose();
            throw;
        }
    }

    /// <summary>Replaces x by its rows outside the exit run's visual spans, and drops their positions and row numbers.</summary>
    private Tensor DropVisualRows(Tensor x, DecoderPass pass)
    {
        var spans = pass.Exit!.Spans;
        var kept = DropRows(x, spans);
        x.Dispose();
        pass.Positions = Keep(pass.Positions, spans);
        if (pass.RowMap is { } rowMap)
        {
            var map = Keep([.. rowMap], spans);
            rowMap.Clear();
            rowMap.AddRange(map);
        }
        return kept;
    }

    /// <summary>The runs of rows in [0, n) outside <paramref name="spans"/>, in order.</summary>
    internal static (int Start, int Length)[] Runs(int n, IReadOnlyList<ImageSpan> spans)
    {
        var runs = new List<(int, int)>();
        int at = 0;
        foreach (var s in spans.Append(new ImageSpan(n, 0)))
        {
            if (s.Start > at) runs.Add((at, s.Start - at));
            at = s.End;
        }
        return [.. runs];
    }

    private static bool IsAll((int Start, int Length)[] runs, int rows) => runs.Length == 1 && runs[0].Start == 0 && runs[0].Length == rows;

    /// <summary>The active rows as one new tensor, or null when they are all of x (no copy needed).</summary>
    private Tensor? Gather(Tensor x, (int Start, int Length)[] active, ExitRun? run) =>
        IsAll(active, x.Rows) ? null : DropRows(x, run!.Spans);

    /// <summary>x[active rows] += y, y holding the active rows one after another.</summary>
    private void AddRows(Tensor x, Tensor y, (int Start, int Length)[] active)
    {
        if (IsAll(active, x.Rows))
        {
            B.Add(x, y, x);
            return;
        }
        int offset = 0;
        foreach (var (start, length) in active)
        {
            using var xs = x.Slice(start, length);
            using var ys = y.Slice(offset, length);
            B.Add(xs, ys, xs);
            offset += length;
        }
    }

    /// <summary>
    /// DyVTE's gate input (<see cref="ExitGates.Feature"/>) from the rows after the last image. Null when no row
    /// lies between the image and the last row (the mean is undefined; the gate cannot decide).
    /// </summary>
    private float[]? GateInput(Tensor x, IReadOnlyList<ImageSpan> spans)
    {
        int first = spans.Count == 0 ? 0 : spans[^1].End;
        if (x.Rows - 1 - first <= 0) return null;
        using var tail = x.Slice(first, x.Rows - first);
        return ExitGates.Feature(ToHost(tail), tail.Rows, _t.HiddenSize, []);
    }

    /// <summary>A new tensor holding the rows of <paramref name="x"/> outside <paramref name="drop"/>, in order.</summary>
    private Tensor DropRows(Tensor x, IReadOnlyList<ImageSpan> drop)
    {
        int dropped = drop.Sum(s => s.Length);
        var y = B.Allocate(x.Rows - dropped, x.Cols);
        int src = 0, dst = 0;
        foreach (var s in drop.Append(new ImageSpan(x.Rows, 0)))
        {
            int n = s.Start - src;
            if (n > 0) B.CopyBlock(x, src, 0, y, dst, 0, n, x.Cols);
            dst += n;
            src = s.End;
        }
        return y;
    }

    /// <summary>The entries of <paramref name="values"/> outside the spans, in order.</summary>
    internal static int[] Keep(int[] values, IReadOnlyList<ImageSpan> drop)
    {
        var kept = new List<int>(values.Length);
        int s = 0;
        for (int i = 0; i < values.Length; i++)
        {
            while (s < drop.Count && i >= drop[s].End) s++;
            if (s < drop.Count && i >= drop[s].Start) continue;
            kept.Add(values[i]);
        }
        return [.. kept];
    }

    /// <summary>Final norm (in place) and the LM head over the last <paramref name="rows"/> rows of x.</summary>
    internal Logits Head(Tensor x, int rows, List<float[]>? hiddenStates)
    {
        var t = _t;
        B.RmsNorm(x, _finalNorm, t.RmsNormEps, x);
        hiddenStates?.Add(ToHost(x));
        using var tail = x.Slice(x.Rows - rows, rows);
        using var logits = B.Allocate(rows, t.VocabSize);
        B.Linear(tail, _lmHead, null, logits);
        return new Logits(ToHost(logits), rows, t.VocabSize);
    }

    internal float[] ToHost(Tensor t)
    {
        var a = new float[t.Rows * t.Cols];
        B.CopyToHost(t, a);
        return a;
    }
}
