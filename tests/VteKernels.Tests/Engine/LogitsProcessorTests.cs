// The logits processors against HF transformers' definitions (generation/logits_process.py), on hand-made
// scores whose expected results are worked out by hand in the comments: which tokens survive, the exact
// processed values, and the greedy choice. HF's order (GenerationMixin._get_logits_processor): repetition
// penalty, then when sampling temperature -> top-k -> top-p -> min-p.
using VteKernels.Engine;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class LogitsProcessorTests
{
    private const float Inf = float.NegativeInfinity;

    [Fact]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeScoresOncePerToken()
    {
        // HF: score = where(score < 0, score * penalty, score / penalty) at every id of input_ids (gather/scatter: once per id).
        float[] s = [2f, -1f, 0.5f, 3f, -4f, 0f];
        LogitsProcessors.RepetitionPenalty(s, [0, 1, 1, 4, 5, 4, 99, -1], 2f);   // ids outside the row are ignored
        Assert.Equal([1f, -2f, 0.5f, 3f, -8f, 0f], s);

        // A penalty below 1 rewards: 2 / 0.5 = 4, -1 * 0.5 = -0.5.
        float[] r = [2f, -1f];
        LogitsProcessors.RepetitionPenalty(r, [0, 1], 0.5f);
        Assert.Equal([4f, -0.5f], r);
    }

    [Fact]
    public void FrequencyAndPresencePenaltiesFollowOpenAI()
    {
        // mu[j] - c[j] * frequency - (c[j] > 0) * presence: token 0 twice, token 2 once.
        float[] s = [1f, 1f, 1f, 1f];
        LogitsProcessors.FrequencyPresencePenalty(s, [0, 0, 2], 0.5f, 0.25f);
        Assert.Equal([-0.25f, 1f, 0.25f, 1f], s);
    }

    [Fact]
    public void TopKKeepsTiesWithTheKthScore()
    {
        // indices_to_remove = scores < topk(scores, k)[-1]: the 2nd highest is 3, and all three 3s stay.
        float[] s = [1f, 3f, 3f, 2f, 3f];
        LogitsProcessors.TopK(s, 2);
        Assert.Equal([Inf, 3f, 3f, Inf, 3f], s);
        float[] all = [1f, 2f];
        LogitsProcessors.TopK(all, 5);   // k above the vocabulary: nothing removed
        Assert.Equal([1f, 2f], all);
    }

    [Theory]
    [InlineData(0.8f, new[] { true, true, false, false })]   // ascending cumsum 0.05, 0.15 <= 0.2 removed; 0.40 kept
    [InlineData(0.9f, new[] { true, true, true, false })]    // 0.05 <= 0.1 removed; 0.15 kept
    [InlineData(0.3f, new[] { true, false, false, false })]  // 0.05, 0.15, 0.40 <= 0.7 removed: only the top token
    public void TopPRemovesTheLeastLikelyTokensWhoseCumulativeMassIsAtMostOneMinusP(float p, bool[] kept)
    {
        float[] s = [MathF.Log(0.6f), MathF.Log(0.25f), MathF.Log(0.1f), MathF.Log(0.05f)];
        LogitsProcessors.TopP(s, p);
        Assert.Equal(kept, s.Select(v => v != Inf).ToArray());
    }

    [Fact]
    public void MinPRemovesTokensBelowMinPTimesTheTopProbability()
    {
        // probabilities 0.6, 0.25, 0.1, 0.05; min_p 0.2 -> threshold 0.12: 0.1 and 0.05 go.
        float[] s = [MathF.Log(0.6f), MathF.Log(0.25f), MathF.Log(0.1f), MathF.Log(0.05f)];
        LogitsProcessors.MinP(s, 0.2f);
        Assert.Equal([true, true, false, false], s.Select(v => v != Inf).ToArray());
    }

    [Fact]
    public void TheWarpersRunInHFsOrder()
    {
        // logits [4, 2, 0, -2, 1], temperature 2 -> [2, 1, 0, -1, 0.5];
        // top-k 4: the 4th highest is 0, so -1 goes -> [2, 1, 0, -inf, 0.5];
        // top-p 0.9: probabilities of {2, 1, 0, 0.5} = 0.5793, 0.2131, 0.0784, 0.1293; ascending 0.0784 <= 0.1 goes;
        // min-p 0.3: over {2, 1, 0.5} = 0.6285, 0.2312, 0.1402; threshold 0.1886 removes the 0.5.
        var sampler = new Sampler(new SamplingOptions { Temperature = 2, TopK = 4, TopP = 0.9f, MinP = 0.3f, Seed = 1 });
        Assert.Equal([2f, 1f, Inf, Inf, Inf], sampler.Process([4f, 2f, 0f, -2f, 1f]));
        // In another order (min-p before top-k) the result would differ: min-p first on [2, 1, 0, -1, 0.5] keeps {2, 1, 0.5}.
        var minPOnly = new Sampler(new SamplingOptions { Temperature = 2, MinP = 0.3f, Seed = 1 });
        Assert.Equal([2f, 1f, Inf, Inf, Inf], minPOnly.Process([4f, 2f, 0f, -2f, 1f]));
    }

    [Fact]
    public void GreedySearchAppliesThePenaltiesButNotTheWarpers()
    {
        // 3 / 1.2 = 2.5 < 2.9: the repeated token loses the argmax (HF applies its processors in greedy search).
        var greedy = new Sampler(new SamplingOptions { RepetitionPenalty = 1.2f, TopK = 1 });
        Assert.Equal(1, greedy.Next([3f, 2.9f, 1f], sequence: [0]));
        Assert.Equal([2.5f, 2.9f, 1f], greedy.Process([3f, 2.9f, 1f], sequence: [0]));   // top-k is a warper: not applied
        Assert.Equal(0, new Sampler(new SamplingOptions()).Next([3f, 2.9f, 1f], sequence: [0]));

        // Presence penalty 0.2 on the generated token 0: 2.8 < 2.9.
        var presence = new Sampler(new SamplingOptions { PresencePenalty = 0.2f });
        Assert.Equal(1, presence.Next([3f, 2.9f, 1f], sequence: [0], generated: [0]));
        Assert.Equal(0, presence.Next([3f, 2.9f, 1f], sequence: [0], generated: []));   // the prompt does not count
    }

    [Fact]
    public void LogprobsAreLogSoftmaxWithTiesToTheLowerId()
    {
        // probabilities 0.25, 0.5, 0.25.
        var (lp, top) = Sampler.Logprobs([0f, MathF.Log(2f), 0f], 2, 2);
        Assert.Equal(Math.Log(0.25), lp, 6);
        Assert.Equal(1, top[0].Id);
        Assert.Equal(Math.Log(0.5), top[0].Logprob, 6);
        Assert.Equal(0, top[1].Id);
        Assert.Empty(Sampler.Logprobs([1f, 2f], 0, 0).Top);
    }
}
