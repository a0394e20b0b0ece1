// Next-token choice from logits, in the order HF's generate applies its warpers: temperature, then top-k,
// then top-p (nucleus), then a draw. Temperature 0 means greedy (the first maximal logit, like argmax).
// The random stream is System.Random with an explicit seed, which .NET keeps stable for a given seed.
namespace VteKernels.Engine;

/// <summary>How the next token is chosen.</summary>
public sealed record SamplingOptions
{
    /// <summary>Softmax temperature; 0 (the default) is greedy decoding.</summary>
    public float Temperature { get; init; }

    /// <summary>Keep only the k most likely tokens (0: no limit).</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p (1: no limit).</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Seed of the random stream; null draws a fresh seed.</summary>
    public int? Seed { get; init; }

    /// <summary>Checks the ranges.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value is out of range.</exception>
    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "temperature must be a finite number >= 0");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "top-k must be >= 0");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "top-p must be in (0, 1]");
    }
}

/// <summary>Chooses tokens from logits; holds the random stream of one generation.</summary>
public sealed class Sampler
{
    private readonly SamplingOptions _o;
    private readonly Random _random;

    /// <summary>Creates a sampler; the options are validated.</summary>
    public Sampler(SamplingOptions options)
    {
        options.Validate();
        _o = options;
        _random = options.Seed is int s ? new Random(s) : new Random();
    }

    /// <summary>Index of the first maximal value.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("no logits", nameof(logits));
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <summary>The next token for <paramref name="logits"/>.</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (_o.Temperature == 0) return ArgMax(logits);

        // Candidates sorted by logit, descending (ties: lower id first, so the result is deterministic).
        var ids = new int[logits.Length];
        for (int i = 0; i < ids.Length; i++) ids[i] = i;
        var keys = logits.ToArray();
        Array.Sort(ids, (a, b) => keys[b].CompareTo(keys[a]) is var c && c != 0 ? c : a.CompareTo(b));
        int keep = _o.TopK > 0 ? Math.Min(_o.TopK, ids.Length) : ids.Length;

        double max = keys[ids[0]] / (double)_o.Temperature;
        var p = new double[keep];
        double sum = 0;
        for (int i = 0; i < keep; i++) { p[i] = Math.Exp(keys[ids[i]] / (double)_o.Temperature - max); sum += p[i]; }
        for (int i = 0; i < keep; i++) p[i] /= sum;

        if (_o.TopP < 1f)
        {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            double cum = 0;
            int n = 0;
            while (n < keep) { cum += p[n++]; if (cum >= _o.TopP) break; }
            keep = n;
            sum = 0;
            for (int i = 0; i < keep; i++) sum += p[i];
            for (int i = 0; i < keep; i++) p[i] /= sum;
        }

        double u = _random.NextDouble(), acc = 0;
        for (int i = 0; i < keep; i++)
        {
            acc += p[i];
            if (u < acc) return ids[i];
        }
        return ids[keep - 1];
    }
}
