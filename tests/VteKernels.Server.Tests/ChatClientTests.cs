// VteChatClient through Microsoft.Extensions.AI's interface, in-process: images anywhere in a conversation,
// the chat template, the option mapping (every ChatOptions property mapped or rejected; penalties, min-p,
// stop strings and logprobs give exactly the library Generator's tokens; generation_config.json defaults),
// usage and finish reasons, per-request methods and their report, KV-cache reuse against a fresh run,
// cancellation between tokens and between decoder layers of the prefill, GetService.
using Microsoft.Extensions.AI;
using VteKernels.Engine;
using VteKernels.Models;
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
        Assert.Equal(report.FinishReason == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal(report.CompletionIds, VteChatClient.TokensOf(response.AdditionalProperties).Select(t => t.Id));
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
        await client.GetResponseAsync([User("hi")], new ChatOptions { Tools = [], ToolMode = ChatToolMode.None, ResponseFormat = ChatResponseFormat.Text, MaxOutputTokens = 1 }, TestContext.Current.CancellationToken);
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

    public static TheoryData<string, float, float, float, float, float, float, int> OutOfRange => new()
    {
        // option, temperature, top_p, frequency, presence, min_p, repetition, top_logprobs
        { nameof(ChatOptions.Temperature), -1, 1, 0, 0, 0, 1, 0 },
        { nameof(ChatOptions.TopP), 0, 0, 0, 0, 0, 1, 0 },
        { nameof(ChatOptions.FrequencyPenalty), 0, 1, 2.5f, 0, 0, 1, 0 },
        { nameof(ChatOptions.PresencePenalty), 0, 1, 0, -3, 0, 1, 0 },
        { VteChatKeys.MinP, 1, 1, 0, 0, 1.5f, 1, 0 },
        { VteChatKeys.RepetitionPenalty, 0, 1, 0, 0, 0, 0, 0 },
        { VteChatKeys.TopLogprobs, 0, 1, 0, 0, 0, 1, 21 },
    };

    [Theory, MemberData(nameof(OutOfRange))]
    public async Task A_value_out_of_range_names_its_option(string option, float temperature, float topP, float frequency, float presence, float minP, float repetition, int top)
    {
        using var client = TinyModel.Client();
        var o = new ChatOptions
        {
            Temperature = temperature, TopP = topP, FrequencyPenalty = frequency, PresencePenalty = presence,
            AdditionalProperties = new() { [VteChatKeys.MinP] = minP, [VteChatKeys.RepetitionPenalty] = repetition, [VteChatKeys.Logprobs] = true, [VteChatKeys.TopLogprobs] = top },
        };
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync([User("x")], o, TestContext.Current.CancellationToken));
        Assert.Equal(option, e.ParamName);
        Assert.StartsWith("must ", e.Message);
    }

    /// <summary>The client's answer to a text question against the library's own Generator on the same prompt with <paramref name="library"/>.</summary>
    private static async Task<(ChatResponse Chat, GenerationResult Library)> AgainstTheLibrary(VteChatClient client, string question, ChatOptions options, GenerationOptions library)
    {
        var ct = TestContext.Current.CancellationToken;
        options = options.Clone();
        // A fresh prefill, as the library's run has.
        (options.AdditionalProperties ??= new())[VteChatKeys.ReuseCache] = false;
        var chat = await client.GetResponseAsync([User(question)], options, ct);
        var report = (VteRequestReport)chat.AdditionalProperties![VteChatKeys.Report]!;
        var prompt = PromptInput.TextOnly([.. client.Session!.Tokens.Take(report.PromptTokens)]);
        using var session = client.Model.CreateSession();
        return (chat, await Generator.GenerateAsync(session, prompt, library, client.Tokenizer, ct));
    }

    public static TheoryData<string> SamplingCases => new() { "frequency", "presence", "repetition", "min_p sampled", "all sampled" };

    [Theory, MemberData(nameof(SamplingCases))]
    public async Task Penalties_and_min_p_give_the_library_generators_tokens(string name)
    {
        using var client = TinyModel.Client();
        var (chatOptions, request) = name switch
        {
            // Greedy answers of the random model do not repeat a token within 16, so positive penalties change nothing
            // there; negative ones (and a repetition penalty below 1) favour what came before and change the answer.
            "frequency" => (new ChatOptions { FrequencyPenalty = -2f }, new SamplingRequest { FrequencyPenalty = -2f }),
            "presence" => (new ChatOptions { PresencePenalty = -1.5f }, new SamplingRequest { PresencePenalty = -1.5f }),
            "repetition" => (new ChatOptions { AdditionalProperties = new() { [VteChatKeys.RepetitionPenalty] = 0.3 } }, new SamplingRequest { RepetitionPenalty = 0.3f }),
            "min_p sampled" => (new ChatOptions { Temperature = 1.2f, Seed = 3, AdditionalProperties = new() { [VteChatKeys.MinP] = 0.3f } },
                new SamplingRequest { Temperature = 1.2f, Seed = 3, MinP = 0.3f }),
            _ => (new ChatOptions { Temperature = 0.9f, TopK = 40, TopP = 0.95f, Seed = 11, FrequencyPenalty = 0.7f, PresencePenalty = 0.3f, AdditionalProperties = new() { [VteChatKeys.MinP] = 0.01, [VteChatKeys.RepetitionPenalty] = 1.2f } },
                new SamplingRequest { Temperature = 0.9f, TopK = 40, TopP = 0.95f, Seed = 11, FrequencyPenalty = 0.7f, PresencePenalty = 0.3f, MinP = 0.01f, RepetitionPenalty = 1.2f }),
        };
        chatOptions.MaxOutputTokens = 16;
        var sampling = TinyModel.Model.GenerationConfig.ResolveSampling(request);
        var (chat, library) = await AgainstTheLibrary(client, "Describe the picture in many words", chatOptions, new GenerationOptions { MaxNewTokens = 16, Sampling = sampling });
        var ids = VteChatClient.TokensOf(chat.AdditionalProperties).Select(t => t.Id).ToArray();
        Assert.Equal(library.Ids, ids);
        Assert.Equal(library.Text, chat.Text);
        Assert.Equal(library.Ids, ((VteRequestReport)chat.AdditionalProperties![VteChatKeys.Report]!).CompletionIds);
        // The option changed something: the same request without it gives other tokens.
        var plain = chatOptions.Clone();
        (plain.FrequencyPenalty, plain.PresencePenalty, plain.AdditionalProperties) = (null, null, null);
        var without = await client.GetResponseAsync([User("Describe the picture in many words")], plain, TestContext.Current.CancellationToken);
        Assert.NotEqual(ids, VteChatClient.TokensOf(without.AdditionalProperties).Select(t => t.Id).ToArray());
    }

    [Fact]
    public async Task Stop_sequences_never_reach_the_text_streamed_or_not()
    {
        using var client = TinyModel.Client();
        var ct = TestContext.Current.CancellationToken;
        var question = "Tell me a long story";
        var free = await client.GetResponseAsync([User(question)], new ChatOptions { MaxOutputTokens = 40 }, ct);
        // A stop string taken from the middle of the free answer (two characters, so it usually spans a token boundary).
        int at = free.Text.Length / 2;
        while (at + 2 < free.Text.Length && (free.Text[at] == '\uFFFD' || free.Text[at + 1] == '\uFFFD')) at++;
        Assert.True(at + 2 <= free.Text.Length, $"no stop string in '{free.Text}'");
        string stop = free.Text.Substring(at, 2);
        string expected = free.Text[..free.Text.IndexOf(stop, StringComparison.Ordinal)];
        var options = new ChatOptions { MaxOutputTokens = 40, StopSequences = [stop, "a string that never comes"] };
        var stopped = await client.GetResponseAsync([User(question)], options, ct);
        Assert.Equal(expected, stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);
        Assert.Contains("stop string", ((VteRequestReport)stopped.AdditionalProperties![VteChatKeys.Report]!).StopReason);
        var pieces = new List<string>();
        ChatFinishReason? finish = null;
        await foreach (var u in client.GetStreamingResponseAsync([User(question)], options, ct))
        {
            pieces.Add(u.Text);
            finish ??= u.FinishReason;
        }
        Assert.Equal(expected, string.Concat(pieces));
        Assert.DoesNotContain(pieces, p => p.Contains(stop, StringComparison.Ordinal));
        Assert.Equal(ChatFinishReason.Stop, finish);
        // The library's generator with the same stop strings gives the same text and tokens.
        var (chat, library) = await AgainstTheLibrary(client, question, options, new GenerationOptions { MaxNewTokens = 40, StopSequences = [stop, "a string that never comes"] });
        Assert.Equal(library.Text, chat.Text);
        Assert.Equal(library.Ids, VteChatClient.TokensOf(chat.AdditionalProperties).Select(t => t.Id));
        Assert.Equal(FinishReason.Stop, library.FinishReason);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync([User(question)], new ChatOptions { StopSequences = [""] }, ct));
    }

    [Fact]
    public async Task Logprobs_are_the_library_generators()
    {
        using var client = TinyModel.Client();
        var options = new ChatOptions { MaxOutputTokens = 8, AdditionalProperties = new() { [VteChatKeys.Logprobs] = true, [VteChatKeys.TopLogprobs] = 3 } };
        var (chat, library) = await AgainstTheLibrary(client, "What is it?", options, new GenerationOptions { MaxNewTokens = 8, Logprobs = true, TopLogprobs = 3 });
        var tokens = VteChatClient.TokensOf(chat.AdditionalProperties);
        Assert.Equal(library.Tokens.Count, tokens.Count);
        Assert.Equal(chat.Usage!.OutputTokenCount, tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            Assert.Equal(library.Tokens[i].Id, tokens[i].Id);
            Assert.Equal(library.Tokens[i].Logprob, tokens[i].Logprob);
            Assert.Equal(library.Tokens[i].TopLogprobs, tokens[i].TopLogprobs!);
            Assert.Equal(3, tokens[i].TopLogprobs!.Count);
        }
        // Without the key there are none; top_logprobs alone is refused.
        var plain = await client.GetResponseAsync([User("What is it?")], new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        Assert.All(VteChatClient.TokensOf(plain.AdditionalProperties), t => Assert.Null(t.Logprob));
        await Assert.ThrowsAsync<InvalidInputException>(() => client.GetResponseAsync([User("x")], new ChatOptions { AdditionalProperties = new() { [VteChatKeys.TopLogprobs] = 2 } }, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Unset_options_come_from_generation_config_json_as_the_library_resolves_them()
    {
        // A copy of the tiny model whose generation_config.json samples and limits the answer.
        var dir = Path.Combine(Path.GetTempPath(), "vtekernels-server-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in Directory.EnumerateFiles(TinyModel.Dir)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            File.WriteAllText(Path.Combine(dir, "generation_config.json"),
                """{"do_sample": true, "temperature": 0.8, "top_k": 30, "top_p": 0.9, "repetition_penalty": 1.4, "max_new_tokens": 5, "eos_token_id": 2}""");
            using var model = LlavaModel.Load(dir, new VteKernels.Backends.Cpu.CpuBackend());
            using var client = new VteChatClient(model, TinyModel.Tokenizer, dir);
            var (chat, library) = await AgainstTheLibrary(client, "Describe it", new ChatOptions { Seed = 9 }, new GenerationOptions { Sampling = model.GenerationConfig.Sampling with { Seed = 9 } });
            Assert.Equal(library.Ids, VteChatClient.TokensOf(chat.AdditionalProperties).Select(t => t.Id));
            Assert.Equal(5, library.MaxNewTokens);
            Assert.True(chat.Usage!.OutputTokenCount <= 5);
            // A request overrides single values: temperature 0 is greedy, the repetition penalty stays the file's.
            var greedy = model.GenerationConfig.ResolveSampling(new SamplingRequest { Temperature = 0 });
            Assert.Equal(1.4f, greedy.RepetitionPenalty);
            var (chat2, library2) = await AgainstTheLibrary(client, "Describe it", new ChatOptions { Temperature = 0, MaxOutputTokens = 7 }, new GenerationOptions { Sampling = greedy, MaxNewTokens = 7 });
            Assert.Equal(library2.Ids, VteChatClient.TokensOf(chat2.AdditionalProperties).Select(t => t.Id));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
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

    [Theory, InlineData(false), InlineData(true)]
    public async Task Cancellation_during_the_prefill_stops_before_the_next_decoder_layer(bool streaming)
    {
        using var cts = new CancellationTokenSource();
        var seen = new List<(int Done, int Total)>();
        bool armed = true;
        // The hook cancels while the prefill stands before layer 1; the check before layer 2 must end it.
        var hook = new PrefillHook(p =>
        {
            lock (seen) seen.Add(p);
            if (p.Done == 1 && armed) { armed = false; cts.Cancel(); }
        });
        using var client = TinyModel.Client(new VteChatClientOptions { PrefillProgress = hook });
        var question = new[] { User("Compare these pictures.", 8) };   // 512 image tokens, 8 checks in the vision tower
        var options = new ChatOptions { MaxOutputTokens = 50 };
        int updates = 0;
        if (streaming)
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => { await foreach (var _ in client.GetStreamingResponseAsync(question, options, cts.Token)) updates++; });
        else
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync(question, options, cts.Token));
        Assert.Equal(0, updates);
        Assert.Equal([(0, 4), (1, 4)], seen);   // layers 2 and 3 never ran
        var after = await client.GetResponseAsync([User("q", 1)], new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        Assert.Equal(ChatRole.Assistant, after.Messages[0].Role);
        Assert.Equal([(0, 4), (1, 4), (0, 4), (1, 4), (2, 4), (3, 4)], seen);
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

/// <summary>A prefill progress hook that runs on the prefill's own thread (Progress&lt;T&gt; would post it elsewhere).</summary>
internal sealed class PrefillHook(Action<(int Done, int Total)> report) : IProgress<(int Done, int Total)>
{
    public void Report((int Done, int Total) value) => report(value);
}
