// vte serve's HTTP face on a loopback port, driven by real clients: the OpenAI .NET SDK and
// Microsoft.Extensions.AI.OpenAI's IChatClient, streaming and not, with an image; stop sequences, penalties,
// seeds and logprobs through the SDK against the library's own Generator; then every kind of bad request
// (each a clear OpenAI-style error naming the field, and the server answering the next request), a client
// that disconnects mid-stream or during a long prefill, a full queue, the API key, file URLs, and 200
// sequential requests for memory.
#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental
using System.ClientModel;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using VteKernels.Engine;
using VteKernels.Models;
using VteKernels.Extensions.AI;
using AiMessage = Microsoft.Extensions.AI.ChatMessage;

namespace VteKernels.Server.Tests;

[Collection("model")]
public sealed class ServerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static ChatClient OpenAiChat(RunningServer s, string key = "unused") =>
        new(TinyModel.Id, new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = s.Api });

    private static UserChatMessage ImageQuestion(string q) =>
        new(ChatMessageContentPart.CreateImagePart(BinaryData.FromBytes(TinyModel.SamplePng), "image/png"), ChatMessageContentPart.CreateTextPart(q));

    private static async Task<(HttpStatusCode Status, JsonNode? Body)> Post(HttpClient http, Uri address, string body)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var r = await http.PostAsync(new Uri(address, "/v1/chat/completions"), content, Ct);
        var text = await r.Content.ReadAsStringAsync(Ct);
        return (r.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    private static string Good(int maxTokens = 2) =>
        $$$"""{"model":"{{{TinyModel.Id}}}","max_tokens":{{{maxTokens}}},"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"{{{TinyModel.SampleDataUri}}}"}},{"type":"text","text":"What is it?"}]}]}""";

    [Fact]
    public async Task OpenAI_sdk_gets_the_same_answer_as_the_library_with_an_image()
    {
        await using var s = await TinyModel.StartServer();
        var result = await OpenAiChat(s).CompleteChatAsync([ImageQuestion("What is in the picture?")], new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 }, Ct);
        var completion = result.Value;
        using var library = TinyModel.Client();
        var expected = await library.GetResponseAsync(
            [new AiMessage(ChatRole.User, [new DataContent(TinyModel.SamplePng, "image/png"), new TextContent("What is in the picture?")])], new ChatOptions { MaxOutputTokens = 8 }, Ct);
        Assert.Equal(expected.Text, completion.Content[0].Text);
        Assert.Equal(expected.Usage!.InputTokenCount, completion.Usage.InputTokenCount);
        Assert.Equal(expected.Usage.OutputTokenCount, completion.Usage.OutputTokenCount);
        Assert.Equal(expected.FinishReason == Microsoft.Extensions.AI.ChatFinishReason.Stop ? OpenAI.Chat.ChatFinishReason.Stop : OpenAI.Chat.ChatFinishReason.Length, completion.FinishReason);
        // The report travels in the extra "vte" field.
        var raw = JsonNode.Parse(result.GetRawResponse().Content.ToString())!;
        Assert.Equal("vte-prefill-trace/1", (string?)raw["vte"]!["format"]);
        Assert.Equal(64, (int)raw["vte"]!["visual_rows"]!);
        Assert.Equal(completion.Usage.InputTokenCount, (int)raw["vte"]!["prompt_tokens"]!);
        // /v1/models through the SDK.
        var models = await new OpenAIClient(new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = s.Api }).GetOpenAIModelClient().GetModelsAsync(Ct);
        Assert.Equal([TinyModel.Id], models.Value.Select(m => m.Id));
    }

    [Fact]
    public async Task OpenAI_sdk_streams_with_a_final_usage_chunk()
    {
        await using var s = await TinyModel.StartServer();
        var text = new StringBuilder();
        int updates = 0;
        OpenAI.Chat.ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var u in OpenAiChat(s).CompleteChatStreamingAsync([ImageQuestion("Describe it.")], new ChatCompletionOptions { MaxOutputTokenCount = 12 }, Ct))
        {
            updates++;
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            finish ??= u.FinishReason;
            usage ??= u.Usage;
        }
        using var library = TinyModel.Client();
        var expected = await library.GetResponseAsync([new AiMessage(ChatRole.User, [new DataContent(TinyModel.SamplePng, "image/png"), new TextContent("Describe it.")])], new ChatOptions { MaxOutputTokens = 12 }, Ct);
        Assert.True(updates >= 3, $"{updates} updates");
        Assert.Equal(expected.Text, text.ToString());
        Assert.NotNull(finish);
        Assert.NotNull(usage);
        Assert.Equal(expected.Usage!.InputTokenCount, usage.InputTokenCount);
        Assert.Equal(expected.Usage.OutputTokenCount, usage.OutputTokenCount);
    }

    [Fact]
    public async Task Microsoft_Extensions_AI_OpenAI_client_talks_to_the_server_streaming_and_not()
    {
        await using var s = await TinyModel.StartServer();
        IChatClient chat = OpenAiChat(s).AsIChatClient();
        AiMessage[] question = [new(ChatRole.User, [new DataContent(TinyModel.SamplePng, "image/png"), new TextContent("What colour?")])];
        var options = new ChatOptions { MaxOutputTokens = 6, AdditionalProperties = null };
        var whole = await chat.GetResponseAsync(question, options, Ct);
        var streamed = new StringBuilder();
        int n = 0;
        await foreach (var u in chat.GetStreamingResponseAsync(question, options, Ct)) { streamed.Append(u.Text); n++; }
        using var library = TinyModel.Client();
        var expected = await library.GetResponseAsync(question, new ChatOptions { MaxOutputTokens = 6 }, Ct);
        Assert.Equal(expected.Text, whole.Text);
        Assert.Equal(expected.Text, streamed.ToString());
        Assert.True(n >= 2);
        Assert.Equal(expected.Usage!.InputTokenCount, whole.Usage!.InputTokenCount);
    }

    [Fact]
    public async Task The_methods_go_in_the_vte_object_and_the_report_comes_back()
    {
        await using var s = await TinyModel.StartServer();
        using var http = new HttpClient();
        var body = JsonNode.Parse(Good())!;
        body["vte"] = new JsonObject { ["exit"] = "layer:1", ["exit_kv"] = "drop", ["naavit"] = false, ["skip_attn"] = "3", ["trace"] = true };
        var (status, json) = await Post(http, s.Address, body.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, status);
        var vte = json!["vte"]!;
        Assert.Equal(1, (int)vte["exit_layer"]!);
        Assert.Equal("drop", (string?)vte["kv_mode"]);
        Assert.Equal([3], vte["skipped_layers"]!.AsArray().Select(x => (int)x!));
        Assert.NotNull(vte["layers"]![0]!["visual_mass"]);
        Assert.True((double)vte["mac_ratio"]! < 1);
    }

    public static TheoryData<string, string, int, string> BadRequests()
    {
        string image = TinyModel.SampleDataUri;
        string Msg(string content) => $$"""{"model":"{{TinyModel.Id}}","messages":[{"role":"user","content":{{content}}}]}""";
        var longText = string.Join(" ", Enumerable.Repeat("describe the picture", 400));
        return new()
        {
            { "malformed JSON", """{"model": "synth-tiny", "messages": [""", 400, "invalid_json" },
            { "not an object", "[1, 2]", 400, "" },
            { "messages missing", $$"""{"model":"{{TinyModel.Id}}"}""", 400, "missing_required_parameter" },
            { "messages not an array", $$"""{"model":"{{TinyModel.Id}}","messages":"hi"}""", 400, "invalid_value" },
            { "temperature a string", $$"""{"model":"{{TinyModel.Id}}","temperature":"hot","messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_value" },
            { "max_tokens a float", $$"""{"model":"{{TinyModel.Id}}","max_tokens":2.5,"messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_value" },
            { "content a number", Msg("42"), 400, "invalid_value" },
            { "unknown role", $$"""{"messages":[{"role":"wizard","content":"hi"}]}""", 400, "invalid_value" },
            { "unknown model", """{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", 404, "model_not_found" },
            { "not an image", Msg("""[{"type":"image_url","image_url":{"url":"data:image/png;base64,aGVsbG8gd29ybGQ="}}]"""), 400, "invalid_image" },
            { "not base64", Msg("""[{"type":"image_url","image_url":{"url":"data:image/png;base64,@@@"}}]"""), 400, "invalid_value" },
            { "a remote URL", Msg("""[{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]"""), 400, "unsupported_value" },
            { "a file URL without --allow-file-urls", Msg("""[{"type":"image_url","image_url":{"url":"file:///etc/hostname"}}]"""), 400, "unsupported_parameter" },
            { "an audio part", Msg("""[{"type":"input_audio","input_audio":{"data":"","format":"wav"}}]"""), 400, "unsupported_value" },
            { "prompt over the context", Msg(JsonSerializer.Serialize(longText)), 400, "context_length_exceeded" },
            { "images over the context", Msg("[" + string.Join(",", Enumerable.Repeat($$$"""{"type":"image_url","image_url":{"url":"{{{image}}}"}}""", 17)) + "]"), 400, "context_length_exceeded" },
            { "stop not strings", """{"stop":[1],"messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_value" },
            { "stop an object", """{"stop":{"a":1},"messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_value" },
            { "logprobs a string", """{"logprobs":"yes","messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_value" },
            { "n = 2", """{"n":2,"messages":[{"role":"user","content":"hi"}]}""", 400, "unsupported_value" },
            { "top_p out of range", """{"top_p":7,"messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_value" },
            { "unknown vte field", """{"vte":{"exitt":"layer:1"},"messages":[{"role":"user","content":"hi"}]}""", 400, "unknown_parameter" },
            { "bad exit policy", """{"vte":{"exit":"layer:x"},"messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_request" },
            { "gate file from a request", """{"vte":{"exit":"gate:/etc/passwd"},"messages":[{"role":"user","content":"hi"}]}""", 400, "invalid_request" },
            { "last message from the assistant", """{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}""", 400, "invalid_request" },
        };
    }

    [Theory, MemberData(nameof(BadRequests))]
    public async Task A_bad_request_gets_a_clear_error_and_the_server_keeps_serving(string name, string body, int status, string code)
    {
        await using var s = await TinyModel.StartServer(clientOptions: new VteChatClientOptions
        {
            LoadGates = f => throw new InvalidInputException($"gate file '{f}' is not loaded"),
        });
        using var http = new HttpClient();
        foreach (var stream in new[] { false, true })
        {
            var sent = body;
            if (stream && name != "malformed JSON" && JsonNode.Parse(body) is JsonObject o && o.ContainsKey("messages")) { o["stream"] = true; sent = o.ToJsonString(); }
            var (got, json) = await Post(http, s.Address, sent);
            Assert.True((int)got == status, $"{name} (stream {stream}): {(int)got} {json?.ToJsonString()}");
            var error = json!["error"]!;
            Assert.False(string.IsNullOrWhiteSpace((string?)error["message"]), name);
            Assert.Equal(status >= 500 ? "server_error" : "invalid_request_error", (string?)error["type"]);
            if (code.Length > 0) Assert.Equal(code, (string?)error["code"]);
            TestContext.Current.TestOutputHelper?.WriteLine($"{name} (stream {stream}): {(int)got} {error.ToJsonString()}");
        }
        var (okStatus, okBody) = await Post(http, s.Address, Good());
        Assert.Equal(HttpStatusCode.OK, okStatus);
        Assert.NotNull(okBody!["choices"]![0]!["message"]!["content"]);
    }

    public static TheoryData<string, string> OutOfRangeFields => new()
    {
        { "\"frequency_penalty\":3", "frequency_penalty" },
        { "\"presence_penalty\":-2.5", "presence_penalty" },
        { "\"temperature\":-1", "temperature" },
        { "\"top_p\":0", "top_p" },
        { "\"top_k\":-1", "top_k" },
        { "\"min_p\":1.5", "min_p" },
        { "\"repetition_penalty\":0", "repetition_penalty" },
        { "\"logprobs\":true,\"top_logprobs\":21", "top_logprobs" },
        { "\"top_logprobs\":2", "top_logprobs" },
        { "\"max_tokens\":0", "max_tokens" },
        { "\"max_completion_tokens\":0,\"max_tokens\":5", "max_completion_tokens" },
        { "\"seed\":1099511627776", "seed" },
        { "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop" },
        { "\"stop\":\"\"", "stop" },
    };

    [Theory, MemberData(nameof(OutOfRangeFields))]
    public async Task A_value_out_of_range_gets_a_400_naming_the_field(string fields, string param)
    {
        await using var s = await TinyModel.StartServer();
        using var http = new HttpClient();
        foreach (var stream in new[] { false, true })
        {
            var (status, json) = await Post(http, s.Address, $$"""{{{fields}},"stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"hi"}]}""");
            Assert.True(status == HttpStatusCode.BadRequest, $"{fields} (stream {stream}): {(int)status} {json?.ToJsonString()}");
            var error = json!["error"]!;
            Assert.Equal(param, (string?)error["param"]);
            Assert.Equal("invalid_value", (string?)error["code"]);
            Assert.Equal("invalid_request_error", (string?)error["type"]);
            Assert.StartsWith($"'{param}' ", (string?)error["message"]);
            TestContext.Current.TestOutputHelper?.WriteLine($"{fields}: {error.ToJsonString()}");
        }
        Assert.Equal(HttpStatusCode.OK, (await Post(http, s.Address, Good())).Status);
    }

    /// <summary>The library's Generator on the prompt the server's client just prefilled (a text question on a fresh server).</summary>
    private static async Task<GenerationResult> Library(RunningServer s, int promptTokens, GenerationOptions options)
    {
        var prompt = PromptInput.TextOnly([.. s.Client.Session!.Tokens.Take(promptTokens)]);
        using var session = TinyModel.Model.CreateSession();
        return await Generator.GenerateAsync(session, prompt, options, TinyModel.Tokenizer, Ct);
    }

    /// <summary>A server whose requests are always prefilled afresh (as the library's own runs are), so logits are bit for bit the same.</summary>
    private static Task<RunningServer> FreshPrefills() =>
        TinyModel.StartServer(clientOptions: new VteChatClientOptions { Methods = new VteMethods { ReuseCache = false } });

    [Fact]
    public async Task Stop_sequences_through_the_sdk_never_appear_and_finish_with_stop()
    {
        await using var s = await FreshPrefills();
        var chat = OpenAiChat(s);
        const string question = "Tell me a long story";
        var free = (await chat.CompleteChatAsync([new UserChatMessage(question)], new ChatCompletionOptions { MaxOutputTokenCount = 40 }, Ct)).Value.Content[0].Text;
        int at = free.Length / 2;
        while (at + 2 < free.Length && (free[at] == '\uFFFD' || free[at + 1] == '\uFFFD')) at++;
        Assert.True(at + 2 <= free.Length, $"no stop string in '{free}'");
        string stop = free.Substring(at, 2);
        string expected = free[..free.IndexOf(stop, StringComparison.Ordinal)];
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 40, StopSequences = { stop, "never" } };

        var whole = (await chat.CompleteChatAsync([new UserChatMessage(question)], options, Ct)).Value;
        Assert.Equal(expected, whole.Content.Count == 0 ? "" : whole.Content[0].Text);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, whole.FinishReason);

        var pieces = new List<string>();
        OpenAI.Chat.ChatFinishReason? finish = null;
        await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(question)], options, Ct))
        {
            pieces.AddRange(u.ContentUpdate.Select(p => p.Text));
            finish ??= u.FinishReason;
        }
        Assert.Equal(expected, string.Concat(pieces));
        Assert.DoesNotContain(pieces, p => p.Contains(stop, StringComparison.Ordinal));
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, finish);

        // Microsoft.Extensions.AI.OpenAI sends ChatOptions.StopSequences as "stop".
        var viaMeai = await chat.AsIChatClient().GetResponseAsync([new AiMessage(ChatRole.User, question)], new ChatOptions { MaxOutputTokens = 40, StopSequences = [stop] }, Ct);
        Assert.Equal(expected, viaMeai.Text);
        Assert.Equal(Microsoft.Extensions.AI.ChatFinishReason.Stop, viaMeai.FinishReason);
    }

    [Fact]
    public async Task Penalties_and_seed_through_the_sdk_give_the_library_generators_tokens()
    {
        await using var s = await FreshPrefills();
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 12, FrequencyPenalty = 2f, PresencePenalty = 0.5f, Temperature = 0.9f, TopP = 0.95f, Seed = 5 };
        var result = await OpenAiChat(s).CompleteChatAsync([new UserChatMessage("Describe the picture in many words")], options, Ct);
        var raw = JsonNode.Parse(result.GetRawResponse().Content.ToString())!;
        var ids = raw["vte"]!["completion_ids"]!.AsArray().Select(x => (int)x!).ToArray();
        var sampling = TinyModel.Model.GenerationConfig.ResolveSampling(new SamplingRequest { FrequencyPenalty = 2f, PresencePenalty = 0.5f, Temperature = 0.9f, TopP = 0.95f, Seed = 5 });
        var library = await Library(s, result.Value.Usage.InputTokenCount, new GenerationOptions { MaxNewTokens = 12, Sampling = sampling });
        Assert.Equal(library.Ids, ids);
        Assert.Equal(library.Text, result.Value.Content[0].Text);
        Assert.Equal(library.Ids.Count, result.Value.Usage.OutputTokenCount);

        // The extensions (top_k, min_p, repetition_penalty) as plain JSON fields, greedy with penalties.
        using var http = new HttpClient();
        var (status, json) = await Post(http, s.Address, """{"max_tokens":12,"top_k":20,"min_p":0.1,"repetition_penalty":1.5,"frequency_penalty":-0.5,"messages":[{"role":"user","content":"Describe the picture in many words"}]}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var greedy = TinyModel.Model.GenerationConfig.ResolveSampling(new SamplingRequest { TopK = 20, MinP = 0.1f, RepetitionPenalty = 1.5f, FrequencyPenalty = -0.5f });
        var library2 = await Library(s, (int)json!["usage"]!["prompt_tokens"]!, new GenerationOptions { MaxNewTokens = 12, Sampling = greedy });
        Assert.Equal(library2.Ids, json["vte"]!["completion_ids"]!.AsArray().Select(x => (int)x!));
        Assert.NotEqual(library.Ids, library2.Ids);

        // Microsoft.Extensions.AI.OpenAI's IChatClient sends ChatOptions' penalties and seed.
        var meai = OpenAiChat(s).AsIChatClient();
        var viaMeai = await meai.GetResponseAsync([new AiMessage(ChatRole.User, "Describe the picture in many words")],
            new ChatOptions { MaxOutputTokens = 12, FrequencyPenalty = 2f, PresencePenalty = 0.5f, Temperature = 0.9f, TopP = 0.95f, Seed = 5 }, Ct);
        Assert.Equal(library.Text, viaMeai.Text);
    }

    [Fact]
    public async Task Logprobs_through_the_sdk_are_the_library_generators_streaming_and_not()
    {
        await using var s = await FreshPrefills();
        var chat = OpenAiChat(s);
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, IncludeLogProbabilities = true, TopLogProbabilityCount = 3 };
        var result = await chat.CompleteChatAsync([new UserChatMessage("What is it?")], options, Ct);
        var library = await Library(s, result.Value.Usage.InputTokenCount, new GenerationOptions { MaxNewTokens = 8, Logprobs = true, TopLogprobs = 3 });
        var sdk = result.Value.ContentTokenLogProbabilities;
        Assert.Equal(library.Tokens.Count, sdk.Count);
        Assert.Equal(result.Value.Usage.OutputTokenCount, sdk.Count);
        // The JSON numbers are the library's doubles exactly; the SDK reads them as floats.
        var raw = JsonNode.Parse(result.GetRawResponse().Content.ToString())!["choices"]![0]!["logprobs"]!["content"]!.AsArray();
        for (int i = 0; i < sdk.Count; i++)
        {
            var lib = library.Tokens[i];
            Assert.Equal(lib.Logprob!.Value, (double)raw[i]!["logprob"]!);
            Assert.Equal((float)lib.Logprob.Value, sdk[i].LogProbability, 1e-6f);
            Assert.Equal(lib.TopLogprobs!.Select(a => a.Logprob), raw[i]!["top_logprobs"]!.AsArray().Select(a => (double)a!["logprob"]!));
            Assert.Equal(3, sdk[i].TopLogProbabilities.Count);
            Assert.NotNull(sdk[i].Utf8Bytes);
            Assert.Equal(sdk[i].Token, raw[i]!["token"]!.GetValue<string>());
            // The chosen token's own text comes first among the alternatives when it is the most likely one.
            if (lib.TopLogprobs![0].Id == lib.Id) Assert.Equal(sdk[i].Token, sdk[i].TopLogProbabilities[0].Token);
        }
        if (library.FinishReason == FinishReason.Stop) Assert.Equal("</s>", sdk[^1].Token);

        var streamed = new List<ChatTokenLogProbabilityDetails>();
        await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage("What is it?")], options, Ct)) streamed.AddRange(u.ContentTokenLogProbabilities);
        Assert.Equal(sdk.Select(t => (t.Token, t.LogProbability)), streamed.Select(t => (t.Token, t.LogProbability)));
        Assert.Equal(sdk.Select(t => t.TopLogProbabilities.Count), streamed.Select(t => t.TopLogProbabilities.Count));

        // Without logprobs the field is null.
        using var http = new HttpClient();
        var (_, plain) = await Post(http, s.Address, Good());
        Assert.Null(plain!["choices"]![0]!["logprobs"]);
    }

    [Theory, InlineData(false), InlineData(true)]
    public async Task A_client_that_disconnects_during_a_long_prefill_frees_the_model_at_the_next_layer(bool stream)
    {
        var seen = new List<(int Done, int Total)>();
        using var reached = new SemaphoreSlim(0);
        using var release = new SemaphoreSlim(0);
        int held = 0;
        // The first prefill is held before its decoder layer 1 until the test has seen the server notice the disconnect.
        var hook = new PrefillHook(p =>
        {
            lock (seen) seen.Add(p);
            if (p.Done == 1 && Interlocked.Exchange(ref held, 1) == 0)
            {
                reached.Release();
                release.Wait(TimeSpan.FromMinutes(2));
            }
        });
        await using var s = await TinyModel.StartServer(clientOptions: new VteChatClientOptions { PrefillProgress = hook });
        using var http = NoDrain();
        // Twelve images: 768 image tokens, a cancellation check before each image and each decoder layer.
        var parts = string.Join(",", Enumerable.Repeat($$$"""{"type":"image_url","image_url":{"url":"{{{TinyModel.SampleDataUri}}}"}}""", 12));
        var body = $$"""{"max_tokens":50,"stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":[{{parts}},{"type":"text","text":"Compare them."}]}]}""";
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(s.Address, "/v1/chat/completions")) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        var sending = http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        Assert.True(await reached.WaitAsync(TimeSpan.FromMinutes(2), Ct), "the prefill never reached decoder layer 1");
        cts.Cancel();   // the client goes away; no header has been sent yet
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sending);
        var clock = Stopwatch.StartNew();
        while (s.Server.Counts.Cancelled == 0 && clock.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(20, Ct);
        Assert.Equal(1, s.Server.Counts.Cancelled);   // noticed while the prefill still stands before layer 1
        release.Release();
        // The next request is served: the cancelled prefill stopped at the check before layer 2.
        var (status, json) = await Post(http, s.Address, Good());
        Assert.Equal(HttpStatusCode.OK, status);
        lock (seen) Assert.Equal([(0, 4), (1, 4), (0, 4), (1, 4), (2, 4), (3, 4)], seen);
        var health = JsonNode.Parse(await http.GetStringAsync(new Uri(s.Address, "/health"), Ct))!;
        Assert.Equal(1, (int)health["requests"]!["cancelled"]!);
        Assert.Equal(1, (int)health["requests"]!["served"]!);
        Assert.Equal(0, (int)health["queue"]!["running"]!);
        Assert.Equal(0, (int)json!["vte"]!["cached_tokens"]!);
    }

    [Fact]
    public async Task A_50_MB_body_is_refused_and_the_server_keeps_serving()
    {
        await using var s = await TinyModel.StartServer();
        using var http = new HttpClient();
        var huge = new StringBuilder("""{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,""");
        huge.Append('A', 50 << 20).Append("\"}}]}]}");
        var (status, json) = await Post(http, s.Address, huge.ToString());
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
        Assert.Equal("request_too_large", (string?)json!["error"]!["code"]);
        // Without a Content-Length (chunked), the limit holds while reading.
        using var chunked = new HttpRequestMessage(HttpMethod.Post, new Uri(s.Address, "/v1/chat/completions"))
        {
            Content = new ChunkedContent(Encoding.UTF8.GetBytes(huge.ToString())),
        };
        using var r = await http.SendAsync(chunked, Ct);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, r.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Post(http, s.Address, Good())).Status);
    }

    private sealed class ChunkedContent(byte[] bytes) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            for (int i = 0; i < bytes.Length; i += 1 << 20) await stream.WriteAsync(bytes.AsMemory(i, Math.Min(1 << 20, bytes.Length - i)));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    [Fact]
    public async Task A_client_that_disconnects_mid_stream_cancels_its_request()
    {
        await using var s = await TinyModel.StartServer();
        using var http = NoDrain();
        var body = JsonNode.Parse(Good(maxTokens: 900))!;
        body["stream"] = true;
        using (var request = new HttpRequestMessage(HttpMethod.Post, new Uri(s.Address, "/v1/chat/completions")) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") })
        using (var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
            var first = await reader.ReadLineAsync(Ct);
            Assert.StartsWith("data: ", first);
        }   // disconnect
        var health = await CancelledAndIdle(s, http);
        Assert.Equal(1, s.Server.Counts.Cancelled);
        Assert.Equal(0, s.Server.Counts.Served);
        Assert.Equal(0, (int)health["queue"]!["running"]!);
        Assert.Equal(1, (int)health["requests"]!["cancelled"]!);
        Assert.Equal(HttpStatusCode.OK, (await Post(http, s.Address, Good())).Status);
        Assert.Equal((1L, 0L, 1L, 0L), s.Server.Counts);
    }

    /// <summary>
    /// /health once the server has counted a cancelled request and that request has left the model (or after 20 s).
    /// The cancel is counted as soon as the disconnect is noticed; the model is free only once the work stops at its
    /// next check, so a request sent in between still finds the model busy.
    /// </summary>
    private static async Task<JsonNode> CancelledAndIdle(RunningServer s, HttpClient http)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var health = JsonNode.Parse(await http.GetStringAsync(new Uri(s.Address, "/health"), Ct))!;
            bool done = (int)health["requests"]!["cancelled"]! > 0 && (int)health["queue"]!["running"]! == 0;
            if (done || clock.Elapsed > TimeSpan.FromSeconds(20)) return health;
            await Task.Delay(20, Ct);
        }
    }

    /// <summary>A client that closes the connection when a response is disposed unread (HttpClient would otherwise read up to 1 MB of it to keep the connection).</summary>
    private static HttpClient NoDrain() => new(new SocketsHttpHandler { MaxResponseDrainSize = 0 });

    [Fact]
    public async Task A_full_queue_answers_503()
    {
        await using var s = await TinyModel.StartServer(new VteServerOptions { MaxWaiting = 0 });
        using var http = NoDrain();
        var body = JsonNode.Parse(Good(maxTokens: 900))!;
        body["stream"] = true;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        using (var request = new HttpRequestMessage(HttpMethod.Post, new Uri(s.Address, "/v1/chat/completions")) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") })
        using (var running = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token))
        {
            var (status, json) = await Post(http, s.Address, Good());
            Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
            Assert.Equal("queue_full", (string?)json!["error"]!["code"]);
            var health = JsonNode.Parse(await http.GetStringAsync(new Uri(s.Address, "/health"), Ct))!;
            Assert.Equal(1, (int)health["queue"]!["running"]!);
            Assert.Contains("one request at a time", (string?)health["queue"]!["policy"]);
        }
        // The running request was cancelled by the disconnect; once it has left the model the next request is served.
        var after = await CancelledAndIdle(s, http);
        Assert.Equal(0, (int)after["queue"]!["running"]!);
        Assert.Equal((0L, 0L, 1L, 1L), s.Server.Counts);
        Assert.Equal(HttpStatusCode.OK, (await Post(http, s.Address, Good())).Status);
        Assert.Equal((1L, 0L, 1L, 1L), s.Server.Counts);
    }

    [Fact]
    public async Task The_api_key_guards_the_api()
    {
        await using var s = await TinyModel.StartServer(new VteServerOptions { ApiKey = "sesame" });
        using var http = new HttpClient();
        var (status, json) = await Post(http, s.Address, Good());
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal("invalid_api_key", (string?)json!["error"]!["code"]);
        var wrong = await Assert.ThrowsAsync<ClientResultException>(() => OpenAiChat(s, "wrong").CompleteChatAsync([new UserChatMessage("hi")], cancellationToken: Ct));
        Assert.Equal(401, wrong.Status);
        var ok = await OpenAiChat(s, "sesame").CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 2 }, Ct);
        Assert.NotNull(ok.Value.Content);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(s.Address, "/health"), Ct)).StatusCode);
    }

    [Fact]
    public async Task File_urls_work_only_when_allowed()
    {
        await using var s = await TinyModel.StartServer(clientOptions: new VteChatClientOptions { AllowFileUris = true });
        using var http = new HttpClient();
        var url = new Uri(Path.Combine(AppContext.BaseDirectory, "assets", "sample.png")).AbsoluteUri;
        var (status, json) = await Post(http, s.Address, $$$"""{"max_tokens":1,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"{{{url}}}"}},{"type":"text","text":"q"}]}],"vte":{"trace":true}}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(64, (int)json!["vte"]!["visual_rows"]!);
    }

    [Fact]
    public async Task Health_models_and_unknown_paths()
    {
        await using var s = await TinyModel.StartServer();
        using var http = new HttpClient();
        var health = JsonNode.Parse(await http.GetStringAsync(new Uri(s.Address, "/health"), Ct))!;
        Assert.Equal("ok", (string?)health["status"]);
        Assert.Equal(TinyModel.Id, (string?)health["model"]);
        var models = JsonNode.Parse(await http.GetStringAsync(new Uri(s.Address, "/v1/models"), Ct))!;
        Assert.Equal(TinyModel.Id, (string?)models["data"]![0]!["id"]);
        using var missing = await http.GetAsync(new Uri(s.Address, "/v1/embeddings"), Ct);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("not_found", (string?)JsonNode.Parse(await missing.Content.ReadAsStringAsync(Ct))!["error"]!["code"]);
        var page = await http.GetStringAsync(s.Address, Ct);
        Assert.Contains("<script src=\"/app.js\"></script>", page);
        Assert.DoesNotContain("http://", page.Replace("http://www.w3.org", ""));
        Assert.DoesNotContain("https://", page);
    }

    [Fact]
    public async Task Two_hundred_sequential_requests_do_not_grow_memory()
    {
        await using var s = await TinyModel.StartServer();
        using var http = new HttpClient();
        var body = Good(maxTokens: 3);
        for (int i = 0; i < 20; i++) Assert.Equal(HttpStatusCode.OK, (await Post(http, s.Address, body)).Status);
        (long Managed, long WorkingSet) Measure()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            using var p = Process.GetCurrentProcess();
            return (GC.GetTotalMemory(forceFullCollection: true), p.WorkingSet64);
        }
        var before = Measure();
        (long Managed, long WorkingSet) middle = default;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < 200; i++)
        {
            var (status, json) = await Post(http, s.Address, i % 2 == 0 ? body : body.Replace("\"max_tokens\":3", "\"max_tokens\":3,\"stream\":false"));
            Assert.True(status == HttpStatusCode.OK, $"request {i}: {(int)status} {json?.ToJsonString()}");
            if (i == 99) middle = Measure();
        }
        var elapsed = clock.Elapsed;
        var after = Measure();
        static string MiB(long bytes) => (bytes / 1048576.0).ToString("F2", System.Globalization.CultureInfo.InvariantCulture);
        var line = $"200 requests in {elapsed.TotalSeconds.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)} s; managed heap after 20 warm-up / 100 / 200 requests: {MiB(before.Managed)} / {MiB(middle.Managed)} / {MiB(after.Managed)} MiB; working set {MiB(before.WorkingSet)} / {MiB(middle.WorkingSet)} / {MiB(after.WorkingSet)} MiB";
        TestContext.Current.TestOutputHelper?.WriteLine(line);
        File.WriteAllText(Path.Combine(AppContext.BaseDirectory, "memory-200-requests.txt"), line + "\n");
        Assert.Equal(220, s.Server.Counts.Served);
        // Each request allocates megabytes (an image, its features, logits); a leak of even one of them per request would show.
        Assert.True(after.Managed - before.Managed < 4L << 20, line);
        Assert.True(after.Managed - middle.Managed < 2L << 20, line);
        Assert.True(after.WorkingSet - middle.WorkingSet < 32L << 20, line);
    }
}
