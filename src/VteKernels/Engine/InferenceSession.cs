// The step-level API: one conversation's state (the KV cache and the tokens it holds) and the two steps
// research code drives by hand: prefill a prompt (text with image placeholders, plus pixels), then decode
// one token at a time. Each step returns logits and, on request, every layer's hidden states.
// Threads: a session is one sequence; a step entered while another step of the same session runs on
// another thread throws InvalidOperationException at once (unguarded, the two corrupted the cache
// silently). Sessions of one model are independent and may run on different threads at the same time
// (on the CPU backend, which keeps no per-call state; a backend says whether it allows this).
// Weights: a memory-mapped weight file that changed since the model loaded is a
// WeightFileChangedException when the session is created and before each prefill (see LoadOptions).
using System.Diagnostics;
using VteKernels.Backends;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Engine.Observers;
using VteKernels.Engine.Vision;

namespace VteKernels.Engine;

/// <summary>
/// One sequence's state on a <see cref="LlavaModel"/>. Steps must not overlap: a step called while another step of this
/// session runs on another thread throws <see cref="InvalidOperationException"/>. Several sessions of one model may run at
/// once on the CPU backend.
/// </summary>
public sealed class InferenceSession : IDisposable
{
    private readonly LlavaModel _model;
    private readonly List<int> _tokens = [];
    private int _busy; // 1 while a step runs

    private readonly PiaSequence? _pia;

    internal InferenceSession(LlavaModel model, SessionOptions? options)
    {
        model.CheckWeightsUnchanged();
        _model = model;
        Options = options ?? new SessionOptions();
        Options.Eas?.Validate(model.Config);
        var t = model.Weights.Text.Layers;
        var attentionless = Enumerable.Range(0, t.Count).Where(l => !t[l].HasAttention && Options.Eas?.Skips(l) != true).ToList();
        if (attentionless.Count > 0)
            throw new ModelFormatException(null, null,
                $"decoder layer(s) {EasAdapters.FormatLayers(attentionless)} have no attention weights (an EAS checkpoint fine-tuned with them skipped): skip them with --skip-attn or load the checkpoint's adapters with --eas");
        if (Options.Eas is { Adapters.Count: > 0 }) _pia = new PiaSequence(model.Config.Text.NumLayers);
        Cache = model.Backend.CreateKvCache(model.Config.Text.NumLayers, model.Config.Text.KvDim, model.Config.Text.HeadDim);
    }

    /// <summary>The model this session runs on.</summary>
    public LlavaModel Model => _model;

    /// <summary>The methods that hold for the whole sequence (EAS attention skipping).</summary>
    public SessionOptions Options { get; }

    /// <summary>
    /// The PIA adapters' expert mix per adapted layer as resolved by the first prefill (w0, w1); empty before.
    /// </summary>
    public IReadOnlyDictionary<int, double[]> AdapterMix =>
        _pia is null ? new Dictionary<int, double[]>()
            : Enumerable.Range(0, _model.Config.Text.NumLayers).Where(l => _pia[l] is not null).ToDictionary(l => l, l => _pia[l]!.ExpertMix);

    /// <summary>The key/value cache (per layer).</summary>
    public KvCache Cache { get; }

    /// <summary>Tokens processed so far (the next token's position is <see cref="Position"/>).</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>Number of tokens in the sequence so far.</summary>
    public int Position => _tokens.Count;

    /// <summary>The report of the latest prefill (exit, rows per layer, multiply-adds, cache, times); null before any.</summary>
    public PrefillReport? LastReport { get; private set; }

