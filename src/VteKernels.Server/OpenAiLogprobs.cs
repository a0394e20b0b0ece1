// The generator's logprobs in OpenAI's shape: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}],
// "refusal": null}, one entry per generated token (the values are the library's GeneratedToken.Logprob and
// TopLogprobs: log-softmax of the raw logits). A token's text is what it adds to the text decoded so far (the
// last few generated tokens are the context, so a SentencePiece "▁the" is " the" mid-answer, as the content
// shows it); a byte-fallback token <0xNN> is its one byte, written "\xNN" as OpenAI writes partial characters.
// Every token counted in the usage has an entry, the end-of-sequence token ("</s>") and the tokens of a stop
// string included, so a client sees what was generated even where the content leaves it out.
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using VteKernels.Engine;
using VteKernels.Text;

namespace VteKernels.Server;

/// <summary>Writes the logprobs of one answer's tokens, chunk by chunk, in order.</summary>
internal sealed class OpenAiLogprobs(Tokenizer tokenizer)
{
    /// <summary>Generated tokens decoded before a token to give it its text in context.</summary>
    private const int Context = 8;

    private readonly List<int> _ids = [];

    /// <summary>The logprobs object of <paramref name="tokens"/> (the next tokens of the answer).</summary>
    public JsonObject Next(IReadOnlyList<GeneratedToken> tokens)
    {
        var content = new JsonArray();
        foreach (var t in tokens)
        {
            var entry = Entry(t.Id, t.Logprob ?? throw new InvalidOperationException("the generation computed no logprobs"));
            entry["top_logprobs"] = new JsonArray([.. (t.TopLogprobs ?? []).Select(a => (JsonNode)Entry(a.Id, a.Logprob))]);
            content.Add(entry);
            _ids.Add(t.Id);
        }
        return new JsonObject { ["content"] = content, ["refusal"] = null };
    }

    private JsonObject Entry(int id, double logprob)
    {
        var (token, bytes) = Piece(id);
        return new JsonObject { ["token"] = token, ["logprob"] = logprob, ["bytes"] = new JsonArray([.. bytes.Select(b => (JsonNode)(int)b)]) };
    }

    private (string Token, byte[] Bytes) Piece(int id)
    {
        if (ByteToken(tokenizer.IdToToken(id)) is byte b)
            return (b < 0x80 ? ((char)b).ToString() : string.Create(CultureInfo.InvariantCulture, $"\\x{b:x2}"), [b]);
        var before = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids)[Math.Max(0, _ids.Count - Context)..];
        string prefix = tokenizer.Decode(before, skipSpecialTokens: false);
        string full = tokenizer.Decode([.. before, id], skipSpecialTokens: false);
        string text = full.StartsWith(prefix, StringComparison.Ordinal) ? full[prefix.Length..] : tokenizer.Decode([id], skipSpecialTokens: false);
        return (text, Encoding.UTF8.GetBytes(text));
    }

    /// <summary>The byte of a byte-fallback token "&lt;0xNN&gt;", else null.</summary>
    private static byte? ByteToken(string? token) =>
        token is { Length: 6 } && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
        && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b) ? b : null;
}
