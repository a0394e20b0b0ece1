// Sampling and streaming generation: seeded runs repeat exactly, the warpers do what they say, stop tokens
// and cancellation end the stream, finish reasons and usage are reported, and the generation defaults of
// generation_config.json apply as HF applies them.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Models;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class GenerationTests
{
    private static PromptInput Prompt(LlavaConfig cfg, int seed = 21) =>
        new(TestModels.PromptIds(cfg, seed), [ImageInput.Square(TestModels.Pixels(cfg, seed), cfg.Vision.ImageSize)]);

    private static async Task<GenerationResult> Run(GenerationOptions options, string? dir = null, bool withTokenizer = false)
    {
        dir ??= TestModels.Tiny();
        using var model = LlavaModel.Load(dir, new CpuBackend());
        using var s = model.CreateSession();
        return await Generator.GenerateAsync(s, Prompt(model.Config), options, withTokenizer ? Tokenizer.Load(dir) : null,
            TestContext.Current.CancellationToken);
    }

    private static async Task<IReadOnlyList<int>> Generate(SamplingOptions sampling, int n = 12, IReadOnlyList<int>? stops = null) =>
        (await Run(new GenerationOptions { MaxNewTokens = n, Sampling = sampling, StopTokens = stops ?? [] })).Ids;

    [Fact]
    public async Task SeededSamplingIsDeterministic()
    {
        var o = new SamplingOptions { Temperature = 1.0f, TopK = 50, TopP = 0.95f, Seed = 1234 };
        var a = await Generate(o);
        var b = await Generate(o);
        Assert.Equal(a, b);
        Assert.Equal(12, a.Count);
        var others = new List<IReadOnlyList<int>>();
        for (int seed = 1; seed <= 4; seed++) others.Add(await Generate(o with { Seed = seed }));
        Assert.Contains(others, c => !c.SequenceEqual(a)); // the seed matters
    }

    [Fact]
    public async Task TopKOneAndTinyTopPAreGreedy()
    {
        var greedy = await Generate(new SamplingOptions());
        Assert.Equal(greedy, await Generate(new SamplingOptions { Temperature = 1.5f, TopK = 1, Seed = 7 }));
        Assert.Equal(greedy, await Generate(new SamplingOptions { Temperature = 1.5f, TopP = 1e-6f, Seed = 7 }));
        Assert.Equal(greedy, await Generate(new SamplingOptions { Temperature = 1.5f, MinP = 1f, Seed = 7 }));
    }

    [Fact]
    public async Task StopTokenEndsTheStream()
    {
        var greedy = await Generate(new SamplingOptions());
        int stop = greedy[3];
        int first = greedy.ToList().IndexOf(stop);
        var r = await Run(new GenerationOptions { MaxNewTokens = 12, StopTokens = [stop] });
        Assert.Equal(greedy.Take(first + 1), r.Ids);
        Assert.Equal(FinishReason.Stop, r.FinishReason);
        Assert.Equal($"stop token {stop}", r.StopReason);
        Assert.True(r.Tokens[^1].IsStop);
        Assert.Equal(new GenerationUsage(TestModels.PromptIds(TestModels.Config(), 21).Length, 0, first + 1), r.Usage);
    }

    [Fact]
    public async Task CancellationBetweenStepsEndsWithTheTokensSoFar()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        using var s = model.CreateSession();
        using var cts = new CancellationTokenSource();
        var stream = Generator.Stream(s, Prompt(model.Config, 2), new GenerationOptions { MaxNewTokens = 50, StopTokens = [] }, cancellationToken: cts.Token);
        int seen = 0;
        await foreach (var t in stream)
            if (++seen == 3) cts.Cancel();
        // Cancelled before the next decode step: the three tokens stand.
        Assert.Equal(3, seen);
        Assert.Equal(FinishReason.Cancelled, stream.Result!.FinishReason);
        Assert.Equal(3, stream.Result.Ids.Count);
        Assert.NotNull(stream.Result.Report);
    }

    [Fact]
    public async Task CancellationDuringThePrefillStopsBetweenLayersAndLeavesTheSessionAsItWas()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        using var s = model.CreateSession();
        var first = PromptInput.TextOnly([.. TestModels.PromptIds(cfg, 3).Where(i => i != cfg.ImageTokenIndex)]);
        s.Prefill(first);
        var lengths = Enumerable.Range(0, cfg.Text.NumLayers).Select(s.Cache.Length).ToArray();
        using var cts = new CancellationTokenSource();
        var seen = new List<int>();
        var progress = new SyncProgress(p => { seen.Add(p.Done); if (p.Done == 2) cts.Cancel(); });
        var more = PromptInput.TextOnly([5, 6, 7, 8]);
        Assert.ThrowsAny<OperationCanceledException>(() => s.Prefill(more, new PrefillOptions { Progress = progress, CancellationToken = cts.Token }));
        Assert.Equal([0, 1, 2], seen);                                   // layers 0 and 1 ran, layer 2 never started
        Assert.Equal(first.TokenIds.Length, s.Position);
        Assert.Equal(lengths, Enumerable.Range(0, cfg.Text.NumLayers).Select(s.Cache.Length).ToArray());

        // The session goes on exactly as one that was never interrupted.
        var resumed = s.Prefill(more);
        using var fresh = model.CreateSession();
        fresh.Prefill(first);
        Assert.Equal(fresh.Prefill(more).Logits.Values, resumed.Logits.Values);

        // Through the generator: finish reason cancelled, no tokens, no exception.
        using var g = model.CreateSession();
        using var cts2 = new CancellationTokenSource();
        var r = await Generator.GenerateAsync(g, Prompt(cfg),
            new GenerationOptions { Prefill = new PrefillOptions { Progress = new SyncProgress(p => { if (p.Done == 1) cts2.Cancel(); }) } },
            cancellationToken: cts2.Token);
        Assert.Equal(FinishReason.Cancelled, r.FinishReason);
        Assert.Equal("cancelled during the prefill", r.StopReason);
        Assert.Empty(r.Ids);
        Assert.Equal(0, g.Position);
    }

    [Fact]
    public async Task ReachingTheContextEndsWithLengthAndKeepsTheTokens()
    {
        var cfg = TestModels.Config();
        int n = TestModels.PromptIds(cfg, 21).Length;
        var r = await Run(new GenerationOptions { MaxNewTokens = 10, ContextLength = n + 3, StopTokens = [] });
        Assert.Equal(4, r.Ids.Count);   // positions n..n+2 take three decoded tokens; the fourth is sampled from the last logits
        Assert.Equal(FinishReason.Length, r.FinishReason);
        Assert.Equal($"context full ({n + 3} tokens)", r.StopReason);
        Assert.Equal((await Generate(new SamplingOptions(), 4)), r.Ids);
        Assert.NotNull(r.Report);

        var limit = await Run(new GenerationOptions { MaxNewTokens = 2, StopTokens = [] });
        Assert.Equal("max new tokens (2)", limit.StopReason);
        Assert.Equal(FinishReason.Length, limit.FinishReason);

        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        using var s = model.CreateSession();
        var e = Assert.Throws<InvalidInputException>(() => Generator.Stream(s, Prompt(model.Config), new GenerationOptions { ContextLength = n - 1 }, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal($"the prompt ({n} tokens) does not fit the context of {n - 1} tokens", e.Message);
    }

    [Fact]
    public async Task ZeroNewTokensRunsThePrefill()
    {
        var r = await Run(new GenerationOptions { MaxNewTokens = 0 });
        Assert.Empty(r.Ids);
        Assert.Equal(FinishReason.Length, r.FinishReason);
        Assert.NotNull(r.Report);
        Assert.True(r.Timings.Prefill > TimeSpan.Zero);
        Assert.Equal(0, r.Usage.CompletionTokens);
    }

    [Fact]
    public async Task StopStringsEndTheTextAcrossTokensAndAreNeverEmitted()
    {
        var dir = TestModels.Tiny();
        var plain = await Run(new GenerationOptions { MaxNewTokens = 16, StopTokens = [] }, dir, withTokenizer: true);
        Assert.Equal(plain.Text, string.Concat(plain.Tokens.Select(t => t.Text)));
        // A stop string that starts inside one token's text and ends inside a later one's.
        var pieces = plain.Tokens.Select(t => t.Text).ToList();
        int at = pieces.FindIndex(4, p => p.Length >= 2);
        Assert.True(at > 0 && at + 2 < pieces.Count, plain.Text);
        int start = pieces.Take(at).Sum(p => p.Length) + pieces[at].Length - 1;
        string stop = plain.Text.Substring(start, 1 + pieces[at + 1].Length + 1);
        int first = plain.Text.IndexOf(stop, StringComparison.Ordinal);

        using var model = LlavaModel.Load(dir, new CpuBackend());
        using var s = model.CreateSession();
        var stream = Generator.Stream(s, Prompt(model.Config), new GenerationOptions { MaxNewTokens = 16, StopTokens = [], StopSequences = ["\u0001never", stop] },
            Tokenizer.Load(dir), TestContext.Current.CancellationToken);
        var shown = "";
        await foreach (var t in stream)
        {
            shown += t.Text;
            Assert.DoesNotContain(stop, shown);
        }
        var r = stream.Result!;
        Assert.Equal(plain.Text[..first], r.Text);
        Assert.Equal(r.Text, shown);
        Assert.Equal(FinishReason.Stop, r.FinishReason);
        Assert.Equal($"stop string {System.Text.Json.JsonSerializer.Serialize(stop)}", r.StopReason);
        Assert.True(r.Tokens[^1].IsStop);
        Assert.Equal(plain.Ids.Take(r.Ids.Count), r.Ids);

        Assert.Throws<InvalidOptionException>(() => Generator.Stream(s, Prompt(model.Config), new GenerationOptions { StopSequences = ["x"] }, cancellationToken: TestContext.Current.CancellationToken));
    }

    [Fact]
    public void StopMatcherHoldsBackWhatCouldStillMatch()
    {
        var m = new StopSequenceMatcher(["###", "\nUSER"]);
        Assert.Equal(("Hello ", (string?)null), m.Push("Hello #", false));
        Assert.Equal(("", (string?)null), m.Push("#", false));
        Assert.Equal(("", "###"), m.Push("# world", false));
        Assert.Equal("Hello ", m.Text);
        Assert.Equal(("", (string?)null), m.Push("more", true));   // nothing after a stop

        var n = new StopSequenceMatcher(["\nUSER"]);
        Assert.Equal(("a", (string?)null), n.Push("a\nUS", false));
        Assert.Equal(("\nUSb", (string?)null), n.Push("b", false));   // no longer a possible start: released
        Assert.Equal(("x", (string?)null), n.Push("x\n", false));
        Assert.Equal(("\n", (string?)null), n.Push("", true));        // the end releases what was held
        Assert.Equal("a\nUSbx\n", n.Text);
    }

    [Fact]
    public async Task LogprobsAreTheModelsOwnDistribution()
    {
        var r = await Run(new GenerationOptions { MaxNewTokens = 5, StopTokens = [], TopLogprobs = 3 });
        Assert.All(r.Tokens, t =>
        {
            Assert.NotNull(t.Logprob);
            Assert.Equal(3, t.TopLogprobs!.Count);
            Assert.Equal(t.Id, t.TopLogprobs[0].Id);   // greedy: the chosen token is the most likely
            Assert.Equal(t.TopLogprobs[0].Logprob, t.Logprob!.Value);
            Assert.True(t.TopLogprobs[0].Logprob >= t.TopLogprobs[1].Logprob && t.TopLogprobs[1].Logprob >= t.TopLogprobs[2].Logprob);
            Assert.InRange(t.TopLogprobs.Sum(x => Math.Exp(x.Logprob)), 0, 1 + 1e-9);
        });
        var none = await Run(new GenerationOptions { MaxNewTokens = 2 });
        Assert.All(none.Tokens, t => Assert.Null(t.Logprob));
    }

    [Fact]
    public async Task GenerationConfigDefaultsApplyAndRequestsOverrideThem()
    {
        var dir = TestModels.CopyOf(TestModels.Tiny());
        var greedy = (await Run(new GenerationOptions { MaxNewTokens = 6, StopTokens = [] }, dir)).Ids;
        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName),
            $$"""{"do_sample": true, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 3, "eos_token_id": [{{greedy[1]}}, 99999], "repetition_penalty": 1.1}""");
        using (var model = LlavaModel.Load(dir, new CpuBackend()))
        {
            var g = model.GenerationConfig;
            Assert.Equal(new SamplingOptions { Temperature = 0.7f, TopK = 50, TopP = 0.9f, RepetitionPenalty = 1.1f }, g.Sampling);   // top_k: HF's default 50
            Assert.Equal([greedy[1], 99999], g.EosTokenIds);
            // A request that sets only some values keeps the model's others.
            Assert.Equal(new SamplingOptions { Temperature = 0.7f, TopK = 5, TopP = 0.9f, RepetitionPenalty = 1.1f, Seed = 3 },
                g.ResolveSampling(new SamplingRequest { TopK = 5, Seed = 3 }));
            Assert.Equal(0f, g.ResolveSampling(new SamplingRequest { Temperature = 0 }).Temperature);
        }
        var r = await Run(new GenerationOptions(), dir);
        Assert.Equal(3, r.MaxNewTokens);
        Assert.True(r.Sampling.IsSampling);
        Assert.Equal(new SamplingOptions { Temperature = 0.7f, TopK = 50, TopP = 0.9f, RepetitionPenalty = 1.1f }, r.Sampling);
        var overridden = await Run(new GenerationOptions { Sampling = new SamplingOptions(), MaxNewTokens = 6 }, dir);
        Assert.Equal(greedy.Take(2), overridden.Ids);   // greedy again, and the file's eos id ends it
        Assert.Equal(FinishReason.Stop, overridden.FinishReason);

        // A greedy config: a request that turns sampling on gets HF's top_k default.
        var hf = GenerationConfig.FromModelConfig(TestModels.Config());
        Assert.Equal(0f, hf.Sampling.Temperature);
        Assert.Equal(50, hf.ResolveSampling(new SamplingRequest { Temperature = 0.5f }).TopK);
        Assert.Equal(20, (hf with { MaxLength = 120 }).MaxNewTokensFor(100));

        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName), """{"top_p": 0}""");
        var bad = Assert.Throws<ModelConfigException>(() => GenerationConfig.Load(dir, TestModels.Config()));
        Assert.Contains("top_p must be in (0, 1]", bad.Message);
    }

    [Fact]
    public void SamplerFollowsTheDistribution()
    {
        // logits ln(0.5), ln(0.3), ln(0.2): frequencies over 20000 seeded draws within 2% of the truth.
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.2f)];
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, Seed = 99 });
        var counts = new int[3];
        for (int i = 0; i < 20000; i++) counts[sampler.Next(logits)]++;
        Assert.InRange(counts[0] / 20000.0, 0.48, 0.52);
        Assert.InRange(counts[1] / 20000.0, 0.28, 0.32);
        Assert.InRange(counts[2] / 20000.0, 0.18, 0.22);

        // top-p 0.7 keeps {0.5, 0.3} renormalised: 0.625 / 0.375 and never the third.
        var nucleus = new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.7f, Seed = 5 });
        var c2 = new int[3];
        for (int i = 0; i < 20000; i++) c2[nucleus.Next(logits)]++;
        Assert.Equal(0, c2[2]);
        Assert.InRange(c2[0] / 20000.0, 0.60, 0.65);

        // top-k 2 drops the third as well.
        var topk = new Sampler(new SamplingOptions { Temperature = 1, TopK = 2, Seed = 5 });
        for (int i = 0; i < 2000; i++) Assert.NotEqual(2, topk.Next(logits));
    }

    public static TheoryData<string, SamplingOptions, string> InvalidOptions() => new()
    {
        { "negative temperature", new SamplingOptions { Temperature = -0.1f }, "Temperature must be a finite number >= 0 (0 is greedy), got -0.1" },
        { "NaN temperature", new SamplingOptions { Temperature = float.NaN }, "Temperature must be a finite number >= 0 (0 is greedy), got NaN" },
        { "negative top-k", new SamplingOptions { TopK = -1 }, "TopK must be >= 0 (0 keeps every token), got -1" },
        { "top-p 0", new SamplingOptions { TopP = 0 }, "TopP must be in (0, 1] (1 keeps every token), got 0" },
        { "top-p 1.5", new SamplingOptions { TopP = 1.5f }, "TopP must be in (0, 1] (1 keeps every token), got 1.5" },
        { "min-p 2", new SamplingOptions { MinP = 2 }, "MinP must be in [0, 1] (0 is off), got 2" },
        { "repetition 0", new SamplingOptions { RepetitionPenalty = 0 }, "RepetitionPenalty must be a finite number > 0 (1 is off), got 0" },
        { "frequency 3", new SamplingOptions { FrequencyPenalty = 3 }, "FrequencyPenalty must be in [-2, 2] (0 is off), got 3" },
        { "presence -3", new SamplingOptions { PresencePenalty = -3 }, "PresencePenalty must be in [-2, 2] (0 is off), got -3" },
    };

    [Theory, MemberData(nameof(InvalidOptions))]
    public void InvalidSamplingOptionsAreRejected(string label, SamplingOptions options, string message)
    {
        var e = Assert.Throws<InvalidOptionException>(() => new Sampler(options));
        Assert.True(message == e.Message, $"{label}: {e.Message}");
    }

    [Fact]
    public void ArgMaxTakesTheFirstMaximum() => Assert.Equal(1, Sampler.ArgMax([0f, 3f, 3f, -1f]));

    private sealed class SyncProgress(Action<(int Done, int Total)> on) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value) => on(value);
    }
}
