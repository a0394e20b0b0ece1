// Text generation on top of the step API: prefill the prompt, then sample and decode one token at a time,
// streamed as IAsyncEnumerable, ending with a GenerationResult (text, ids, finish reason, usage, timings,
// the prefill's report). What a request leaves unset (null) comes from the model's generation_config.json as
// HF's generate applies it (LlavaModel.GenerationConfig): sampling, end-of-sequence ids, the new-token limit.
// The end, and why:
//   stop       an end-of-sequence / stop token (its id is kept, its text is not), or a stop string: matched in
//              the decoded text across token boundaries; neither it nor anything after it is ever emitted, and
//              text that could still become one is held back until it cannot;
//   length     max-new-tokens, or the context is full (no position left to decode the last token into);
//   cancelled  the token was cancelled: between decode steps, or between layers of the prefill. Cancellation
//              does not throw here: the result says so and keeps what was generated.
// Each step runs on the thread pool so a caller's UI or server loop is never blocked.
using System.Diagnostics;
using System.Globalization;
using System.Text;
using VteKernels.Engine.Exit;
using VteKernels.Models;
using VteKernels.Text;

namespace VteKernels.Engine;

/// <summary>Why a generation ended.</summary>
public enum FinishReason
{
    /// <summary>A stop token (end of sequence) or a stop string.</summary>
    Stop,

    /// <summary>The new-token limit, or the model's context is full.</summary>
    Length,

    /// <summary>The caller cancelled.</summary>
    Cancelled,
}

/// <summary>
/// Options of one generation. Null means "the model's default" (<see cref="LlavaModel.GenerationConfig"/>, read from
/// generation_config.json as HF reads it), so a caller overrides exactly what it sets.
/// </summary>
public sealed record GenerationOptions
{
    /// <summary>The new-token limit when neither the request nor the model's generation config gives one.</summary>
    public const int DefaultMaxNewTokens = 256;

    /// <summary>Most logprob alternatives per step (as OpenAI's top_logprobs).</summary>
    public const int MaxTopLogprobs = 20;

    /// <summary>Most tokens to generate; null: generation_config's max_new_tokens (or max_length minus the prompt), else <see cref="DefaultMaxNewTokens"/>. 0 runs the prefill only.</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>How tokens are chosen; null: the model's generation config (greedy unless it says do_sample).</summary>
    public SamplingOptions? Sampling { get; init; }

    /// <summary>Tokens that end the generation; null: the model's end-of-sequence ids. The stop token is reported with <see cref="GeneratedToken.IsStop"/>.</summary>
    public IReadOnlyList<int>? StopTokens { get; init; }

    /// <summary>Strings that end the generation when they appear in the text; they are not part of it. Needs a tokenizer.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>Report each chosen token's log-probability (<see cref="GeneratedToken.Logprob"/>).</summary>
    public bool Logprobs { get; init; }

    /// <summary>How many most likely alternatives to report per step, 0..<see cref="MaxTopLogprobs"/> (implies <see cref="Logprobs"/>).</summary>
    public int TopLogprobs { get; init; }

    /// <summary>The context to stay within (prompt, earlier turns and new tokens), at most the model's; null: the model's max_position_embeddings.</summary>
    public int? ContextLength { get; init; }

    /// <summary>How the prompt is prefilled (visual-token exit, trace, progress); the logits options are ignored.</summary>
    public PrefillOptions Prefill { get; init; } = new();

    /// <summary>Checks the ranges (sampling included when set).</summary>
    /// <exception cref="InvalidOptionException">A value is out of range; <see cref="InvalidOptionException.Option"/> names the property.</exception>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new InvalidOptionException(nameof(MaxNewTokens), Inv($"must be >= 0, got {MaxNewTokens}"));
        if (TopLogprobs is < 0 or > MaxTopLogprobs) throw new InvalidOptionException(nameof(TopLogprobs), Inv($"must be in [0, {MaxTopLogprobs}], got {TopLogprobs}"));
        if (ContextLength < 1) throw new InvalidOptionException(nameof(ContextLength), Inv($"must be >= 1, got {ContextLength}"));
        if (StopSequences.Any(string.IsNullOrEmpty)) throw new InvalidOptionException(nameof(StopSequences), "must not contain an empty string");
        Sampling?.Validate();
    }

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}

