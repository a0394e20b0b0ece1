// Added tokens (tokenizer.json "added_tokens"): split out of the input before anything else, as HF's
// AddedVocabulary does. Tokens with normalized = false are matched on the raw input; the rest of the text
// is then normalized and tokens with normalized = true are matched on that (their pattern is their content
// passed through the same normalizer). Matching is leftmost-longest and non-overlapping; then per match:
//   single_word: dropped unless bounded by non-word characters (or the ends) on both sides;
//   lstrip / rstrip: the match swallows the white space on its left (not past the previous match) / right.
// "Word" and "white space" follow Rust's regex \w and \s (Unicode), as HF tokenizers uses them.
// Decoding uses a normalized token's normalized form, as HF tokenizers does.
using System.Globalization;
using System.Text;

namespace VteKernels.Text;

/// <summary>One entry of "added_tokens".</summary>
internal sealed record AddedToken(int Id, string Content, bool SingleWord, bool LStrip, bool RStrip, bool Normalized, bool Special);

/// <summary>The added tokens and the two matchers built from them.</summary>
internal sealed class AddedVocabulary
{
    private readonly Dictionary<string, int> _byContent = new(StringComparer.Ordinal);
    private readonly Dictionary<int, AddedToken> _byId = new();
    private readonly HashSet<string> _special = new(StringComparer.Ordinal);
    private readonly Dictionary<int, string> _decodeForm = new();
    private readonly Matcher _raw;
    private readonly Matcher _normalized;

    /// <summary>All added tokens, in file order.</summary>
    public IReadOnlyList<AddedToken> Tokens { get; }

    public AddedVocabulary(IReadOnlyList<AddedToken> tokens, Normalizer? normalizer)
    {
        Tokens = tokens;
        var raw = new List<(string, AddedToken)>();
        var normalized = new List<(string, AddedToken)>();
        foreach (var t in tokens)
        {
            if (t.Content.Length == 0) continue;
            _byContent[t.Content] = t.Id;
            _byId[t.Id] = t;
            if (t.Special) _special.Add(t.Content);
            string form = t.Normalized ? normalizer?.Normalize(t.Content) ?? t.Content : t.Content;
            _decodeForm[t.Id] = form;
            if (t.Normalized) normalized.Add((form, t));
            else raw.Add((t.Content, t));
        }
        _raw = new Matcher(raw);
        _normalized = new Matcher(normalized);
    }

    /// <summary>True when there is at least one token matched on normalized text.</summary>
    public bool HasNormalizedTokens => !_normalized.IsEmpty;

    /// <summary>The id of an added token's content, or -1.</summary>
    public int TokenToId(string content) => _byContent.TryGetValue(content, out int id) ? id : -1;

    /// <summary>The content of the added token with this id, or null.</summary>
    public string? IdToToken(int id) => _byId.TryGetValue(id, out var t) ? t.Content : null;

    /// <summary>
    /// The string an added token contributes to decoding, or null: its content, normalized when the token is
    /// matched on normalized text (HF decodes "hello" added with normalized = true under a ▁-prepending
    /// normalizer as " hello").
    /// </summary>
    public string? DecodeForm(int id) => _decodeForm.TryGetValue(id, out var s) ? s : null;

    /// <summary>True when <paramref name="content"/> is a special token (skipped by decode when asked).</summary>
    public bool IsSpecial(string content) => _special.Contains(content);

    /// <summary>True when the id belongs to a special added token.</summary>
    public bool IsSpecialId(int id) => _byId.TryGetValue(id, out var t) && t.Special;

    /// <summary>Splits the raw input on tokens with normalized = false.</summary>
    public void SplitRaw(Piece piece, List<Piece> output) => _raw.Split(piece, output);

    /// <summary>Splits normalized text on tokens with normalized = true.</summary>
    public void SplitNormalized(Piece piece, List<Piece> output) => _normalized.Split(piece, output);

    /// <summary>Leftmost-longest matcher over a set of patterns.</summary>
    private sealed class Matcher
    {
        private readonly Dictionary<char, (string Pattern, AddedToken Token)[]> _byFirstChar = new();
        private readonly System.Buffers.SearchValues<char>? _firstChars;

