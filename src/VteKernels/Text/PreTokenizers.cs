// Pre-tokenizers of tokenizer.json: Sequence, Split (regex or literal, all five delimiter behaviours,
// invert), ByteLevel, Metaspace and Digits. They cut the normalized text into words that the model
// encodes one by one. A piece is a range of a string, so splitting copies nothing; only Metaspace (space
// replacement) and ByteLevel's add_prefix_space write new text. ByteLevel's byte-to-character mapping is
// not done here: the BPE model reads the UTF-8 bytes of each word directly (see BpeModel), which is
// the same thing without building mapped strings.
using System.Globalization;
using System.Text;

namespace VteKernels.Text;

/// <summary>A range of text in the pipeline; <see cref="TokenId"/> &gt;= 0 marks an added token already resolved.</summary>
internal readonly record struct Piece(string Text, int Start, int Length, bool AtOrigin, int TokenId = -1)
{
    /// <summary>The characters of the piece.</summary>
    public ReadOnlySpan<char> Span => Text.AsSpan(Start, Length);

    /// <summary>True when this piece is an added token and must not be split or encoded.</summary>
    public bool IsToken => TokenId >= 0;
}

/// <summary>What a split does with the delimiters it finds (HF's SplitDelimiterBehavior).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>One pre-tokenizer of the pipeline.</summary>
internal abstract class PreTokenizer
{
    /// <summary>Splits every non-token piece of <paramref name="pieces"/>; token pieces pass through.</summary>
    public virtual void PreTokenize(List<Piece> pieces, List<Piece> scratch)
    {
        scratch.Clear();
        foreach (var p in pieces)
        {
            if (p.IsToken) scratch.Add(p);
            else Split(p, scratch);
        }
        pieces.Clear();
        pieces.AddRange(scratch);
    }

    /// <summary>Appends the non-empty pieces <paramref name="piece"/> splits into.</summary>
    protected abstract void Split(Piece piece, List<Piece> output);

    /// <summary>
    /// Applies a delimiter behaviour to ranges that cover the piece (start, end, isMatch, relative to the
    /// piece) and appends the resulting non-empty pieces, as HF's NormalizedString::split does.
    /// </summary>
    protected static void Emit(Piece piece, List<(int Start, int End, bool IsMatch)> ranges, SplitBehavior behavior, List<Piece> output)
    {
        var merged = new List<(int Start, int End)>(ranges.Count);
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var r in ranges) merged.Add((r.Start, r.End));
                break;
            case SplitBehavior.Removed:
                foreach (var r in ranges) if (!r.IsMatch) merged.Add((r.Start, r.End));
                break;
            case SplitBehavior.MergedWithPrevious:
                {
                    bool previousMatch = false;
                    foreach (var r in ranges)
                    {
                        if (r.IsMatch && !previousMatch && merged.Count > 0) merged[^1] = (merged[^1].Start, r.End);
                        else merged.Add((r.Start, r.End));
                        previousMatch = r.IsMatch;
                    }
                    break;
                }
            case SplitBehavior.MergedWithNext:
                {
                    bool previousMatch = false;
                    for (int i = ranges.Count - 1; i >= 0; i--)
                    {
                        var r = ranges[i];
                        if (r.IsMatch && !previousMatch && merged.Count > 0) merged[^1] = (r.Start, merged[^1].End);
                        else merged.Add((r.Start, r.End));
                        previousMatch = r.IsMatch;
                    }
                    merged.Reverse();
                    break;
                }
            case SplitBehavior.Contiguous:
                {
                    bool previousMatch = false;
                    foreach (var r in ranges)
                    {
                        if (r.IsMatch == previousMatch && merged.Count > 0) merged[^1] = (merged[^1].Start, r.End);
                        else merged.Add((r.Start, r.End));
                        previousMatch = r.IsMatch;
                    }
                    break;
                }
        }
        foreach (var (s, e) in merged)
            if (e > s) output.Add(new Piece(piece.Text, piece.Start + s, e - s, piece.AtOrigin && s == 0));
    }

    /// <summary>Turns match ranges into ranges that cover [0, length): the matches and the gaps between them.</summary>
    protected static void AddGapsAndInvert(List<(int Start, int End, bool IsMatch)> matches, int length, bool invert, List<(int Start, int End, bool IsMatch)> into)
    {
        into.Clear();
        int prev = 0;
        foreach (var (s, e, _) in matches)
        {
            if (s > prev) into.Add((prev, s, invert));
            into.Add((s, e, !invert));
            prev = e;
        }
        if (prev < length) into.Add((prev, length, invert));
    }
}

/// <summary>Applies pre-tokenizers in order.</summary>
internal sealed class SequencePreTokenizer(IReadOnlyList<PreTokenizer> items) : PreTokenizer
{
    public override void PreTokenize(List<Piece> pieces, List<Piece> scratch)
    {
        foreach (var p in items) p.PreTokenize(pieces, scratch);
    }

