// Incremental detokenization for generation: Push(id) returns the text that id completes, and only text
// that no later id can change. The method is HF's DecodeStream: decode a short window of ids twice, with
// and without the newest ones, and emit the difference. Starting the window one token back gives each
// new token the context its leading space depends on (SentencePiece's decoder strips the space of the
// first token of a decode; a mid-sequence "▁the" must still print " the").
// Held back until later ids settle them: incomplete UTF-8 (byte-fallback or byte-level bytes of a character
// not yet complete decode to U+FFFD at the end) and any decode that does not extend the previous one.
// The concatenation of all Push results and Flush equals Decode of all ids, for the decoders supported here.
namespace VteKernels.Text;

/// <summary>Turns a stream of token ids into text, one id at a time.</summary>
public sealed class StreamingDecoder
{
    private readonly Tokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly List<int> _ids = new();
    private int _prefixStart;
    private int _readIndex;

    internal StreamingDecoder(Tokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>Adds one id; returns the text that is now final (often empty while a character is incomplete).</summary>
    public string Push(int id)
    {
        if (_skipSpecialTokens && _tokenizer.IsSpecialToken(id)) return "";
        _ids.Add(id);
        var ids = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids);
        string prefix = _tokenizer.Decode(ids[_prefixStart.._readIndex], _skipSpecialTokens);
        string full = _tokenizer.Decode(ids[_prefixStart..], _skipSpecialTokens);
        if (full.Length <= prefix.Length || full[^1] == '\uFFFD' || !full.StartsWith(prefix, StringComparison.Ordinal)) return "";
        _prefixStart = _readIndex;
        _readIndex = _ids.Count;
        return full[prefix.Length..];
    }

    /// <summary>Returns whatever is still held back (incomplete characters decode as U+FFFD) and starts a new stream.</summary>
    public string Flush()
    {
        var ids = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids);
        string prefix = _tokenizer.Decode(ids[_prefixStart.._readIndex], _skipSpecialTokens);
        string full = _tokenizer.Decode(ids[_prefixStart..], _skipSpecialTokens);
        _ids.Clear();
        _prefixStart = _readIndex = 0;
        return full.StartsWith(prefix, StringComparison.Ordinal) ? full[prefix.Length..] : full;
    }
}
