// Regex patterns from tokenizer.json (written for Oniguruma, which HF tokenizers compiles them with) run
// on .NET's Regex with the same matches.
//
// Two differences matter for the patterns real tokenizers use (GPT-2, LLaMA-3, Qwen2/3 and friends):
//  1. Code points, not UTF-16 units. Oniguruma matches \p{L}, \p{N}, [^...] and counted repeats like
//     \p{N}{1,3} on code points; .NET sees a supplementary character (𝐀, 𠀀, 😀) as two surrogates of
//     category Cs. So a string holding surrogate pairs is matched on a stand-in: each pair is replaced by one
//     BMP character of the same general category (categories are all these patterns can observe), and
//     match positions are mapped back. Patterns that name supplementary characters themselves skip this.
//  2. Syntax. Possessive quantifiers (X*+, X++, X?+) become atomic groups; `{n,m}+` is an interval
//     repeated (Oniguruma syntax, not Java's possessive interval); (?i:...) is expanded by hand for ASCII
//     letters with Unicode's simple case folding (so 's also matches 'ſ and 'K matches the Kelvin sign,
//     as Oniguruma does and .NET's ignore-case does not); \h, \x{...}, \w and the ^ $ line anchors
//     are rewritten; unsupported constructs (scripts like \p{Han}, class intersection &&, nested classes)
//     are rejected with a message instead of being guessed.
// .NET's own Unicode tables (char.GetUnicodeCategory) decide \p{..}: characters assigned in a later Unicode
// version than the Oniguruma build knows may differ.
// Hostile patterns: at most MaxPatternLength characters (translation is linear but for stacked
// possessive quantifiers, which copy their atom), and a match that backtracks for longer than
// MatchTimeout ends in a TokenizerException (a backtracking engine cannot bound its work otherwise;
// this is the one wall-clock limit of the text front end).
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace VteKernels.Text;

/// <summary>An Oniguruma pattern translated to a .NET <see cref="Regex"/>, matched on code points.</summary>
internal sealed class OnigurumaRegex
{
    /// <summary>Longest pattern accepted (real tokenizer patterns are a few hundred characters).</summary>
    public const int MaxPatternLength = 16 << 10;

    /// <summary>Longest a single match may take before the tokenizer gives up on the pattern.</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    private readonly Regex _regex;
    private readonly bool _substituteSupplementary;

    /// <summary>The pattern as written in tokenizer.json.</summary>
    public string Source { get; }

    /// <summary>The .NET pattern it was translated to.</summary>
    public string Translated { get; }

    private OnigurumaRegex(string source, string translated, bool substitute)
    {
        Source = source;
        Translated = translated;
        _substituteSupplementary = substitute;
        _regex = new Regex(translated, RegexOptions.Compiled | RegexOptions.CultureInvariant, MatchTimeout);
    }

    /// <summary>Translates and compiles <paramref name="pattern"/>; throws <see cref="NotSupportedException"/> for constructs with no exact .NET equivalent.</summary>
    public static OnigurumaRegex Create(string pattern)
    {
        if (pattern.Length > MaxPatternLength)
            throw new NotSupportedException($"a regex of {pattern.Length} characters is longer than the {MaxPatternLength} supported");
        if (Compiled.TryGetValue(pattern, out var known)) return known;
        var created = Build(pattern);
        if (Compiled.Count >= MaxCached) Compiled.Clear();
        return Compiled.GetOrAdd(pattern, created);
    }

    // Compiling a pattern to IL costs milliseconds; a process that loads the same tokenizer again (a server, a
    // test run) reuses the compiled one. Instances are immutable and thread-safe.
    private const int MaxCached = 64;
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, OnigurumaRegex> Compiled = new(StringComparer.Ordinal);

    private static OnigurumaRegex Build(string pattern)
    {
        bool namesSupplementary = pattern.Any(char.IsSurrogate) || Regex.IsMatch(pattern, @"\\x\{0*[1-9A-Fa-f][0-9A-Fa-f]{4,}\}");
        string translated = Translate(pattern);
        try
        {
            return new OnigurumaRegex(pattern, translated, !namesSupplementary);
        }
        catch (ArgumentException e)
        {
            throw new NotSupportedException($"regex '{pattern}' (translated to '{translated}') is not valid for .NET: {e.Message}", e);
        }
    }

