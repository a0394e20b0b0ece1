// Text generation on top of the step API: prefill the prompt, then sample and decode one token at a time
// until max-new-tokens or a stop token, streamed as IAsyncEnumerable. Each step runs on the thread pool so
// a caller's UI or server loop is never blocked; cancellation is checked between steps.
using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace VteKernels.Engine;

/// <summary>Options of one generation.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate.</summary>
    public int MaxNewTokens { get; init; } = 32;

    /// <summary>How tokens are chosen.</summary>
    public SamplingOptions Sampling { get; init; } = new();

    /// <summary>How the prompt is prefilled (visual-token exit, trace); the logits options are ignored.</summary>
    public PrefillOptions Prefill { get; init; } = new();

    /// <summary>Tokens that end the generation (the EOS token); the stop token itself is reported with <see cref="GeneratedToken.IsStop"/>.</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = [];
}

/// <summary>One generated token.</summary>
/// <param name="Id">Token id.</param>
/// <param name="Index">0 for the first generated token.</param>
/// <param name="IsStop">True when it is a stop token (generation ends after it).</param>
/// <param name="Elapsed">Time since the generation started.</param>
public sealed record GeneratedToken(int Id, int Index, bool IsStop, TimeSpan Elapsed);

/// <summary>Streams tokens from a model.</summary>
public static class Generator
{
    /// <summary>
    /// Prefills <paramref name="prompt"/> into <paramref name="session"/> and streams up to
    /// <see cref="GenerationOptions.MaxNewTokens"/> tokens, stopping after a stop token.
    /// </summary>
    /// <exception cref="InvalidInputException">The prompt is invalid or the sequence would exceed the context.</exception>
    /// <exception cref="OperationCanceledException">Cancelled between steps.</exception>
    public static async IAsyncEnumerable<GeneratedToken> GenerateAsync(
        InferenceSession session, PromptInput prompt, GenerationOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxNewTokens);
        var sampler = new Sampler(options.Sampling);
        var clock = Stopwatch.StartNew();
        cancellationToken.ThrowIfCancellationRequested();
        if (options.MaxNewTokens == 0) yield break;
        var result = await Task.Run(() => session.Prefill(prompt, options.Prefill with { AllLogits = false }), cancellationToken).ConfigureAwait(false);
        for (int i = 0; i < options.MaxNewTokens; i++)
        {
            int next = sampler.Next(result.Logits.Last);
            bool stop = options.StopTokens.Contains(next);
            yield return new GeneratedToken(next, i, stop, clock.Elapsed);
            if (stop || i + 1 == options.MaxNewTokens) yield break;
            cancellationToken.ThrowIfCancellationRequested();
            result = await Task.Run(() => session.Decode(next), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Generates to the end and returns the token ids (stop token included if one was produced).</summary>
    public static async Task<IReadOnlyList<int>> GenerateAllAsync(InferenceSession session, PromptInput prompt, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        var ids = new List<int>();
        await foreach (var t in GenerateAsync(session, prompt, options, cancellationToken).ConfigureAwait(false)) ids.Add(t.Id);
        return ids;
    }
}
