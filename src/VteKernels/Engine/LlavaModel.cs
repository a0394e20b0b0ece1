// The orchestrator: LLaVA's forward pass written once against IBackend. The decoder block is the two lines
// of math h = x + Attn(Norm(x)); x = h + Ffn(Norm(h)), and the vision tower the same with LayerNorm.
// Prefill and decode share the layer loop; they differ in how many rows they feed and which positions
// those rows have. The vision tower stops at the deepest feature layer the config reads
// (LLaVA-1.5 reads layer -2 of 24, so the last encoder layer never runs).
using VteKernels.Backends;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Engine;

/// <summary>A loaded LLaVA model bound to a backend. Thread-safe for concurrent sessions only if the backend is.</summary>
public sealed class LlavaModel : IDisposable
{
    private readonly IDisposable? _owner;
    private readonly SaisaLayer[]? _saisa;
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

    private sealed record SaisaLayer(DeviceWeight W1, DeviceWeight B1, DeviceWeight W2, DeviceWeight B2);

    private sealed record TextLayer(
        DeviceWeight InputNorm, DeviceWeight? Q, DeviceWeight? K, DeviceWeight? V, DeviceWeight? O,
        DeviceWeight PostAttentionNorm, DeviceWeight Gate, DeviceWeight Up, DeviceWeight Down);

    /// <summary>The model's configuration.</summary>
    public LlavaConfig Config { get; }

    /// <summary>The backend that runs it.</summary>
    public IBackend Backend { get; }

    /// <summary>The bound weights (as stored).</summary>
    public LlavaWeights Weights { get; }

    /// <summary>
    /// The generation defaults (the folder's generation_config.json as HF reads it; config.json's eos id without one)
    /// that <see cref="Generator"/> applies where a request leaves a value unset. Settable to change the defaults.
    /// </summary>
    public GenerationConfig GenerationConfig { get; set; }

    private IBackend B => Backend;

    /// <summary>Binds <paramref name="weights"/> to <paramref name="backend"/>. The weights' owner must outlive the model.</summary>
    public LlavaModel(LlavaConfig config, LlavaWeights weights, IBackend backend) : this(config, weights, backend, null) { }

    private LlavaModel(LlavaConfig config, LlavaWeights weights, IBackend backend, IDisposable? owner)
    {
        Config = config;
        Weights = weights;
        Backend = backend;
        _owner = owner;
        GenerationConfig = GenerationConfig.FromModelConfig(config);
        DeviceWeight U(Weight w) => backend.Upload(w);
        DeviceWeight UV(Weight w) => backend.UploadLinear(w, LinearRole.Vision);           // matrices Linear multiplies by
        DeviceWeight UL(Weight w) => backend.UploadLinear(w, LinearRole.LanguageModel);
        var v = weights.Vision;
        _classEmbedding = U(v.ClassEmbedding);
        _patchEmbedding = U(v.PatchEmbedding);
        _positionEmbedding = U(v.PositionEmbedding);
        _preLnW = U(v.PreLnWeight);
        _preLnB = U(v.PreLnBias);
        _vision = v.Layers.Take(config.VisionLayersNeeded).Select(l => new VisionLayer(
            U(l.Ln1Weight), U(l.Ln1Bias), UV(l.QWeight), U(l.QBias), UV(l.KWeight), U(l.KBias), UV(l.VWeight), U(l.VBias),
            UV(l.OutWeight), U(l.OutBias), U(l.Ln2Weight), U(l.Ln2Bias), UV(l.Fc1Weight), U(l.Fc1Bias), UV(l.Fc2Weight), U(l.Fc2Bias))).ToArray();
        var p = weights.Projector;
        _proj1W = UV(p.Linear1Weight);
        _proj1B = p.Linear1Bias is null ? null : U(p.Linear1Bias);
        _proj2W = UV(p.Linear2Weight);
        _proj2B = p.Linear2Bias is null ? null : U(p.Linear2Bias);
        var t = weights.Text;
        _embedTokens = U(t.EmbedTokens);
        DeviceWeight? ULOpt(Weight? w) => w is null ? null : UL(w);
        _text = t.Layers.Select(l => new TextLayer(U(l.InputNorm), ULOpt(l.QProj), ULOpt(l.KProj), ULOpt(l.VProj), ULOpt(l.OProj),
            U(l.PostAttentionNorm), UL(l.GateProj), UL(l.UpProj), UL(l.DownProj))).ToArray();
        _finalNorm = U(t.Norm);
        _lmHead = ReferenceEquals(t.LmHead, t.EmbedTokens) ? _embedTokens : UL(t.LmHead);
        if (weights.Saisa is { } saisa)
            _saisa = saisa.Layers.Select(l => new SaisaLayer(U(l.W1), U(l.B1), U(l.W2), U(l.B2))).ToArray();
    }

