// Components on their own: the Oniguruma-to-.NET regex translation on input where the two engines differ
// unless translated (supplementary letters and digits, case folding, possessive quantifiers), and Unicode
// normalization against a sample of the official conformance file NormalizationTest.txt.
using System.Globalization;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class TextComponentTests
{
    private static List<string> Matches(string pattern, string input)
    {
        var re = OnigurumaRegex.Create(pattern);
        var found = new List<(int, int)>();
        re.ForEachMatch(input.AsSpan(), ref found, static (ref List<(int, int)> f, int s, int l) => f.Add((s, l)));
        return found.Select(m => input.Substring(m.Item1, m.Item2)).ToList();
    }

    public static TheoryData<string, string, string, string[]> RegexCases() => new()
    {
        { "contractions fold like Oniguruma", "(?i:'s|'t|'ll)", "'S 'ſ 'K 't 'LL 'lL", ["'S", "'ſ", "'t", "'LL", "'lL"] },
        { "supplementary letters are letters", @"\p{L}+", "a𝐀b 𠀀x 😀", ["a𝐀b", "𠀀x"] },
        { "a supplementary digit counts once", @"\p{N}{1,3}", "𝟎𝟏𝟐𝟑45", ["𝟎𝟏𝟐", "𝟑45"] },
        { "negated class takes whole emoji", @"[^\s\p{L}\p{N}]+", "😀😀a!?𝐀", ["😀😀", "!?"] },
        { "llama3 pattern on mixed input", @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
          "He's 12345 𝐀𝐁c!!\n\n  x", ["He", "'s", " ", "123", "45", " 𝐀𝐁c", "!!\n\n", " ", " x"] },
        { "possessive plus is atomic", "a++a", "aaaa", [] },
        { "possessive star is atomic", "x*+y", "xxy xx", ["xxy"] },
        { "interval then plus repeats", "(?:ab){1}+", "ababx", ["abab"] },
        { "hex digit class", @"\h+", "0x1F zz 9", ["0", "1F", "9"] },
        { "code point escape", @"\x{1F600}|\x{41}", "A😀b", ["A", "😀"] },
        { "lookahead on whitespace", @"\s+(?!\S)|\s+", "a   b ", ["  ", " ", " "] },
        { "literal braces", @"{x}", "a{x}", ["{x}"] },
        { "line anchors see every newline", "^a|b$", "a\na\nb\nb", ["a", "a", "b", "b"] },
    };

    [Theory, MemberData(nameof(RegexCases))]
    public void OnigurumaPatternsMatchLikeOniguruma(string label, string pattern, string input, string[] expected)
    {
        Assert.True(expected.SequenceEqual(Matches(pattern, input)),
            $"{label}: /{pattern}/ on {TokenizerFixtures.Show(input)} gave [{string.Join(", ", Matches(pattern, input).Select(TokenizerFixtures.Show))}] (translated: {OnigurumaRegex.Translate(pattern)})");
    }

    [Theory]
    [InlineData(@"\p{Han}+")]
    [InlineData(@"[a-z&&[^aeiou]]")]
    [InlineData(@"[[a-z]]")]
    [InlineData(@"\G")]
    public void UnsupportedConstructsAreRejected(string pattern)
    {
        Assert.Throws<NotSupportedException>(() => OnigurumaRegex.Create(pattern));
    }

    public static TheoryData<string> NormalizationParts() => new() { "@Part0", "@Part1", "@Part2", "@Part3" };

    // NormalizationTest.txt's invariants: c2 = NFC(c1) = NFC(c2) = NFC(c3), c4 = NFC(c4) = NFC(c5),
    // c3 = NFD(c1..c3), c5 = NFD(c4, c5), c4 = NFKC(all), c5 = NFKD(all).
    [Theory, MemberData(nameof(NormalizationParts))]
    public void NormalizationConformance(string part)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "Data", "Unicode", "normalization-sample.txt");
        string? current = null;
        int checkedLines = 0, failed = 0;
        var messages = new List<string>();
        foreach (var line in File.ReadLines(path))
        {
            if (line.StartsWith('#') || line.Length == 0) continue;
            if (line.StartsWith('@')) { current = line.Split(' ')[0]; continue; }
            if (current != part) continue;
            var c = line.Split(';').Take(5).Select(Decode).ToArray();
            checkedLines++;
            void Expect(string want, string input, NormalizationKind kind)
            {
                string got = UnicodeNormalizer.Normalize(input, kind);
                if (got == want) return;
                failed++;
                if (messages.Count < 5) messages.Add($"{kind}({Hex(input)}) = {Hex(got)}, want {Hex(want)}  [{line}]");
            }
            for (int i = 0; i < 3; i++) { Expect(c[1], c[i], NormalizationKind.Nfc); Expect(c[2], c[i], NormalizationKind.Nfd); }
            for (int i = 3; i < 5; i++) { Expect(c[3], c[i], NormalizationKind.Nfc); Expect(c[4], c[i], NormalizationKind.Nfd); }
            for (int i = 0; i < 5; i++) { Expect(c[3], c[i], NormalizationKind.Nfkc); Expect(c[4], c[i], NormalizationKind.Nfkd); }
        }
        Assert.True(checkedLines > 0, $"no lines for {part}");
        Assert.True(failed == 0, $"{part}: {failed} failures in {checkedLines} lines\n{string.Join("\n", messages)}");
    }

    [Fact]
    public void NormalizedTextIsReturnedAsIs()
    {
        string s = "plain ASCII and café, 日本語";
        Assert.Same(s, UnicodeNormalizer.Normalize(s, NormalizationKind.Nfc));
    }

    private static string Decode(string field) =>
        string.Concat(field.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(h => char.ConvertFromUtf32(int.Parse(h, NumberStyles.HexNumber, CultureInfo.InvariantCulture))));

    private static string Hex(string s)
    {
        var parts = new List<string>();
        for (int i = 0; i < s.Length; i += char.IsSurrogatePair(s, i) ? 2 : 1) parts.Add(char.ConvertToUtf32(s, i).ToString("X4", CultureInfo.InvariantCulture));
        return string.Join(" ", parts);
    }
}