        public bool IsEmpty => _byFirstChar.Count == 0;

        public Matcher(List<(string Pattern, AddedToken Token)> patterns)
        {
            foreach (var g in patterns.Where(p => p.Pattern.Length > 0).GroupBy(p => p.Pattern[0]))
                _byFirstChar[g.Key] = g.OrderByDescending(p => p.Pattern.Length).ThenBy(p => p.Token.Id).ToArray();
            if (_byFirstChar.Count > 0) _firstChars = System.Buffers.SearchValues.Create(_byFirstChar.Keys.ToArray());
        }

        public void Split(Piece piece, List<Piece> output)
        {
            if (_firstChars is null || piece.IsToken)
            {
                output.Add(piece);
                return;
            }
            var s = piece.Span;
            int startOffset = 0;
            int from = 0;
            while (from < s.Length)
            {
                int k = s[from..].IndexOfAny(_firstChars);
                if (k < 0) break;
                int at = from + k;
                AddedToken? hit = null;
                int hitLength = 0;
                foreach (var (pattern, token) in _byFirstChar[s[at]])
                {
                    if (s[at..].StartsWith(pattern, StringComparison.Ordinal))
                    {
                        hit = token;
                        hitLength = pattern.Length;
                        break;
                    }
                }
                if (hit is null)
                {
                    from = at + 1;
                    continue;
                }
                int start = at, stop = at + hitLength;
                from = stop; // the next match starts after this one, whether or not this one is kept
                if (hit.SingleWord)
                {
                    bool startSpace = start == 0 || !EndsWithWord(s[..start]);
                    bool stopSpace = stop == s.Length || !StartsWithWord(s[stop..]);
                    if (!startSpace || !stopSpace) continue;
                }
                if (hit.LStrip)
                {
                    int newStart = start;
                    while (newStart > 0 && IsWhiteSpaceBefore(s, newStart, out int w)) newStart -= w;
                    start = Math.Max(newStart, startOffset);
                }
                if (hit.RStrip)
                {
                    while (stop < s.Length && IsWhiteSpaceAt(s, stop, out int w)) stop += w;
                }
                if (startOffset < start) output.Add(new Piece(piece.Text, piece.Start + startOffset, start - startOffset, piece.AtOrigin && startOffset == 0));
                output.Add(new Piece(piece.Text, piece.Start + start, stop - start, piece.AtOrigin && start == 0, hit.Id));
                startOffset = stop;
            }
            if (startOffset < s.Length) output.Add(new Piece(piece.Text, piece.Start + startOffset, s.Length - startOffset, piece.AtOrigin && startOffset == 0));
        }
    }

    private static bool IsWhiteSpaceAt(ReadOnlySpan<char> s, int i, out int width)
    {
        Rune.DecodeFromUtf16(s[i..], out var r, out width);
        return Rune.IsWhiteSpace(r);
    }

    private static bool IsWhiteSpaceBefore(ReadOnlySpan<char> s, int end, out int width)
    {
        Rune.DecodeLastFromUtf16(s[..end], out var r, out width);
        return Rune.IsWhiteSpace(r);
    }

    private static bool StartsWithWord(ReadOnlySpan<char> s)
    {
        Rune.DecodeFromUtf16(s, out var r, out _);
        return IsWordRune(r);
    }

    private static bool EndsWithWord(ReadOnlySpan<char> s)
    {
        Rune.DecodeLastFromUtf16(s, out var r, out _);
        return IsWordRune(r);
    }

    /// <summary>Rust regex's Unicode \w: alphabetic, marks, decimal digits, connector punctuation, joiners.</summary>
    internal static bool IsWordRune(Rune r)
    {
        switch (Rune.GetUnicodeCategory(r))
        {
            case UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter or UnicodeCategory.LetterNumber
                or UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark
                or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.ConnectorPunctuation:
                return true;
        }
        int v = r.Value;
        // Join_Control, and the Other_Alphabetic symbols (circled and squared Latin letters).
        return v is 0x200C or 0x200D or (>= 0x24B6 and <= 0x24E9) or (>= 0x1F130 and <= 0x1F149) or (>= 0x1F150 and <= 0x1F169) or (>= 0x1F170 and <= 0x1F189);
    }
}
