// The committed tokenizer fixtures (Data/Tokenizers/<name>/) and their reference vectors, written by
// tools/reference/tokenizers/gen.mjs with HF tokenizers (Rust, Node binding): tokenizer.json.gz,
// tokenizer_config.json, corpus.jsonl and random.jsonl. Tokenizers load once per test run.
using System.Collections.Concurrent;
using System.Text.Json;
using VteKernels.Text;

namespace VteKernels.Tests.Text;

/// <summary>One reference record: the input and what HF tokenizers made of it.</summary>
internal sealed record TokenizerCase(int Line, string Text, int[] Ids, int[] IdsPlain, string Decoded, string DecodedSkip, string? DecodedClean);

internal static class TokenizerFixtures
{
    /// <summary>The fixture names: which vocabulary each file really holds.</summary>
    public static readonly string[] Names = ["mistral-32k", "llama3-128k", "qwen3-151k", "gpt2-50k"];

    private static readonly ConcurrentDictionary<string, Lazy<Tokenizer>> FromJson = new();
    private static readonly ConcurrentDictionary<string, Lazy<Tokenizer>> FromDir = new();

    public static string Dir(string name) => Path.Combine(AppContext.BaseDirectory, "Data", "Tokenizers", name);

    /// <summary>The tokenizer from tokenizer.json alone (what the Rust reference loaded).</summary>
    public static Tokenizer Json(string name) =>
        FromJson.GetOrAdd(name, n => new Lazy<Tokenizer>(() => Tokenizer.Load(Path.Combine(Dir(n), "tokenizer.json.gz")))).Value;

    /// <summary>The tokenizer from its directory (tokenizer.json.gz + tokenizer_config.json).</summary>
    public static Tokenizer Directory(string name) =>
        FromDir.GetOrAdd(name, n => new Lazy<Tokenizer>(() => Tokenizer.Load(Dir(n)))).Value;

    public static IReadOnlyList<TokenizerCase> Cases(string name, string file)
    {
        var list = new List<TokenizerCase>();
        int line = 0;
        foreach (var text in File.ReadLines(Path.Combine(Dir(name), file)))
        {
            line++;
            if (text.Length == 0) continue;
            using var doc = JsonDocument.Parse(text);
            var r = doc.RootElement;
            int[] Ints(string p) => r.GetProperty(p).EnumerateArray().Select(e => e.GetInt32()).ToArray();
            string? clean = r.TryGetProperty("decoded_clean", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
            list.Add(new TokenizerCase(line, r.GetProperty("text").GetString()!, Ints("ids"), Ints("ids_plain"),
                r.GetProperty("decoded").GetString()!, r.GetProperty("decoded_skip").GetString()!, clean));
        }
        return list;
    }

    /// <summary>A readable form of a string for failure messages (JSON-escaped).</summary>
    public static string Show(string s) => JsonSerializer.Serialize(s.Length > 120 ? s[..120] + "…" : s);

    public static string Show(int[] ids) => "[" + string.Join(",", ids.Length > 40 ? ids[..40] : ids) + (ids.Length > 40 ? ",…" : "") + "]";
}
