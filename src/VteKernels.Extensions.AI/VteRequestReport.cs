// What one chat request cost: the prefill's report (exit layer, rows per layer, multiply-adds against the full
// model, KV bytes, stage times, per-layer attention mass when traced) plus the generation around it (tokens
// reused from the KV cache, time to first token, decode speed, why it stopped). Handed out in the response's
// AdditionalProperties under VteChatKeys.Report and, as JSON, in vte serve's responses.
using System.Text.Json.Nodes;
using VteKernels.Engine.Exit;

namespace VteKernels.Extensions.AI;

/// <summary>The report of one chat request.</summary>
public sealed record VteRequestReport
{
    /// <summary>The prefill of this request's new tokens (when the KV cache was reused, only the tokens after the cached ones).</summary>
    public required PrefillReport Prefill { get; init; }

    /// <summary>Tokens of the whole prompt (image tokens included).</summary>
    public required int PromptTokens { get; init; }

    /// <summary>Prompt tokens that were already in the KV cache from the previous request and not computed again.</summary>
    public required int CachedTokens { get; init; }

    /// <summary>Tokens generated (an end-of-sequence token included).</summary>
    public required int CompletionTokens { get; init; }

    /// <summary>From the start of the request (after any wait for the model) to the first token.</summary>
    public required TimeSpan TimeToFirstToken { get; init; }

    /// <summary>From the start of the request (after any wait for the model) to the last token.</summary>
    public required TimeSpan Total { get; init; }

    /// <summary>Decode speed after the first token (0 with fewer than two tokens).</summary>
    public double DecodeTokensPerSecond => CompletionTokens > 1 && Total > TimeToFirstToken ? (CompletionTokens - 1) / (Total - TimeToFirstToken).TotalSeconds : 0;

    /// <summary>The generated token ids (an end-of-sequence token and the tokens of a stop string included).</summary>
    public IReadOnlyList<int> CompletionIds { get; init; } = [];

    /// <summary>"stop" (end-of-sequence token or stop string) or "length" (token limit or the context's end).</summary>
    public required string FinishReason { get; init; }

    /// <summary>The end in words, as the generator says it: "stop token 2", "stop string &quot;###&quot;", "max new tokens (24)", "context full (1024 tokens)".</summary>
    public string StopReason { get; init; } = "";

    /// <summary>One line for logs.</summary>
    public string Summary() => FormattableString.Invariant(
        $"{Prefill.Summary()}; prompt {PromptTokens} tokens ({CachedTokens} cached); {CompletionTokens} generated ({FinishReason}: {StopReason}); first token {TimeToFirstToken.TotalMilliseconds:F0} ms; decode {DecodeTokensPerSecond:F1} tok/s");

    /// <summary>The report as JSON: the prefill trace's fields (format vte-prefill-trace/1, so `vte plot` reads it) and the generation's.</summary>
    public JsonObject ToJson()
    {
        using var buffer = new MemoryStream();
        Prefill.WriteJson(buffer);
        var o = (JsonObject)JsonNode.Parse(buffer.ToArray())!;
        o["prompt_tokens"] = PromptTokens;
        o["cached_tokens"] = CachedTokens;
        o["completion_tokens"] = CompletionTokens;
        o["time_to_first_token_ms"] = TimeToFirstToken.TotalMilliseconds;
        o["total_ms"] = Total.TotalMilliseconds;
        o["decode_tokens_per_second"] = DecodeTokensPerSecond;
        o["completion_ids"] = new JsonArray([.. CompletionIds.Select(id => (JsonNode)id)]);
        o["finish_reason"] = FinishReason;
        o["stop_reason"] = StopReason;
        o["summary"] = Summary();
        return o;
    }
}
