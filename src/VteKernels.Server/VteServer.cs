// `vte serve`'s HTTP face on ASP.NET Core (Kestrel, from the shared framework): OpenAI's chat-completions API
// over a VteChatClient, plus GET /v1/models, GET /health and the web page at "/". Requests run one at a time
// on the model (RequestQueue); a client that disconnects cancels its request (HttpContext.RequestAborted, which
// the chat client's generator checks between decoder layers of the prefill and between tokens, so the model
// is free almost at once), and /health counts it as cancelled as soon as the disconnect is noticed.
// Every failure is answered in OpenAI's error shape: 400 for bad requests (and prompts over the context),
// 401 for a wrong API key, 404 for an unknown model, 413 for a body over the limit, 503 for a full queue.
// Streaming answers wait for the first token before sending headers, so errors found by the prefill (a bad
// image, a prompt over the context) still get their status code.
using System.Net;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using VteKernels.Extensions.AI;

namespace VteKernels.Server;

/// <summary>Settings of <see cref="VteServer"/>.</summary>
public sealed record VteServerOptions
{
    /// <summary>Address to bind (default: loopback only).</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>Port (0: any free port; see <see cref="VteServer.Address"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>When set, /v1/* requests need "Authorization: Bearer KEY".</summary>
    public string? ApiKey { get; init; }

    /// <summary>Requests that may wait while one runs; more are refused with 503.</summary>
    public int MaxWaiting { get; init; } = 8;

    /// <summary>Largest request body accepted (default 20 MiB: several images as data URIs).</summary>
    public long MaxBodyBytes { get; init; } = 20L << 20;

    /// <summary>The device named in /health.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>One line per request goes here (null: nowhere).</summary>
    public TextWriter? Log { get; init; }
}