/// <summary>One generated token.</summary>
/// <param name="Id">Token id.</param>
/// <param name="Index">0 for the first generated token.</param>
/// <param name="IsStop">True when the generation ends here because of a stop token or a stop string.</param>
/// <param name="Elapsed">Time since the generation started.</param>
public sealed record GeneratedToken(int Id, int Index, bool IsStop, TimeSpan Elapsed)
{
    /// <summary>
    /// The text released with this token: final text only (never half a character, never a possible start of a stop
    /// string), so it may be empty, or carry text held back from earlier tokens. The concatenation over a stream is
    /// <see cref="GenerationResult.Text"/>. Empty without a tokenizer.
    /// </summary>
    public string Text { get; init; } = "";

    /// <summary>log P(Id) under the model's own distribution (log-softmax of the raw logits); null unless asked for.</summary>
    public double? Logprob { get; init; }

    /// <summary>The most likely tokens of this step with their log-probabilities (most likely first); null unless asked for.</summary>
    public IReadOnlyList<TokenLogprob>? TopLogprobs { get; init; }
}

/// <summary>Token counts of one generation.</summary>
/// <param name="PromptTokens">Tokens prefilled by this request.</param>
/// <param name="CachedTokens">Tokens already in the session before it (an earlier turn reused from the cache).</param>
/// <param name="CompletionTokens">Tokens generated (a stop token included).</param>
public sealed record GenerationUsage(int PromptTokens, int CachedTokens, int CompletionTokens)
{
    /// <summary>Prompt and completion tokens.</summary>
    public int TotalTokens => PromptTokens + CompletionTokens;
}

/// <summary>Where the time of one generation went.</summary>
/// <param name="Prefill">The prefill (vision tower, decoder, head) up to the first logits.</param>
/// <param name="FirstToken">From the start to the first token (zero when none was generated).</param>
/// <param name="Total">From the start to the end.</param>
/// <param name="DecodeTokens">Tokens generated after the first one (each needed a decode step).</param>
public sealed record GenerationTimings(TimeSpan Prefill, TimeSpan FirstToken, TimeSpan Total, int DecodeTokens)
{
    /// <summary>Decode steps per second after the first token; 0 with fewer than two tokens.</summary>
    public double DecodeTokensPerSecond => DecodeTokens > 0 && Total > FirstToken ? DecodeTokens / (Total - FirstToken).TotalSeconds : 0;
}

/// <summary>The outcome of one generation.</summary>
public sealed record GenerationResult
{
    /// <summary>The generated text (special tokens and stop strings excluded); empty without a tokenizer.</summary>
    public required string Text { get; init; }

    /// <summary>The generated ids, a stop token included (the tokens of a stop string are kept too, as HF keeps them).</summary>
    public required IReadOnlyList<int> Ids { get; init; }

    /// <summary>Every generated token with its text share and logprobs.</summary>
    public required IReadOnlyList<GeneratedToken> Tokens { get; init; }

    /// <summary>Why it ended.</summary>
    public required FinishReason FinishReason { get; init; }

    /// <summary>The end in words: "eos token 2", "stop string \"###\"", "max new tokens (24)", "context full (2048 tokens)", "cancelled".</summary>
    public required string StopReason { get; init; }

    /// <summary>Token counts.</summary>
    public required GenerationUsage Usage { get; init; }

    /// <summary>Time of the stages.</summary>
    public required GenerationTimings Timings { get; init; }

    /// <summary>What the prefill did (exit, rows per layer, multiply-adds, cache); null when it was cancelled.</summary>
    public PrefillReport? Report { get; init; }

    /// <summary>The sampling options in effect (the request's, else the model's).</summary>
    public required SamplingOptions Sampling { get; init; }

    /// <summary>The new-token limit in effect.</summary>
    public required int MaxNewTokens { get; init; }

    /// <summary>The context in effect (the request's, at most the model's).</summary>
    public required int ContextLength { get; init; }
}

/// <summary>
/// A generation's token stream; enumerate it once. When the enumeration ends (the last token, a cancellation, or
/// the consumer leaving early) <see cref="Result"/> holds the outcome.
/// </summary>
public sealed class GenerationStream : IAsyncEnumerable<GeneratedToken>
{
    private readonly Func<GenerationStream, CancellationToken, IAsyncEnumerable<GeneratedToken>> _run;
    private int _started;

    internal GenerationStream(Func<GenerationStream, CancellationToken, IAsyncEnumerable<GeneratedToken>> run) => _run = run;

    /// <summary>The outcome; null until the enumeration has ended.</summary>
    public GenerationResult? Result { get; internal set; }

    /// <inheritdoc/>
    /// <exception cref="InvalidOperationException">The stream was already enumerated.</exception>
    public IAsyncEnumerator<GeneratedToken> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) throw new InvalidOperationException("a generation stream can be enumerated once");
        return _run(this, cancellationToken).GetAsyncEnumerator(cancellationToken);
    }
}