    /// <summary>
    /// Runs the prompt through the model (vision tower for each image, then every decoder layer) and
    /// returns the logits of its last row, or of every remaining row with <see cref="PrefillOptions.AllLogits"/>.
    /// With an exit policy the visual rows may leave after some layer; the logits then cover the rows that
    /// remain (prefix and text, in order, see <see cref="StepResult.Rows"/>). A prompt given after earlier
    /// steps continues the same sequence.
    /// </summary>
    /// <exception cref="InvalidInputException">Empty prompt, ids outside the vocabulary, placeholders that do not match the images, bad pixels, a sequence longer than the model's context, or an exit layer beyond the model's depth.</exception>
    /// <exception cref="ModelFormatException">The exit gates do not fit the model.</exception>
    /// <exception cref="WeightFileChangedException">A memory-mapped weight file changed since the model was loaded.</exception>
    /// <exception cref="InvalidOperationException">Another step of this session is running on another thread.</exception>
    /// <exception cref="OperationCanceledException"><see cref="PrefillOptions.CancellationToken"/> was cancelled; checked before
    /// each image and each decoder layer. The sequence is then as it was before the call (the cache rows this call
    /// added are removed).</exception>
    public StepResult Prefill(PromptInput input, PrefillOptions? options = null)
    {
        using var step = Step("Prefill");
        _model.CheckWeightsUnchanged();
        options ??= new PrefillOptions();
        var cancellationToken = options.CancellationToken;
        var cfg = _model.Config;
        if (input.TokenIds.Length == 0) throw new InvalidInputException("the prompt is empty");
        CheckLength(input.TokenIds.Length);
        foreach (var id in input.TokenIds)
            if ((uint)id >= (uint)cfg.Text.VocabSize && id != cfg.ImageTokenIndex)
                throw new InvalidInputException($"token id {id} is outside the vocabulary of {cfg.Text.VocabSize}");
        var spans = input.FindImageSpans(cfg);
        foreach (var image in input.Images) cfg.Family.CheckImage(cfg, image);
        var policy = options.Exit ?? ExitPolicy.None;
        policy.Validate(cfg);
        if ((options.Naavit || cfg.Saisa) && spans.Count > 0 && spans[^1].End == input.TokenIds.Length)
            throw new InvalidInputException("with NAAViT the prompt must end with text: visual rows issue no queries, so an image at the end leaves nothing to predict from");

        int n = input.TokenIds.Length, start = Position;
        var cacheBase = Enumerable.Range(0, cfg.Text.NumLayers).Select(Cache.Length).ToArray();
        var run = new ExitRun(cfg, policy, options.ExitKvMode, options.Trace, spans, cacheBase);
        int[] ids = input.TokenIds;
        int[] positions = Enumerable.Range(start, n).ToArray();
        var rowMap = Enumerable.Range(0, n).ToList();
        var images = input.Images;
        if (policy is FixedLayerExit { Layers: 0 } && spans.Count > 0)
        {
            // No decoder layer sees the image: its rows never enter, and the vision tower need not run.
            ids = TextDecoder.Keep(ids, spans);
            positions = TextDecoder.Keep(positions, spans);
            var kept = TextDecoder.Keep([.. rowMap], spans);
            rowMap.Clear();
            rowMap.AddRange(kept);
            images = [];
            run.ExitBeforeFirstLayer();
        }

        var clock = Stopwatch.StartNew();
        var encoded = new List<EncodedImage>();
        var visionStates = options.OutputVisionStates ? new List<IReadOnlyList<float[]>>() : null;
        var featuresHost = options.OutputVisionStates ? new List<float[]>() : null;
        try
        {
            // The family's vision side: each image becomes the rows of its span (tiles, packing and all).
            foreach (var image in images)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var states = options.OutputVisionStates ? new List<float[]>() : null;
                encoded.Add(_model.Vision.Encode(image, states));
                if (states is not null) visionStates!.Add(states);
                featuresHost?.Add(_model.Text.ToHost(encoded[^1].Rows));
            }
            var visionTime = clock.Elapsed;
            // From here on the model family does not matter: rows and spans.
            var x = _model.Text.Embed(ids, images.Count == 0 ? [] : spans, [.. encoded.Select(e => e.Rows)]);
            var hidden = options.OutputHiddenStates ? new List<float[]>() : null;
            var layerMacs = new long[cfg.Text.NumLayers];
            bool naavit = (options.Naavit || cfg.Saisa) && images.Count > 0;   // SAISA models are trained for NAAViT
            var pass = new DecoderPass
            {
                Positions = positions, Cache = Cache, HiddenStates = hidden, Exit = run, RowMap = rowMap,
                Naavit = naavit, Eas = Options.Eas, PiaMode = Options.PiaMode, Pia = _pia, LayerMacs = layerMacs,
                LayerVisualRows = _model.Vision.LayerRows(encoded), Cancellation = cancellationToken, Progress = options.Progress,
                Observer = options.Observer is { } o ? new DecoderObservation(o, _model.Backend, cfg.Text, DecoderStep.Prefill) : null,
            };
            x = _model.Text.Run(x, pass);
            try
            {
                var decoderTime = clock.Elapsed - visionTime;
                _tokens.AddRange(input.TokenIds);
                int logitRows = options.AllLogits ? x.Rows : 1;
                var logits = _model.Text.Head(x, logitRows, hidden);
                var headTime = clock.Elapsed - visionTime - decoderTime;
                LastReport = BuildReport(run, input, spans, images, start, logitRows, options.AllLogits ? n : 1,
                    new StageTimes(visionTime, decoderTime, headTime), layerMacs, naavit, pass.VisualRowMacs);
                return new StepResult(logits)
                {
                    HiddenStates = hidden, VisionHiddenStates = visionStates, ImageFeatures = featuresHost,
                    Rows = rowMap.Skip(rowMap.Count - logitRows).ToArray(), Report = LastReport,
                };
            }
            finally
            {
                x.Dispose();
            }
        }
        catch when (Position == start)
        {
            // Nothing of this prompt entered the sequence: drop the cache rows its layers appended before the failure.
            for (int l = 0; l < cfg.Text.NumLayers; l++)
                if (Cache.Length(l) > cacheBase[l]) Cache.RemoveRows(l, cacheBase[l], Cache.Length(l) - cacheBase[l]);
            if (start == 0) _pia?.Dispose();   // adapters resolved from a prefill that never finished
            throw;
        }
        finally
        {
            foreach (var e in encoded) e.Dispose();
        }
    }

    private PrefillReport BuildReport(ExitRun run, PromptInput input, IReadOnlyList<ImageSpan> spans, IReadOnlyList<ImageInput> imagesEncoded, int start,
        int headRows, int fullHeadRows, StageTimes times, long[] layerMacs, bool naavit, long visualRowMacs)
    {
        var cfg = _model.Config;
        var t = cfg.Text;
        int n = input.TokenIds.Length;
        var rows = run.Layers.Select(l => l.Rows).ToArray();
        long decoder = layerMacs.Sum() + visualRowMacs, decoderFull = 0;
        for (int l = 0; l < t.NumLayers; l++) decoderFull += Cost.DecoderLayer(t, n, start);
        long Vision(IEnumerable<ImageInput> images) => images.Sum(i => cfg.Family.VisionMacs(cfg, i));
        var lengths = Enumerable.Range(0, t.NumLayers).Select(Cache.Length).ToArray();
        return new PrefillReport
        {
            Policy = run.Policy.ToString(),
            Naavit = naavit,
            SkippedLayers = Options.Eas?.SkippedLayers.ToArray() ?? [],
            KvMode = run.KvMode,
            PromptRows = n,
            VisualRows = spans.Sum(s => s.Length),
            ExitLayer = run.ExitLayer,
            TokensPerLayer = rows,
            Executed = new MacCount(Vision(imagesEncoded), decoder, Cost.Head(t, headRows)),
            Full = new MacCount(Vision(input.Images), decoderFull, Cost.Head(t, fullHeadRows)),
            KvBytes = lengths.Sum(len => (long)len) * t.KvDim * 2 * Cache.ElementBytes,
            KvBytesAllocated = Cache.BytesHeld,
            KvLengths = lengths,
            Times = times,
            Layers = run.Layers,
        };
    }

    /// <summary>Feeds one token and returns the next-token logits.</summary>
    /// <exception cref="InvalidInputException">The id is outside the vocabulary or the context is full.</exception>
    /// <exception cref="InvalidOperationException">Another step of this session is running on another thread.</exception>
    public StepResult Decode(int tokenId, bool outputHiddenStates = false) => Decode(tokenId, null, outputHiddenStates);

    /// <summary>Feeds one token with <paramref name="observer"/> watching every layer, and returns the next-token logits.</summary>
    /// <exception cref="InvalidInputException">The id is outside the vocabulary or the context is full.</exception>
    /// <exception cref="InvalidOperationException">Another step of this session is running on another thread.</exception>
    public StepResult Decode(int tokenId, IDecoderObserver? observer, bool outputHiddenStates = false)
    {
        using var step = Step("Decode");
        var cfg = _model.Config;
        if ((uint)tokenId >= (uint)cfg.Text.VocabSize)
            throw new InvalidInputException($"token id {tokenId} is outside the vocabulary of {cfg.Text.VocabSize}");
        if (Position == 0) throw new InvalidInputException("decode before any prefill: prefill a prompt first");
        CheckLength(1);
        var x = _model.Text.Embed([tokenId], [], []);
        var hidden = outputHiddenStates ? new List<float[]>() : null;
        using var y = _model.Text.Run(x, new DecoderPass
        {
            Positions = [Position], Cache = Cache, HiddenStates = hidden, Eas = Options.Eas, PiaMode = Options.PiaMode, Pia = _pia,
            Observer = observer is null ? null : new DecoderObservation(observer, _model.Backend, cfg.Text, DecoderStep.Decode),
        });
        _tokens.Add(tokenId);
        return new StepResult(_model.Text.Head(y, 1, hidden)) { HiddenStates = hidden, Rows = [Position - 1] };
    }

    /// <summary>
    /// Forgets the tokens from position <paramref name="length"/> on, and their rows in every layer's cache, so the
    /// sequence can continue differently from there (a chat whose new prompt shares only a prefix with the tokens held).
    /// What remains equals a prefill of the first <paramref name="length"/> tokens with the same methods. The forgotten
    /// tokens must be text: image rows may be missing from some layers after an exit.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative or beyond <see cref="Position"/>.</exception>
    /// <exception cref="InvalidInputException">The forgotten tokens include image placeholders, or PIA adapters hold
    /// per-sequence terms taken over the tokens to be forgotten (reset the session instead).</exception>
    /// <exception cref="InvalidOperationException">A step of this session is running on another thread.</exception>
    public void Truncate(int length)
    {
        using var step = Step("Truncate");
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Position);
        int drop = Position - length;
        if (drop == 0) return;
        if (_tokens.Skip(length).Contains(_model.Config.ImageTokenIndex))
            throw new InvalidInputException($"cannot truncate to {length} tokens: the tokens after it include an image (reset the session instead)");
        if (_pia is not null) throw new InvalidInputException("cannot truncate a sequence with PIA adapters: their per-sequence terms cover the whole first prefill (reset the session instead)");
        for (int l = 0; l < Cache.Layers; l++)
        {
            int held = Cache.Length(l);
            if (held == 0) continue;   // a layer without attention holds no cache
            Cache.RemoveRows(l, held - drop, drop);
        }
        _tokens.RemoveRange(length, drop);
    }

    /// <summary>Forgets the sequence (and the adapters' per-sequence terms); the cache storage is kept for reuse.</summary>
    /// <exception cref="InvalidOperationException">A step of this session is running on another thread.</exception>
    public void Reset()
    {
        using var step = Step("Reset");
        _tokens.Clear();
        Cache.Clear();
        _pia?.Dispose();
    }

    // Marks a step as running for its duration; a second one entering meanwhile fails at once.
    private Busy Step(string name)
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
            throw new InvalidOperationException(
                $"InferenceSession.{name} was called while another step of the same session is running on another thread: a session is one sequence and its steps must not overlap (use one session per thread)");
        return new Busy(this);
    }

    private readonly struct Busy(InferenceSession session) : IDisposable
    {
        public void Dispose() => Volatile.Write(ref session._busy, 0);
    }

    private void CheckLength(int more)
    {
        int max = _model.Config.Text.MaxPositionEmbeddings;
        if (Position + more > max)
            throw new InvalidInputException($"sequence of {Position + more} tokens exceeds the model's context of {max} tokens");
    }

    /// <summary>Frees the cache and the per-sequence adapter weights.</summary>
    public void Dispose()
    {
        Cache.Dispose();
        _pia?.Dispose();
    }
}
