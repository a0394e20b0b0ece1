// Microsoft.Extensions.AI's IChatClient over a LlavaModel: text and images in, streamed text out, with the
// engine's methods (visual-token exit, NAAViT, EAS) chosen per client and per request, and the request's
// report in the response. One request runs at a time (the session is not thread-safe; others wait). The
// client keeps one InferenceSession: when a request's prompt shares a prefix with the tokens it holds (the
// previous prompt and answer, same methods) and no new image follows it, the cache is cut back to that prefix
// and only the rest is prefilled.
// Generation runs on the library's Generator: what a request leaves unset is the model's generation_config.json,
// stop strings are held back while streaming and never reach the text, and cancellation is checked before each
// image and decoder layer of the prefill (the session rolls back) and between tokens.
using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using VteKernels.Backends;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Text;

namespace VteKernels.Extensions.AI;

/// <summary>An <see cref="IChatClient"/> that answers with a LLaVA model on this machine.</summary>
/// <remarks>Thread-safe: concurrent requests queue and run one at a time.</remarks>
public sealed class VteChatClient : IChatClient
{
    private readonly VteChatClientOptions _options;
    private readonly ConversationPrompt _prompt;
    private readonly int[]? _stopTokens;
    private readonly bool _ownsModel;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private InferenceSession? _session;
    private string? _sessionEasKey, _sessionMethodsKey;
    private bool _disposed;

    /// <summary>Creates a client over a loaded model.</summary>
    /// <param name="model">The model (not disposed by the client).</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="modelDir">The model folder: chat template and preprocessor_config.json are read from it.</param>
    /// <param name="options">Defaults (null: none of the methods, the model's chat template, 256 tokens).</param>
    /// <exception cref="ArgumentNullException">A required argument is null.</exception>
    /// <exception cref="InvalidInputException">The template prompt style is asked for but the model has none.</exception>
    /// <exception cref="ChatTemplateException">The model's chat template cannot be parsed.</exception>
    /// <exception cref="ModelFormatException">chat_template.json or preprocessor_config.json is malformed.</exception>
    public VteChatClient(LlavaModel model, Tokenizer tokenizer, string modelDir, VteChatClientOptions? options = null)
        : this(model, tokenizer, modelDir, options, ownsModel: false) { }

