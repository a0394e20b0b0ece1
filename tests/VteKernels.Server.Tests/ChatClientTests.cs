// VteChatClient through Microsoft.Extensions.AI's interface, in-process: images anywhere in a conversation,
// the chat template, the option mapping (every ChatOptions property mapped or rejected), usage and finish
// reasons, per-request methods and their report, KV-cache reuse against a fresh run, cancellation, GetService.
using Microsoft.Extensions.AI;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Extensions.AI;
using VteKernels.Text;
using AiMessage = Microsoft.Extensions.AI.ChatMessage;

namespace VteKernels.Server.Tests;

[Collection("model")]
public sealed class ChatClientTests
{
    private static AiMessage User(string text, int images = 0) =>
        new(ChatRole.User, [.. Enumerable.Range(0, images).Select(_ => (AIContent)new DataContent(TinyModel.SamplePng, "image/png")), new TextContent(text)]);

    [Fact]
    public async Task Answers_an_image_question_with_usage_finish_reason_and_report()
    {
        using var client = TinyModel.Client();
        var response = await client.GetResponseAsync([User("What is in the picture?", 1)], new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
        var report = Assert.IsType<VteRequestReport>(response.AdditionalProperties![VteChatKeys.Report]);
        Assert.Equal(64, report.Prefill.VisualRows);
        Assert.Equal(report.PromptTokens, response.Usage!.InputTokenCount);
        Assert.Equal(report.CompletionTokens, response.Usage.OutputTokenCount);
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
        Assert.True(report.CompletionTokens <= 6);
        Assert.Equal(report.CompletionTokens == 6 && report.FinishReason == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop, response.FinishReason);
        // The prompt is the model's chat template with the image expanded: the session holds exactly those tokens first.
        var template = ChatTemplate.Parse(MultimodalPrompt.FindChatTemplate(TinyModel.Dir, TinyModel.Tokenizer)!);
        var text = template.Render([new Text.ChatMessage("user", "What is in the picture?", 1)], true, new Dictionary<string, object?> { ["bos_token"] = "<s>", ["eos_token"] = "</s>" });
        var expected = MultimodalPrompt.Build(TinyModel.Model.Config, TinyModel.Tokenizer, text, [new ImageInput([], 3, 112, 112)]).TokenIds;
        Assert.Equal(expected, client.Session!.Tokens.Take(expected.Length));
        Assert.Equal(TinyModel.Tokenizer.Decode([.. client.Session.Tokens.Skip(expected.Length)], skipSpecialTokens: true), response.Text[..Math.Min(response.Text.Length, TinyModel.Tokenizer.Decode([.. client.Session.Tokens.Skip(expected.Length)], skipSpecialTokens: true).Length)]);
    }

    [Fact]
    public async Task Streaming_equals_the_whole_response_and_ends_with_usage()
    {
        using var client = TinyModel.Client();
        var ct = TestContext.Current.CancellationToken;
        var options = new ChatOptions { MaxOutputTokens = 10 };
        var whole = await client.GetResponseAsync([User("Describe it.", 1)], options, ct);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync([User("Describe it.", 1)], options, ct)) updates.Add(u);
        Assert.True(updates.Count >= 2, $"only {updates.Count} updates");
        Assert.Equal(whole.Text, string.Concat(updates.Select(u => u.Text)));
        Assert.Single(updates, u => u.FinishReason is not null);
        Assert.NotNull(updates[^1].FinishReason);
        Assert.Single(updates[^1].Contents.OfType<UsageContent>());
        Assert.All(updates, u => Assert.Equal(updates[0].ResponseId, u.ResponseId));
    }