    /// <summary>
    /// Loads a model directory: the HF llava-hf layout (config.json + safetensors, single or sharded), or the
    /// original LLaVA layout (llava_llama config, `model.*` tensors) with its CLIP tower from
    /// <paramref name="visionTowerDir"/> or the config's mm_vision_tower folder. SAISA checkpoints (per-layer
    /// projectors) load in the original layout.
    /// </summary>
    /// <param name="modelDir">The model folder.</param>
    /// <param name="backend">The backend to run on.</param>
    /// <param name="visionTowerDir">The CLIP folder of an original-layout checkpoint, or null.</param>
    /// <param name="options">Whether the weight files are memory-mapped (the default) or read into memory; see <see cref="LoadOptions"/>.</param>
    /// <exception cref="ModelFormatException">The config or a weight file is malformed or disagrees with the config, or the vision tower cannot be found.</exception>
    public static LlavaModel Load(string modelDir, IBackend backend, string? visionTowerDir = null, LoadOptions? options = null)
    {
        var checkpoint = LlavaCheckpoint.Open(modelDir, visionTowerDir, options);
        try
        {
            return new LlavaModel(checkpoint.Config, checkpoint.Weights, backend, checkpoint)
            {
                GenerationConfig = GenerationConfig.Load(checkpoint.ModelDir, checkpoint.Config),
            };
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>A new session with an empty cache; <paramref name="options"/> sets sequence-wide methods (EAS).</summary>
    /// <exception cref="ModelFormatException">The EAS configuration does not fit the model, or leaves a layer without attention weights unskipped.</exception>
    public InferenceSession CreateSession(SessionOptions? options = null) => new(this, options);

    /// <summary>Throws if a memory-mapped weight file this model loaded changed since (nothing to check for weights it did not open).</summary>
    /// <exception cref="WeightFileChangedException">A file changed.</exception>
    public void CheckWeightsUnchanged() => (_owner as LlavaCheckpoint)?.CheckUnchanged();

    /// <summary>Releases the weight files this model opened.</summary>
    public void Dispose() => _owner?.Dispose();

    // ---------------------------------------------------------------- vision tower and projector

    /// <summary>
    /// Image features for one image: the CLIP tower up to the deepest feature layer, the feature layers
    /// selected (class token dropped for the "default" strategy) and concatenated, then the projector.
    /// Returns [TokensPerImage, text hidden] on the backend; the caller owns it.
    /// </summary>
    internal Tensor EncodeImage(ImageInput image, List<float[]>? visionStates, bool project = true)
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
        if (!project)
        {
            var raw = B.Allocate(selected.Rows, selected.Cols);
            B.CopyBlock(selected, 0, 0, raw, 0, 0, selected.Rows, selected.Cols);
            return raw;
        }
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

    /// <summary>SAISA's projector of decoder layer <paramref name="layer"/>: Linear(f -> d), exact GELU, Linear(d -> d) on the raw features.</summary>
    internal Tensor SaisaProject(int layer, Tensor raw)
    {
        var p = _saisa![layer];
        int d = Config.Text.HiddenSize;
        var y = B.Allocate(raw.Rows, d);
        using var h = B.Allocate(raw.Rows, d);
        B.Linear(raw, p.W1, p.B1, h);
        B.Gelu(h);
        B.Linear(h, p.W2, p.B2, y);
        return y;
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
    /// Runs every decoder layer over the rows <paramref name="x"/>; <paramref name="pass"/> holds their positions,
    /// the cache their keys and values go to, and the methods in effect. Queries attend causally to everything
    /// the layer's cache holds. With an exit run the policy is asked after each layer and, when it fires, the
    /// visual rows leave (with their positions and row numbers); the early layers' visual K/V are compacted away
    /// in <see cref="ExitKvMode.DropAll"/>. With NAAViT the visual rows issue no queries and skip the FFN (they
    /// still give keys and values), and leave after the last layer. Layers whose attention EAS skips run only
    /// their FFN and hold no cache. Consumes <paramref name="x"/> and returns the final rows, which the caller
    /// disposes.
    /// </summary>
    internal Tensor Decoder(Tensor x, DecoderPass pass)
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
                if (pass.SaisaFeatures is { } raw && l > 0 && run is { Spans.Count: > 0 })
                {
                    // SAISA: each layer's own projection of the raw vision features replaces the visual rows
                    // (layer 0's came in through the embeddings).
                    for (int i = 0; i < run.Spans.Count; i++)
                    {
                        using var projected = SaisaProject(l, raw[i]);
                        B.CopyBlock(projected, 0, 0, x, run.Spans[i].Start, 0, projected.Rows, projected.Cols);
                    }
                    pass.SaisaMacs += run.Spans.Sum(s => (long)s.Length) * ((long)raw[0].Cols * Config.Text.HiddenSize + (long)Config.Text.HiddenSize * Config.Text.HiddenSize);
                }
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
        return ExitGates.Feature(ToHost(tail), tail.Rows, Config.Text.HiddenSize, []);
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

    /// <summary>
    /// Attn(RmsNorm(x)) for one layer: project (through the PIA adapter when there is one), rotate, append every
    /// row's K/V to the cache, then the active rows' queries attend causally; returns their output rows.
    /// </summary>
    private Tensor SelfAttention(TextLayer w, Tensor x, (int Start, int Length)[] active, DecoderPass pass, int layer, PiaLayer? pia, ref long macs)
    {
        var t = Config.Text;
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
        var t = Config.Text;
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
        var t = Config.Text;
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
