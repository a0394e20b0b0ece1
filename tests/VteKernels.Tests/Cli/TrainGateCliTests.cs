// `vte train-gate` end to end on the model of GateTrainingFixture: gates, log, checkpoint and feature cache
// written; the gates drive `generate --exit gate:FILE`; --resume reads the cache and the checkpoint; and
// bad inputs are one "error:" line with exit code 2.
using System.Text.Json;
using VteKernels.Engine.Exit;
using VteKernels.Tests.Engine;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class TrainGateCliTests(ITestOutputHelper output)
{
    /// <summary>The first <paramref name="lines"/> samples of the fixture's data, as a new file beside it (so image paths still resolve).</summary>
    private static string DataSubset(int lines, string? extra = null)
    {
        var path = Path.Combine(Path.GetDirectoryName(GateTrainingFixture.DataPath)!, $"subset-{Guid.NewGuid():N}.jsonl");
        File.WriteAllLines(path, [.. File.ReadLines(GateTrainingFixture.DataPath).Take(lines), .. extra is null ? [] : new[] { extra }]);
        return path;
    }

    [Fact]
    public void TrainGateWritesGatesThatGenerateUsesAndResumesFromItsCheckpoint()
    {
        var model = GateTrainingFixture.ModelDir;
        var data = DataSubset(12);
        var dir = TestModels.NewTempDir("train-gate-cli");
        var gates = Path.Combine(dir, "gates.safetensors");
        var log = Path.Combine(dir, "log.jsonl");
        string[] Args(int epochs, params string[] extra) => ["train-gate", "-m", model, "--data", data, "--out", gates, "--hidden", "8",
            "--epochs", $"{epochs}", "--batch-size", "4", "--lr", "0.01", "--val-fraction", "0.25", "--log", log, "--checkpoint-every", "2", .. extra];
        var r = Vte(Args(3));
        output.WriteLine(r.Out);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("labels (exit keeps the answer) per layer: 0: 6/12, 1: 6/12, 2: 12/12", r.Out);
        Assert.Contains("9 samples, 3 held out; 9 steps of 4", r.Out);
        Assert.Contains("held-out accuracy", r.Out);

        var loaded = ExitGates.Load(gates);
        Assert.Equal([0, 1, 2], loaded.Gates.Select(g => g.Layer));
        Assert.All(loaded.Gates, g => Assert.Equal(8, g.Hidden));
        Assert.True(File.Exists(gates + ".ckpt"));
        Assert.True(File.Exists(gates + ".features"));
        var lines = File.ReadAllLines(log).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(Enumerable.Range(1, 9), lines.Where(l => l.GetProperty("kind").GetString() == "step").Select(l => l.GetProperty("step").GetInt32()));
        var epochs = lines.Where(l => l.GetProperty("kind").GetString() == "epoch").ToList();
        Assert.Equal(3, epochs.Count);
        Assert.All(epochs, e => Assert.InRange(e.GetProperty("heldout_accuracy").GetDouble(), 0, 1));

        // The gates file drives generate's exit.
        var image = Directory.GetFiles(Path.Combine(Path.GetDirectoryName(data)!, "images")).Order().First();
        var g = Vte("generate", "-m", model, "--image", image, "-p", "what color is the car", "-n", "2", "--exit", $"gate:{gates}");
        Assert.True(g.Code == 0, g.Err);
        Assert.Contains($"exit gate:{gates}", g.Err);

        // Resuming a finished run reads the cached features and the checkpoint, and writes the same gates.
        var before = File.ReadAllBytes(gates);
        var again = Vte(Args(3, "--resume"));
        Assert.True(again.Code == 0, again.Err);
        Assert.Contains("features: read 12 samples", again.Out);
        Assert.Contains("resuming at step 9", again.Out);
        Assert.Equal(before, File.ReadAllBytes(gates));
        Assert.Equal(12, File.ReadAllLines(log).Length);

        AssertUserError(Vte(Args(4, "--resume")), "a resumed run keeps its options");
        AssertUserError(Vte(Args(3, "--resume", "--layers", "0-1")), "trained on other features");
    }

    public static TheoryData<string, string> BadData => new()
    {
        { "{\"question\": \"q\", \"answer\": \"a\"\n", ":13: not valid JSON" },
        { "{\"question\": \"q\", \"answer\": \"a\", \"image\": \"images/none.ppm\"}", ":13: image 'images/none.ppm' does not exist" },
        { "{\"image\": \"images/000.ppm\", \"answer\": \"a\"}", ":13: \"question\" is missing" },
    };

    [Theory, MemberData(nameof(BadData))]
    public void BadDataIsOneErrorLineNamingTheLine(string badLine, string expected)
    {
        var data = DataSubset(12, badLine);
        var r = Vte("train-gate", "-m", GateTrainingFixture.ModelDir, "--data", data, "--out", Path.Combine(TestModels.NewTempDir("tg-bad"), "g.safetensors"));
        AssertUserError(r, Path.GetFileName(data) + expected);
    }

    [Fact]
    public void BadTrainGateArgumentsAreOneErrorLine()
    {
        var model = GateTrainingFixture.ModelDir;
        var data = DataSubset(4);
        var empty = Path.Combine(TestModels.NewTempDir("tg-empty"), "empty.jsonl");
        File.WriteAllText(empty, "\n");
        var outPath = Path.Combine(TestModels.NewTempDir("tg-args"), "g.safetensors");
        string[] Args(params string[] extra) => ["train-gate", "-m", model, "--data", data, "--out", outPath, .. extra];
        AssertUserError(Vte("train-gate", "-m", model, "--data", empty, "--out", outPath), "empty.jsonl: no samples");
        AssertUserError(Vte("train-gate", "-m", model, "--data", data + ".missing", "--out", outPath), "does not exist");
        AssertUserError(Vte(Args("--resume")), "no checkpoint at");
        AssertUserError(Vte(Args("--layers", "1-3")), "gate layer 3 is outside 0..2");
        AssertUserError(Vte(Args("--layers", "x")), "not a layer index");
        AssertUserError(Vte(Args("--hidden", "0")), "hidden width must be at least 1");
        AssertUserError(Vte(Args("--val-fraction", "1")), "validation fraction must lie in [0, 1)");
        AssertUserError(Vte(Args("--prompt-style", "chatml")), "chatml");
        Assert.False(File.Exists(outPath));
    }
}
