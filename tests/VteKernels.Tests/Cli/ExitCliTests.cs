// `--exit`, `--exit-kv` and `--trace` on `vte forward` and `vte generate`, and `vte plot` on the trace.
using VteKernels.Backends.Cpu;
using VteKernels.Cli;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Formats;
using VteKernels.Models;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class ExitCliTests
{
    private static (string Dir, LlavaConfig Cfg, int[] Ids, float[] Px, string PxPath) Setup()
    {
        var dir = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var ids = TestModels.PromptIds(cfg, 12);
        var px = TestModels.Pixels(cfg, 12);
        var pxPath = Path.Combine(TestModels.NewTempDir("exit-cli"), "pixels.npy");
        Npy.Write(pxPath, px, [1, 3, cfg.Vision.ImageSize, cfg.Vision.ImageSize]);
        return (dir, cfg, ids, px, pxPath);
    }

    [Fact]
    public void ForwardWithExitWritesTheRemainingRowsAndATraceThatPlots()
    {
        var (dir, cfg, ids, px, pxPath) = Setup();
        var work = Path.GetDirectoryName(pxPath)!;
        var outPath = Path.Combine(work, "logits.npy");
        var tracePath = Path.Combine(work, "trace.json");
        var r = Vte("forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", outPath, "--exit", "layer:2", "--trace", tracePath);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("exit after 2 of 4 layers", r.Out);
        var logits = Npy.ReadFloat32(outPath);
        int kept = ids.Count(id => id != cfg.ImageTokenIndex);
        Assert.Equal([kept, cfg.Text.VocabSize], logits.Shape);

        using var model = LlavaModel.Load(dir, new CpuBackend());
        using var s = model.CreateSession();
        var want = s.Prefill(new PromptInput(ids, [ImageInput.Square(px, cfg.Vision.ImageSize)]), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(2) });
        Assert.Equal(want.Logits.Values, logits.Data);

        using (var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(tracePath)))
        {
            Assert.Equal(2, doc.RootElement.GetProperty("exit_layer").GetInt32());
            var l0 = doc.RootElement.GetProperty("layers")[0];
            Assert.Equal(cfg.Text.NumHeads, l0.GetProperty("visual_mass_per_head").GetArrayLength());
        }

        foreach (var ext in new[] { "svg", "png" })
        {
            var chart = Path.Combine(work, $"chart.{ext}");
            var p = Vte("plot", tracePath, "--out", chart);
            Assert.True(p.Code == 0, p.Err);
            Assert.Contains("exit after 2 layers", p.Out);
            var bytes = File.ReadAllBytes(chart);
            if (ext == "png") Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47 }, bytes[..4]);
            else Assert.Contains("<svg", System.Text.Encoding.UTF8.GetString(bytes));
        }
    }

    [Fact]
    public void GeneratePrintsTheExitSummary()
    {
        var (dir, _, ids, _, pxPath) = Setup();
        var r = Vte("generate", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "-n", "3", "--exit", "attn:1:2", "--exit-kv", "drop");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("exit attn:1:2: exit after 2 of 4 layers", r.Err);
    }

    [Fact]
    public void BadExitArgumentsAreOneLineErrors()
    {
        var (dir, _, ids, _, pxPath) = Setup();
        string[] Args(params string[] extra) => ["forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", "/tmp/never.npy", .. extra];
        AssertUserError(Vte(Args("--exit", "layer:99")), "beyond the model's 4 decoder layers");
        AssertUserError(Vte(Args("--exit", "soon")), "not one of none");
        AssertUserError(Vte(Args("--exit", "gate:/no/such/gates.safetensors")), "does not exist");
        AssertUserError(Vte(Args("--exit-kv", "both")), "both");
        AssertUserError(Vte(Args("--trace", "trace.txt")), ".json");
        var notTrace = Path.Combine(TestModels.NewTempDir("plot"), "x.json");
        File.WriteAllText(notTrace, "{\"a\": 1}");
        AssertUserError(Vte("plot", notTrace, "--out", "c.svg"), "not a trace");
        File.WriteAllText(notTrace, "{ broken");
        AssertUserError(Vte("plot", notTrace, "--out", "c.svg"), "malformed trace");
        AssertUserError(Vte("plot", notTrace, "--out", "c.gif"), ".svg or .png");
    }
}
