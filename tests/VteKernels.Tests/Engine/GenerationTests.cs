// Sampling and streaming generation: seeded runs repeat exactly, the warpers do what they say, stop tokens
// and cancellation end the stream.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class GenerationTests
{
    private static async Task<IReadOnlyList<int>> Generate(SamplingOptions sampling, int n = 12, IReadOnlyList<int>? stops = null)
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        using var s = model.CreateSession();
        var prompt = new PromptInput(TestModels.PromptIds(cfg, 21), [ImageInput.Square(TestModels.Pixels(cfg, 21), cfg.Vision.ImageSize)]);
        return await Generator.GenerateAllAsync(s, prompt, new GenerationOptions { MaxNewTokens = n, Sampling = sampling, StopTokens = stops ?? [] },
            TestContext.Current.CancellationToken);
    }

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
    }

    [Fact]
    public async Task StopTokenEndsTheStream()
    {
        var greedy = await Generate(new SamplingOptions());
        int stop = greedy[3];
        int first = greedy.ToList().IndexOf(stop);
        var stopped = await Generate(new SamplingOptions(), stops: [stop]);
        Assert.Equal(greedy.Take(first + 1), stopped);
    }

    [Fact]
    public async Task CancellationStopsBetweenSteps()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        using var s = model.CreateSession();
        using var cts = new CancellationTokenSource();
        var prompt = new PromptInput(TestModels.PromptIds(cfg, 2), [ImageInput.Square(TestModels.Pixels(cfg, 2), cfg.Vision.ImageSize)]);
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var t in Generator.GenerateAsync(s, prompt, new GenerationOptions { MaxNewTokens = 50 }, cts.Token))
                if (++seen == 3) cts.Cancel();
        });
        Assert.Equal(3, seen);
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

    [Theory]
    [InlineData(-0.1f, 0, 1f)]
    [InlineData(float.NaN, 0, 1f)]
    [InlineData(1f, -1, 1f)]
    [InlineData(1f, 0, 0f)]
    [InlineData(1f, 0, 1.5f)]
    public void InvalidSamplingOptionsAreRejected(float temp, int topK, float topP) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(new SamplingOptions { Temperature = temp, TopK = topK, TopP = topP }));

    [Fact]
    public void ArgMaxTakesTheFirstMaximum() => Assert.Equal(1, Sampler.ArgMax([0f, 3f, 3f, -1f]));
}
