// Splits a Jinja template into tokens: literal text, the delimiters of {{ }} and {% %} tags, and the
// names, literals and operators inside tags. Whitespace follows the environment Hugging Face's
// apply_chat_template uses (trim_blocks and lstrip_blocks on, keep_trailing_newline off):
//   - line endings are normalised to \n and one trailing \n of the template is dropped;
//   - "{%-", "{{-", "{#-" strip all whitespace before the tag; "-%}", "-}}", "-#}" all whitespace after it;
//   - a {% %} or {# #} tag alone after indentation on its line loses that indentation (unless "{%+");
//   - the first \n after "%}" or "#}" is dropped (unless "+%}").
// A "}}" or "%}" only closes its tag when the brackets opened inside the tag are balanced, so dict
// literals ({'a': {'b': 1}}) work. Comments are dropped here. Offsets index the normalised source.
using System.Globalization;
using System.Text;

namespace VteKernels.Text.Jinja;

internal enum TokenKind
{
    /// <summary>Literal template text, already trimmed by the whitespace rules.</summary>
    Text,
    /// <summary>"{{".</summary>
    ExprOpen,
    /// <summary>"}}".</summary>
    ExprClose,
    /// <summary>"{%".</summary>
    StmtOpen,
    /// <summary>"%}".</summary>
    StmtClose,
    Name,
    String,
    Integer,
    Float,
    Operator,
    End,
}

internal readonly record struct Token(TokenKind Kind, string Value, int Offset);

internal static class Lexer
{
    // Longest first, so that "//" is not read as two "/".
    private static readonly string[] Operators =
        ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"];

    /// <summary>The source as the lexer reads it: \r\n and \r become \n, and one trailing \n is dropped.</summary>
    public static string Normalize(string source)
    {
        var s = source.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n');
        return s.EndsWith('\n') ? s[..^1] : s;
    }

    /// <summary>Tokenizes a normalised source (see <see cref="Normalize"/>).</summary>
    /// <exception cref="ChatTemplateException">An unterminated tag, comment or string, or a character no token starts with.</exception>
    public static List<Token> Tokenize(string src)
    {
        var tokens = new List<Token>();
        int pos = 0;
        bool stripNext = false;      // the previous tag ended with "-": drop all leading whitespace
        bool trimNewline = false;    // the previous tag was a block or comment: drop one leading \n
        bool lineStarting = true;    // the previous tag's match ended a line (or this is the start)

        while (pos < src.Length)
        {
            int tag = FindTagStart(src, pos);
            string raw = src[pos..tag], text = raw;
            if (stripNext)
            {
                text = raw.TrimStart();
                lineStarting = text.Length < raw.Length && raw[raw.Length - text.Length - 1] == '\n';
            }
            else if (trimNewline && raw.StartsWith('\n'))
            {
                text = raw[1..];
                lineStarting = true;
            }
            stripNext = trimNewline = false;

            if (tag == src.Length)
            {
                if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, pos));
                break;
            }

