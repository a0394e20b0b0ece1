// The `vte` command line, run in-process: synth -> inspect -> forward agrees with the library, generate
// streams, and every user mistake or bad file is one "error:" line with exit code 2.
using VteKernels.Backends.Cpu;
using VteKernels.Cli;
using VteKernels.Engine;
using VteKernels.Formats;
using VteKernels.Models;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class CliTests
{
    [Fact]
    public void SynthInspectForwardRoundTrip()
    {
        var dir = TestModels.NewTempDir("cli-model");
        var synth = Vte("synth", "--preset", "tiny", "--out", dir, "--seed", "3", "--dtype", "bf16");
        Assert.True(synth.Code == 0, synth.Err);

        var inspect = Vte("inspect", "-m", dir);
        Assert.True(inspect.Code == 0, inspect.Err);
        Assert.Contains("problems      none", inspect.Out);
        Assert.Contains("BF16", inspect.Out);
        Assert.Contains("layers.*.", inspect.Out);

        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var ids = TestModels.PromptIds(cfg, 8);
        var px = TestModels.Pixels(cfg, 8);
        var pxPath = Path.Combine(dir, "pixels.npy");
        Npy.Write(pxPath, px, [1, 3, cfg.Vision.ImageSize, cfg.Vision.ImageSize]);
        var outPath = Path.Combine(dir, "logits.npy");
        var fwd = Vte("forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", outPath);
        Assert.True(fwd.Code == 0, fwd.Err);
        var logits = Npy.ReadFloat32(outPath);
        Assert.Equal([ids.Length, cfg.Text.VocabSize], logits.Shape);

        using var model = LlavaModel.Load(dir, new CpuBackend());
        using var s = model.CreateSession();
        var want = s.Prefill(new PromptInput(ids, [ImageInput.Square(px, cfg.Vision.ImageSize)]), new PrefillOptions { AllLogits = true });
        Assert.Equal(want.Logits.Values, logits.Data);
    }

    [Fact]
    public void GenerateStreamsTokensOnAModel()
    {
        var r = Vte("generate", "-m", TestModels.Tiny(), "-n", "5", "--temp", "0.8", "--seed", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("5 tokens; finish length (max new tokens (5))", r.Err);
        var ids = r.Err.Split('\n').Single(l => l.StartsWith("ids ", StringComparison.Ordinal))[4..].Split(',');
        Assert.Equal(5, ids.Length);
        var again = Vte("generate", "-m", TestModels.Tiny(), "-n", "5", "--temp", "0.8", "--seed", "1");
        Assert.Equal(string.Join(",", ids), again.Err.Split('\n').Single(l => l.StartsWith("ids ", StringComparison.Ordinal))[4..]);
    }

    [Fact]
    public void TruncatedSafetensorsIsAnErrorLine()
    {
        var dir = TestModels.CopyOf(TestModels.Tiny());
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 1000)]);
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", "1,2,3", "--out", Path.Combine(dir, "x.npy")), "model.safetensors");
        var inspect = Vte("inspect", "-m", dir);
        Assert.Equal(2, inspect.Code);
        Assert.Contains("problems      1", inspect.Out);
    }

    [Fact]
    public void LyingHeaderIsAnErrorLine()
    {
        var dir = TestModels.CopyOf(TestModels.Tiny());
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), (ulong)bytes.Length * 2); // header length past the end
        File.WriteAllBytes(path, bytes);
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", "1,2,3", "--out", Path.Combine(dir, "x.npy")), "model.safetensors");
    }

    [Theory]
    [InlineData("unknown option", "generate --no-such-flag")]
    [InlineData("unknown preset", "synth --preset huge --out /tmp/x")]
    [InlineData("missing model", "inspect -m /nonexistent/model/dir")]
    [InlineData("bad ids", "forward -m /tmp --input-ids 1,x,3 --out /tmp/x.npy")]
    [InlineData("no cuda", "forward -m /tmp --input-ids 1 --out /tmp/x.npy --device cuda")]
    [InlineData("bad temperature", "generate --temp -1")]
    public void UserMistakesAreOneErrorLine(string label, string args)
    {
        var r = Vte(args.Split(' '));
        Assert.True(r.Code == 2, $"{label}: exit {r.Code}, stderr {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
    }

    [Fact]
    public void VerbosePrintsTheStackTrace()
    {
        var r = Vte("inspect", "-m", "/nonexistent/model/dir", "--verbose");
        Assert.Equal(2, r.Code);
        Assert.Contains(" at ", r.Err);
    }

    [Fact]
    public void GenerateWithoutArgumentsUsesTheBuiltInModel()
    {
        var cache = TestModels.NewTempDir("cache");
        Environment.SetEnvironmentVariable("VTE_CACHE_DIR", cache);
        try
        {
            var r = Vte("generate", "-n", "3");
            Assert.True(r.Code == 0, r.Err);
            Assert.Contains("built-in synthetic model", r.Err);
            Assert.True(File.Exists(Path.Combine(cache, "models", "synth-tiny-seed0", "config.json")));
            var again = Vte("generate", "-n", "3");
            Assert.DoesNotContain("writing the built-in", again.Err);
            Assert.Contains("random weights", again.Err);
        }
        finally
        {
            Environment.SetEnvironmentVariable("VTE_CACHE_DIR", null);
        }
    }
}
