// `vte generate` and `vte chat` as scripts use them: the answer alone on stdout, everything else on stderr,
// --quiet, --json (one object), Ctrl+C ending with the stats so far, -n clamped to the context, -n 0, stop
// strings, the shared options on chat, and a table of wrong invocations, each exit 2 with exactly one line,
// the exact text.
using System.Text.Json;
using VteKernels.Cli;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class GenerationCliTests
{
    private static string Tiny => TestModels.Tiny();

    [Fact]
    public void TheAnswerAloneGoesToStdout()
    {
        var r = Vte("generate", "-m", Tiny, "-n", "6", "-p", "What is it?");
        Assert.True(r.Code == 0, r.Err);
        var json = Vte("generate", "-m", Tiny, "-n", "6", "-p", "What is it?", "--json");
        using var doc = JsonDocument.Parse(json.Out);
        Assert.Equal(doc.RootElement.GetProperty("text").GetString() + "\n", r.Out.ReplaceLineEndings("\n"));
        Assert.Contains("model ", r.Err);
        Assert.Contains("time to first token", r.Err);
        Assert.Contains("exit none:", r.Err);

        var quiet = Vte("generate", "-m", Tiny, "-n", "6", "-p", "What is it?", "--quiet");
        Assert.True(quiet.Code == 0, quiet.Err);
        Assert.Equal(r.Out, quiet.Out);
        Assert.Equal("", quiet.Err);
    }

    [Fact]
    public void JsonIsOneObjectWithTextIdsFinishUsageTimingsAndReport()
    {
        var r = Vte("generate", "-m", Tiny, "-n", "5", "--json", "--top-logprobs", "2", "--quiet");
        Assert.True(r.Code == 0, r.Err);
        Assert.Single(r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        using var doc = JsonDocument.Parse(r.Out);
        var o = doc.RootElement;
        Assert.Equal(5, o.GetProperty("ids").GetArrayLength());
        Assert.Equal("length", o.GetProperty("finish_reason").GetString());
        Assert.Equal("max new tokens (5)", o.GetProperty("stop_reason").GetString());
        var usage = o.GetProperty("usage");
        Assert.Equal(5, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 5, usage.GetProperty("total_tokens").GetInt32());
        Assert.True(o.GetProperty("timings").GetProperty("prefill_ms").GetDouble() > 0);
        Assert.Equal(4, o.GetProperty("report").GetProperty("num_layers").GetInt32());
        Assert.Equal(5, o.GetProperty("logprobs").GetArrayLength());
        Assert.Equal(2, o.GetProperty("logprobs")[0].GetProperty("top").GetArrayLength());
        Assert.Equal(0, o.GetProperty("sampling").GetProperty("temperature").GetDouble());   // the synthetic model's config is greedy
    }

    [Fact]
    public void ZeroNewTokensRunsThePrefillAndReportsIt()
    {
        var r = Vte("generate", "-m", Tiny, "-n", "0");
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal("\n", r.Out.ReplaceLineEndings("\n"));
        Assert.Contains("0 tokens; finish length (max new tokens (0)); prefill ", r.Err);
        Assert.Contains("exit none:", r.Err);
    }

    [Fact]
    public void MaxNewTokensAboveTheContextIsClampedWithANote()
    {
        var probe = Vte("generate", "-m", Tiny, "-n", "0", "--json", "--quiet");
        int prompt;
        using (var doc = JsonDocument.Parse(probe.Out)) prompt = doc.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        var r = Vte("generate", "-m", Tiny, "-n", "50", "--ctx-size", (prompt + 2).ToString(System.Globalization.CultureInfo.InvariantCulture), "--json");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains($"note: -n 50 is more than fits: the context of {prompt + 2} tokens leaves room for 3 new token(s) after the {prompt}-token prompt; generating at most 3", r.Err);
        using var json = JsonDocument.Parse(r.Out);
        Assert.Equal(3, json.RootElement.GetProperty("ids").GetArrayLength());
        Assert.Equal("length", json.RootElement.GetProperty("finish_reason").GetString());
    }

    [Fact]
    public void StopStringsEndTheAnswerOnTheCommandLine()
    {
        var plain = Vte("generate", "-m", Tiny, "-n", "12", "--json", "--quiet");
        string text;
        using (var doc = JsonDocument.Parse(plain.Out)) text = doc.RootElement.GetProperty("text").GetString()!;
        Assert.True(text.Length > 6, text);
        var stop = text.Substring(3, 3);
        var r = Vte("generate", "-m", Tiny, "-n", "12", "--stop", stop);
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)] + "\n", r.Out.ReplaceLineEndings("\n"));
        Assert.Contains("finish stop (stop string ", r.Err);
        Assert.Equal("a\nb\\x\t", GenerationCliOptions.Unescape(@"a\nb\x\t"));
    }

    [Fact]
    public void CtrlCEndsWithALineOnStderrAndTheStatsSoFar()
    {
        using var cts = new CancellationTokenSource();
        var stdout = new CancelAfterWrites(cts, writes: 2);
        var stderr = new StringWriter();
        int code = Program.Run(["generate", "-m", Tiny, "-n", "200", "--ctx-size", "4096"], stdout, stderr, new StringReader(""), cts.Token);
        Assert.Equal(130, code);
        var err = stderr.ToString();
        Assert.Matches(@"interrupted: cancelled after \d+ token\(s\)", err);
        Assert.Contains("finish cancelled (cancelled)", err);
        Assert.Contains("ids ", err);
        Assert.EndsWith("\n", stdout.ToString().ReplaceLineEndings("\n"));
    }

    [Fact]
    public void ChatTakesTheSameGenerationOptions()
    {
        var r = VteWithInput("hello\n/quit\n", "chat", "-m", Tiny, "-n", "3", "--temperature", "0.8", "-s", "4", "--top-k", "5", "--top-p", "0.9",
            "--min-p", "0.05", "--repeat-penalty", "1.1", "--presence-penalty", "0.5", "--frequency-penalty", "0.5", "--stop", "###", "--json");
        Assert.True(r.Code == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var s = doc.RootElement.GetProperty("sampling");
        Assert.Equal(0.8, s.GetProperty("temperature").GetDouble(), 5);
        Assert.Equal(5, s.GetProperty("top_k").GetInt32());
        Assert.Equal(1.1, s.GetProperty("repetition_penalty").GetDouble(), 5);
        Assert.Equal(4, s.GetProperty("seed").GetInt32());
    }

    // {tiny} is the synthetic model's folder, {dir} a scratch folder holding llava.gguf (both made when the case runs).
    public static TheoryData<string, string[], string> WrongInvocations()
    {
        const string tiny = "{tiny}", dir = "{dir}", gguf = "{dir}/llava.gguf", missingGguf = "{dir}/missing.gguf";
        return new()
        {
            { "top-p 0", ["generate", "--top-p", "0"], "--top-p must be in (0, 1] (1 keeps every token), got 0" },
            { "top-p 1.5", ["generate", "--top-p", "1.5"], "--top-p must be in (0, 1] (1 keeps every token), got 1.5" },
            { "negative temperature", ["generate", "--temp", "-1"], "--temp must be a finite number >= 0 (0 is greedy), got -1" },
            { "NaN temperature", ["generate", "--temperature", "NaN"], "--temp must be a finite number >= 0 (0 is greedy), got NaN" },
            { "negative top-k", ["generate", "--top-k", "-1"], "--top-k must be >= 0 (0 keeps every token), got -1" },
            { "min-p 2", ["generate", "--min-p", "2"], "--min-p must be in [0, 1] (0 is off), got 2" },
            { "repeat penalty 0", ["generate", "--repeat-penalty", "0"], "--repeat-penalty must be a finite number > 0 (1 is off), got 0" },
            { "frequency penalty 3", ["generate", "--frequency-penalty", "3"], "--frequency-penalty must be in [-2, 2] (0 is off), got 3" },
            { "presence penalty -2.5", ["generate", "--presence-penalty", "-2.5"], "--presence-penalty must be in [-2, 2] (0 is off), got -2.5" },
            { "seed not a number", ["generate", "--seed", "abc"], "--seed: 'abc' is not an integer" },
            { "-n not a number", ["generate", "-n", "abc"], "--max-new-tokens: 'abc' is not an integer" },
            { "-n negative", ["generate", "-n", "-1"], "--max-new-tokens must be >= 0, got -1" },
            { "-n without a value", ["generate", "-n"], "-n needs a value" },
            { "temperature not a number", ["generate", "--temp", "x"], "--temp: 'x' is not a number" },
            { "too many logprobs", ["generate", "--top-logprobs", "21"], "--top-logprobs must be in [0, 20], got 21" },
            { "context 0", ["generate", "-c", "0"], "--ctx-size must be >= 1, got 0" },
            { "empty stop string", ["generate", "--stop", ""], "--stop must not contain an empty string" },
            { "misspelt temperature", ["generate", "--temperatur", "1"], "unknown option '--temperatur' for generate; did you mean --temperature?" },
            { "misspelt repeat penalty", ["generate", "--repeat-penalt", "1.1"], "unknown option '--repeat-penalt' for generate; did you mean --repeat-penalty?" },
            { "misspelt ctx-size", ["generate", "--ctx-siz", "4"], "unknown option '--ctx-siz' for generate; did you mean --ctx-size?" },
            { "misspelt chat option", ["chat", "--min_p", "0.1"], "unknown option '--min_p' for chat; did you mean --min-p?" },
            { "chat has no trace", ["chat", "--trace", "t.json"], "chat does not take --trace (forward and generate do)" },
            { "misspelt command", ["generat"], "unknown command 'generat'; did you mean generate?" },
            { "stray argument", ["generate", "extra"], "generate takes no argument 'extra' (options start with -; see vte generate --help)" },
            { "image mode", ["generate", "--image-mode", "foo"], "--image-mode: 'foo' is not one of clip, pad" },
            { "prompt style", ["generate", "--prompt-style", "fancy"], "--prompt-style: 'fancy' is not one of llava, vicuna, template, raw" },
            { "exit kv", ["generate", "--exit-kv", "maybe"], "--exit-kv: 'maybe' is not one of keep, drop" },
            { "a GGUF file", ["generate", "-m", gguf], "llava.gguf is a GGUF file; give a model folder in the HF layout (config.json and safetensors weights): GGUF is not read" },
            { "a missing GGUF file", ["generate", "-m", missingGguf], $"{missingGguf} does not exist (and GGUF files are not read: give a model folder in the HF layout)" },
            { "a missing folder", ["generate", "-m", "{dir}/none"], "model directory {dir}/none does not exist" },
            { "exit layer beyond the model", ["generate", "-m", tiny, "--exit", "layer:99"], "exit layer:99 is beyond the model's 4 decoder layers (0 <= K <= 4)" },
            { "chat exit layer beyond the model", ["chat", "-m", tiny, "--exit", "layer:9"], "exit layer:9 is beyond the model's 4 decoder layers (0 <= K <= 4)" },
            { "forward exit layer beyond the model", ["forward", "-m", tiny, "--input-ids", "1,2", "--out", "{dir}/x.npy", "--exit", "layer:5"], "exit layer:5 is beyond the model's 4 decoder layers (0 <= K <= 4)" },
            { "bad exit policy", ["generate", "-m", tiny, "--exit", "bogus"], "exit policy 'bogus' is not one of none, layer:K, gate:FILE, attn:TAU[:M]" },
            { "image and no image", ["generate", "--no-image", "--image", "x.png"], "--no-image and --image exclude each other" },
            { "pixels without ids", ["generate", "--pixels", "a.npy"], "--pixels goes with --input-ids; give images with --image" },
            { "bad input id", ["generate", "--input-ids", "1,x"], "token id #2 'x' is not a non-negative integer" },
            { "chat top-p 0", ["chat", "--top-p", "0"], "--top-p must be in (0, 1] (1 keeps every token), got 0" },
            { "chat -n not a number", ["chat", "-n", "abc"], "--max-new-tokens: 'abc' is not an integer" },
            { "forward without ids", ["forward", "-m", dir], "forward needs --input-ids" },
        };
    }

    [Theory, MemberData(nameof(WrongInvocations))]
    public void WrongInvocationsAreExit2AndOneExactLine(string label, string[] args, string message)
    {
        var dir = TestModels.NewTempDir("wrong");
        File.WriteAllBytes(Path.Combine(dir, "llava.gguf"), [0x47, 0x47, 0x55, 0x46]);
        string Fill(string s) => s.Replace("{tiny}", TestModels.Tiny(), StringComparison.Ordinal).Replace("{dir}", dir, StringComparison.Ordinal);
        message = Fill(message);
        var r = Vte([.. args.Select(Fill)]);
        Assert.True(r.Code == 2, $"{label}: exit {r.Code}: {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"{label}: {r.Err}");
        Assert.Equal($"error: {message}", lines[0].TrimEnd('\r'));
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void ThePromptThatDoesNotFitTheContextIsOneLine()
    {
        var r = Vte("generate", "-m", Tiny, "-c", "5");
        Assert.Equal(2, r.Code);
        Assert.Matches(@"^error: the prompt \(\d+ tokens\) does not fit the context of 5 tokens\s*$", r.Err);
    }

    /// <summary>stdout that presses Ctrl+C (cancels) once the answer has started.</summary>
    private sealed class CancelAfterWrites(CancellationTokenSource cts, int writes) : StringWriter
    {
        private int _writes;

        public override void Write(string? value)
        {
            base.Write(value);
            if (!string.IsNullOrEmpty(value) && ++_writes == writes) cts.Cancel();
        }
    }
}