    protected override void Split(Piece piece, List<Piece> output) => throw new InvalidOperationException("a sequence splits through its items");
}

/// <summary>Splits on a regex or a literal string.</summary>
internal sealed class SplitPreTokenizer : PreTokenizer
{
    private readonly OnigurumaRegex? _regex;
    private readonly string? _literal;
    private readonly SplitBehavior _behavior;
    private readonly bool _invert;

    public SplitPreTokenizer(OnigurumaRegex? regex, string? literal, SplitBehavior behavior, bool invert)
    {
        _regex = regex;
        _literal = literal;
        _behavior = behavior;
        _invert = invert;
    }

    protected override void Split(Piece piece, List<Piece> output)
    {
        var matches = new List<(int, int, bool)>();
        if (_regex is not null)
        {
            _regex.ForEachMatch(piece.Span, ref matches, static (ref List<(int, int, bool)> m, int start, int length) =>
            {
                if (length > 0) m.Add((start, start + length, true));
            });
        }
        else if (_literal!.Length > 0)
        {
            var span = piece.Span;
            for (int at = 0; ;)
            {
                int k = span[at..].IndexOf(_literal.AsSpan(), StringComparison.Ordinal);
                if (k < 0) break;
                matches.Add((at + k, at + k + _literal.Length, true));
                at += k + _literal.Length;
            }
        }
        var ranges = new List<(int, int, bool)>(matches.Count * 2 + 1);
        AddGapsAndInvert(matches, piece.Length, _invert, ranges);
        Emit(piece, ranges, _behavior, output);
    }
}

/// <summary>
/// SentencePiece's space handling as a pre-tokenizer: spaces become the replacement character (▁), which is
/// prepended per prepend_scheme (always; first = only on the piece at the very start of the input; never),
/// and with split = true every ▁ starts a new word.
/// </summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : PreTokenizer
{
    protected override void Split(Piece piece, List<Piece> output)
    {
        var span = piece.Span;
        bool prepend = (scheme == PrependScheme.Always || (scheme == PrependScheme.First && piece.AtOrigin))
                       && !(span.Length > 0 && (span[0] == replacement || span[0] == ' '));
        var sb = new StringBuilder(span.Length + 1);
        if (prepend) sb.Append(replacement);
        foreach (char c in span) sb.Append(c == ' ' ? replacement : c);
        string text = sb.ToString();
        var whole = new Piece(text, 0, text.Length, piece.AtOrigin);
        if (!split)
        {
            if (text.Length > 0) output.Add(whole);
            return;
        }
        var ranges = new List<(int, int, bool)>();
        int prev = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != replacement) continue;
            if (i > prev) ranges.Add((prev, i, false));
            ranges.Add((i, i + 1, true));
            prev = i + 1;
        }
        if (prev < text.Length) ranges.Add((prev, text.Length, false));
        Emit(whole, ranges, SplitBehavior.MergedWithNext, output);
    }
}

/// <summary>When Metaspace puts the replacement character in front of a piece.</summary>
internal enum PrependScheme { Always, First, Never }

/// <summary>
/// GPT-2's byte-level pre-tokenizer: optionally a leading space, optionally GPT-2's split regex; the
/// byte-to-character mapping itself happens in the BPE model.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    /// <summary>GPT-2's pattern, as HF tokenizers hard-codes it.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly Lazy<SplitPreTokenizer> Gpt2Split =
        new(() => new SplitPreTokenizer(OnigurumaRegex.Create(Gpt2Pattern), null, SplitBehavior.Isolated, invert: false));

    public override void PreTokenize(List<Piece> pieces, List<Piece> scratch)
    {
        if (addPrefixSpace)
        {
            for (int i = 0; i < pieces.Count; i++)
            {
                var p = pieces[i];
                if (!p.IsToken && p.Span[0] != ' ') pieces[i] = new Piece(" " + p.Span.ToString(), 0, p.Length + 1, p.AtOrigin);
            }
        }
        if (useRegex) Gpt2Split.Value.PreTokenize(pieces, scratch);
    }

    protected override void Split(Piece piece, List<Piece> output) => throw new InvalidOperationException("byte-level splits through its regex");
}

/// <summary>Splits digits from the rest: each digit alone, or runs of digits (Rust's char::is_numeric: N*).</summary>
internal sealed class DigitsPreTokenizer(bool individualDigits) : PreTokenizer
{
    protected override void Split(Piece piece, List<Piece> output)
    {
        var span = piece.Span;
        var matches = new List<(int, int, bool)>();
        for (int i = 0; i < span.Length;)
        {
            Rune.DecodeFromUtf16(span[i..], out var r, out int used);
            var cat = Rune.GetUnicodeCategory(r);
            if (cat is UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber)
                matches.Add((i, i + used, true));
            i += used;
        }
        var ranges = new List<(int, int, bool)>(matches.Count * 2 + 1);
        AddGapsAndInvert(matches, piece.Length, invert: false, ranges);
        Emit(piece, ranges, individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous, output);
    }
}
