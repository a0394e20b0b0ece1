// Next-token choice from logits, in the order HF transformers' generate builds its logits processors
// (GenerationMixin._get_logits_processor): the repetition penalty first, then, only when sampling, the
// warpers temperature -> top-k -> top-p -> min-p, then a draw from the softmax of what is left. The OpenAI
// frequency and presence penalties (which HF does not have) run right after the repetition penalty, as vLLM
// orders them. Temperature 0 means greedy: the penalties still apply (HF applies its processors in greedy
// search too), the warpers do not, and the choice is the first maximal score.
// Every step is HF's definition on the whole vocabulary (filtered tokens become -inf), so the tokens left,
// and a greedy choice, are exactly HF's; only the random draw differs (System.Random with an explicit seed,
// which .NET keeps stable for a given seed, instead of torch.multinomial). Sums run in double.
using System.Globalization;

namespace VteKernels.Engine;

/// <summary>How the next token is chosen. Defaults change nothing: greedy, no penalties, no filters.</summary>
public sealed record SamplingOptions
{
    /// <summary>Softmax temperature; 0 (the default) is greedy decoding.</summary>
    public float Temperature { get; init; }

    /// <summary>Keep only the tokens whose score is at least the k-th highest (ties at the k-th are kept, as HF's TopKLogitsWarper); 0: no limit.</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p (HF's TopPLogitsWarper); 1: no limit.</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Drop tokens less likely than MinP times the most likely one (HF's MinPLogitsWarper); 0: off.</summary>
    public float MinP { get; init; }

    /// <summary>
    /// HF's repetition penalty (CTRL): every token already in the sequence (prompt included) has its score divided
    /// by this when positive and multiplied by it when negative, once per token; 1: off.
    /// </summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>OpenAI's frequency penalty: subtracted from a token's score once per time it was generated so far (-2..2; 0: off).</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>OpenAI's presence penalty: subtracted once from the score of every token generated so far (-2..2; 0: off).</summary>
    public float PresencePenalty { get; init; }

    /// <summary>Seed of the random stream; null draws a fresh seed.</summary>
    public int? Seed { get; init; }

    /// <summary>True when tokens are drawn at random (temperature above 0).</summary>
    public bool IsSampling => Temperature > 0;

    /// <summary>Checks the ranges.</summary>
    /// <exception cref="InvalidOptionException">A value is out of range; <see cref="InvalidOptionException.Option"/> names the property.</exception>
    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw Bad(nameof(Temperature), "must be a finite number >= 0 (0 is greedy)", Temperature);
        if (TopK < 0) throw Bad(nameof(TopK), "must be >= 0 (0 keeps every token)", TopK);
        if (!(TopP > 0 && TopP <= 1)) throw Bad(nameof(TopP), "must be in (0, 1] (1 keeps every token)", TopP);
        if (!(MinP >= 0 && MinP <= 1)) throw Bad(nameof(MinP), "must be in [0, 1] (0 is off)", MinP);
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty)) throw Bad(nameof(RepetitionPenalty), "must be a finite number > 0 (1 is off)", RepetitionPenalty);
        if (!(FrequencyPenalty >= -2 && FrequencyPenalty <= 2)) throw Bad(nameof(FrequencyPenalty), "must be in [-2, 2] (0 is off)", FrequencyPenalty);
        if (!(PresencePenalty >= -2 && PresencePenalty <= 2)) throw Bad(nameof(PresencePenalty), "must be in [-2, 2] (0 is off)", PresencePenalty);
    }

    private static InvalidOptionException Bad(string option, string rule, IFormattable value) =>
        new(option, $"{rule}, got {value.ToString(null, CultureInfo.InvariantCulture)}");
}

/// <summary>One token's log-probability.</summary>
/// <param name="Id">Token id.</param>
/// <param name="Logprob">Natural log of its probability.</param>
public readonly record struct TokenLogprob(int Id, double Logprob);

/// <summary>Chooses tokens from logits; holds the random stream of one generation.</summary>
public sealed class Sampler
{
    private readonly SamplingOptions _o;
    private readonly Random _random;

    /// <summary>Creates a sampler.</summary>
    /// <exception cref="InvalidOptionException">An option is out of range.</exception>
    public Sampler(SamplingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _o = options;
        _random = options.Seed is int s ? new Random(s) : new Random();
    }