            char kind = src[tag + 1];
            char control = tag + 2 < src.Length ? src[tag + 2] : '\0';
            if (control == '-')
                text = text.TrimEnd();
            else if (control != '+' && kind != '{')
                text = LStripBlock(text, lineStarting);
            if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, pos));

            int inner = tag + 2 + (control is '-' or '+' ? 1 : 0);
            int end;
            char closeControl;
            if (kind == '#')
            {
                int close = src.IndexOf("#}", inner, StringComparison.Ordinal);
                if (close < 0) throw Error(src, tag, "comment '{#' is never closed with '#}'");
                closeControl = close > inner && src[close - 1] is '-' or '+' ? src[close - 1] : '\0';
                end = close + 2;
            }
            else
            {
                tokens.Add(new Token(kind == '{' ? TokenKind.ExprOpen : TokenKind.StmtOpen, kind == '{' ? "{{" : "{%", tag));
                (end, closeControl) = TokenizeTag(src, inner, kind == '{', tokens, tag);
            }

            pos = end;
            if (closeControl == '-') stripNext = true;
            else if (closeControl != '+' && kind != '{') trimNewline = true;
            // Whether the next text starts a line, as Jinja's lexer tracks it for lstrip_blocks: only when
            // the newline that ended this tag's line was consumed with the tag (set above, next round).
            lineStarting = false;
        }
        tokens.Add(new Token(TokenKind.End, "", src.Length));
        return tokens;
    }

    private static int FindTagStart(string src, int from)
    {
        for (int i = src.IndexOf('{', from); i >= 0 && i + 1 < src.Length; i = src.IndexOf('{', i + 1))
            if (src[i + 1] is '{' or '%' or '#') return i;
        return src.Length;
    }

    // lstrip_blocks: indentation between the start of the line and a block tag goes.
    private static string LStripBlock(string text, bool lineStarting)
    {
        int lineStart = text.LastIndexOf('\n') + 1;
        if (lineStart == 0 && !lineStarting) return text;
        for (int i = lineStart; i < text.Length; i++)
            if (!char.IsWhiteSpace(text[i])) return text;
        return text[..lineStart];
    }

    // Reads the tokens of one {{ }} or {% %} tag; returns the offset after the closing delimiter and
    // its whitespace-control character ('-', '+' or '\0').
    private static (int End, char Control) TokenizeTag(string src, int pos, bool isExpr, List<Token> tokens, int tagStart)
    {
        int depth = 0;
        char closer = isExpr ? '}' : '%';
        while (true)
        {
            while (pos < src.Length && char.IsWhiteSpace(src[pos])) pos++;
            if (pos >= src.Length)
                throw Error(src, tagStart, $"tag '{(isExpr ? "{{" : "{%")}' is never closed with '{(isExpr ? "}}" : "%}")}'");

            if (depth == 0)
            {
                char c = src[pos];
                // "-}}", "-%}" and "+%}" ("+" only ends statements, as in Jinja).
                if ((c == '-' || (c == '+' && !isExpr)) && At(src, pos + 1, closer) && At(src, pos + 2, '}'))
                {
                    tokens.Add(new Token(isExpr ? TokenKind.ExprClose : TokenKind.StmtClose, src.Substring(pos, 3), pos));
                    return (pos + 3, c);
                }
                if (c == closer && At(src, pos + 1, '}'))
                {
                    tokens.Add(new Token(isExpr ? TokenKind.ExprClose : TokenKind.StmtClose, src.Substring(pos, 2), pos));
                    return (pos + 2, '\0');
                }
            }

            char ch = src[pos];
            if (char.IsAsciiLetter(ch) || ch == '_')
            {
                int start = pos;
                while (pos < src.Length && (char.IsAsciiLetterOrDigit(src[pos]) || src[pos] == '_')) pos++;
                tokens.Add(new Token(TokenKind.Name, src[start..pos], start));
            }
            else if (char.IsAsciiDigit(ch))
            {
                pos = ReadNumber(src, pos, tokens);
            }
            else if (ch is '\'' or '"')
            {
                pos = ReadString(src, pos, tokens);
            }
            else
            {
                string? op = null;
                foreach (var candidate in Operators)
                    if (string.CompareOrdinal(src, pos, candidate, 0, candidate.Length) == 0) { op = candidate; break; }
                if (op is null) throw Error(src, pos, $"unexpected character '{ch}' inside a tag");
                if (op is "(" or "[" or "{") depth++;
                else if (op is ")" or "]" or "}")
                {
                    if (depth == 0) throw Error(src, pos, $"unexpected '{op}'");
                    depth--;
                }
                tokens.Add(new Token(TokenKind.Operator, op, pos));
                pos += op.Length;
            }
        }
    }

    private static bool At(string s, int i, char c) => i < s.Length && s[i] == c;

    // Integers ("12", "1_000") and floats ("1.5", "2e3", "1.5e-3"), as Jinja's number rules read them.
    private static int ReadNumber(string src, int pos, List<Token> tokens)
    {
        int start = pos;
        pos = Digits(src, pos);
        bool isFloat = false;
        if (At(src, pos, '.') && pos + 1 < src.Length && char.IsAsciiDigit(src[pos + 1]))
        {
            isFloat = true;
            pos = Digits(src, pos + 1);
        }
        if (pos < src.Length && (src[pos] is 'e' or 'E'))
        {
            int e = pos + 1;
            if (e < src.Length && (src[e] is '+' or '-')) e++;
            if (e < src.Length && char.IsAsciiDigit(src[e]))
            {
                isFloat = true;
                pos = Digits(src, e);
            }
        }
        var text = src[start..pos].Replace("_", "", StringComparison.Ordinal);
        tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, text, start));
        return pos;

        static int Digits(string s, int p)
        {
            while (p < s.Length && (char.IsAsciiDigit(s[p]) || (s[p] == '_' && p + 1 < s.Length && char.IsAsciiDigit(s[p + 1])))) p++;
            return p;
        }
    }

    // A quoted string with Python's escapes: \n \t \r \\ \' \" \a \b \f \v \0-\777 \xhh \uhhhh \Uhhhhhhhh;
    // an unknown escape keeps its backslash, as Python does.
    private static int ReadString(string src, int pos, List<Token> tokens)
    {
        char quote = src[pos];
        int start = pos++;
        var sb = new StringBuilder();
        while (true)
        {
            if (pos >= src.Length) throw Error(src, start, "string literal is never closed");
            char c = src[pos++];
            if (c == quote) break;
            if (c != '\\') { sb.Append(c); continue; }
            if (pos >= src.Length) throw Error(src, start, "string literal is never closed");
            char e = src[pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case '\n': break; // a backslash-newline continues the line
                case 'x': sb.Append((char)Hex(src, ref pos, 2, start)); break;
                case 'u': sb.Append((char)Hex(src, ref pos, 4, start)); break;
                case 'U':
                    int cp = Hex(src, ref pos, 8, start);
                    if (cp > 0x10FFFF) throw Error(src, start, "\\U escape out of range");
                    sb.Append(char.ConvertFromUtf32(cp));
                    break;
                case >= '0' and <= '7':
                    int value = e - '0';
                    for (int k = 0; k < 2 && pos < src.Length && src[pos] is >= '0' and <= '7'; k++) value = value * 8 + (src[pos++] - '0');
                    sb.Append((char)value);
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }
        tokens.Add(new Token(TokenKind.String, sb.ToString(), start));
        return pos;
    }

    private static int Hex(string src, ref int pos, int count, int start)
    {
        if (pos + count > src.Length || !int.TryParse(src.AsSpan(pos, count), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int v))
            throw Error(src, start, $"bad \\x/\\u escape in string literal (expected {count} hex digits)");
        pos += count;
        return v;
    }

    /// <summary>"line L, column C" of an offset in the normalised source.</summary>
    public static string Where(string src, int offset)
    {
        offset = Math.Clamp(offset, 0, src.Length);
        int line = 1, lineStart = 0;
        for (int i = 0; i < offset; i++)
            if (src[i] == '\n') { line++; lineStart = i + 1; }
        return $"line {line}, column {offset - lineStart + 1}";
    }

    public static ChatTemplateException Error(string src, int offset, string problem) =>
        new($"chat template {Where(src, offset)}: {problem}");
}