/// <summary>The OpenAI-compatible HTTP server over one <see cref="VteChatClient"/>.</summary>
public sealed class VteServer : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private readonly WebApplication _app;
    private readonly VteChatClient _client;
    private readonly VteServerOptions _options;
    private readonly RequestQueue _queue;
    private readonly DateTimeOffset _started = DateTimeOffset.UtcNow;
    private long _served, _failed, _cancelled, _refused;

    private VteServer(WebApplication app, VteChatClient client, VteServerOptions options)
    {
        _app = app;
        _client = client;
        _options = options;
        _queue = new RequestQueue(options.MaxWaiting);
    }

    /// <summary>The address the server listens on (with the actual port when <see cref="VteServerOptions.Port"/> was 0).</summary>
    public Uri Address { get; private set; } = null!;

    /// <summary>Requests answered, failed, cancelled by their client, and refused because the queue was full.</summary>
    public (long Served, long Failed, long Cancelled, long Refused) Counts =>
        (Interlocked.Read(ref _served), Interlocked.Read(ref _failed), Interlocked.Read(ref _cancelled), Interlocked.Read(ref _refused));

    /// <summary>Starts listening. The client is not disposed by the server.</summary>
    /// <exception cref="ArgumentException">The host is not an IP address or "localhost", or a limit is out of range.</exception>
    /// <exception cref="IOException">The address is in use.</exception>
    public static async Task<VteServer> StartAsync(VteChatClient client, VteServerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxWaiting);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxBodyBytes, 1024L);
        if (options.Port is < 0 or > 65535) throw new ArgumentOutOfRangeException(nameof(options), options.Port, "port must be in 0..65535");
        var ip = options.Host == "localhost" ? IPAddress.Loopback
            : IPAddress.TryParse(options.Host, out var parsed) ? parsed
            : throw new ArgumentException($"host '{options.Host}' is not an IP address (e.g. 127.0.0.1, ::1, 0.0.0.0) or localhost", nameof(options));

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = DrainLimit(options.MaxBodyBytes);
            k.Listen(ip, options.Port);
        });
        var app = builder.Build();
        var server = new VteServer(app, client, options);
        server.Map(app);
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new IOException($"cannot listen on {options.Host}:{options.Port}: {e.Message}", e);
        }
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address.Replace("[::]", "[::1]").Replace("0.0.0.0", "127.0.0.1"));
        return server;
    }

    /// <summary>Completes when the server stops (on <paramref name="cancellationToken"/>, or <see cref="DisposeAsync"/>).</summary>
    public async Task WaitForShutdownAsync(CancellationToken cancellationToken)
    {
        // Ctrl+C reaches the caller's token; SIGTERM reaches the host's lifetime, which stops the application.
        var stopping = _app.Lifetime.ApplicationStopping;
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, stopping);
        try
        {
            await Task.Delay(Timeout.Infinite, either.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        await _app.StopAsync(CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>Stops listening and ends running requests.</summary>
    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync(CancellationToken.None).ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    private void Map(WebApplication app)
    {
        app.Use(async (ctx, next) =>
        {
            var outcome = new Outcome();
            ctx.Items[typeof(Outcome)] = outcome;
            try
            {
                if (ctx.Request.Path.StartsWithSegments("/v1") && _options.ApiKey is string key
                    && ctx.Request.Headers.Authorization.ToString() != "Bearer " + key)
                    throw new ApiError(401, "missing or wrong API key: send \"Authorization: Bearer KEY\"", code: "invalid_api_key");
                await next(ctx).ConfigureAwait(false);
            }
            catch (ApiError e)
            {
                if (outcome.End()) Interlocked.Increment(ref e.Status == 503 ? ref _refused : ref _failed);
                await WriteError(ctx, e).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
            {
                if (outcome.End()) Interlocked.Increment(ref _cancelled);
                Log(ctx, "cancelled: the client disconnected");
            }
            catch (BadHttpRequestException e)
            {
                if (outcome.End()) Interlocked.Increment(ref _failed);
                await WriteError(ctx, e.StatusCode == 413 ? TooLarge() : new ApiError(e.StatusCode, e.Message)).ConfigureAwait(false);
            }
        });
        app.MapGet("/health", Health);
        app.MapGet("/v1/models", Models);
        app.MapPost("/v1/chat/completions", ChatCompletions);
        app.MapGet("/", ctx => Page(ctx, "index.html"));
        app.MapGet("/favicon.ico", ctx => Page(ctx, "favicon.svg"));
        app.MapGet("/{file}", ctx => Page(ctx, (string)ctx.Request.RouteValues["file"]!));
        app.MapFallback(ctx => throw new ApiError(404, $"no such endpoint: {ctx.Request.Method} {ctx.Request.Path} (POST /v1/chat/completions, GET /v1/models, GET /health, GET /)", code: "not_found"));
    }

    /// <summary>
    /// Kestrel's own limit: bodies up to this size are read to the end (and dropped past <see cref="VteServerOptions.MaxBodyBytes"/>)
    /// so that a client which sends all of its body before reading gets the 413 instead of a broken connection.
    /// </summary>
    private static long DrainLimit(long maxBody) => Math.Max(4 * maxBody, 64L << 20);

    private async Task<ReadOnlyMemory<byte>> ReadBody(HttpRequest request, CancellationToken ct)
    {
        long limit = _options.MaxBodyBytes;
        if (request.ContentLength > DrainLimit(limit)) throw TooLarge();
        bool tooLarge = request.ContentLength > limit;
        using var kept = new MemoryStream(tooLarge ? 0 : (int)Math.Min(request.ContentLength ?? 65536, limit));
        var chunk = new byte[81920];
        long total = 0;
        int n;
        while ((n = await request.Body.ReadAsync(chunk, ct).ConfigureAwait(false)) > 0)
        {
            total += n;
            if (total > limit) tooLarge = true;
            if (!tooLarge) kept.Write(chunk, 0, n);
        }
        if (tooLarge) throw TooLarge();
        return kept.GetBuffer().AsMemory(0, (int)kept.Length);
    }

    private ApiError TooLarge() =>
        new(413, $"the request body is larger than the server's limit of {_options.MaxBodyBytes >> 20} MiB (vte serve --max-body-mb)", code: "request_too_large");

    private Task Health(HttpContext ctx) => WriteJson(ctx, 200, new JsonObject
    {
        ["status"] = "ok",
        ["model"] = _client.ModelId,
        ["device"] = _options.Device,
        ["uptime_s"] = (DateTimeOffset.UtcNow - _started).TotalSeconds,
        ["queue"] = new JsonObject
        {
            ["policy"] = "one request at a time per model (no batching); others wait in arrival order",
            ["running"] = _queue.Running,
            ["waiting"] = _queue.Waiting,
            ["max_waiting"] = _queue.MaxWaiting,
        },
        ["requests"] = new JsonObject { ["served"] = Counts.Served, ["failed"] = Counts.Failed, ["cancelled"] = Counts.Cancelled, ["refused"] = Counts.Refused },
        ["context_tokens"] = _client.Model.Config.Text.MaxPositionEmbeddings,
        ["tokens_per_image"] = _client.Model.Config.TokensPerImage,
        ["decoder_layers"] = _client.Model.Config.Text.NumLayers,
    });

    private Task Models(HttpContext ctx) => WriteJson(ctx, 200, new JsonObject
    {
        ["object"] = "list",
        ["data"] = new JsonArray(new JsonObject
        {
            ["id"] = _client.ModelId, ["object"] = "model", ["created"] = _started.ToUnixTimeSeconds(), ["owned_by"] = "vtekernels",
        }),
    });

    private async Task ChatCompletions(HttpContext ctx)
    {
        var ct = ctx.RequestAborted;
        // A disconnect counts as soon as it is noticed (the work it cancels may still be finishing its layer).
        using var abort = ct.Register(() => { if (OutcomeOf(ctx).End()) Interlocked.Increment(ref _cancelled); });
        var body = await ReadBody(ctx.Request, ct).ConfigureAwait(false);
        ChatCompletionRequest request;
        try
        {
            using var doc = JsonDocument.Parse(body);
            request = ChatCompletionRequest.Parse(doc.RootElement);
        }
        catch (JsonException e)
        {
            throw new ApiError(400, $"the request body is not valid JSON: {e.Message}", code: "invalid_json");
        }
        if (request.Model is string model && model != _client.ModelId)
            throw new ApiError(404, $"the model '{model}' does not exist here (this server serves '{_client.ModelId}'; GET /v1/models)", "model", "model_not_found");

        using var turn = await _queue.EnterAsync(ct).ConfigureAwait(false);
        try
        {
            if (request.Stream) await Stream(ctx, request, ct).ConfigureAwait(false);
            else
            {
                var response = await _client.GetResponseAsync(request.Messages, request.Options, ct).ConfigureAwait(false);
                var report = Report(response.AdditionalProperties);
                await WriteJson(ctx, 200, new JsonObject
                {
                    ["id"] = response.ResponseId, ["object"] = "chat.completion", ["created"] = response.CreatedAt?.ToUnixTimeSeconds(),
                    ["model"] = _client.ModelId,
                    ["choices"] = new JsonArray(new JsonObject
                    {
                        ["index"] = 0,
                        ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = response.Text, ["refusal"] = null },
                        ["logprobs"] = request.Logprobs ? new OpenAiLogprobs(_client.Tokenizer).Next(VteChatClient.TokensOf(response.AdditionalProperties)) : null,
                        ["finish_reason"] = response.FinishReason?.Value,
                    }),
                    ["usage"] = Usage(response.Usage),
                    ["vte"] = report?.ToJson(),
                }).ConfigureAwait(false);
                Served(ctx, report);
            }
        }
        catch (Exception e) when (Translate(e, request) is ApiError api)
        {
            throw api;
        }
    }

    private async Task Stream(HttpContext ctx, ChatCompletionRequest request, CancellationToken ct)
    {
        await using var updates = _client.GetStreamingResponseAsync(request.Messages, request.Options, ct).GetAsyncEnumerator(ct);
        // The first update comes after the prefill and the first token: errors until then get a status code.
        bool more = await updates.MoveNextAsync().ConfigureAwait(false);
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.Headers["X-Accel-Buffering"] = "no";
        bool firstChunk = true;
        VteRequestReport? report = null;
        var logprobs = request.Logprobs ? new OpenAiLogprobs(_client.Tokenizer) : null;
        try
        {
            for (; more; more = await updates.MoveNextAsync().ConfigureAwait(false))
            {
                var u = updates.Current;
                var delta = new JsonObject();
                if (firstChunk) delta["role"] = "assistant";
                firstChunk = false;
                if (u.Text.Length > 0) delta["content"] = u.Text;
                var choice = new JsonObject
                {
                    ["index"] = 0, ["delta"] = delta, ["logprobs"] = logprobs?.Next(VteChatClient.TokensOf(u.AdditionalProperties)), ["finish_reason"] = u.FinishReason?.Value,
                };
                await Event(ctx, Chunk(u, choice), ct).ConfigureAwait(false);
                if (u.FinishReason is not null)
                {
                    report = Report(u.AdditionalProperties);
                    var final = Chunk(u, null);
                    final["usage"] = Usage(u.Contents.OfType<UsageContent>().FirstOrDefault()?.Details);
                    final["vte"] = report?.ToJson();
                    await Event(ctx, final, ct).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is not OperationCanceledException && Translate(e, request) is ApiError api)
        {
            // Headers are gone: the error travels as an event, as OpenAI's streams carry errors.
            if (OutcomeOf(ctx).End()) Interlocked.Increment(ref _failed);
            await Event(ctx, api.ToJson(), ct).ConfigureAwait(false);
            Log(ctx, $"{api.Status} during the stream: {api.Message}");
            return;
        }
        await ctx.Response.WriteAsync("data: [DONE]\n\n", ct).ConfigureAwait(false);
        await ctx.Response.Body.FlushAsync(ct).ConfigureAwait(false);
        Served(ctx, report);
    }

    private JsonObject Chunk(ChatResponseUpdate u, JsonObject? choice) => new()
    {
        ["id"] = u.ResponseId, ["object"] = "chat.completion.chunk", ["created"] = u.CreatedAt?.ToUnixTimeSeconds(), ["model"] = _client.ModelId,
        ["choices"] = choice is null ? new JsonArray() : new JsonArray(choice),
    };

    private static async Task Event(HttpContext ctx, JsonObject data, CancellationToken ct)
    {
        await ctx.Response.WriteAsync("data: " + data.ToJsonString(Compact) + "\n\n", ct).ConfigureAwait(false);
        await ctx.Response.Body.FlushAsync(ct).ConfigureAwait(false);
    }

    private static JsonObject? Usage(UsageDetails? u) => u is null ? null : new JsonObject
    {
        ["prompt_tokens"] = u.InputTokenCount, ["completion_tokens"] = u.OutputTokenCount, ["total_tokens"] = u.TotalTokenCount,
        ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = u.CachedInputTokenCount ?? 0 },
    };

    private static VteRequestReport? Report(AdditionalPropertiesDictionary? props) =>
        props is not null && props.TryGetValue(VteChatKeys.Report, out var r) ? r as VteRequestReport : null;

    /// <summary>
    /// The HTTP error for an exception from the chat client; null for cancellation and for bugs (which become 500s).
    /// An option out of range names the request's field (<paramref name="request"/> knows which field each option came from).
    /// </summary>
    internal static ApiError? Translate(Exception e, ChatCompletionRequest? request = null) => e switch
    {
        ApiError a => a,
        ContextLengthException c => new ApiError(400, c.Message, "messages", "context_length_exceeded"),
        ImageFormatException i => new ApiError(400, $"an image could not be read: {i.Message}", "messages", "invalid_image"),
        NotSupportedException n => new ApiError(400, n.Message, null, "unsupported_parameter"),
        ArgumentException a when (request?.FieldOf(a.ParamName) ?? a.ParamName) is string field =>
            new ApiError(400, $"'{field}' {a.Message.Split(" (Parameter")[0]}", field, "invalid_value"),
        ArgumentException a => new ApiError(400, a.Message, null, "invalid_value"),
        VteException v => new ApiError(400, v.Message, null, "invalid_request"),
        OperationCanceledException => null,
        _ => new ApiError(500, $"internal error: {e.GetType().Name}: {e.Message}", null, "internal_error", "server_error"),
    };

    private async Task Page(HttpContext ctx, string file)
    {
        var stream = typeof(VteServer).Assembly.GetManifestResourceStream("wwwroot/" + file)
            ?? throw new ApiError(404, $"no such page: /{file}", code: "not_found");
        await using (stream.ConfigureAwait(false))
        {
            ctx.Response.ContentType = Path.GetExtension(file) switch
            {
                ".html" => "text/html; charset=utf-8",
                ".js" => "text/javascript; charset=utf-8",
                ".css" => "text/css; charset=utf-8",
                ".svg" => "image/svg+xml",
                _ => "application/octet-stream",
            };
            ctx.Response.Headers.CacheControl = "no-cache";
            ctx.Response.Headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'";
            await stream.CopyToAsync(ctx.Response.Body, ctx.RequestAborted).ConfigureAwait(false);
        }
    }

    private static Task WriteJson(HttpContext ctx, int status, JsonObject body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        return ctx.Response.WriteAsync(body.ToJsonString(Compact), Encoding.UTF8, ctx.RequestAborted);
    }

    private async Task WriteError(HttpContext ctx, ApiError e)
    {
        Log(ctx, $"{e.Status} {e.Message}");
        if (ctx.Response.HasStarted) return;
        ctx.Response.Clear();
        if (e.Status == 401) ctx.Response.Headers.WWWAuthenticate = "Bearer";
        try
        {
            await WriteJson(ctx, e.Status, e.ToJson()).ConfigureAwait(false);
        }
        catch (Exception w) when (w is OperationCanceledException or IOException)
        {
            // The client is gone.
        }
    }

    private void Served(HttpContext ctx, VteRequestReport? report)
    {
        if (OutcomeOf(ctx).End()) Interlocked.Increment(ref _served);
        Log(ctx, "200 " + (report?.Summary() ?? ""));
    }

    private static Outcome OutcomeOf(HttpContext ctx) => (Outcome)ctx.Items[typeof(Outcome)]!;

    /// <summary>How a request ended, counted once: the first of served, failed, refused or cancelled.</summary>
    private sealed class Outcome
    {
        private int _ended;

        /// <summary>True the first time only.</summary>
        public bool End() => Interlocked.Exchange(ref _ended, 1) == 0;
    }

    private void Log(HttpContext ctx, string what)
    {
        if (_options.Log is not { } log) return;
        lock (log) log.WriteLine($"{DateTimeOffset.Now:HH:mm:ss} {ctx.Request.Method} {ctx.Request.Path} {what}");
    }
}
