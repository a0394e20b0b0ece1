// The tokenizer's surface beyond the reference vectors: the synthetic models' tokenizer.json, lookups,
// tokenizer_config.json handling (BOS/EOS flags, chat templates, generation EOS ids), streaming decode,
// thread safety, and one clear TokenizerException per malformed or unsupported file.
using System.Text.Json.Nodes;
using VteKernels.Synth;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class TokenizerTests
{
    private const int SynthVocab = 1024, SynthImage = 1000;

    private static string WriteSynthetic(TempDir dir, Action<JsonObject>? editJson = null, Action<JsonObject>? editConfig = null)
    {
        var json = JsonNode.Parse(SyntheticTokenizer.TokenizerJson(SynthVocab, SynthImage))!.AsObject();
        editJson?.Invoke(json);
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        var cfg = JsonNode.Parse(SyntheticTokenizer.TokenizerConfigJson(SynthImage, 4096))!.AsObject();
        editConfig?.Invoke(cfg);
        File.WriteAllText(dir.File("tokenizer_config.json"), cfg.ToJsonString());
        return dir.Path;
    }

    // Ids from HF tokenizers 0.23.2 (Rust, Node binding) on SyntheticTokenizer.TokenizerJson(1024, 1000),
    // recorded once when this test was written: the synthetic tokenizer.json is valid HF input.
    public static TheoryData<string, int[], string> SyntheticCases() => new()
    {
        { "USER: <image>\nWhat is the color of the car? ASSISTANT:", [1, 612, 285, 259, 1000, 259, 13, 314, 331, 412, 372, 356, 460, 416, 360, 356, 458, 406, 290, 624, 285],
          "<s> USER: <image> \nWhat is the color of the car? ASSISTANT:" },
        { "Hello wörld 😀 <pad></s>", [1, 259, 299, 328, 335, 335, 338, 387, 198, 185, 341, 335, 327, 259, 243, 162, 155, 131, 259, 1001, 2],
          "<s> Hello wörld 😀 <pad></s>" },
        { "  the  quick brown fox ", [1, 259, 259, 356, 259, 587, 332, 955, 920, 338, 346, 337, 381, 347, 259], "<s>   the  quick brown fox " },
    };

    [Theory, MemberData(nameof(SyntheticCases))]
    public void SyntheticTokenizerMatchesHf(string text, int[] ids, string decoded)
    {
        using var dir = new TempDir();
        var tok = Tokenizer.Load(WriteSynthetic(dir));
        Assert.Equal(ids, tok.Encode(text));
        Assert.Equal(decoded, tok.Decode(ids));
        Assert.Equal(SynthImage + 2, tok.VocabSize); // ids up to <pad>; the model's embedding has spare rows past it
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.Equal(SynthImage + 1, tok.PadId);
        Assert.Equal(SynthImage, tok.TokenToId("<image>"));
        Assert.Contains("ASSISTANT:", tok.ChatTemplate);
    }

    [Fact]
    public void LookupsAndUnknownIds()
    {
        var tok = TokenizerFixtures.Json("mistral-32k");
        Assert.Equal(32000, tok.VocabSize);
        Assert.Equal("<s>", tok.IdToToken(1));
        Assert.Equal(22557, tok.TokenToId("\u2581Hello"));
        Assert.Equal("<0x0A>", tok.IdToToken(13));
        Assert.Null(tok.IdToToken(-1));
        Assert.Null(tok.IdToToken(32000));
        Assert.Null(tok.TokenToId("no such token"));
        Assert.True(tok.IsSpecialToken(1));
        Assert.False(tok.IsSpecialToken(22557));
        // Ids that are no token are skipped, as HF does.
        Assert.Equal("Hello", tok.Decode([22557, 99999, -5]));
        Assert.Equal("", tok.Decode([]));
    }

    [Fact]
    public void AddEosTokenInConfigAppendsEos()
    {
        using var dir = new TempDir();
        var tok = Tokenizer.Load(WriteSynthetic(dir, editConfig: c => c["add_eos_token"] = true));
        var ids = tok.Encode("the cat");
        Assert.Equal(1, ids[0]);
        Assert.Equal(2, ids[^1]);
        Assert.Equal(ids[1..^1], tok.Encode("the cat", addSpecialTokens: false));
    }

    [Fact]
    public void AddBosTokenFalseInConfigDropsBos()
    {
        using var dir = new TempDir();
        var tok = Tokenizer.Load(WriteSynthetic(dir, editConfig: c => c["add_bos_token"] = false));
        Assert.Equal(tok.Encode("the cat", addSpecialTokens: false), tok.Encode("the cat"));
    }

    [Fact]
    public void ChatTemplateListPicksDefaultAndGenerationConfigAddsEosIds()
    {
        using var dir = new TempDir();
        WriteSynthetic(dir, editConfig: c =>
        {
            c["chat_template"] = new JsonArray(
                new JsonObject { ["name"] = "tool_use", ["template"] = "TOOLS" },
                new JsonObject { ["name"] = "default", ["template"] = "DEFAULT" });
            c["eos_token"] = new JsonObject { ["content"] = "</s>", ["special"] = true };
        });
        File.WriteAllText(dir.File("generation_config.json"), """{"eos_token_id": [2, 1001, 2]}""");
        var tok = Tokenizer.Load(dir.Path);
        Assert.Equal("DEFAULT", tok.ChatTemplate);
        Assert.Equal("</s>", tok.EosToken);
        Assert.Equal([2, 1001], tok.EosIds);
    }

    [Fact]
    public void ChatTemplateJinjaFileIsUsedWhenTheConfigHasNone()
    {
        using var dir = new TempDir();
        WriteSynthetic(dir, editConfig: c => c.Remove("chat_template"));
        File.WriteAllText(dir.File("chat_template.jinja"), "{{ messages }}");
        Assert.Equal("{{ messages }}", Tokenizer.Load(dir.Path).ChatTemplate);
    }

    [Fact]
    public void StreamingHoldsIncompleteCharactersAndKeepsSpaces()
    {
        var tok = TokenizerFixtures.Json("mistral-32k");
        var ids = tok.Encode("Hello 😀 world", addSpecialTokens: false);
        var stream = tok.CreateStreamingDecoder();
        var pieces = ids.Select(stream.Push).ToList();
        pieces.Add(stream.Flush());
        Assert.Equal("Hello", pieces[0]); // the first token's space is stripped, as in Decode
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
        Assert.Contains("", pieces); // 😀 is four byte-fallback tokens: the first three return nothing
        Assert.Equal(" world", pieces[^2]);
        Assert.Equal(tok.Decode(ids), string.Concat(pieces));
    }

    [Fact]
    public void StreamingByteLevelSkipsSpecialTokensByDefault()
    {
        var tok = TokenizerFixtures.Json("llama3-128k");
        var ids = tok.Encode("<|begin_of_text|>龘 ok 𪚥", addSpecialTokens: false);
        Assert.Equal(128000, ids[0]);
        var stream = tok.CreateStreamingDecoder();
        var pieces = ids.Select(stream.Push).ToList();
        pieces.Add(stream.Flush());
        Assert.Equal("", pieces[0]);
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
        Assert.Equal("龘 ok 𪚥", string.Concat(pieces));
    }

    [Fact]
    public void FlushReturnsAnIncompleteCharacterAsReplacement()
    {
        var tok = TokenizerFixtures.Json("mistral-32k");
        var stream = tok.CreateStreamingDecoder();
        Assert.Equal("", stream.Push(tok.TokenToId("<0xF0>")!.Value));
        Assert.Equal("\uFFFD", stream.Flush());
    }

    [Fact]
    public void EncodeIsThreadSafe()
    {
        var tok = TokenizerFixtures.Json("qwen3-151k");
        var cases = TokenizerFixtures.Cases("qwen3-151k", "corpus.jsonl");
        var results = new int[cases.Count][];
        Parallel.For(0, cases.Count * 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            var ids = tok.Encode(cases[i % cases.Count].Text);
            if (i < cases.Count) results[i] = ids;
            else Assert.Equal(cases[i % cases.Count].Ids, ids);
        });
        for (int i = 0; i < cases.Count; i++) Assert.Equal(cases[i].Ids, results[i]);
    }

    [Fact]
    public void LoneSurrogatesEncodeAsReplacementCharacter()
    {
        var tok = TokenizerFixtures.Json("gpt2-50k");
        Assert.Equal(tok.Encode("a\uFFFDb"), tok.Encode("a\uD800b"));
        Assert.Equal(tok.Encode("\uFFFD"), tok.Encode("\uDC00"));
    }

    public static TheoryData<string, string, string> BadFiles() => new()
    {
        { "unigram model", """{"model":{"type":"Unigram","vocab":[]}}""", "unsupported model type 'Unigram'" },
        { "wordpiece model", """{"model":{"type":"WordPiece","vocab":{}}}""", "unsupported model type 'WordPiece'" },
        { "whitespace pre-tokenizer", """{"pre_tokenizer":{"type":"Whitespace"},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}""", "unsupported pre_tokenizer type 'Whitespace'" },
        { "bert normalizer", """{"normalizer":{"type":"BertNormalizer"},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}""", "unsupported normalizer type 'BertNormalizer'" },
        { "wordpiece decoder", """{"decoder":{"type":"WordPiece"},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}""", "unsupported decoder type 'WordPiece'" },
        { "nested decoder", """{"decoder":{"type":"Sequence","decoders":[{"type":"CTC"}]},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}""", "decoder.decoders[0] type 'CTC'" },
        { "script property", """{"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\p{Han}+"},"behavior":"Isolated","invert":false},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}""", "\\p{Han}" },
        { "merge out of vocabulary", """{"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}}""", "'ab' is not in the vocabulary" },
        { "merge not a pair", """{"model":{"type":"BPE","vocab":{"a":0},"merges":["a"]}}""", "merge 0" },
        { "dropout", """{"model":{"type":"BPE","dropout":0.1,"vocab":{"a":0},"merges":[]}}""", "dropout" },
        { "no model", """{"normalizer":null}""", "no \"model\"" },
        { "truncated json", """{"model":{"type":"BPE","vocab":{""", "not valid JSON" },
        { "unk not in vocab", """{"model":{"type":"BPE","unk_token":"<unk>","vocab":{"a":0},"merges":[]}}""", "unk_token '<unk>'" },
        { "template names unknown special", """{"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{}},"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}""", "'<s>'" },
    };

    [Theory, MemberData(nameof(BadFiles))]
    public void BadFilesAreOneClearTokenizerException(string label, string json, string expected)
    {
        using var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<TokenizerException>(() => Tokenizer.Load(path));
        Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"{label}: message was: {e.Message}");
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.IsAssignableFrom<VteException>(e);
    }

    [Fact]
    public void MissingFilesAreTokenizerExceptions()
    {
        using var dir = new TempDir();
        Assert.Contains("holds no tokenizer.json", Assert.Throws<TokenizerException>(() => Tokenizer.Load(dir.Path)).Message);
        Assert.Contains("no such file", Assert.Throws<TokenizerException>(() => Tokenizer.Load(dir.File("nope.json"))).Message);
    }

    [Fact]
    public void MalformedConfigIsATokenizerException()
    {
        using var dir = new TempDir();
        WriteSynthetic(dir);
        File.WriteAllText(dir.File("tokenizer_config.json"), "{ not json");
        var e = Assert.Throws<TokenizerException>(() => Tokenizer.Load(dir.Path));
        Assert.Contains("tokenizer_config.json", e.Message);
    }
}