    private VteChatClient(LlavaModel model, Tokenizer tokenizer, string modelDir, VteChatClientOptions? options, bool ownsModel)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(modelDir);
        _options = options ?? new VteChatClientOptions();
        if (_options.DefaultMaxOutputTokens < 1)
            throw new ArgumentOutOfRangeException(nameof(options), _options.DefaultMaxOutputTokens, "DefaultMaxOutputTokens must be at least 1");
        Model = model;
        Tokenizer = tokenizer;
        _ownsModel = ownsModel;
        ModelId = _options.ModelId ?? Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd(Path.DirectorySeparatorChar));
        Metadata = new ChatClientMetadata("vtekernels", null, ModelId);
        var source = MultimodalPrompt.FindChatTemplate(modelDir, tokenizer);
        var style = _options.PromptStyle ?? (source is null ? PromptStyle.Llava15 : PromptStyle.Template);
        if (style == PromptStyle.Template && source is null)
            throw new InvalidInputException("the model has no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json); use the llava or vicuna prompt style");
        PromptStyle = style;
        var template = style == PromptStyle.Template ? ChatTemplate.Parse(source!) : null;
        var clip = MultimodalPrompt.PreprocessingFor(modelDir, model.Config, _options.PadImages);
        _prompt = new ConversationPrompt(model.Config, tokenizer, clip, style, template, _options.AllowFileUris);
        // The model's generation config names the end-of-sequence ids (or config.json does); a model with neither ends at the tokenizer's.
        _stopTokens = model.GenerationConfig.EosTokenIds.Count > 0 ? null : [.. tokenizer.EosIds];
    }

    /// <summary>Loads the model in <paramref name="modelDir"/> on <paramref name="backend"/> and its tokenizer; the client owns (and disposes) the model.</summary>
    /// <exception cref="ModelFormatException">The model folder is malformed.</exception>
    /// <exception cref="TokenizerException">tokenizer.json is missing or malformed.</exception>
    public static VteChatClient Load(string modelDir, IBackend backend, VteChatClientOptions? options = null)
    {
        var model = LlavaModel.Load(modelDir, backend);
        try
        {
            return new VteChatClient(model, Tokenizer.Load(modelDir), modelDir, options, ownsModel: true);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The model.</summary>
    public LlavaModel Model { get; }

    /// <summary>The tokenizer.</summary>
    public Tokenizer Tokenizer { get; }

    /// <summary>The model id requests may name (ChatOptions.ModelId).</summary>
    public string ModelId { get; }

    /// <summary>Provider "vtekernels" and the model id.</summary>
    public ChatClientMetadata Metadata { get; }

    /// <summary>How conversations are rendered.</summary>
    public PromptStyle PromptStyle { get; }

    /// <summary>
    /// The session of the latest request (its KV cache and tokens), for research code; null before the first request.
    /// Use it only between requests.
    /// </summary>
    public InferenceSession? Session => _session;

    /// <inheritdoc />
    /// <exception cref="InvalidInputException">The conversation, an image or a method setting is invalid.</exception>
    /// <exception cref="ContextLengthException">The prompt exceeds the model's context.</exception>
    /// <exception cref="ImageFormatException">An image's bytes are not a supported image.</exception>
    /// <exception cref="NotSupportedException">An option or content the engine does not have (the message names it).</exception>
    /// <exception cref="ArgumentOutOfRangeException">A sampling value is out of range.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<Microsoft.Extensions.AI.ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        var tokens = new List<GeneratedToken>();
        ChatResponseUpdate? last = null;
        await foreach (var u in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(u.Text);
            tokens.AddRange(TokensOf(u.AdditionalProperties));
            last = u;
        }
        var usage = last!.Contents.OfType<UsageContent>().Single().Details;
        return new ChatResponse(new Microsoft.Extensions.AI.ChatMessage(ChatRole.Assistant, text.ToString()) { MessageId = last.MessageId })
        {
            ResponseId = last.ResponseId, ModelId = ModelId, CreatedAt = last.CreatedAt, FinishReason = last.FinishReason, Usage = usage,
            AdditionalProperties = new AdditionalPropertiesDictionary { [VteChatKeys.Report] = last.AdditionalProperties![VteChatKeys.Report], [VteChatKeys.Tokens] = tokens },
        };
    }

    /// <inheritdoc />
    /// <remarks>One update per piece of text; the last update carries the finish reason, a <see cref="UsageContent"/> and the
    /// <see cref="VteRequestReport"/> under <see cref="VteChatKeys.Report"/>.</remarks>
    /// <exception cref="InvalidInputException">The conversation, an image or a method setting is invalid.</exception>
    /// <exception cref="ContextLengthException">The prompt exceeds the model's context.</exception>
    /// <exception cref="ImageFormatException">An image's bytes are not a supported image.</exception>
    /// <exception cref="NotSupportedException">An option or content the engine does not have (the message names it).</exception>
    /// <exception cref="ArgumentOutOfRangeException">A sampling value is out of range.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<Microsoft.Extensions.AI.ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var mapped = ChatOptionsMapping.Map(options, _options, Model.GenerationConfig, ModelId);
        var full = _prompt.Build(messages, mapped.Instructions);
        int context = Model.Config.Text.MaxPositionEmbeddings, n = full.TokenIds.Length;
        if (n > context)
            throw new ContextLengthException(n, context, $"the prompt is {n} tokens ({full.Images.Count} image(s) of {Model.Config.TokensPerImage}); the model's context is {context} tokens");

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        bool finished = false;
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var (session, step, cached) = PrepareSession(full, mapped.Methods);
            var m = mapped.Methods;
            var generation = new GenerationOptions
            {
                // Null: the model's generation config, as the library resolves it; the generator ends at the context's end.
                MaxNewTokens = mapped.MaxOutputTokens, Sampling = mapped.Sampling, StopTokens = _stopTokens,
                StopSequences = mapped.StopSequences, Logprobs = mapped.TopLogprobs is not null, TopLogprobs = mapped.TopLogprobs ?? 0,
                Prefill = new PrefillOptions { Exit = m.Exit, ExitKvMode = m.ExitKv, Naavit = m.Naavit, Trace = m.Trace, Progress = _options.PrefillProgress },
            };
            string responseId = "chatcmpl-" + Guid.NewGuid().ToString("N"), messageId = "msg-" + Guid.NewGuid().ToString("N");
            var created = DateTimeOffset.UtcNow;
            var pending = new List<GeneratedToken>();
            // The generator checks the token between decoder layers of the prefill and between tokens.
            var stream = Generator.Stream(session, step, generation, Tokenizer, cancellationToken);
            await foreach (var t in stream.ConfigureAwait(false))
            {
                pending.Add(t);
                // t.Text is final text only: never part of a stop string, never half a character.
                if (t.Text.Length == 0) continue;
                yield return new ChatResponseUpdate(ChatRole.Assistant, t.Text)
                {
                    ResponseId = responseId, MessageId = messageId, CreatedAt = created, ModelId = ModelId,
                    AdditionalProperties = new AdditionalPropertiesDictionary { [VteChatKeys.Tokens] = pending.ToArray() },
                };
                pending.Clear();
            }
            var result = stream.Result!;
            // The generator ends a cancelled request with a result; this client's contract is OperationCanceledException.
            if (result.FinishReason == FinishReason.Cancelled)
            {
                cancellationToken.ThrowIfCancellationRequested();
                throw new OperationCanceledException("the generation was cancelled");
            }
            bool stop = result.FinishReason == FinishReason.Stop;
            var report = new VteRequestReport
            {
                Prefill = result.Report!, PromptTokens = n, CachedTokens = cached, CompletionTokens = result.Usage.CompletionTokens,
                CompletionIds = result.Ids, TimeToFirstToken = result.Timings.FirstToken, Total = result.Timings.Total,
                FinishReason = stop ? "stop" : "length", StopReason = result.StopReason,
            };
            var usage = new UsageContent(new UsageDetails
            {
                InputTokenCount = n, CachedInputTokenCount = cached, OutputTokenCount = result.Usage.CompletionTokens,
                TotalTokenCount = n + result.Usage.CompletionTokens,
            });
            finished = true;
            yield return new ChatResponseUpdate(ChatRole.Assistant, [usage])
            {
                ResponseId = responseId, MessageId = messageId, CreatedAt = created, ModelId = ModelId,
                FinishReason = stop ? ChatFinishReason.Stop : ChatFinishReason.Length,
                AdditionalProperties = new AdditionalPropertiesDictionary { [VteChatKeys.Report] = report, [VteChatKeys.Tokens] = pending.ToArray() },
            };
        }
        finally
        {
            // A request that failed or was abandoned part-way leaves the cache in an unknown state.
            if (!finished) _session?.Reset();
            _gate.Release();
        }
    }

    /// <summary>The generated tokens under <see cref="VteChatKeys.Tokens"/> in an update's or a response's additional properties (empty when there are none).</summary>
    public static IReadOnlyList<GeneratedToken> TokensOf(AdditionalPropertiesDictionary? properties) =>
        properties?.TryGetValue(VteChatKeys.Tokens, out var t) == true && t is IReadOnlyList<GeneratedToken> list ? list : [];

    /// <summary>
    /// The session for <paramref name="methods"/> and what to prefill into it: when the cache was made with the same methods
    /// and shares a prefix with the prompt, only the tokens after that prefix (the cache is cut back to it) provided they
    /// hold no image; else the whole prompt after a reset.
    /// </summary>
    private (InferenceSession Session, PromptInput Step, int Cached) PrepareSession(PromptInput full, VteMethods methods)
    {
        var eas = methods.Eas;
        var easKey = eas is null ? "" : $"{eas.Source}|{EasAdapters.FormatLayers(eas.SkippedLayers)}|{eas.Adapters.Count}|{methods.PiaMode}";
        if (_session is null || _sessionEasKey != easKey)
        {
            _session?.Dispose();
            _session = null;
            _session = Model.CreateSession(new SessionOptions { Eas = eas, PiaMode = methods.PiaMode });
            _sessionEasKey = easKey;
            _sessionMethodsKey = null;
        }
        var key = $"{methods.Exit}|{methods.ExitKv}|{methods.Naavit}";
        if (methods.ReuseCache && _sessionMethodsKey == key && _session.Position > 0)
        {
            // The longest prefix shared with the tokens held (retokenizing an answer need not give back the tokens the
            // model generated); at least the prompt's last token is prefilled again, for its logits.
            var held = _session.Tokens;
            int common = 0, limit = Math.Min(held.Count, full.TokenIds.Length - 1);
            while (common < limit && held[common] == full.TokenIds[common]) common++;
            var rest = full.TokenIds[common..];
            bool truncatable = common == held.Count || (eas is not { Adapters.Count: > 0 } && !held.Skip(common).Contains(Model.Config.ImageTokenIndex));
            if (common > 0 && truncatable && !rest.Contains(Model.Config.ImageTokenIndex))
            {
                _session.Truncate(common);
                return (_session, PromptInput.TextOnly(rest), common);
            }
        }
        _session.Reset();
        _sessionMethodsKey = key;
        return (_session, full, 0);
    }

    /// <inheritdoc />
    /// <remarks>Hands out this client, its <see cref="ChatClientMetadata"/>, the <see cref="LlavaModel"/>, the <see cref="Text.Tokenizer"/>,
    /// and the current <see cref="InferenceSession"/> (null before the first request).</remarks>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType == typeof(ChatClientMetadata)) return Metadata;
        if (serviceType.IsInstanceOfType(Model)) return Model;
        if (serviceType.IsInstanceOfType(Tokenizer)) return Tokenizer;
        if (serviceType == typeof(InferenceSession)) return _session;
        return null;
    }

    /// <summary>Frees the session (and the model when <see cref="Load"/> made it); waits for a running request to end.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _gate.Wait();
        try
        {
            _disposed = true;
            _session?.Dispose();
            _session = null;
            if (_ownsModel) Model.Dispose();
        }
        finally
        {
            _gate.Release();
        }
    }
}
