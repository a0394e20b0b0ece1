// The committed tokenizer fixtures (Data/Tokenizers/<name>/) and their reference vectors, written by
// tools/reference/tokenizers/gen.mjs with HF tokenizers (Rust, Node binding): tokenizer.json.gz,
// tokenizer_config.json, corpus.jsonl and random.jsonl.gz; and variants/<name>.json patches of a base
// tokenizer.json with their own vectors. Tokenizers load once per test run.
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

    public static IReadOnlyList<TokenizerCase> Cases(string name, string file) => ReadCases(Path.Combine(Dir(name), file));

    /// <summary>Reads a JSONL file of reference records (gzipped when the name ends in .gz).</summary>
    public static IReadOnlyList<TokenizerCase> ReadCases(string path)
    {
        var list = new List<TokenizerCase>();
        int line = 0;
        using Stream file = File.OpenRead(path);
        using var reader = new StreamReader(path.EndsWith(".gz", StringComparison.Ordinal)
            ? new System.IO.Compression.GZipStream(file, System.IO.Compression.CompressionMode.Decompress) : file);
        while (reader.ReadLine() is { } text)
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

    /// <summary>Names of the variant fixtures (Data/Tokenizers/variants/*.json).</summary>
    public static string[] VariantNames() =>
        System.IO.Directory.GetFiles(Path.Combine(Dir("variants")), "*.json").Select(p => Path.GetFileNameWithoutExtension(p)).Order(StringComparer.Ordinal).ToArray();

    private static readonly ConcurrentDictionary<string, Lazy<Tokenizer>> Variants = new();

    /// <summary>
    /// A variant: the base tokenizer.json with the patch applied (top-level components replaced, added
    /// tokens appended), written to a temporary file and loaded from there.
    /// </summary>
    public static Tokenizer Variant(string name) => Variants.GetOrAdd(name, n => new Lazy<Tokenizer>(() =>
    {
        var patch = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(Dir("variants"), n + ".json")))!.AsObject();
        string baseName = patch["base"]!.GetValue<string>();
        using var gz = new System.IO.Compression.GZipStream(File.OpenRead(Path.Combine(Dir(baseName), "tokenizer.json.gz")), System.IO.Compression.CompressionMode.Decompress);
        var root = System.Text.Json.Nodes.JsonNode.Parse(gz)!.AsObject();
        foreach (var (key, value) in patch["set"]!.AsObject()) root[key] = value?.DeepClone();
        foreach (var t in patch["add"]!.AsArray()) root["added_tokens"]!.AsArray().Add(t!.DeepClone());
        using var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, root.ToJsonString());
        return Tokenizer.Load(path);
    })).Value;

    /// <summary>A readable form of a string for failure messages (JSON-escaped).</summary>
    public static string Show(string s) => JsonSerializer.Serialize(s.Length > 120 ? s[..120] + "…" : s);

    public static string Show(int[] ids) => "[" + string.Join(",", ids.Length > 40 ? ids[..40] : ids) + (ids.Length > 40 ? ",…" : "") + "]";
}