    [Fact]
    public async Task Images_anywhere_in_the_conversation_several_per_message()
    {
        using var client = TinyModel.Client();
        AiMessage[] conversation =
        [
            new(ChatRole.System, "Be brief."),
            User("First picture.", 1),
            new(ChatRole.Assistant, "A picture."),
            User("Two more.", 2),
        ];
        var response = await client.GetResponseAsync(conversation, new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        var report = (VteRequestReport)response.AdditionalProperties![VteChatKeys.Report]!;
        Assert.Equal(3 * 64, report.Prefill.VisualRows);
        var template = ChatTemplate.Parse(MultimodalPrompt.FindChatTemplate(TinyModel.Dir, TinyModel.Tokenizer)!);
        var text = template.Render(
            [new Text.ChatMessage("system", "Be brief."), new Text.ChatMessage("user", "First picture.", 1), new Text.ChatMessage("assistant", "A picture."), new Text.ChatMessage("user", "Two more.", 2)],
            true, new Dictionary<string, object?> { ["bos_token"] = "<s>", ["eos_token"] = "</s>" });
        var blank = new ImageInput([], 3, 112, 112);
        var expected = MultimodalPrompt.Build(TinyModel.Model.Config, TinyModel.Tokenizer, text, [blank, blank, blank]).TokenIds;
        Assert.Equal(expected.Length, report.PromptTokens);
        Assert.Equal(expected, client.Session!.Tokens.Take(expected.Length));
        // The three spans are where the template put them: one in the first user turn, two in the second.
        var spans = new PromptInput(expected, [blank, blank, blank]).FindImageSpans(TinyModel.Model.Config);
        Assert.Equal(3, spans.Count);
        Assert.True(spans[1].Start > spans[0].End, "the second turn's images come after the first turn");
    }

    public static TheoryData<string, string> FixedFormats => new()
    {
        { "llava", "one turn" }, { "llava", "two turns" }, { "vicuna", "one turn" }, { "vicuna", "two turns" },
    };

    [Theory, MemberData(nameof(FixedFormats))]
    public void Fixed_formats_match_PromptFormat_when_images_open_the_conversation(string styleName, string shape)
    {
        var style = PromptFormat.ParseStyle(styleName);
        var img = new ImageInput([], 3, 112, 112);
        var turns = shape == "one turn" ? new List<(string, string?)> { ("What is it?", null) } : [("What is it?", "A cat."), ("And the colour?", null)];
        var messages = new List<ReadMessage>();
        for (int i = 0; i < turns.Count; i++)
        {
            messages.Add(new ReadMessage("user", turns[i].Item1, i == 0 ? [img, img] : []));
            if (turns[i].Item2 is string a) messages.Add(new ReadMessage("assistant", a, []));
        }
        var expected = style == PromptStyle.VicunaV1 ? PromptFormat.VicunaV1(turns, 2) : PromptFormat.Llava15(turns, 2);
        Assert.Equal(expected, ConversationPrompt.RenderFixed(messages, style));
    }

    [Fact]
    public void Every_ChatOptions_property_is_mapped_or_rejected()
    {
        var properties = typeof(ChatOptions).GetProperties().Select(p => p.Name).Order().ToArray();
        Assert.Equal(properties, ChatOptionsMapping.KnownProperties.Order().ToArray());
    }

    public static TheoryData<string> UnsupportedOptions => new()
    {
        nameof(ChatOptions.FrequencyPenalty), nameof(ChatOptions.PresencePenalty), nameof(ChatOptions.StopSequences),
        nameof(ChatOptions.Tools), nameof(ChatOptions.ResponseFormat), nameof(ChatOptions.ConversationId),
        nameof(ChatOptions.ToolMode), nameof(ChatOptions.AllowBackgroundResponses), nameof(ChatOptions.RawRepresentationFactory),
        nameof(ChatOptions.Reasoning), nameof(ChatOptions.AdditionalProperties),
    };

    [Theory, MemberData(nameof(UnsupportedOptions))]
    public async Task Unsupported_options_are_rejected_naming_the_option(string name)
    {
        using var client = TinyModel.Client();
        var o = new ChatOptions();
        switch (name)
        {
            case nameof(ChatOptions.FrequencyPenalty): o.FrequencyPenalty = 0.5f; break;
            case nameof(ChatOptions.PresencePenalty): o.PresencePenalty = 0.5f; break;
            case nameof(ChatOptions.StopSequences): o.StopSequences = ["\n"]; break;
            case nameof(ChatOptions.Tools): o.Tools = [AIFunctionFactory.Create(() => 1, "one")]; break;
            case nameof(ChatOptions.ResponseFormat): o.ResponseFormat = ChatResponseFormat.Json; break;
            case nameof(ChatOptions.ConversationId): o.ConversationId = "c1"; break;
            case nameof(ChatOptions.ToolMode): o.ToolMode = ChatToolMode.RequireAny; break;
            case nameof(ChatOptions.AllowBackgroundResponses): o.AllowBackgroundResponses = true; break;
            case nameof(ChatOptions.RawRepresentationFactory): o.RawRepresentationFactory = _ => new object(); break;
            case nameof(ChatOptions.Reasoning): o.Reasoning = new ReasoningOptions(); break;
            case nameof(ChatOptions.AdditionalProperties): o.AdditionalProperties = new() { ["temperature_scale"] = 2 }; break;
        }
        var e = await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync([User("hi")], o, TestContext.Current.CancellationToken));
        Assert.Contains("ChatOptions." + name, e.Message);
        // Neutral values are accepted.
        await client.GetResponseAsync([User("hi")], new ChatOptions { FrequencyPenalty = 0, PresencePenalty = 0, StopSequences = [], MaxOutputTokens = 1 }, TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task Sampling_options_are_mapped()
    {
        using var client = TinyModel.Client();
        var ct = TestContext.Current.CancellationToken;
        ChatOptions Sampled(long seed) => new() { Temperature = 1.5f, TopK = 50, TopP = 0.95f, Seed = seed, MaxOutputTokens = 12 };
        var a = await client.GetResponseAsync([User("x")], Sampled(7), ct);
        var b = await client.GetResponseAsync([User("x")], Sampled(7), ct);
        var c = await client.GetResponseAsync([User("x")], Sampled(8), ct);
        var greedy = await client.GetResponseAsync([User("x")], new ChatOptions { MaxOutputTokens = 12 }, ct);
        Assert.Equal(a.Text, b.Text);
        Assert.True(a.Text != c.Text || a.Text != greedy.Text, "seeds 7 and 8 and greedy decoding all gave the same text");
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync([User("x")], new ChatOptions { TopP = 1.5f }, ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync([User("x")], new ChatOptions { MaxOutputTokens = 0 }, ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync([User("x")], new ChatOptions { Seed = 1L << 40 }, ct));
        var one = await client.GetResponseAsync([User("x")], new ChatOptions { MaxOutputTokens = 1 }, ct);
        Assert.Equal(1, one.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task Methods_per_request_override_the_clients_defaults()
    {
        using var client = TinyModel.Client(new VteChatClientOptions { Methods = new VteMethods { Exit = ExitPolicy.AtLayer(1), Naavit = true } });
        var ct = TestContext.Current.CancellationToken;
        var byDefault = (VteRequestReport)(await client.GetResponseAsync([User("q", 1)], new ChatOptions { MaxOutputTokens = 2 }, ct)).AdditionalProperties![VteChatKeys.Report]!;
        Assert.Equal(1, byDefault.Prefill.ExitLayer);
        Assert.True(byDefault.Prefill.Naavit);
        var custom = new ChatOptions
        {
            MaxOutputTokens = 2,
            AdditionalProperties = new() { [VteChatKeys.Exit] = "layer:3", [VteChatKeys.Naavit] = false, [VteChatKeys.SkipAttention] = "2", [VteChatKeys.ExitKv] = "drop", [VteChatKeys.Trace] = true },
        };
        var r = (VteRequestReport)(await client.GetResponseAsync([User("q", 1)], custom, ct)).AdditionalProperties![VteChatKeys.Report]!;
        Assert.Equal(3, r.Prefill.ExitLayer);
        Assert.False(r.Prefill.Naavit);
        Assert.Equal([2], r.Prefill.SkippedLayers);
        Assert.Equal(ExitKvMode.DropAll, r.Prefill.KvMode);
        Assert.NotNull(r.Prefill.Layers[0].VisualMass);
        Assert.True(r.Prefill.MacRatio < 1);
        var bad = new ChatOptions { AdditionalProperties = new() { [VteChatKeys.Exit] = "layer:x" } };
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([User("q")], bad, ct));
        var badType = new ChatOptions { AdditionalProperties = new() { [VteChatKeys.Naavit] = "yes" } };
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([User("q")], badType, ct));
    }

    [Fact]
    public async Task A_continued_conversation_reuses_the_cache_and_answers_as_a_fresh_run()
    {
        using var client = TinyModel.Client();
        var ct = TestContext.Current.CancellationToken;
        var options = new ChatOptions { MaxOutputTokens = 5 };
        var history = new List<AiMessage> { User("What is it?", 1) };
        var first = await client.GetResponseAsync(history, options, ct);
        history.AddRange(first.Messages);
        history.Add(User("Tell me more."));
        var second = await client.GetResponseAsync(history, options, ct);
        var report = (VteRequestReport)second.AdditionalProperties![VteChatKeys.Report]!;
        Assert.True(report.CachedTokens > 64, $"only {report.CachedTokens} tokens reused");
        Assert.Equal(report.CachedTokens, second.Usage!.CachedInputTokenCount);
        Assert.Equal(report.PromptTokens - report.CachedTokens, report.Prefill.PromptRows);
        using var fresh = TinyModel.Client();
        var again = await fresh.GetResponseAsync(history, options, ct);
        Assert.Equal(0, ((VteRequestReport)again.AdditionalProperties![VteChatKeys.Report]!).CachedTokens);
        Assert.Equal(again.Text, second.Text);
        // Other methods cannot reuse a cache made without them.
        var exit = new ChatOptions { MaxOutputTokens = 1, AdditionalProperties = new() { [VteChatKeys.Exit] = "layer:2" } };
        history.AddRange(second.Messages);
        history.Add(User("And?"));
        var third = await client.GetResponseAsync(history, exit, ct);
        Assert.Equal(0, ((VteRequestReport)third.AdditionalProperties![VteChatKeys.Report]!).CachedTokens);
    }

    [Fact]
    public async Task Cancellation_stops_a_request_and_the_client_keeps_serving()
    {
        using var client = TinyModel.Client();
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in client.GetStreamingResponseAsync([User("q", 1)], new ChatOptions { MaxOutputTokens = 500 }, cts.Token))
                if (++seen == 2) cts.Cancel();
        });
        Assert.Equal(2, seen);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync([User("q")], null, new CancellationToken(true)));
        var after = await client.GetResponseAsync([User("q", 1)], new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        Assert.Equal(0, ((VteRequestReport)after.AdditionalProperties![VteChatKeys.Report]!).CachedTokens);
    }

