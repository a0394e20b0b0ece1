// The CPU options on the command line (--threads, --kv-cache, --quantize, --exact-quantized-prefill,
// --mapped-weights) and
// `vte quantize`: accepted values work, mistakes are one "error:" line with exit code 2.
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class CpuOptionsCliTests
{
    [Fact]
    public void GenerateTakesTheCpuOptions()
    {
        var dir = TestModels.Tiny(DType.BF16, 2);
        var plain = Vte("generate", "-m", dir, "-n", "4", "--threads", "1");
        Assert.True(plain.Code == 0, plain.Err);
        var many = Vte("generate", "-m", dir, "-n", "4", "--threads", "64", "--mapped-weights");
        Assert.True(many.Code == 0, many.Err);
        Assert.Equal(Ids(plain.Out + plain.Err), Ids(many.Out + many.Err));   // thread count and weight memory change nothing
        foreach (var args in new[] { new[] { "--kv-cache", "f32" }, ["--kv-cache", "f16"], ["--quantize", "q8_0"], ["--quantize", "q4_0", "--kv-cache", "bf16"], ["--quantize", "q8_0", "--exact-quantized-prefill"] })
        {
            var r = Vte(["generate", "-m", dir, "-n", "4", .. args]);
            Assert.True(r.Code == 0, $"{string.Join(' ', args)}: {r.Err}");
        }
    }

    private static string Ids(string stdout) => stdout.Split('\n').First(l => l.StartsWith("ids ", StringComparison.Ordinal));

    [Fact]
    public void MistakesAreUsageErrors()
    {
        var dir = TestModels.Tiny();
        AssertUserError(Vte("generate", "-m", dir, "--threads", "-1"), "--threads must be 0");
        AssertUserError(Vte("generate", "-m", dir, "--threads", "two"), "two");
        AssertUserError(Vte("generate", "-m", dir, "--quantize", "q5_1"), "q5_1");
        AssertUserError(Vte("generate", "-m", dir, "--kv-cache", "f8"), "f8");
        AssertUserError(Vte("forward", "-m", dir, "--input-ids", "1,2", "--out", "x.npy", "--device", "cuda", "--threads", "2"), "--threads applies to --device cpu only");
        AssertUserError(Vte("generate", "-m", dir, "--device", "cuda", "--exact-quantized-prefill"), "--exact-quantized-prefill applies to --device cpu only");
        AssertUserError(Vte("quantize", "-m", dir, "--to", "q8_0", "--out", dir), "--out must be another directory");
        AssertUserError(Vte("quantize", "-m", dir + "-missing", "--to", "q8_0", "--out", TestModels.NewTempDir("q")), "does not exist");
        AssertUserError(Vte("quantize", "-m", dir, "--to", "q2_k", "--out", TestModels.NewTempDir("q")), "q2_k");
    }

    [Fact]
    public void QuantizeWritesAModelInspectReads()
    {
        var dst = TestModels.NewTempDir("q4");
        var r = Vte("quantize", "-m", TestModels.Tiny(DType.BF16), "--to", "q4_0", "--out", dst, "--vision", "--threads", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("as q4_0", r.Out);
        var inspect = Vte("inspect", "-m", dst);
        Assert.True(inspect.Code == 0, inspect.Err);
        Assert.Contains("Q4_0", inspect.Out);
        Assert.Contains("problems      none", inspect.Out);
        Assert.Contains("\"vte_quantization\"", File.ReadAllText(Path.Combine(dst, "config.json")));
        var gen = Vte("generate", "-m", dst, "-n", "3");
        Assert.True(gen.Code == 0, gen.Err);
    }
}
