// `vte tokenize`: text in, token ids out, exactly as HF tokenizers' encode. Two modes:
//   --jsonl   one JSON string per input line, one JSON array of ids per output line (for scripts and
//             for comparing with other implementations line by line);
//   default   the text of --text, or all of stdin, shown as one token per line (id, the vocabulary
//             piece and the text it adds to the decoded output, both escaped) and a count.
// --no-special leaves out the post-processor's special tokens (BOS/EOS).
using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using VteKernels.Text;

namespace VteKernels.Cli;

internal static class TokenizeCommand
{
    public static Command Create(TextWriter stdout, TextReader stdin)
    {
        var tokenizer = new Option<string>("--tokenizer", "-t") { Description = "Model directory or tokenizer.json file", Required = true };
        var text = new Option<string>("--text") { Description = "Text to tokenize (default: read stdin)" };
        var jsonl = new Option<bool>("--jsonl") { Description = "Read one JSON string per line, write one JSON array of ids per line" };
        var noSpecial = new Option<bool>("--no-special") { Description = "Do not add the post-processor's special tokens (BOS/EOS)" };
        var cmd = new Command("tokenize", "Tokenize text with a HF tokenizer.json") { tokenizer, text, jsonl, noSpecial };
        cmd.SetAction(p =>
        {
            var tok = Tokenizer.Load(p.GetValue(tokenizer)!);
            bool special = !p.GetValue(noSpecial);
            if (p.GetValue(jsonl))
            {
                if (p.GetValue(text) is not null) throw new UsageException("--text and --jsonl cannot be combined (--jsonl reads stdin)");
                return RunJsonl(tok, special, stdin, stdout);
            }
            return RunHuman(tok, p.GetValue(text) ?? stdin.ReadToEnd(), special, stdout);
        });
        return cmd;
    }

    private static int RunJsonl(Tokenizer tok, bool special, TextReader stdin, TextWriter stdout)
    {
        int lineNo = 0;
        var sb = new StringBuilder();
        while (stdin.ReadLine() is { } line)
        {
            lineNo++;
            if (line.Length == 0) continue;
            string? text;
            try { text = JsonSerializer.Deserialize<string>(line); }
            catch (JsonException e) { throw new UsageException($"stdin line {lineNo}: not a JSON string ({e.Message})"); }
            if (text is null) throw new UsageException($"stdin line {lineNo}: null is not a JSON string");
            sb.Clear().Append('[');
            var ids = tok.Encode(text, special);
            for (int i = 0; i < ids.Length; i++)
            {
                if (i > 0) sb.Append(',');
                sb.Append(ids[i]);
            }
            stdout.WriteLine(sb.Append(']').ToString());
        }
        return 0;
    }

    private static int RunHuman(Tokenizer tok, string text, bool special, TextWriter stdout)
    {
        var ids = tok.Encode(text, special);
        int width = Math.Max(5, tok.VocabSize.ToString(CultureInfo.InvariantCulture).Length);
        stdout.WriteLine($"{"id".PadLeft(width)}  {"piece",-24}  text");
        // The text column is what each token adds to the decoded text in context (a streaming decode): a
        // mid-text "▁w" shows " w", and the bytes of a split character show at the token that completes it.
        var stream = tok.CreateStreamingDecoder(skipSpecialTokens: false);
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            string added = stream.Push(id);
            if (i == ids.Length - 1) added += stream.Flush();
            string piece = Escape(tok.IdToToken(id) ?? "");
            stdout.WriteLine($"{id.ToString(CultureInfo.InvariantCulture).PadLeft(width)}  {piece,-24}  {Escape(added)}");
        }
        stdout.WriteLine($"{ids.Length} tokens for {Encoding.UTF8.GetByteCount(text)} bytes of text");
        return 0;
    }

    /// <summary>The string in double quotes with control, format, separator and lone surrogate characters escaped.</summary>
    internal static string Escape(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            switch (c)
            {
                case '\n': sb.Append(@"\n"); continue;
                case '\r': sb.Append(@"\r"); continue;
                case '\t': sb.Append(@"\t"); continue;
                case '"': sb.Append("\\\""); continue;
                case '\\': sb.Append(@"\\"); continue;
            }
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                sb.Append(c).Append(s[++i]);
                continue;
            }
            var cat = char.GetUnicodeCategory(c);
            bool invisible = cat is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.LineSeparator
                or UnicodeCategory.ParagraphSeparator or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.Surrogate
                || (cat == UnicodeCategory.SpaceSeparator && c != ' ');
            if (invisible) sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
            else sb.Append(c);
        }
        return sb.Append('"').ToString();
    }
}
