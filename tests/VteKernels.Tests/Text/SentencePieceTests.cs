// tokenizer.model (SentencePiece) through Microsoft.ML.Tokenizers with HF's slow LlamaTokenizer rules, on a model
// trained here by Debian's spm_train (Data/Tokenizers/spm-llama, made by tools/reference/sentencepiece/make_reference.py):
// plain text gives the reference SentencePiece library's ids (spm_encode) and decodes as it decodes; special tokens
// written in the text follow the slow tokenizer's rules in both legacy modes, with BOS per add_bos_token; prompts
// split at <image> as LLaVA's tokenizer_image_token does; and the tokenizer.json that transformers' LlamaConverter
// makes from the same vocabulary gives the same ids through our tokenizer.json path.
using System.Text.Json;
using VteKernels.Engine;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class SentencePieceTests
{
    private static readonly string Data = Path.Combine(AppContext.BaseDirectory, "Data", "Tokenizers", "spm-llama");

    private static JsonElement Read(string name) => JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Data, name))).RootElement;

    /// <summary>A folder with only tokenizer.model (and a tokenizer_config.json when given).</summary>
    private static string ModelDir(string? tokenizerConfig = null)
    {
        var dir = TestModels.NewTempDir("spm");
        File.Copy(Path.Combine(Data, "tokenizer.model"), Path.Combine(dir, "tokenizer.model"));
        if (tokenizerConfig is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig);
        return dir;
    }

    [Fact]
    public void PlainTextGivesTheReferenceLibrarysIdsAndDecodes()
    {
        var tok = Tokenizer.Load(ModelDir());
        Assert.True(tok.IsSentencePieceModel);
        int n = 0;
        foreach (var c in Read("plain.json").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            var want = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            Assert.True(want.SequenceEqual(tok.Encode(text, addSpecialTokens: false)), $"'{text}': want {string.Join(",", want)}, got {string.Join(",", tok.Encode(text, false))}");
            Assert.Equal(c.GetProperty("decoded").GetString(), tok.Decode(want));
            n++;
        }
        Assert.True(n > 100);
    }

    [Fact]
    public void SpecialTokensLegacyAndBosFollowTheSlowLlamaTokenizer()
    {
        var dirs = new Dictionary<(bool, bool), Tokenizer>();
        int differ = 0, cases = 0;
        var raw = Tokenizer.Load(ModelDir());
        foreach (var c in Read("cases.json").EnumerateArray())
        {
            bool legacy = c.GetProperty("legacy").GetBoolean(), bos = c.GetProperty("add_bos_token").GetBoolean();
            var key = (legacy, bos);
            if (!dirs.TryGetValue(key, out var tok))
                dirs[key] = tok = Tokenizer.Load(ModelDir($$"""{"legacy": {{(legacy ? "true" : "false")}}, "add_bos_token": {{(bos ? "true" : "false")}}, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}"""));
            var text = c.GetProperty("text").GetString()!;
            var want = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            int[] got = c.TryGetProperty("image_token_id", out var img)
                ? MultimodalPrompt.TokenizerImageToken(tok, text, img.GetInt32())
                : tok.Encode(text);
            Assert.True(want.SequenceEqual(got), $"legacy {legacy}, bos {bos}, '{text}': want {string.Join(",", want)}, got {string.Join(",", got)}");
            if (!c.TryGetProperty("image_token_id", out _) && !want.SequenceEqual((bos ? [1] : Array.Empty<int>()).Concat(raw.Encode(text, false)))) differ++;
            cases++;
        }
        Assert.True(differ > 10, $"only {differ} of {cases} cases differ from raw SentencePiece: the special-token rules are barely exercised");
    }

    [Fact]
    public void TheTokenizerJsonOfTheSameVocabularyAgrees()
    {
        var sp = Tokenizer.Load(ModelDir());
        var json = Tokenizer.Load(Path.Combine(Data, "tokenizer.json"));
        foreach (var c in Read("plain.json").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            Assert.True(sp.Encode(text).SequenceEqual(json.Encode(text)), $"'{text}'");
            var ids = sp.Encode(text, false);
            Assert.Equal(json.Decode(ids, skipSpecialTokens: true), sp.Decode(ids, skipSpecialTokens: true));
        }
    }

    [Fact]
    public void StreamingDecodeOfATokenizerModelEqualsDecode()
    {
        var tok = Tokenizer.Load(ModelDir("""{"legacy": false}"""));
        var ids = tok.Encode("Hello world, 日本語 😀 and  two spaces.", false);
        var stream = tok.CreateStreamingDecoder();
        var text = string.Concat(ids.Select(stream.Push)) + stream.Flush();
        Assert.Equal(tok.Decode(ids, skipSpecialTokens: true), text);
        Assert.Equal("Hello world, 日本語 😀 and  two spaces.", text);
    }
}

public sealed class OriginalLayoutFrontEndTests
{
    [Fact]
    public void AnOriginalLayoutPromptIsSplitAtImageAndPadsByDefault()
    {
        var (modelDir, clipDir) = Models.OriginalLayoutCheckpoints.Write(TestModels.Tiny());
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Data", "Tokenizers", "spm-llama", "tokenizer.model"), Path.Combine(modelDir, "tokenizer.model"));
        var cfg = VteKernels.Models.LlavaCheckpoint.ReadConfig(modelDir, clipDir);
        var tok = Tokenizer.Load(modelDir);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 1), cfg.Vision.ImageSize);
        var prompt = MultimodalPrompt.Build(cfg, tok, "USER: <image>\nWhat is it? ASSISTANT:", [image]);
        var split = MultimodalPrompt.TokenizerImageToken(tok, "USER: <image>\nWhat is it? ASSISTANT:", cfg.ImageTokenIndex);
        Assert.Equal(split.SelectMany(id => id == cfg.ImageTokenIndex ? Enumerable.Repeat(id, cfg.TokensPerImage) : [id]), prompt.TokenIds);
        Assert.Equal(tok.BosId, prompt.TokenIds[0]);
        Assert.Single(prompt.FindImageSpans(cfg));

        // image_aspect_ratio "pad" in the original config selects LLaVA-1.5's pad-to-square; llava-hf configs never pad by default.
        Assert.True(MultimodalPrompt.PadsToSquare(modelDir));
        Assert.True(MultimodalPrompt.PreprocessingFor(modelDir, cfg, pad: null).PadToSquare);
        Assert.False(MultimodalPrompt.PreprocessingFor(modelDir, cfg, pad: false).PadToSquare);
        Assert.False(MultimodalPrompt.PadsToSquare(TestModels.Tiny()));
    }
}