    /// <summary>Calls <paramref name="onMatch"/>(start, length) for every non-overlapping match in <paramref name="text"/>, left to right.</summary>
    /// <exception cref="TokenizerException">One match took longer than <see cref="MatchTimeout"/>.</exception>
    public void ForEachMatch<TState>(ReadOnlySpan<char> text, ref TState state, MatchHandler<TState> onMatch)
    {
        try
        {
            Matches(text, ref state, onMatch);
        }
        catch (RegexMatchTimeoutException e)
        {
            throw new TokenizerException(null, $"regex '{Source}' took longer than {MatchTimeout.TotalSeconds:0} s to match in a text of {text.Length} characters (catastrophic backtracking)", e);
        }
    }

    private void Matches<TState>(ReadOnlySpan<char> text, ref TState state, MatchHandler<TState> onMatch)
    {
        if (!_substituteSupplementary || text.IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (var m in _regex.EnumerateMatches(text)) onMatch(ref state, m.Index, m.Length);
            return;
        }
        // Stand-in string: one char per code point, and the original offset of each stand-in char.
        var standIn = new char[text.Length];
        var offsets = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length; n++)
        {
            offsets[n] = i;
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                standIn[n] = StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, text[i + 1])));
                i += 2;
            }
            else
            {
                standIn[n] = c;
                i++;
            }
        }
        offsets[n] = text.Length;
        foreach (var m in _regex.EnumerateMatches(standIn.AsSpan(0, n)))
            onMatch(ref state, offsets[m.Index], offsets[m.Index + m.Length] - offsets[m.Index]);
    }

    /// <summary>Receives one match.</summary>
    public delegate void MatchHandler<TState>(ref TState state, int start, int length);

    // One BMP character per general category, far from ASCII so that no literal or range in a pattern is
    // likely to name it: the highest BMP code point of that category that is not white space.
    private static readonly char[] StandIns = BuildStandIns();

    private static char StandIn(UnicodeCategory category) => StandIns[(int)category];

    private static char[] BuildStandIns()
    {
        var table = new char[32];
        for (int c = 0xFFFD; c >= 0x100; c--)
        {
            if (c is >= 0xD800 and <= 0xDFFF) continue;
            var cat = CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (table[(int)cat] == '\0' && !char.IsWhiteSpace((char)c)) table[(int)cat] = (char)c;
        }
        // Categories with no BMP member outside ASCII/Latin-1 fall back to a private-use character.
        for (int i = 0; i < table.Length; i++) if (table[i] == '\0') table[i] = '\uE000';
        return table;
    }

    // ------------------------------------------------------------------------------------- translation

    /// <summary>Rewrites Oniguruma syntax into .NET syntax with the same meaning.</summary>
    internal static string Translate(string p)
    {
        var o = new StringBuilder(p.Length * 2);
        var ignoreCaseStack = new Stack<bool>();
        var groupStarts = new Stack<int>();
        bool ignoreCase = false;
        int lastAtomStart = -1;
        for (int i = 0; i < p.Length;)
        {
            char c = p[i];
            switch (c)
            {
                case '\\':
                    lastAtomStart = o.Length;
                    i = TranslateEscape(p, i, o, inClass: false, ignoreCase);
                    break;
                case '[':
                    lastAtomStart = o.Length;
                    i = TranslateClass(p, i, o, ignoreCase);
                    break;
                case '(':
                    {
                        ignoreCaseStack.Push(ignoreCase);
                        groupStarts.Push(o.Length);
                        if (p.AsSpan(i).StartsWith("(?i:"))
                        {
                            ignoreCase = true;
                            o.Append("(?:");
                            i += 4;
                        }
                        else if (p.AsSpan(i).StartsWith("(?-i:"))
                        {
                            ignoreCase = false;
                            o.Append("(?:");
                            i += 5;
                        }
                        else if (i + 2 < p.Length && p[i + 1] == '?' && (p[i + 2] is 'i' or 'm' or 'x' or '-'))
                        {
                            throw new NotSupportedException($"regex '{p}': inline option group at {i} is not supported");
                        }
                        else
                        {
                            o.Append('(');
                            i++;
                        }
                        break;
                    }
                case ')':
                    ignoreCase = ignoreCaseStack.Count > 0 ? ignoreCaseStack.Pop() : false;
                    o.Append(')');
                    i++;
                    lastAtomStart = groupStarts.Count > 0 ? groupStarts.Pop() : -1;
                    break;
                case '|':
                    o.Append('|');
                    i++;
                    lastAtomStart = -1;
                    break;
                case '.':
                    lastAtomStart = o.Length;
                    o.Append('.');
                    i++;
                    break;
                case '*' or '+' or '?' or '{':
                    {
                        int qEnd = QuantifierEnd(p, i);
                        if (qEnd < 0)
                        {
                            // A '{' that is no interval is a literal brace in Oniguruma.
                            lastAtomStart = o.Length;
                            o.Append(@"\{");
                            i++;
                            break;
                        }
                        string quantifier = p[i..qEnd];
                        i = qEnd;
                        bool isInterval = quantifier[0] == '{';
                        if (i < p.Length && p[i] == '+' && lastAtomStart >= 0)
                        {
                            string atom = o.ToString(lastAtomStart, o.Length - lastAtomStart);
                            o.Length = lastAtomStart;
                            if (isInterval)
                                o.Append("(?:").Append(atom).Append(quantifier).Append(")+"); // {n,m}+ : interval, then repeat
                            else
                                o.Append("(?>").Append(atom).Append(quantifier).Append(')'); // possessive
                            i++;
                        }
                        else
                        {
                            o.Append(quantifier);
                            if (i < p.Length && p[i] == '?') { o.Append('?'); i++; } // lazy
                        }
                        break;
                    }
                case '^':
                    o.Append("(?m:^)");
                    i++;
                    break;
                case '$':
                    o.Append("(?m:$)");
                    i++;
                    break;
                default:
                    lastAtomStart = o.Length;
                    if (char.IsHighSurrogate(c) && i + 1 < p.Length)
                    {
                        o.Append("(?:").Append(c).Append(p[i + 1]).Append(')');
                        i += 2;
                    }
                    else
                    {
                        AppendLiteral(o, c, ignoreCase);
                        i++;
                    }
                    break;
            }
        }
        return o.ToString();
    }

    private static int QuantifierEnd(string p, int i)
    {
        if (p[i] != '{') return i + 1;
        int j = i + 1;
        int digitsBefore = 0;
        while (j < p.Length && char.IsAsciiDigit(p[j])) { j++; digitsBefore++; }
        if (j < p.Length && p[j] == ',')
        {
            j++;
            while (j < p.Length && char.IsAsciiDigit(p[j])) j++;
        }
        else if (digitsBefore == 0) return -1;
        return j < p.Length && p[j] == '}' ? j + 1 : -1;
    }

    private static void AppendLiteral(StringBuilder o, char c, bool ignoreCase)
    {
        if (ignoreCase && char.IsAsciiLetter(c))
        {
            o.Append('[').Append(char.ToLowerInvariant(c)).Append(char.ToUpperInvariant(c));
            // The only non-ASCII characters whose simple case folding is an ASCII letter.
            if (c is 's' or 'S') o.Append('\u017F');
            if (c is 'k' or 'K') o.Append('\u212A');
            o.Append(']');
            return;
        }
        if (ignoreCase && char.IsLetter(c))
        {
            o.Append("(?i:").Append(c).Append(')');
            return;
        }
        o.Append(c); // every character special to both engines was handled by the caller
    }

    // Translates one escape at p[i] == '\\'; returns the index after it.
    private static int TranslateEscape(string p, int i, StringBuilder o, bool inClass, bool ignoreCase)
    {
        if (i + 1 >= p.Length) throw new NotSupportedException($"regex '{p}' ends with a lone backslash");
        char e = p[i + 1];
        switch (e)
        {
            case 'p' or 'P':
                {
                    string name;
                    int end;
                    bool negated = e == 'P';
                    if (i + 2 < p.Length && p[i + 2] == '{')
                    {
                        end = p.IndexOf('}', i + 3);
                        if (end < 0) throw new NotSupportedException($"regex '{p}': unterminated \\p{{ at {i}");
                        name = p[(i + 3)..end];
                        end++;
                    }
                    else if (i + 2 < p.Length)
                    {
                        name = p[(i + 2)..(i + 3)];
                        end = i + 3;
                    }
                    else throw new NotSupportedException($"regex '{p}' ends inside \\{e}");
                    if (name.StartsWith('^')) { negated = !negated; name = name[1..]; }
                    o.Append(negated ? @"\P{" : @"\p{").Append(CategoryName(p, name)).Append('}');
                    return end;
                }
            case 'h':
                o.Append(inClass ? "0-9a-fA-F" : "[0-9a-fA-F]");
                return i + 2;
            case 'H':
                if (inClass) throw new NotSupportedException($"regex '{p}': \\H inside a character class is not supported");
                o.Append("[^0-9a-fA-F]");
                return i + 2;
            case 'w':
                o.Append(inClass ? WordClassBody : "[" + WordClassBody + "]");
                return i + 2;
            case 'W':
                if (inClass) throw new NotSupportedException($"regex '{p}': \\W inside a character class is not supported");
                o.Append("[^" + WordClassBody + "]");
                return i + 2;
            case 'x' when i + 2 < p.Length && p[i + 2] == '{':
                {
                    int end = p.IndexOf('}', i + 3);
                    if (end < 0) throw new NotSupportedException($"regex '{p}': unterminated \\x{{ at {i}");
                    if (!int.TryParse(p.AsSpan(i + 3, end - i - 3), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int cp)
                        || cp > 0x10FFFF || cp is >= 0xD800 and <= 0xDFFF)
                        throw new NotSupportedException($"regex '{p}': \\x{{{p[(i + 3)..end]}}} at {i} is not a Unicode scalar value");
                    if (cp < 0x10000) o.Append(@"\u").Append(cp.ToString("X4", CultureInfo.InvariantCulture));
                    else if (inClass) throw new NotSupportedException($"regex '{p}': a supplementary code point inside a character class is not supported");
                    else
                    {
                        string pair = char.ConvertFromUtf32(cp);
                        o.Append("(?:").Append(@"\u").Append(((int)pair[0]).ToString("X4", CultureInfo.InvariantCulture))
                         .Append(@"\u").Append(((int)pair[1]).ToString("X4", CultureInfo.InvariantCulture)).Append(')');
                    }
                    return end + 1;
                }
            case 'G' or 'K' or 'R' or 'X' or 'y' or 'Y' or 'O' or 'N' when !inClass:
                throw new NotSupportedException($"regex '{p}': \\{e} has no .NET equivalent");
            default:
                if (ignoreCase && !inClass && char.IsAsciiLetter(e) && !"dDsSbBAzZnrtfvae0123456789".Contains(e))
                    throw new NotSupportedException($"regex '{p}': escape \\{e} inside (?i:...) is not supported");
                o.Append('\\').Append(e);
                return i + 2;
        }
    }

    // Oniguruma's \w: Alphabetic (letters, letter numbers, and other alphabetic marks), marks, decimal digits,
    // connector punctuation, and the two joiners.
    private const string WordClassBody = @"\p{L}\p{M}\p{Nd}\p{Nl}\p{Pc}\u200C\u200D";

    private static string CategoryName(string p, string name)
    {
        string key = name.Replace("_", "").Replace(" ", "").ToLowerInvariant();
        return key switch
        {
            "l" or "letter" => "L",
            "lu" or "uppercaseletter" => "Lu",
            "ll" or "lowercaseletter" => "Ll",
            "lt" or "titlecaseletter" => "Lt",
            "lm" or "modifierletter" => "Lm",
            "lo" or "otherletter" => "Lo",
            "m" or "mark" or "combiningmark" => "M",
            "mn" or "nonspacingmark" => "Mn",
            "mc" or "spacingmark" => "Mc",
            "me" or "enclosingmark" => "Me",
            "n" or "number" => "N",
            "nd" or "decimalnumber" or "digit" => "Nd",
            "nl" or "letternumber" => "Nl",
            "no" or "othernumber" => "No",
            "p" or "punctuation" or "punct" => "P",
            "pc" or "connectorpunctuation" => "Pc",
            "pd" or "dashpunctuation" => "Pd",
            "ps" or "openpunctuation" => "Ps",
            "pe" or "closepunctuation" => "Pe",
            "pi" or "initialpunctuation" => "Pi",
            "pf" or "finalpunctuation" => "Pf",
            "po" or "otherpunctuation" => "Po",
            "s" or "symbol" => "S",
            "sm" or "mathsymbol" => "Sm",
            "sc" or "currencysymbol" => "Sc",
            "sk" or "modifiersymbol" => "Sk",
            "so" or "othersymbol" => "So",
            "z" or "separator" => "Z",
            "zs" or "spaceseparator" => "Zs",
            "zl" or "lineseparator" => "Zl",
            "zp" or "paragraphseparator" => "Zp",
            "c" or "other" => "C",
            "cc" or "control" or "cntrl" => "Cc",
            "cf" or "format" => "Cf",
            "co" or "privateuse" => "Co",
            "cn" or "unassigned" => "Cn",
            _ => throw new NotSupportedException($"regex '{p}': Unicode property \\p{{{name}}} is not supported (general categories only)"),
        };
    }

    // Translates a character class starting at p[i] == '['; returns the index after its ']'.
    private static int TranslateClass(string p, int i, StringBuilder o, bool ignoreCase)
    {
        int start = o.Length;
        o.Append('[');
        int j = i + 1;
        if (j < p.Length && p[j] == '^') { o.Append('^'); j++; }
        bool first = true;
        bool hasLetters = false;
        while (j < p.Length && (p[j] != ']' || first))
        {
            char c = p[j];
            first = false;
            if (c == '\\')
            {
                j = TranslateEscape(p, j, o, inClass: true, ignoreCase: false);
                continue;
            }
            if (c == '[')
            {
                if (p.AsSpan(j).StartsWith("[:"))
                {
                    int end = p.IndexOf(":]", j + 2, StringComparison.Ordinal);
                    if (end < 0) throw new NotSupportedException($"regex '{p}': unterminated POSIX class at {j}");
                    o.Append(PosixClass(p, p[(j + 2)..end]));
                    j = end + 2;
                    continue;
                }
                throw new NotSupportedException($"regex '{p}': nested character classes are not supported");
            }
            if (c == '&' && j + 1 < p.Length && p[j + 1] == '&')
                throw new NotSupportedException($"regex '{p}': character class intersection (&&) is not supported");
            if (char.IsSurrogate(c))
                throw new NotSupportedException($"regex '{p}': a supplementary character inside a character class is not supported");
            if (char.IsLetter(c)) hasLetters = true;
            o.Append(c);
            j++;
        }
        if (j >= p.Length) throw new NotSupportedException($"regex '{p}': unterminated character class at {i}");
        o.Append(']');
        if (ignoreCase && hasLetters)
        {
            o.Insert(start, "(?i:");
            o.Append(')');
        }
        return j + 1;
    }

    private static string PosixClass(string p, string name) => name switch
    {
        "alpha" => @"\p{L}\p{M}",
        "digit" => "0-9",
        "alnum" => @"\p{L}\p{M}\p{Nd}",
        "upper" => @"\p{Lu}",
        "lower" => @"\p{Ll}",
        "space" => @"\s",
        "blank" => @"\p{Zs}\t",
        "punct" => @"\p{P}",
        "cntrl" => @"\p{Cc}",
        "xdigit" => "0-9a-fA-F",
        "word" => WordClassBody,
        _ => throw new NotSupportedException($"regex '{p}': POSIX class [:{name}:] is not supported"),
    };
}
