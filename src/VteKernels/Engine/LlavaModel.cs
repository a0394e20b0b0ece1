// The orchestrator: LLaVA's forward pass written once against IBackend. The decoder block is the two lines
// of math h = x + Attn(Norm(x)); x = h + Ffn(Norm(h)), and the vision tower the same with LayerNorm.
// Prefill and decode share the layer loop; they differ in how many rows they feed and which positions
// those rows have. The vision tower stops at the deepest feature layer the config reads
// (LLaVA-1.5 reads layer -2 of 24, so the last encoder layer never runs).
using VteKernels.Backends;
using VteKernels.Engine.Exit;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Engine;

/// <summary>A loaded LLaVA model bound to a backend. Thread-safe for concurrent sessions only if the backend is.</summary>
public sealed class LlavaModel : IDisposable
{
    private readonly WeightStore? _store;
    private readonly VisionLayer[] _vision;
    private readonly TextLayer[] _text;
    private readonly DeviceWeight _classEmbedding, _patchEmbedding, _positionEmbedding, _preLnW, _preLnB;
    private readonly DeviceWeight _proj1W, _proj2W;
    private readonly DeviceWeight? _proj1B, _proj2B;
    private readonly DeviceWeight _embedTokens, _finalNorm, _lmHead;

    private sealed record VisionLayer(
        DeviceWeight Ln1W, DeviceWeight Ln1B, DeviceWeight QW, DeviceWeight QB, DeviceWeight KW, DeviceWeight KB,
        DeviceWeight VW, DeviceWeight VB, DeviceWeight OutW, DeviceWeight OutB, DeviceWeight Ln2W, DeviceWeight Ln2B,
        DeviceWeight Fc1W, DeviceWeight Fc1B, DeviceWeight Fc2W, DeviceWeight Fc2B);

    private sealed record TextLayer(
        DeviceWeight InputNorm, DeviceWeight Q, DeviceWeight K, DeviceWeight V, DeviceWeight O,
        DeviceWeight PostAttentionNorm, DeviceWeight Gate, DeviceWeight Up, DeviceWeight Down);

    /// <summary>The model's configuration.</summary>
    public LlavaConfig Config { get; }

    /// <summary>The backend that runs it.</summary>
    public IBackend Backend { get; }

    /// <summary>The bound weights (as stored).</summary>
    public LlavaWeights Weights { get; }

    private IBackend B => Backend;

    /// <summary>Binds <paramref name="weights"/> to <paramref name="backend"/>. The weights' owner must outlive the model.</summary>
    public LlavaModel(LlavaConfig config, LlavaWeights weights, IBackend backend) : this(config, weights, backend, null) { }

    private LlavaModel(LlavaConfig config, LlavaWeights weights, IBackend backend, WeightStore? store)
    {
        Config = config;
        Weights = weights;
        Backend = backend;
        _store = store;
        DeviceWeight U(Weight w) => backend.Upload(w);
        var v = weights.Vision;
        _classEmbedding = U(v.ClassEmbedding);
        _patchEmbedding = U(v.PatchEmbedding);
        _positionEmbedding = U(v.PositionEmbedding);
        _preLnW = U(v.PreLnWeight);
        _preLnB = U(v.PreLnBias);
        _vision = v.Layers.Take(config.VisionLayersNeeded).Select(l => new VisionLayer(
            U(l.Ln1Weight), U(l.Ln1Bias), U(l.QWeight), U(l.QBias), U(l.KWeight), U(l.KBias), U(l.VWeight), U(l.VBias),
            U(l.OutWeight), U(l.OutBias), U(l.Ln2Weight), U(l.Ln2Bias), U(l.Fc1Weight), U(l.Fc1Bias), U(l.Fc2Weight), U(l.Fc2Bias))).ToArray();
        var p = weights.Projector;
        _proj1W = U(p.Linear1Weight);
        _proj1B = p.Linear1Bias is null ? null : U(p.Linear1Bias);
        _proj2W = U(p.Linear2Weight);
        _proj2B = p.Linear2Bias is null ? null : U(p.Linear2Bias);
        var t = weights.Text;
        _embedTokens = U(t.EmbedTokens);
        _text = t.Layers.Select(l => new TextLayer(U(l.InputNorm), U(l.QProj), U(l.KProj), U(l.VProj), U(l.OProj),
            U(l.PostAttentionNorm), U(l.GateProj), U(l.UpProj), U(l.DownProj))).ToArray();
        _finalNorm = U(t.Norm);
        _lmHead = ReferenceEquals(t.LmHead, t.EmbedTokens) ? _embedTokens : U(t.LmHead);
    }

