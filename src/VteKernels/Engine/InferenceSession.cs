// The step-level API: one conversation's state (the KV cache and the tokens it holds) and the two steps
// research code drives by hand: prefill a prompt (text with image placeholders, plus pixels), then decode
// one token at a time. Each step returns logits and, on request, every layer's hidden states.
using VteKernels.Backends;

namespace VteKernels.Engine;

/// <summary>One sequence's state on a <see cref="LlavaModel"/>. Not thread-safe.</summary>
public sealed class InferenceSession : IDisposable
{
    private readonly LlavaModel _model;
    private readonly List<int> _tokens = [];

    internal InferenceSession(LlavaModel model)
    {
        _model = model;
        Cache = model.Backend.CreateKvCache(model.Config.Text.NumLayers, model.Config.Text.KvDim);
    }

    /// <summary>The key/value cache (per layer).</summary>
    public KvCache Cache { get; }

    /// <summary>Tokens processed so far (the next token's position is <see cref="Position"/>).</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>Number of tokens in the sequence so far.</summary>
    public int Position => _tokens.Count;

    /// <summary>
    /// Runs the prompt through the model (vision tower for each image, then every decoder layer) and
    /// returns the logits of its last row, or of every row with <see cref="PrefillOptions.AllLogits"/>.
    /// A prompt given after earlier steps continues the same sequence.
    /// </summary>
    /// <exception cref="InvalidInputException">Empty prompt, ids outside the vocabulary, placeholders that do not match the images, bad pixels, or a sequence longer than the model's context.</exception>
    public StepResult Prefill(PromptInput input, PrefillOptions? options = null)
    {
        options ??= new PrefillOptions();
        var cfg = _model.Config;
        if (input.TokenIds.Length == 0) throw new InvalidInputException("the prompt is empty");
        CheckLength(input.TokenIds.Length);
        foreach (var id in input.TokenIds)
            if ((uint)id >= (uint)cfg.Text.VocabSize && id != cfg.ImageTokenIndex)
                throw new InvalidInputException($"token id {id} is outside the vocabulary of {cfg.Text.VocabSize}");
        var spans = input.FindImageSpans(cfg);

        var features = new List<Tensor>();
        var visionStates = options.OutputVisionStates ? new List<IReadOnlyList<float[]>>() : null;
        var featuresHost = options.OutputVisionStates ? new List<float[]>() : null;
        try
        {
            foreach (var image in input.Images)
            {
                var states = options.OutputVisionStates ? new List<float[]>() : null;
                var f = _model.EncodeImage(image, states);
                features.Add(f);
                if (states is not null) visionStates!.Add(states);
                featuresHost?.Add(_model.ToHost(f));
            }
            using var x = _model.Embed(input.TokenIds, spans, features);
            var positions = Enumerable.Range(Position, input.TokenIds.Length).ToArray();
            var hidden = options.OutputHiddenStates ? new List<float[]>() : null;
            _model.Decoder(x, positions, Cache, hidden);
            _tokens.AddRange(input.TokenIds);
            var logits = _model.Head(x, options.AllLogits ? x.Rows : 1, hidden);
            return new StepResult(logits) { HiddenStates = hidden, VisionHiddenStates = visionStates, ImageFeatures = featuresHost };
        }
        finally
        {
            foreach (var f in features) f.Dispose();
        }
    }

    /// <summary>Feeds one token and returns the next-token logits.</summary>
    /// <exception cref="InvalidInputException">The id is outside the vocabulary or the context is full.</exception>
    public StepResult Decode(int tokenId, bool outputHiddenStates = false)
    {
        var cfg = _model.Config;
        if ((uint)tokenId >= (uint)cfg.Text.VocabSize)
            throw new InvalidInputException($"token id {tokenId} is outside the vocabulary of {cfg.Text.VocabSize}");
        if (Position == 0) throw new InvalidInputException("decode before any prefill: prefill a prompt first");
        CheckLength(1);
        using var x = _model.Embed([tokenId], [], []);
        var hidden = outputHiddenStates ? new List<float[]>() : null;
        _model.Decoder(x, [Position], Cache, hidden);
        _tokens.Add(tokenId);
        return new StepResult(_model.Head(x, 1, hidden)) { HiddenStates = hidden };
    }

    /// <summary>Forgets the sequence; the cache storage is kept for reuse.</summary>
    public void Reset()
    {
        _tokens.Clear();
        Cache.Clear();
    }

    private void CheckLength(int more)
    {
        int max = _model.Config.Text.MaxPositionEmbeddings;
        if (Position + more > max)
            throw new InvalidInputException($"sequence of {Position + more} tokens exceeds the model's context of {max} tokens");
    }

    /// <summary>Frees the cache.</summary>
    public void Dispose() => Cache.Dispose();
}