    /// <summary>The options this sampler runs.</summary>
    public SamplingOptions Options => _o;

    /// <summary>Index of the first maximal value.</summary>
    /// <exception cref="ArgumentException">The span is empty.</exception>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("no logits", nameof(logits));
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <summary>
    /// The next token for <paramref name="logits"/>. <paramref name="sequence"/> is every token of the sequence so far
    /// (prompt and generated: what HF's repetition penalty sees), <paramref name="generated"/> the tokens generated by
    /// this request (what the frequency and presence penalties count).
    /// </summary>
    /// <exception cref="ArgumentException">The span is empty.</exception>
    public int Next(ReadOnlySpan<float> logits, ReadOnlySpan<int> sequence = default, ReadOnlySpan<int> generated = default)
    {
        if (logits.IsEmpty) throw new ArgumentException("no logits", nameof(logits));
        bool penalties = _o.RepetitionPenalty != 1 || _o.FrequencyPenalty != 0 || _o.PresencePenalty != 0;
        if (!_o.IsSampling && !penalties) return ArgMax(logits);
        var scores = Process(logits, sequence, generated);
        if (!_o.IsSampling) return ArgMax(scores);
        return Draw(scores);
    }

    /// <summary>
    /// The scores the draw uses: <paramref name="logits"/> after the penalties and, when sampling, the warpers, with
    /// filtered tokens at negative infinity (what HF's logits processors return). Arguments as in <see cref="Next"/>.
    /// </summary>
    public float[] Process(ReadOnlySpan<float> logits, ReadOnlySpan<int> sequence = default, ReadOnlySpan<int> generated = default)
    {
        var s = logits.ToArray();
        if (_o.RepetitionPenalty != 1) LogitsProcessors.RepetitionPenalty(s, sequence, _o.RepetitionPenalty);
        if (_o.FrequencyPenalty != 0 || _o.PresencePenalty != 0) LogitsProcessors.FrequencyPresencePenalty(s, generated, _o.FrequencyPenalty, _o.PresencePenalty);
        if (!_o.IsSampling) return s;
        if (_o.Temperature != 1) LogitsProcessors.Temperature(s, _o.Temperature);
        if (_o.TopK > 0) LogitsProcessors.TopK(s, _o.TopK);
        if (_o.TopP < 1) LogitsProcessors.TopP(s, _o.TopP);
        if (_o.MinP > 0) LogitsProcessors.MinP(s, _o.MinP);
        return s;
    }

    /// <summary>A draw from softmax(scores), over token ids in order (negative infinity is never drawn).</summary>
    private int Draw(float[] scores)
    {
        var p = LogitsProcessors.Softmax(scores);
        double u = _random.NextDouble(), acc = 0;
        int last = -1;
        for (int i = 0; i < p.Length; i++)
        {
            if (p[i] == 0) continue;
            acc += p[i];
            last = i;
            if (u < acc) return i;
        }
        return last >= 0 ? last : ArgMax(scores);
    }

    /// <summary>
    /// The log-probability of <paramref name="id"/> and the <paramref name="top"/> most likely tokens (ties: lower id
    /// first) under log-softmax(<paramref name="logits"/>): the model's own distribution, before penalties,
    /// temperature and filters (what vLLM reports by default).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is outside the logits or <paramref name="top"/> is negative.</exception>
    public static (double Logprob, TokenLogprob[] Top) Logprobs(ReadOnlySpan<float> logits, int id, int top)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(top);
        if ((uint)id >= (uint)logits.Length) throw new ArgumentOutOfRangeException(nameof(id), id, "token id outside the logits");
        double max = double.NegativeInfinity;
        foreach (var v in logits) if (v > max) max = v;
        double sum = 0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        double lse = max + Math.Log(sum);
        top = Math.Min(top, logits.Length);
        var best = new List<int>(top + 1);
        for (int i = 0; i < logits.Length && top > 0; i++)
        {
            // Insertion into a short sorted list: O(vocab * top), top is small (OpenAI allows 20).
            if (best.Count == top && !(logits[i] > logits[best[^1]])) continue;
            int at = best.Count;
            while (at > 0 && logits[i] > logits[best[at - 1]]) at--;
            best.Insert(at, i);
            if (best.Count > top) best.RemoveAt(best.Count - 1);
        }
        var result = new TokenLogprob[best.Count];
        for (int k = 0; k < best.Count; k++) result[k] = new TokenLogprob(best[k], logits[best[k]] - lse);
        return (logits[id] - lse, result);
    }
}