    /// <summary>Loads a HF llava-hf model directory (config.json + safetensors, single or sharded).</summary>
    /// <exception cref="ModelFormatException">The config or a weight file is malformed or disagrees with the config.</exception>
    public static LlavaModel Load(string modelDir, IBackend backend)
    {
        if (!Directory.Exists(modelDir)) throw new ModelFormatException(modelDir, null, "model directory does not exist");
        var config = LlavaConfig.Load(Path.Combine(modelDir, "config.json"));
        var store = WeightStore.Open(modelDir);
        try
        {
            return new LlavaModel(config, LlavaWeights.Bind(config, store), backend, store);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>A new session with an empty cache.</summary>
    public InferenceSession CreateSession() => new(this);

    /// <summary>Releases the weight files this model opened.</summary>
    public void Dispose() => _store?.Dispose();

    // ---------------------------------------------------------------- vision tower and projector

    /// <summary>
    /// Image features for one image: the CLIP tower up to the deepest feature layer, the feature layers
    /// selected (class token dropped for the "default" strategy) and concatenated, then the projector.
    /// Returns [TokensPerImage, text hidden] on the backend; the caller owns it.
    /// </summary>
    internal Tensor EncodeImage(ImageInput image, List<float[]>? visionStates)
    {
        var v = Config.Vision;
        if (image.Channels != v.NumChannels || image.Height != v.ImageSize || image.Width != v.ImageSize)
            throw new InvalidInputException($"image is [{image.Channels}, {image.Height}, {image.Width}] but the vision tower takes [{v.NumChannels}, {v.ImageSize}, {v.ImageSize}]");
        if (image.Pixels.Length != image.Channels * image.Height * image.Width)
            throw new InvalidInputException($"image holds {image.Pixels.Length} values, its shape says {image.Channels * image.Height * image.Width}");
        foreach (var px in image.Pixels)
            if (!float.IsFinite(px)) throw new InvalidInputException("image pixels contain NaN or infinity");

        var indices = Config.FeatureHiddenStateIndices;
        int n = v.NumPositions, d = v.HiddenSize;
        using var features = B.Allocate(n, Config.ProjectorInputSize);
        using var x = B.Allocate(n, d);
        using (var cls = x.Slice(0, 1)) B.Embedding(_classEmbedding, [0], cls);
        using (var patches = x.Slice(1, v.NumPatches))
            B.PatchEmbed(image.Pixels, image.Channels, image.Height, image.Width, v.PatchSize, _patchEmbedding, patches);
        B.AddWeight(x, _positionEmbedding);
        B.LayerNorm(x, _preLnW, _preLnB, v.LayerNormEps, x);
        Keep(0);
        for (int l = 0; l < _vision.Length; l++)
        {
            VisionBlock(_vision[l], x);
            Keep(l + 1);
        }

        // "default" drops the class token (row 0); "full" keeps it.
        int first = Config.VisionFeatureSelectStrategy == "full" ? 0 : 1;
        using var selected = features.Slice(first, n - first);
        var hidden = B.Allocate(selected.Rows, Config.Text.HiddenSize);
        B.Linear(selected, _proj1W, _proj1B, hidden);
        B.Gelu(hidden);
        var projected = B.Allocate(selected.Rows, Config.Text.HiddenSize);
        B.Linear(hidden, _proj2W, _proj2B, projected);
        hidden.Dispose();
        return projected;

        void Keep(int state)
        {
            if (visionStates is not null) visionStates.Add(ToHost(x));
            for (int k = 0; k < indices.Count; k++)
                if (indices[k] == state) B.CopyBlock(x, 0, 0, features, 0, k * d, n, d);
        }
    }

    /// <summary>One pre-LN CLIP encoder layer, in place: x = x + Attn(LN1(x)); x = x + Mlp(LN2(x)).</summary>
    private void VisionBlock(VisionLayer w, Tensor x)
    {
        var v = Config.Vision;
        int n = x.Rows, d = v.HiddenSize;
        using (var h = B.Allocate(n, d))
        using (var q = B.Allocate(n, d))
        using (var k = B.Allocate(n, d))
        using (var val = B.Allocate(n, d))
        using (var a = B.Allocate(n, d))
        {
            B.LayerNorm(x, w.Ln1W, w.Ln1B, v.LayerNormEps, h);
            B.Linear(h, w.QW, w.QB, q);
            B.Linear(h, w.KW, w.KB, k);
            B.Linear(h, w.VW, w.VB, val);
            B.Attention(q, v.NumHeads, k, val, v.NumHeads, v.HeadDim, AttentionMask.None, a);
            B.Linear(a, w.OutW, w.OutB, h);
            B.Add(x, h, x);
        }
        using (var h = B.Allocate(n, d))
        using (var f = B.Allocate(n, v.IntermediateSize))
        {
            B.LayerNorm(x, w.Ln2W, w.Ln2B, v.LayerNormEps, h);
            B.Linear(h, w.Fc1W, w.Fc1B, f);
            if (v.HiddenAct == "quick_gelu") B.QuickGelu(f); else B.Gelu(f);
            B.Linear(f, w.Fc2W, w.Fc2B, h);
            B.Add(x, h, x);
        }
    }

    // ---------------------------------------------------------------- language model

    /// <summary>Input embeddings of <paramref name="ids"/> with each image span overwritten by its features.</summary>
    internal Tensor Embed(ReadOnlySpan<int> ids, IReadOnlyList<ImageSpan> spans, IReadOnlyList<Tensor> imageFeatures)
    {
        var x = B.Allocate(ids.Length, Config.Text.HiddenSize);
        try
        {
            // Placeholder rows are overwritten below; look them up as row 0 in case the id lies past the table.
            if (Config.ImageTokenIndex >= Config.Text.VocabSize && ids.Contains(Config.ImageTokenIndex))
            {
                var gather = ids.ToArray();
                for (int i = 0; i < gather.Length; i++) if (gather[i] == Config.ImageTokenIndex) gather[i] = 0;
                ids = gather;
            }
            B.Embedding(_embedTokens, ids, x);
            for (int i = 0; i < spans.Count; i++)
                B.CopyBlock(imageFeatures[i], 0, 0, x, spans[i].Start, 0, spans[i].Length, Config.Text.HiddenSize);
            return x;
        }
        catch
        {
            x.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs every decoder layer over the rows <paramref name="x"/>, whose absolute positions are
    /// <paramref name="positions"/>; their keys and values are appended to <paramref name="cache"/> and the
    /// queries attend causally to everything the cache holds. With an exit run, the policy is asked after
    /// each layer and, when it fires, the visual rows leave (with their positions and row numbers in
    /// <paramref name="rowMap"/>); the early layers' visual K/V are compacted away in
    /// <see cref="ExitKvMode.DropAll"/>. Consumes <paramref name="x"/> and returns the final rows, which the
    /// caller disposes.
    /// </summary>
    internal Tensor Decoder(Tensor x, int[] positions, KvCache cache, List<float[]>? hiddenStates, ExitRun? run = null, List<int>? rowMap = null)
    {
        try
        {
            hiddenStates?.Add(ToHost(x));
            for (int l = 0; l < _text.Length; l++)
            {
                var w = _text[l];
                run?.BeginLayer(x.Rows);
                using (var a = SelfAttention(w, x, positions, cache, l, run)) B.Add(x, a, x);   // h = x + Attn(Norm(x))
                using (var f = FeedForward(w, x)) B.Add(x, f, x);                                 // x = h + Ffn(Norm(h))
                if (run is not null && run.EndLayer(l, () => GateInput(x, run.Spans)))           // the exit check
                {
                    var kept = DropRows(x, run.Spans);
                    x.Dispose();
                    x = kept;
                    positions = Keep(positions, run.Spans);
                    if (rowMap is not null)
                    {
                        var map = Keep([.. rowMap], run.Spans);
                        rowMap.Clear();
                        rowMap.AddRange(map);
                    }
                    if (run.KvMode == ExitKvMode.DropAll)
                        for (int e = 0; e <= l; e++)
                            for (int s = run.Spans.Count - 1; s >= 0; s--)   // last span first: earlier offsets stay valid
                                cache.RemoveRows(e, run.CacheBase[e] + run.Spans[s].Start, run.Spans[s].Length);
                    run.Exited();
                }
                if (hiddenStates is not null && l < _text.Length - 1) hiddenStates.Add(ToHost(x));
            }
            return x;
        }
        catch
        {
            x.Dispose();
            throw;
        }
    }

    /// <summary>
    /// DyVTE's gate input: [mean of the rows after the last image, the last row excluded ; the last row].
    /// Null when no row lies between the image and the last row (the mean is undefined; the gate cannot decide).
    /// </summary>
    private float[]? GateInput(Tensor x, IReadOnlyList<ImageSpan> spans)
    {
        int d = Config.Text.HiddenSize, n = x.Rows;
        int first = spans.Count == 0 ? 0 : spans[^1].End;
        int textRows = n - 1 - first;
        if (textRows <= 0) return null;
        using var tail = x.Slice(first, n - first);
        var host = ToHost(tail);
        var feature = new float[2 * d];
        for (int r = 0; r < textRows; r++)
            System.Numerics.Tensors.TensorPrimitives.Add(feature.AsSpan(0, d), host.AsSpan(r * d, d), feature.AsSpan(0, d));
        System.Numerics.Tensors.TensorPrimitives.Divide(feature.AsSpan(0, d), textRows, feature.AsSpan(0, d));
        host.AsSpan(textRows * d, d).CopyTo(feature.AsSpan(d));
        return feature;
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

    /// <summary>Attn(RmsNorm(x)) for one layer: project, rotate, append to the cache, attend, project out.</summary>
    private Tensor SelfAttention(TextLayer w, Tensor x, ReadOnlySpan<int> positions, KvCache cache, int layer, ExitRun? run)
    {
        var t = Config.Text;
        int n = x.Rows;
        using var h = B.Allocate(n, t.HiddenSize);
        using var q = B.Allocate(n, t.QDim);
        using var k = B.Allocate(n, t.KvDim);
        using var v = B.Allocate(n, t.KvDim);
        using var a = B.Allocate(n, t.QDim);
        B.RmsNorm(x, w.InputNorm, t.RmsNormEps, h);
        B.Linear(h, w.Q, null, q);
        B.Linear(h, w.K, null, k);
        B.Linear(h, w.V, null, v);
        B.Rope(q, t.NumHeads, t.HeadDim, positions, t.RopeTheta);
        B.Rope(k, t.NumKvHeads, t.HeadDim, positions, t.RopeTheta);
        cache.Append(layer, k, v);
        var (keys, values) = cache.View(layer);
        using (keys)
        using (values)
        {
            B.Attention(q, t.NumHeads, keys, values, t.NumKvHeads, t.HeadDim, AttentionMask.Causal, a);
            if (run is { WantsMass: true } && run.TextRows(n) is { Length: > 0 } textRows)
            {
                var mass = new float[textRows.Length * t.NumHeads];
                B.AttentionMass(q, t.NumHeads, keys, t.NumKvHeads, t.HeadDim, textRows, run.VisualKeys(layer), mass);
                run.RecordMass(mass, textRows.Length, t.NumHeads);
            }
        }
        var o = B.Allocate(n, t.HiddenSize);
        B.Linear(a, w.O, null, o);
        return o;
    }

    /// <summary>Ffn(RmsNorm(h)) = down(silu(gate(n)) * up(n)) with n = RmsNorm(h).</summary>
    private Tensor FeedForward(TextLayer w, Tensor x)
    {
        var t = Config.Text;
        int n = x.Rows;
        using var h = B.Allocate(n, t.HiddenSize);
        using var gate = B.Allocate(n, t.IntermediateSize);
        using var up = B.Allocate(n, t.IntermediateSize);
        B.RmsNorm(x, w.PostAttentionNorm, t.RmsNormEps, h);
        B.Linear(h, w.Gate, null, gate);
        B.Linear(h, w.Up, null, up);
        B.SiluMul(gate, up, gate);
        var y = B.Allocate(n, t.HiddenSize);
        B.Linear(gate, w.Down, null, y);
        return y;
    }

    /// <summary>Final norm (in place) and the LM head over the last <paramref name="rows"/> rows of x.</summary>
    internal Logits Head(Tensor x, int rows, List<float[]>? hiddenStates)
    {
        var t = Config.Text;
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
