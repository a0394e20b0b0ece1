// Microsoft.Extensions.AI's IChatClient over a LlavaModel: text and images in, streamed text out, with the
// engine's methods (visual-token exit, NAAViT, EAS) chosen per client and per request, and the request's
// report in the response. One request runs at a time (the session is not thread-safe; others wait). The
// client keeps one InferenceSession: when a request's prompt shares a prefix with the tokens it holds (the
// previous prompt and answer, same methods) and no new image follows it, the cache is cut back to that prefix
// and only the rest is prefilled.
// Cancellation is checked before the prefill and between generated tokens.
using System.Diagnostics;
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
    private readonly int[] _stopTokens;
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
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.DefaultMaxOutputTokens, 1, nameof(options));
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
        _stopTokens = model.Config.Text.EosTokenId is int eos ? [eos] : [.. tokenizer.EosIds];
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
        ChatResponseUpdate? last = null;
        await foreach (var u in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(u.Text);
            last = u;
        }
        var usage = last!.Contents.OfType<UsageContent>().Single().Details;
        return new ChatResponse(new Microsoft.Extensions.AI.ChatMessage(ChatRole.Assistant, text.ToString()) { MessageId = last.MessageId })
        {
            ResponseId = last.ResponseId, ModelId = ModelId, CreatedAt = last.CreatedAt, FinishReason = last.FinishReason,
            Usage = usage, AdditionalProperties = last.AdditionalProperties,
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
        var mapped = ChatOptionsMapping.Map(options, _options, ModelId);
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
                // The last token is sampled, not decoded, so a prompt of n tokens leaves room for context - n + 1.
                MaxNewTokens = Math.Min(mapped.MaxOutputTokens, context - n + 1),
                Sampling = mapped.Sampling, StopTokens = _stopTokens,
                Prefill = new PrefillOptions { Exit = m.Exit, ExitKvMode = m.ExitKv, Naavit = m.Naavit, Trace = m.Trace },
            };
            string responseId = "chatcmpl-" + Guid.NewGuid().ToString("N"), messageId = "msg-" + Guid.NewGuid().ToString("N");
            var created = DateTimeOffset.UtcNow;
            var decoder = Tokenizer.CreateStreamingDecoder();
            var clock = Stopwatch.StartNew();
            TimeSpan first = default;
            GeneratedToken? last = null;
            int count = 0;
            var stream = Generator.Stream(session, step, generation, cancellationToken: cancellationToken);
            await foreach (var t in stream.ConfigureAwait(false))
            {
                if (t.Index == 0) first = clock.Elapsed;
                last = t;
                count++;
                var piece = decoder.Push(t.Id);
                if (piece.Length > 0)
                    yield return new ChatResponseUpdate(ChatRole.Assistant, piece) { ResponseId = responseId, MessageId = messageId, CreatedAt = created, ModelId = ModelId };
            }
            // The generator ends a cancelled request with a result; this client's contract is OperationCanceledException.
            if (stream.Result?.FinishReason == FinishReason.Cancelled) cancellationToken.ThrowIfCancellationRequested();
            var total = clock.Elapsed;
            bool stop = last?.IsStop == true;
            var report = new VteRequestReport
            {
                Prefill = session.LastReport!, PromptTokens = n, CachedTokens = cached, CompletionTokens = count,
                TimeToFirstToken = first, Total = total, FinishReason = stop ? "stop" : "length",
            };
            var contents = new List<AIContent>();
            if (decoder.Flush() is { Length: > 0 } rest) contents.Add(new TextContent(rest));
            contents.Add(new UsageContent(new UsageDetails
            {
                InputTokenCount = n, CachedInputTokenCount = cached, OutputTokenCount = count, TotalTokenCount = n + count,
            }));
            finished = true;
            yield return new ChatResponseUpdate(ChatRole.Assistant, contents)
            {
                ResponseId = responseId, MessageId = messageId, CreatedAt = created, ModelId = ModelId,
                FinishReason = stop ? ChatFinishReason.Stop : ChatFinishReason.Length,
                AdditionalProperties = new AdditionalPropertiesDictionary { [VteChatKeys.Report] = report },
            };
        }
        finally
        {
            // A request that failed or was abandoned part-way leaves the cache in an unknown state.
            if (!finished) _session?.Reset();
            _gate.Release();
        }
    }

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