/// <summary>Generates text from a model, streamed or whole.</summary>
public static class Generator
{
    /// <summary>
    /// Prefills <paramref name="prompt"/> into <paramref name="session"/> (continuing what it holds) and streams the
    /// generated tokens. The request is checked when this is called; the work starts with the enumeration.
    /// <paramref name="tokenizer"/> gives the tokens their text and is needed for stop strings.
    /// </summary>
    /// <exception cref="InvalidOptionException">An option is out of range, or stop strings are given without a tokenizer.</exception>
    /// <exception cref="InvalidInputException">The prompt does not fit the context (raised by the enumeration: invalid ids, placeholders, pixels).</exception>
    public static GenerationStream Stream(InferenceSession session, PromptInput prompt, GenerationOptions? options = null,
        Tokenizer? tokenizer = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(prompt);
        options ??= new GenerationOptions();
        options.Validate();
        if (options.StopSequences.Count > 0 && tokenizer is null)
            throw new InvalidOptionException(nameof(GenerationOptions.StopSequences), "need a tokenizer to match text");
        var model = session.Model;
        int modelContext = model.Config.Text.MaxPositionEmbeddings;
        int context = Math.Min(options.ContextLength ?? modelContext, modelContext);
        int length = session.Position + prompt.TokenIds.Length;
        if (length > context)
            throw new InvalidInputException($"the prompt ({length} tokens{(session.Position > 0 ? $" with the {session.Position} already in the session" : "")}) does not fit the context of {context} tokens");
        var gen = model.GenerationConfig;
        var plan = new Plan(
            options.Sampling ?? gen.Sampling,
            options.MaxNewTokens ?? gen.MaxNewTokensFor(length) ?? GenerationOptions.DefaultMaxNewTokens,
            options.StopTokens ?? gen.EosTokenIds,
            context);
        plan.Sampling.Validate();
        return new GenerationStream((stream, ct) => Run(stream, session, prompt, options, plan, tokenizer,
            CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, ct)));
    }

    /// <summary>Runs <see cref="Stream"/> to the end and returns the result.</summary>
    /// <exception cref="InvalidOptionException">An option is out of range, or stop strings are given without a tokenizer.</exception>
    /// <exception cref="InvalidInputException">The prompt is invalid or does not fit the context.</exception>
    public static async Task<GenerationResult> GenerateAsync(InferenceSession session, PromptInput prompt, GenerationOptions? options = null,
        Tokenizer? tokenizer = null, CancellationToken cancellationToken = default)
    {
        var stream = Stream(session, prompt, options, tokenizer, cancellationToken);
        await foreach (var _ in stream.ConfigureAwait(false)) { }
        return stream.Result!;
    }

    private sealed record Plan(SamplingOptions Sampling, int MaxNewTokens, IReadOnlyList<int> StopTokens, int Context);

    private static async IAsyncEnumerable<GeneratedToken> Run(GenerationStream stream, InferenceSession session, PromptInput prompt,
        GenerationOptions options, Plan plan, Tokenizer? tokenizer, CancellationTokenSource linked)
    {
        using var cts = linked;
        var ct = cts.Token;
        var clock = Stopwatch.StartNew();
        var sampler = new Sampler(plan.Sampling);
        var decoder = tokenizer?.CreateStreamingDecoder();
        var matcher = new StopSequenceMatcher(options.StopSequences);
        var tokens = new List<GeneratedToken>();
        var ids = new List<int>();
        int cached = session.Position;
        TimeSpan prefillTime = default;
        FinishReason reason = FinishReason.Length;
        string why = Inv($"max new tokens ({plan.MaxNewTokens})");
        StepResult? step = null;
        int topN = options.TopLogprobs;
        bool logprobs = options.Logprobs || topN > 0;
        bool ended = false;

        try
        {
            try
            {
                var prefill = options.Prefill with { AllLogits = false, CancellationToken = ct };
                step = await Task.Run(() => session.Prefill(prompt, prefill), ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                (reason, why, ended) = (FinishReason.Cancelled, "cancelled during the prefill", true);
                yield break;
            }
            prefillTime = clock.Elapsed;
            var history = new List<int>(session.Tokens);
            for (int i = 0; i < plan.MaxNewTokens; i++)
            {
                var logits = step.Logits.Last;
                int next = sampler.Next(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history),
                    System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids));
                (double Logprob, TokenLogprob[] Top)? lp = logprobs ? Sampler.Logprobs(logits, next, topN) : null;
                ids.Add(next);
                history.Add(next);

                // Decide the end before yielding, so the last token carries the held-back text.
                bool stopToken = plan.StopTokens.Contains(next);
                bool end = true;
                if (stopToken) (reason, why) = (FinishReason.Stop, Inv($"stop token {next}"));
                else if (i + 1 == plan.MaxNewTokens) (reason, why) = (FinishReason.Length, Inv($"max new tokens ({plan.MaxNewTokens})"));
                else if (session.Position + 1 > plan.Context) (reason, why) = (FinishReason.Length, Inv($"context full ({plan.Context} tokens)"));
                else if (ct.IsCancellationRequested) (reason, why) = (FinishReason.Cancelled, "cancelled");
                else end = false;

                string delta = decoder?.Push(next) ?? "";
                if (end && decoder is not null) delta += decoder.Flush();
                var (text, stopString) = matcher.Push(delta, final: end);
                if (stopString is not null)
                {
                    (reason, why, end) = (FinishReason.Stop, $"stop string {Quote(stopString)}", true);
                }
                var token = new GeneratedToken(next, i, end && reason == FinishReason.Stop, clock.Elapsed)
                {
                    Text = text, Logprob = lp?.Logprob, TopLogprobs = lp?.Top,
                };
                tokens.Add(token);
                ended = end;
                yield return token;
                if (end) yield break;
                try
                {
                    step = await Task.Run(() => session.Decode(next), ct).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    // The decode never started: the last token stands, its text was released with it.
                    (reason, why, ended) = (FinishReason.Cancelled, "cancelled", true);
                    yield break;
                }
            }
            ended = true;   // max new tokens 0: the prefill alone
        }
        finally
        {
            if (!ended) (reason, why) = (FinishReason.Cancelled, "the consumer stopped reading");
            var total = clock.Elapsed;
            var first = tokens.Count > 0 ? tokens[0].Elapsed : TimeSpan.Zero;
            var last = tokens.Count > 0 ? tokens[^1].Elapsed : total;
            stream.Result = new GenerationResult
            {
                Text = matcher.Text,
                Ids = ids,
                Tokens = tokens,
                FinishReason = reason,
                StopReason = why,
                Usage = new GenerationUsage(prompt.TokenIds.Length, cached, ids.Count),
                Timings = new GenerationTimings(prefillTime, first, tokens.Count > 0 ? last : total, Math.Max(0, tokens.Count - 1)),
                Report = step is null ? null : session.LastReport,
                Sampling = plan.Sampling,
                MaxNewTokens = plan.MaxNewTokens,
                ContextLength = plan.Context,
            };
        }
    }

    private static string Quote(string s) => System.Text.Json.JsonSerializer.Serialize(s);

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// Finds stop strings in text that arrives in pieces. Text is released only when no stop string can start in it:
/// the longest end of the text that is the beginning of a stop string is held back until more text decides it.
/// </summary>
internal sealed class StopSequenceMatcher(IReadOnlyList<string> stops)
{
    private readonly StringBuilder _text = new();
    private readonly int _longest = stops.Count == 0 ? 0 : stops.Max(s => s.Length);
    private int _released;
    private bool _stopped;

