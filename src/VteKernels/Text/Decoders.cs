// Decoders of tokenizer.json: Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel. Like HF's
// decode_chain, each maps the list of token strings to a new list; the decoded text is the concatenation
// of the final list. Byte sequences that are not valid UTF-8 decode as HF does: ByteFallback writes one
// U+FFFD per byte of an invalid run, ByteLevel decodes lossily (one U+FFFD per maximal invalid subpart,
// which .NET's UTF-8 decoder and Rust's from_utf8_lossy agree on).
using System.Text;
using System.Text.Unicode;

namespace VteKernels.Text;

/// <summary>One decoder of the pipeline.</summary>
internal abstract class Decoder
{
    /// <summary>Rewrites the token strings in place.</summary>
    public abstract void DecodeChain(List<string> tokens);
}

/// <summary>Applies decoders in order.</summary>
internal sealed class SequenceDecoder(IReadOnlyList<Decoder> items) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        foreach (var d in items) d.DecodeChain(tokens);
    }
}

/// <summary>Replaces a literal string or a regex in every token.</summary>
internal sealed class ReplaceDecoder(string? literal, OnigurumaRegex? regex, string content) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        for (int i = 0; i < tokens.Count; i++) tokens[i] = ReplaceNormalizer.Apply(tokens[i], literal, regex, content);
    }
}

/// <summary>Turns runs of &lt;0xNN&gt; tokens into the text their bytes spell (U+FFFD per byte when invalid).</summary>
internal sealed class ByteFallbackDecoder : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        var bytes = new List<byte>();
        foreach (var t in tokens)
        {
            if (TryParseByteToken(t, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            Flush(bytes, output);
            output.Add(t);
        }
        Flush(bytes, output);
        tokens.Clear();
        tokens.AddRange(output);
    }

    /// <summary>True for "&lt;0xNN&gt;" (two hex digits, either case), as HF parses byte tokens.</summary>
    public static bool TryParseByteToken(string t, out byte value)
    {
        value = 0;
        if (t.Length != 6 || !t.StartsWith("<0x", StringComparison.Ordinal) || t[5] != '>') return false;
        return byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out value);
    }

    private static void Flush(List<byte> bytes, List<string> output)
    {
        if (bytes.Count == 0) return;
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes);
        if (Utf8.IsValid(span)) output.Add(Encoding.UTF8.GetString(span));
        else for (int i = 0; i < bytes.Count; i++) output.Add("\uFFFD");
        bytes.Clear();
    }
}

/// <summary>Joins all tokens into one.</summary>
internal sealed class FuseDecoder : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        if (tokens.Count <= 1) return;
        string all = string.Concat(tokens);
        tokens.Clear();
        tokens.Add(all);
    }
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing occurrences of one character from every token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i];
            int from = 0;
            while (from < start && from < t.Length && t[from] == content) from++;
            int to = t.Length;
            while (t.Length - to < stop && to > from && t[to - 1] == content) to--;
            if (from != 0 || to != t.Length) tokens[i] = t[from..to];
        }
    }
}

/// <summary>
/// SentencePiece's Metaspace decoder: ▁ becomes a space, except that in the first token every ▁ is dropped
/// (unless prepend_scheme is never), as HF does.
/// </summary>
internal sealed class MetaspaceDecoder(char replacement, PrependScheme scheme) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i];
            if (t.IndexOf(replacement) < 0) continue;
            tokens[i] = i == 0 && scheme != PrependScheme.Never
                ? t.Replace(replacement.ToString(), "", StringComparison.Ordinal)
                : t.Replace(replacement, ' ');
        }
    }
}

/// <summary>Maps byte-level characters back to bytes and decodes all tokens as one UTF-8 string.</summary>
internal sealed class ByteLevelDecoder : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens)
        {
            int mark = bytes.Count;
            bool all = true;
            foreach (char c in t)
            {
                int b = ByteLevelAlphabet.ByteOf(c);
                if (b < 0) { all = false; break; }
                bytes.Add((byte)b);
            }
            if (all) continue;
            // A token outside the alphabet (an added token like "<|im_end|>" is inside it; "▁" is not) is kept as its UTF-8.
            bytes.RemoveRange(mark, bytes.Count - mark);
            bytes.AddRange(Encoding.UTF8.GetBytes(t));
        }
        tokens.Clear();
        tokens.Add(Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes)));
    }
}
