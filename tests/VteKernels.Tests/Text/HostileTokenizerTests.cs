// Hostile tokenizer files: ids far past the vocabulary, text System.Text.Json cannot decode, values of the
// wrong JSON kind deep inside a component, regex patterns the translator or the engine choke on. Each is
// one TokenizerException naming the file (or loads with memory that follows the entries, not the ids).
using System.Text;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class HostileTokenizerTests
{
    private const string Model = "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]}";

    private static TokenizerException LoadFails(string json)
    {
        using var dir = new TempDir();
        var path = dir.File("tokenizer.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<TokenizerException>(() => Tokenizer.Load(path));
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    public static TheoryData<string, string, string> BadFiles() => new()
    {
        // Ids: 2^31-1 overflowed `new string?[maxId + 1]`; 1e8 allocated 800 MB and loaded.
        { "id 2^31-1", """{"model":{"type":"BPE","vocab":{"a":2147483647},"merges":[]}}""", "above the largest supported id 16777215" },
        { "id 1e8", """{"model":{"type":"BPE","vocab":{"a":100000000},"merges":[]}}""", "above the largest supported id 16777215" },
        { "added token id 2^31-1", "{" + Model + ""","added_tokens":[{"id":2147483647,"content":"<x>","special":true}]}""", "above the largest supported id" },
        // Escaped lone surrogates are valid JSON that System.Text.Json cannot decode (InvalidOperationException).
        { "lone surrogate in a vocabulary key", """{"model":{"type":"BPE","vocab":{"\ud800":0},"merges":[]}}""", "not valid UTF-8 / UTF-16" },
        { "lone surrogate in a merge", """{"model":{"type":"BPE","vocab":{"a":0},"merges":["\udc00 a"]}}""", "not valid UTF-8 / UTF-16" },
        { "lone surrogate in a type", """{"normalizer":{"type":"\ud800"},""" + Model + "}", "not valid UTF-8 / UTF-16" },
        // Values of the wrong kind deep inside a component (once "unexpected JSON structure" from a catch-all).
        { "normalizers not an array", """{"normalizer":{"type":"Sequence","normalizers":5},""" + Model + "}", "normalizer.normalizers is not a JSON array" },
        { "pretokenizers not an array", """{"pre_tokenizer":{"type":"Sequence","pretokenizers":"x"},""" + Model + "}", "pre_tokenizer.pretokenizers is not a JSON array" },
        { "decoders not an array", """{"decoder":{"type":"Sequence","decoders":{}},""" + Model + "}", "decoder.decoders is not a JSON array" },
        { "processors not an array", """{"post_processor":{"type":"Sequence","processors":1},""" + Model + "}", "post_processor.processors is not a JSON array" },
        { "special token ids not numbers", """{"post_processor":{"type":"TemplateProcessing","single":[{"Sequence":{"id":"A"}}],"special_tokens":{"<s>":{"ids":["x"]}}},""" + Model + "}", "not a non-negative integer" },
        { "template single not an array", """{"post_processor":{"type":"TemplateProcessing","single":7,"special_tokens":{}},""" + Model + "}", "single is not a JSON array" },
        { "bert cls id a string", """{"post_processor":{"type":"BertProcessing","cls":["[CLS]","x"],"sep":["[SEP]",1]},""" + Model + "}", "\"cls\" is not [token, id]" },
        { "dropout 1e400", """{"model":{"type":"BPE","dropout":1e400,"vocab":{"a":0},"merges":[]}}""", "dropout" },
        // Regex patterns: an OverflowException, an ArgumentOutOfRangeException and an out-of-range slice before.
        { "regex \\x{} past 32 bits", """{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\x{FFFFFFFFFF}"},"behavior":"Isolated","invert":false},""" + Model + "}", "is not a Unicode scalar value" },
        { "regex \\x{110000}", """{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\x{110000}"},"behavior":"Isolated","invert":false},""" + Model + "}", "is not a Unicode scalar value" },
        { "regex \\x{} not hex", """{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\x{zz}"},"behavior":"Isolated","invert":false},""" + Model + "}", "is not a Unicode scalar value" },
        { "regex ending in \\p", """{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"a\\p"},"behavior":"Isolated","invert":false},""" + Model + "}", "ends inside \\p" },
        { "regex of 20,000 characters", "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" + new string('a', 20_000) + "\"},\"behavior\":\"Isolated\",\"invert\":false}," + Model + "}", "longer than the 16384 supported" },
    };

    [Theory, MemberData(nameof(BadFiles))]
    public void BadFilesAreOneClearTokenizerException(string label, string json, string expected)
    {
        var e = LoadFails(json);
        Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"{label}: message was: {e.Message}");
    }

    // Sparse ids below the cap load into a dictionary: memory follows the two entries, not the id 16,000,000.
    [Fact]
    public void SparseIdsLoadWithoutATableOfTheLargestId()
    {
        using var dir = new TempDir();
        var path = dir.File("tokenizer.json");
        File.WriteAllText(path, """{"model":{"type":"BPE","vocab":{"a":0,"b":16000000},"merges":[]}}""");
        long before = GC.GetAllocatedBytesForCurrentThread();
        var tok = Tokenizer.Load(path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 16L << 20, $"{allocated} bytes allocated for a two-entry vocabulary");
        Assert.Equal(16_000_001, tok.VocabSize);
        Assert.Equal("b", tok.IdToToken(16_000_000));
        Assert.Null(tok.IdToToken(15_999_999));
        Assert.Equal([0, 16_000_000], tok.Encode("ab", addSpecialTokens: false));
    }

    // tokenizer_config.json strings that are not UTF-8 (a raw 0x96 byte) or hold an escaped lone surrogate were an
    // InvalidOperationException from JsonElement.GetString, outside Load's error handling.
    public static TheoryData<string, string, byte[]> BadConfigs() => new()
    {
        { "raw 0x96 in bos_token", "tokenizer_config.json", [.. "{\"bos_token\":\""u8, 0x96, .. "\"}"u8] },
        { "lone surrogate in bos_token", "tokenizer_config.json", "{\"bos_token\":\"\\ud800\"}"u8.ToArray() },
        { "lone surrogate in eos_token content", "tokenizer_config.json", "{\"eos_token\":{\"content\":\"\\udfff\"}}"u8.ToArray() },
        { "lone surrogate in chat_template", "tokenizer_config.json", "{\"chat_template\":\"\\ud800\"}"u8.ToArray() },
        { "lone surrogate in a named chat_template", "tokenizer_config.json", "{\"chat_template\":[{\"name\":\"\\ud800\",\"template\":\"x\"}]}"u8.ToArray() },
        { "lone surrogate in special_tokens_map", "special_tokens_map.json", "{\"pad_token\":\"\\ud800\"}"u8.ToArray() },
        { "raw 0xFF in chat_template.jinja", "chat_template.jinja", [0x7B, 0x7B, 0xFF, 0x7D, 0x7D] },
        { "eos_token_id list of strings", "generation_config.json", "{\"eos_token_id\":[\"x\", 2]}"u8.ToArray() },
    };

    [Theory, MemberData(nameof(BadConfigs))]
    public void BadConfigStringsAreTokenizerExceptions(string label, string file, byte[] content)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), "{" + Model + "}");
        File.WriteAllBytes(dir.File(file), content);
        if (file == "generation_config.json")
        {
            // Not a string problem: ids of the wrong kind are skipped, as transformers ignores them.
            Assert.Empty(Tokenizer.Load(dir.Path).EosIds);
            return;
        }
        var e = Assert.Throws<TokenizerException>(() => Tokenizer.Load(dir.Path));
        Assert.True(e.Message.Contains(file, StringComparison.Ordinal), $"{label}: {e.Message}");
        Assert.Matches("not valid UTF-8", e.Message);
    }

    // A pattern that backtracks exponentially ends in a TokenizerException after the match timeout.
    [Fact]
    public void CatastrophicBacktrackingIsATokenizerException()
    {
        using var dir = new TempDir();
        var path = dir.File("tokenizer.json");
        File.WriteAllText(path, """{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"^(a|aa)+$"},"behavior":"Isolated","invert":false},""" + Model + "}");
        var tok = Tokenizer.Load(path);
        var e = Assert.Throws<TokenizerException>(() => tok.Encode(new string('a', 200) + "b"));
        Assert.Contains("catastrophic backtracking", e.Message);
    }

    [Fact]
    public void TheFileMustBeUtf8()
    {
        using var dir = new TempDir();
        var path = dir.File("tokenizer.json");
        File.WriteAllBytes(path, [.. Encoding.ASCII.GetBytes("{\"model\":{\"type\":\"BPE\",\"vocab\":{\""), 0xC3, 0x28, .. Encoding.ASCII.GetBytes("\":0},\"merges\":[]}}")]);
        var e = Assert.Throws<TokenizerException>(() => Tokenizer.Load(path));
        Assert.Contains("not valid UTF-8 (first bad byte at offset 33)", e.Message);
    }
}
