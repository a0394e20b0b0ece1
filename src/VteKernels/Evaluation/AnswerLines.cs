// An answer as one line of the answers file, in LLaVA's shape so its scoring scripts read it:
//   {"question_id", "prompt", "text", "answer_id", "model_id", "metadata": {...}}
// Everything this engine measured goes into "metadata" (which those scripts ignore), so a summary can be
// rebuilt from the files alone, also after a resumed run:
//   setting, metric, score, exit_layer (null: no exit), num_layers, prompt_tokens, tokens, first_token,
//   prefill_logits_fnv1a, prefill_macs, prefill_macs_full, decode_macs, decode_macs_full, kv_bytes,
//   kv_bytes_end, ttft_ms, decode_tok_s, time_ms, same_text_as_none, same_first_token_as_none (null when
//   the comparison has no "none" setting).
using System.Security.Cryptography;
using System.Text.Json.Nodes;

namespace VteKernels.Evaluation;

/// <summary>What agreement with the full model (the "none" setting) an answer had.</summary>
/// <param name="SameText">The answer text equals the full model's.</param>
/// <param name="SameFirstToken">The prefill's argmax equals the full model's.</param>
public readonly record struct Agreement(bool SameText, bool SameFirstToken)
{
    /// <summary>The agreement of an answer (its <paramref name="text"/> and <paramref name="firstToken"/>) with the full model's answer line <paramref name="none"/>.</summary>
    public static Agreement With(string text, int firstToken, JsonObject none) =>
        new(text == (string?)none["text"], firstToken == (int?)none["metadata"]?["first_token"]);
}

/// <summary>Answers-file lines.</summary>
public static class AnswerLines
{
    private const string Alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";   // shortuuid's 57 symbols

    /// <summary>A random 22-character id from shortuuid's alphabet, like LLaVA's answer_id.</summary>
    public static string NewAnswerId()
    {
        Span<byte> bytes = stackalloc byte[16];
        RandomNumberGenerator.Fill(bytes);
        var n = new System.Numerics.BigInteger(bytes, isUnsigned: true);
        var chars = new char[22];
        for (int i = 0; i < chars.Length; i++)
        {
            chars[i] = Alphabet[(int)(n % Alphabet.Length)];
            n /= Alphabet.Length;
        }
        return new string(chars);
    }

    /// <summary>The answers-file line of <paramref name="answer"/> to <paramref name="question"/>.</summary>
    public static JsonObject ToLine(VqaQuestion question, EvalAnswer answer, string modelId, Agreement? agreement)
    {
        ArgumentNullException.ThrowIfNull(question);
        ArgumentNullException.ThrowIfNull(answer);
        var tokens = new JsonArray();
        foreach (var id in answer.TokenIds) tokens.Add(id);
        var metadata = new JsonObject
        {
            ["setting"] = answer.Setting,
            ["metric"] = VqaScoring.Name(answer.Metric),
            ["score"] = answer.Score,
            ["exit_layer"] = answer.ExitLayer,
            ["num_layers"] = answer.Layers,
            ["prompt_tokens"] = answer.PromptTokens,
            ["tokens"] = tokens,
            ["first_token"] = answer.FirstToken,
            ["prefill_logits_fnv1a"] = answer.PrefillLogitsHash,
            ["prefill_macs"] = answer.PrefillMacs,
            ["prefill_macs_full"] = answer.PrefillMacsFull,
            ["decode_macs"] = answer.DecodeMacs,
            ["decode_macs_full"] = answer.DecodeMacsFull,
            ["kv_bytes"] = answer.KvBytes,
            ["kv_bytes_end"] = answer.KvBytesEnd,
            ["ttft_ms"] = Math.Round(answer.TimeToFirstTokenMs, 3),
            ["decode_tok_s"] = answer.DecodeTokensPerSecond is double tps ? Math.Round(tps, 3) : null,
            ["time_ms"] = Math.Round(answer.TimeMs, 3),
            ["same_text_as_none"] = agreement?.SameText,
            ["same_first_token_as_none"] = agreement?.SameFirstToken,
        };
        return new JsonObject
        {
            ["question_id"] = question.Id.DeepClone(),
            ["prompt"] = question.Prompt,
            ["text"] = answer.Text,
            ["answer_id"] = NewAnswerId(),
            ["model_id"] = modelId,
            ["metadata"] = metadata,
        };
    }
}