    /// <summary>The text up to the stop string (or all of it when none matched).</summary>
    public string Text => _text.ToString();

    /// <summary>Adds <paramref name="delta"/>; returns the text now safe to show and the stop string found, if any.</summary>
    public (string Released, string? Stop) Push(string delta, bool final)
    {
        if (_stopped) return ("", null);
        _text.Append(delta);
        if (_longest == 0) return Release(_text.Length, null);
        var text = _text.ToString();
        int from = Math.Max(0, _released - _longest);
        int at = -1;
        string? found = null;
        foreach (var s in stops)
        {
            int i = text.IndexOf(s, from, StringComparison.Ordinal);
            if (i >= 0 && (at < 0 || i < at)) (at, found) = (i, s);
        }
        if (found is not null)
        {
            _text.Length = at;
            _stopped = true;
            return Release(at, found);
        }
        if (final) return Release(text.Length, null);
        int hold = 0;
        for (int k = Math.Min(_longest - 1, text.Length); k > 0 && hold == 0; k--)
            foreach (var s in stops)
                if (s.Length > k && string.CompareOrdinal(text, text.Length - k, s, 0, k) == 0) { hold = k; break; }
        return Release(Math.Max(_released, text.Length - hold), null);
    }

    private (string, string?) Release(int upTo, string? stop)
    {
        upTo = Math.Max(upTo, _released);
        var s = _text.ToString(_released, Math.Min(upTo, _text.Length) - _released);
        _released = upTo;
        return (s, stop);
    }
}
