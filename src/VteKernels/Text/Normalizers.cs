// Normalizers of tokenizer.json: Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD, Lowercase, Strip.
// A normalizer maps one piece of text (the input between added tokens) to its normalized form; HF
// tokenizers also tracks alignments, which encoding ids do not need, so these work on plain strings.
namespace VteKernels.Text;

/// <summary>One normalizer of the pipeline.</summary>
internal abstract class Normalizer
{
    /// <summary>The normalized form of <paramref name="s"/> (may return <paramref name="s"/> itself).</summary>
    public abstract string Normalize(string s);
}

/// <summary>Applies normalizers in order.</summary>
internal sealed class SequenceNormalizer(IReadOnlyList<Normalizer> items) : Normalizer
{
    public override string Normalize(string s)
    {
        foreach (var n in items) s = n.Normalize(s);
        return s;
    }
}

/// <summary>Puts a string in front of any non-empty input.</summary>
internal sealed class PrependNormalizer(string prefix) : Normalizer
{
    public override string Normalize(string s) => s.Length == 0 ? s : prefix + s;
}

/// <summary>Replaces every occurrence of a literal string or of an (Oniguruma) regex.</summary>
internal sealed class ReplaceNormalizer : Normalizer
{
    private readonly string? _literal;
    private readonly OnigurumaRegex? _regex;
    private readonly string _content;

    public ReplaceNormalizer(string? literal, OnigurumaRegex? regex, string content)
    {
        _literal = literal;
        _regex = regex;
        _content = content;
    }

    public override string Normalize(string s) => Apply(s, _literal, _regex, _content);

    /// <summary>The replacement shared by the Replace normalizer and the Replace decoder.</summary>
    public static string Apply(string s, string? literal, OnigurumaRegex? regex, string content)
    {
        if (literal is not null) return literal.Length == 0 ? s : s.Replace(literal, content, StringComparison.Ordinal);
        var state = (Text: s, Out: new System.Text.StringBuilder(), Last: 0, Content: content);
        regex!.ForEachMatch(s.AsSpan(), ref state, static (ref (string Text, System.Text.StringBuilder Out, int Last, string Content) st, int start, int length) =>
        {
            st.Out.Append(st.Text, st.Last, start - st.Last).Append(st.Content);
            st.Last = start + length;
        });
        if (state.Last == 0 && state.Out.Length == 0) return s;
        state.Out.Append(s, state.Last, s.Length - state.Last);
        return state.Out.ToString();
    }
}

/// <summary>Unicode normalization (NFC, NFD, NFKC, NFKD).</summary>
internal sealed class UnicodeFormNormalizer(NormalizationKind kind) : Normalizer
{
    public override string Normalize(string s) => UnicodeNormalizer.Normalize(s, kind);
}

/// <summary>
/// Lower-cases character by character as Rust's char::to_lowercase does: Unicode's simple mappings, plus
/// the one unconditional multi-character mapping, U+0130 (İ) -> "i\u0307" (no final-sigma context rule).
/// </summary>
internal sealed class LowercaseNormalizer : Normalizer
{
    public override string Normalize(string s)
    {
        string lower = s.ToLowerInvariant();
        return s.Contains('\u0130') ? ReplaceDottedCapitalI(s, lower) : lower;
    }

    private static string ReplaceDottedCapitalI(string original, string lower)
    {
        var sb = new System.Text.StringBuilder(lower.Length + 4);
        for (int i = 0; i < original.Length; i++)
        {
            if (original[i] == '\u0130') sb.Append("i\u0307");
            else sb.Append(lower[i]);
        }
        return sb.ToString();
    }
}

/// <summary>Removes white space on the left and/or right.</summary>
internal sealed class StripNormalizer(bool left, bool right) : Normalizer
{
    public override string Normalize(string s) => (left, right) switch
    {
        (true, true) => s.Trim(),
        (true, false) => s.TrimStart(),
        (false, true) => s.TrimEnd(),
        _ => s,
    };
}
