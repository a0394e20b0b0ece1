// `--naavit`, `--skip-attn`, `--eas` and `--pia` on `vte forward` and `vte generate`: the files written equal the
// library's results, and mistakes are one-line errors.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Tests.Engine;
using VteKernels.Tests.Models;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class MethodCliTests
{
    private static (string Dir, LlavaConfig Cfg, int[] Ids, float[] Px, string PxPath, string Work) Setup()
    {
        var dir = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(dir, "config.json"));
        var ids = TestModels.PromptIds(cfg, 21);
        var px = TestModels.Pixels(cfg, 21);
        var work = TestModels.NewTempDir("method-cli");
        var pxPath = Path.Combine(work, "pixels.npy");
        Npy.Write(pxPath, px, [1, 3, cfg.Vision.ImageSize, cfg.Vision.ImageSize]);
        return (dir, cfg, ids, px, pxPath, work);
    }

    private static StepResult Library(string dir, int[] ids, float[] px, SessionOptions? session, bool naavit)
    {
        using var model = LlavaModel.Load(dir, new CpuBackend());
        using var s = model.CreateSession(session);
        return s.Prefill(new PromptInput(ids, [ImageInput.Square(px, model.Config.Vision.ImageSize)]), new PrefillOptions { AllLogits = true, Naavit = naavit });
    }

    [Fact]
    public void ForwardWithNaavitWritesTheNonVisualRows()
    {
        var (dir, cfg, ids, px, pxPath, work) = Setup();
        var outPath = Path.Combine(work, "naavit.npy");
        var r = Vte("forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", outPath, "--naavit");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("naavit", r.Out);
        Assert.Contains("non-visual rows", r.Out);
        var logits = Npy.ReadFloat32(outPath);
        Assert.Equal([ids.Count(id => id != cfg.ImageTokenIndex), cfg.Text.VocabSize], logits.Shape);
        Assert.Equal(Library(dir, ids, px, null, naavit: true).Logits.Values, logits.Data);
    }

    [Fact]
    public void ForwardWithSkippedAttentionAndAdaptersEqualsTheLibrary()
    {
        var (dir, cfg, ids, px, pxPath, work) = Setup();
        var plain = Path.Combine(work, "skip.npy");
        var r = Vte("forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", plain, "--skip-attn", "2-3");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("attention skipped in 2 layers", r.Out);
        Assert.Equal(Library(dir, ids, px, new SessionOptions { Eas = new EasAdapters([2, 3]) }, false).Logits.Values, Npy.ReadFloat32(plain).Data);

        var eas = SyntheticEas.Adapters(cfg.Text, [2, 3], seed: 5, adapterDim: 8, replacedDim: 16);
        var easPath = Path.Combine(work, "eas.safetensors");
        EasCheckpoint.Save(eas, easPath);
        var explicitPath = Path.Combine(work, "explicit.npy");
        var foldedPath = Path.Combine(work, "folded.npy");
        Assert.Equal(0, Vte("forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", explicitPath, "--eas", easPath).Code);
        var f = Vte("forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", foldedPath, "--eas", easPath, "--pia", "fold");
        Assert.True(f.Code == 0, f.Err);
        var want = Library(dir, ids, px, new SessionOptions { Eas = EasCheckpoint.Load(easPath) }, false).Logits.Values;
        Assert.Equal(want, Npy.ReadFloat32(explicitPath).Data);
        Tolerance.AssertCloseToScale(Npy.ReadFloat32(foldedPath).Data, want.Select(x => (double)x).ToArray(), 1e-5, "folded via CLI");
        Assert.NotEqual(Npy.ReadFloat32(plain).Data, Npy.ReadFloat32(explicitPath).Data);
    }

    [Fact]
    public void GenerateRunsWithTheMethodsOnTheBuiltInDefaults()
    {
        var r = Vte("generate", "-m", TestModels.Tiny(), "--naavit", "--skip-attn", "1", "-n", "4");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("naavit; attention skipped in 1 layers", r.Err);
    }

    [Fact]
    public void OriginalLayoutCheckpointsInspectAndRunWithVisionTower()
    {
        var (hfDir, cfg, ids, px, pxPath, work) = Setup();
        var eas = SyntheticEas.Adapters(cfg.Text, [3], seed: 2, adapterDim: 8, replacedDim: 8);
        var adapters = EasCheckpointTests.PublicTensors(eas).Select(t => (t.Name, Weight.FromFloats(t.Name, t.Values, DType.F32, t.Shape))).ToList();
        var (modelDir, clipDir) = OriginalLayoutCheckpoints.Write(hfDir, new OriginalLayoutOptions
        {
            MmVisionTower = "openai/clip-vit-large-patch14-336",   // a hub id: the folder must be given
            EditModel = list => [.. list.Where(t => !t.Name.StartsWith("model.layers.3.self_attn.", StringComparison.Ordinal)), .. adapters],
        });
        AssertUserError(Vte("inspect", "-m", modelDir), "--vision-tower");
        var i = Vte("inspect", "-m", modelDir, "--vision-tower", clipDir);
        Assert.True(i.Code == 0, i.Err + i.Out);
        Assert.Contains("original LLaVA layout", i.Out);
        Assert.Contains("no attention weights in layers 3 (EAS)", i.Out);

        var origIds = string.Join(",", ids.Select(id => id == cfg.ImageTokenIndex ? cfg.Text.VocabSize : id));
        string[] Forward(params string[] more) => ["forward", "-m", modelDir, "--vision-tower", clipDir, "--input-ids", origIds, "--pixels", pxPath, "--out", Path.Combine(work, "o.npy"), .. more];
        AssertUserError(Vte(Forward()), "no attention weights");
        var r = Vte(Forward("--eas", modelDir));
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("attention skipped in 1 layers", r.Out);
    }

    [Fact]
    public void MistakesAreOneLineErrors()
    {
        var (dir, _, ids, _, pxPath, work) = Setup();
        string[] Forward(params string[] more) =>
            ["forward", "-m", dir, "--input-ids", string.Join(",", ids), "--pixels", pxPath, "--out", Path.Combine(work, "x.npy"), .. more];
        AssertUserError(Vte(Forward("--skip-attn", "7")), "beyond the model's 4 decoder layers");
        AssertUserError(Vte(Forward("--skip-attn", "two")), "--skip-attn");
        AssertUserError(Vte(Forward("--eas", Path.Combine(work, "missing.safetensors"))), "does not exist");
        var notEas = Path.Combine(work, "weights.safetensors");
        File.Copy(Directory.GetFiles(dir, "*.safetensors")[0], notEas);
        AssertUserError(Vte(Forward("--eas", notEas)), "weights.safetensors");
        AssertUserError(Vte(Forward("--pia", "sideways")), "sideways");
    }
}