    [Fact]
    public async Task Bad_conversations_and_images_get_typed_errors()
    {
        using var client = TinyModel.Client();
        var ct = TestContext.Current.CancellationToken;
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([], null, ct));
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([User("q"), new AiMessage(ChatRole.Assistant, "a")], null, ct));
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([new AiMessage(ChatRole.Tool, "x")], null, ct));
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([new AiMessage(ChatRole.User, [new DataContent("hello"u8.ToArray(), "text/plain")])], null, ct));
        await Assert.ThrowsAsync<ImageFormatException>(() => client.GetResponseAsync([new AiMessage(ChatRole.User, [new DataContent("not a png at all"u8.ToArray(), "image/png")])], null, ct));
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync([new AiMessage(ChatRole.User, [new UriContent("https://example.com/cat.png", "image/png")])], null, ct));
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync([new AiMessage(ChatRole.User, [new UriContent(new Uri(Path.Combine(AppContext.BaseDirectory, "assets", "sample.png")), "image/png")])], null, ct));
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([User("q"), new AiMessage(ChatRole.User, "x") { Contents = { new DataContent(TinyModel.SamplePng, "image/png") } }, new AiMessage(ChatRole.Assistant, [new DataContent(TinyModel.SamplePng, "image/png")]), User("q")], null, ct));
        var e = await Assert.ThrowsAsync<ContextLengthException>(() => client.GetResponseAsync([User(string.Join(" ", Enumerable.Repeat("describe the picture", 400)))], null, ct));
        Assert.Equal(1024, e.ContextTokens);
        await Assert.ThrowsAsync<ContextLengthException>(() => client.GetResponseAsync([User("q", 17)], null, ct));
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([User("q")], new ChatOptions { ModelId = "gpt-4o" }, ct));
        // Still answering.
        await client.GetResponseAsync([User("q", 1)], new ChatOptions { MaxOutputTokens = 1 }, ct);
    }

    [Fact]
    public async Task File_uris_load_only_when_allowed()
    {
        using var client = TinyModel.Client(new VteChatClientOptions { AllowFileUris = true });
        var uri = new Uri(Path.Combine(AppContext.BaseDirectory, "assets", "sample.png"));
        var r = await client.GetResponseAsync([new AiMessage(ChatRole.User, [new UriContent(uri, "image/png"), new TextContent("q")])], new ChatOptions { MaxOutputTokens = 1 }, TestContext.Current.CancellationToken);
        Assert.Equal(64, ((VteRequestReport)r.AdditionalProperties![VteChatKeys.Report]!).Prefill.VisualRows);
    }

    [Fact]
    public async Task GetService_hands_out_the_model_tokenizer_session_and_metadata()
    {
        using var client = TinyModel.Client(new VteChatClientOptions { ModelId = "tiny" });
        IChatClient chat = client;
        Assert.Same(TinyModel.Model, chat.GetService<LlavaModel>());
        Assert.Same(TinyModel.Tokenizer, chat.GetService<Tokenizer>());
        Assert.Same(client, chat.GetService<VteChatClient>());
        Assert.Equal("tiny", chat.GetService<ChatClientMetadata>()!.DefaultModelId);
        Assert.Null(chat.GetService<InferenceSession>());
        await chat.GetResponseAsync([User("q")], new ChatOptions { MaxOutputTokens = 1, ModelId = "tiny" }, TestContext.Current.CancellationToken);
        Assert.Same(client.Session, chat.GetService<InferenceSession>());
        Assert.Null(chat.GetService<LlavaModel>("key"));
    }
}