/// <summary>
/// HF transformers' logits processors, each on a whole row of scores, in place, with filtered tokens set to
/// negative infinity (<c>filter_value</c>) and <c>min_tokens_to_keep</c> 1.
/// </summary>
public static class LogitsProcessors
{
    /// <summary>
    /// RepetitionPenaltyLogitsProcessor: for each distinct id of <paramref name="ids"/> inside the row, a score s becomes
    /// s * penalty when s &lt; 0, else s / penalty.
    /// </summary>
    public static void RepetitionPenalty(Span<float> scores, ReadOnlySpan<int> ids, float penalty)
    {
        var seen = new HashSet<int>();
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)scores.Length || !seen.Add(id)) continue;
            float s = scores[id];
            scores[id] = s < 0 ? s * penalty : s / penalty;
        }
    }

    /// <summary>OpenAI's penalties: score[j] -= count[j] * frequency + (count[j] &gt; 0 ? presence : 0), counts over <paramref name="generated"/>.</summary>
    public static void FrequencyPresencePenalty(Span<float> scores, ReadOnlySpan<int> generated, float frequency, float presence)
    {
        var counts = new Dictionary<int, int>();
        foreach (int id in generated)
            if ((uint)id < (uint)scores.Length) counts[id] = counts.GetValueOrDefault(id) + 1;
        foreach (var (id, c) in counts) scores[id] -= c * frequency + presence;
    }

    /// <summary>TemperatureLogitsWarper: scores / temperature.</summary>
    public static void Temperature(Span<float> scores, float temperature)
    {
        for (int i = 0; i < scores.Length; i++) scores[i] /= temperature;
    }

    /// <summary>TopKLogitsWarper: removes every score below the k-th highest (so ties with it stay).</summary>
    public static void TopK(Span<float> scores, int k)
    {
        k = Math.Min(k, scores.Length);
        if (k <= 0) return;
        var sorted = scores.ToArray();
        Array.Sort(sorted);
        float kth = sorted[^k];
        for (int i = 0; i < scores.Length; i++)
            if (scores[i] < kth) scores[i] = float.NegativeInfinity;
    }

    /// <summary>
    /// TopPLogitsWarper: sorted ascending, a token is removed when the cumulative probability up to and including it
    /// is at most 1 - p; the most likely token always stays. Ties sort by id, the higher id counting as less likely.
    /// </summary>
    public static void TopP(Span<float> scores, float p)
    {
        var probs = Softmax(scores);
        var order = AscendingOrder(scores);
        double cum = 0, limit = 1 - (double)p;
        for (int r = 0; r < order.Length - 1; r++)   // the last (most likely) is kept
        {
            cum += probs[order[r]];
            if (cum <= limit) scores[order[r]] = float.NegativeInfinity;
        }
    }

    /// <summary>MinPLogitsWarper: removes tokens whose probability is below minP times the top probability; the top token stays.</summary>
    public static void MinP(Span<float> scores, float minP)
    {
        var probs = Softmax(scores);
        double top = probs.Max(), limit = minP * top;
        int best = Sampler.ArgMax(scores);
        for (int i = 0; i < scores.Length; i++)
            if (probs[i] < limit && i != best) scores[i] = float.NegativeInfinity;
    }

    /// <summary>softmax in double; negative infinity gives 0.</summary>
    public static double[] Softmax(ReadOnlySpan<float> scores)
    {
        double max = double.NegativeInfinity;
        foreach (var v in scores) if (v > max) max = v;
        var p = new double[scores.Length];
        if (double.IsNegativeInfinity(max)) return p;
        double sum = 0;
        for (int i = 0; i < scores.Length; i++) sum += p[i] = Math.Exp(scores[i] - max);
        for (int i = 0; i < p.Length; i++) p[i] /= sum;
        return p;
    }

    private static int[] AscendingOrder(ReadOnlySpan<float> scores)
    {
        var keys = scores.ToArray();
        var ids = new int[keys.Length];
        for (int i = 0; i < ids.Length; i++) ids[i] = i;
        Array.Sort(ids, (a, b) => keys[a].CompareTo(keys[b]) is var c && c != 0 ? c : b.CompareTo(a));
        return ids;
    }
}
