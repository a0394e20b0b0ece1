// `vte tokenize` run in-process: --jsonl gives HF's ids line by line (checked on the reference corpus),
// the human view lists every token and a count, and bad input is one "error:" line with exit code 2.
using System.Text.Json;
using VteKernels.Cli;
using VteKernels.Tests.Text;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class TokenizeCliTests
{
    [Theory]
    [InlineData("mistral-32k", false)]
    [InlineData("llama3-128k", true)]
    [InlineData("qwen3-151k", false)]
    public void JsonlGivesHfIdsPerLine(string name, bool noSpecial)
    {
        var cases = TokenizerFixtures.Cases(name, "corpus.jsonl");
        string input = string.Join("\n", cases.Select(c => JsonSerializer.Serialize(c.Text))) + "\n";
        var args = new List<string> { "tokenize", "--tokenizer", TokenizerFixtures.Dir(name), "--jsonl" };
        if (noSpecial) args.Add("--no-special");
        var r = VteWithInput(input, args.ToArray());
        Assert.True(r.Code == 0, r.Err);
        var lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(cases.Count, lines.Length);
        for (int i = 0; i < cases.Count; i++)
            Assert.Equal(noSpecial ? cases[i].IdsPlain : cases[i].Ids, JsonSerializer.Deserialize<int[]>(lines[i]));
    }

    [Fact]
    public void HumanViewListsTokensAndCount()
    {
        var r = VteWithInput(null, "tokenize", "-t", TokenizerFixtures.Dir("mistral-32k"), "--text", "Hello\nworld");
        Assert.True(r.Code == 0, r.Err);
        var lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("   id  piece", lines[0]);
        Assert.Contains(lines, l => l.Contains("22557") && l.Contains("\"\u2581Hello\"") && l.Contains("\" Hello\"")); // after <s>, in context
        Assert.Contains(lines, l => l.Contains("\"<0x0A>\"") && l.Contains("\"\\n\""));
        Assert.Equal("4 tokens for 11 bytes of text", lines[^1]); // <s> ▁Hello <0x0A> world
    }

    [Fact]
    public void HumanViewReadsStdinWithoutText()
    {
        var r = VteWithInput("some text", "tokenize", "-t", TokenizerFixtures.Dir("qwen3-151k"), "--no-special");
        Assert.True(r.Code == 0, r.Err);
        Assert.EndsWith("2 tokens for 9 bytes of text\n", r.Out.ReplaceLineEndings("\n"));
    }

    [Theory]
    [InlineData("not json", "\"a\"\nnope\n", "stdin line 2")]
    [InlineData("null line", "null\n", "stdin line 1")]
    [InlineData("number line", "42\n", "stdin line 1")]
    public void BadJsonlInputIsOneErrorLine(string label, string stdin, string expected)
    {
        var r = VteWithInput(stdin, "tokenize", "-t", TokenizerFixtures.Dir("gpt2-50k"), "--jsonl");
        Assert.True(r.Code == 2, $"{label}: exit {r.Code}");
        var err = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(err);
        Assert.StartsWith("error: ", err[0]);
        Assert.Contains(expected, err[0]);
    }

    [Fact]
    public void MissingOrUnsupportedTokenizerIsOneErrorLine()
    {
        var missing = VteWithInput(null, "tokenize", "-t", "/nonexistent/tokenizer", "--text", "x");
        Assert.Equal(2, missing.Code);
        Assert.StartsWith("error: /nonexistent/tokenizer", missing.Err);

        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), """{"model":{"type":"Unigram","vocab":[]}}""");
        var unsupported = VteWithInput(null, "tokenize", "-t", dir.Path, "--text", "x");
        Assert.Equal(2, unsupported.Code);
        Assert.Single(unsupported.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("unsupported model type 'Unigram'", unsupported.Err);
    }

    [Theory]
    [InlineData("x\n", "\"x\\n\"")]
    [InlineData("a\u200Bb", "\"a\\u200Bb\"")]
    [InlineData("😀\u00A0\"", "\"😀\\u00A0\\\"\"")]
    public void EscapeShowsInvisibleCharacters(string input, string expected)
    {
        Assert.Equal(expected, TokenizeCommand.Escape(input));
    }
}
