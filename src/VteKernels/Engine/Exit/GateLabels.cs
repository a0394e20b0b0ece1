// DyVTE's label rule for one (sample, layer) pair. The exit branch of layer l is the model with the visual
// keys masked from layer l + 1 on (FixedLayerExit(l + 1)); it "keeps the answer" when
//   * more than 99% of the answer tokens get the same argmax from the branch as from the full model, and
//   * the branch's cross-entropy on the answer tokens is below 1.03x the full model's;
// label 1 (exit here) when both hold, else 0. With fewer than 100 answer tokens the first condition means
// every argmax must agree. Argmax ties go to the lowest id, the same for both runs. Cross-entropy is the
// mean over the answer tokens of -log softmax(row)[token], in float64 from the float32 logits.
namespace VteKernels.Engine.Exit;

/// <summary>How an exit branch compares with the full model on one answer.</summary>
/// <param name="ArgmaxAgreement">Fraction of answer tokens whose predicting row has the same argmax in both runs.</param>
/// <param name="FullLoss">The full model's mean cross-entropy on the answer tokens (nats).</param>
/// <param name="ExitLoss">The exit branch's mean cross-entropy on the answer tokens (nats).</param>
public readonly record struct ExitBranchScore(double ArgmaxAgreement, double FullLoss, double ExitLoss)
{
    /// <summary>DyVTE's label: the branch keeps more than 99% of the argmax and less than 1.03x the loss.</summary>
    public bool KeepsAnswer => ArgmaxAgreement > GateLabels.MinArgmaxAgreement && ExitLoss < GateLabels.MaxLossRatio * FullLoss;
}

/// <summary>The label rule of DyVTE's gate training.</summary>
public static class GateLabels
{
    /// <summary>The branch must keep more than this fraction of the answer tokens' argmax.</summary>
    public const double MinArgmaxAgreement = 0.99;

    /// <summary>The branch's answer loss must stay below this multiple of the full model's.</summary>
    public const double MaxLossRatio = 1.03;

    /// <summary>
    /// Scores an exit branch. <paramref name="full"/> and <paramref name="exit"/> are [answer.Length, vocab]
    /// row-major logits, row i being the row that predicts <paramref name="answer"/>[i] (the row of the
    /// token before it).
    /// </summary>
    /// <exception cref="ArgumentException">The answer is empty, a token id lies outside the vocabulary, or the logits are not [answer.Length, vocab].</exception>
    public static ExitBranchScore Score(ReadOnlySpan<float> full, ReadOnlySpan<float> exit, ReadOnlySpan<int> answer, int vocab)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocab);
        if (answer.Length == 0) throw new ArgumentException("the answer has no tokens", nameof(answer));
        long want = (long)answer.Length * vocab;
        if (full.Length != want) throw new ArgumentException($"full-model logits hold {full.Length} values, expected {answer.Length} x {vocab}", nameof(full));
        if (exit.Length != want) throw new ArgumentException($"exit-branch logits hold {exit.Length} values, expected {answer.Length} x {vocab}", nameof(exit));
        int agree = 0;
        double fullLoss = 0, exitLoss = 0;
        for (int i = 0; i < answer.Length; i++)
        {
            int token = answer[i];
            if ((uint)token >= (uint)vocab) throw new ArgumentException($"answer token {token} is outside the vocabulary of {vocab}", nameof(answer));
            var f = full.Slice(i * vocab, vocab);
            var e = exit.Slice(i * vocab, vocab);
            if (Argmax(f) == Argmax(e)) agree++;
            fullLoss += CrossEntropy(f, token);
            exitLoss += CrossEntropy(e, token);
        }
        return new ExitBranchScore(agree / (double)answer.Length, fullLoss / answer.Length, exitLoss / answer.Length);
    }

    /// <summary>The index of the largest value; the first one on ties.</summary>
    internal static int Argmax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int j = 1; j < row.Length; j++)
            if (row[j] > row[best]) best = j;
        return best;
    }

    /// <summary>-log softmax(row)[token], computed stably in float64.</summary>
    internal static double CrossEntropy(ReadOnlySpan<float> row, int token)
    {
        double max = double.NegativeInfinity;
        foreach (var v in row) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in row) sum += Math.Exp(v - max);
        return Math.Log(sum) + max - row[token];
    }
}
