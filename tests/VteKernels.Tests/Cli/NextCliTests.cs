// LLaVA-NeXT on the command line, run in-process: `vte preprocess -m DIR` writes HF's own anyres pixel values
// (bit for bit on the fixture images) with the image's size and token count; `vte forward` takes image files
// (one placeholder per image is expanded by the family) or HF's pixel tensors with --image-sizes and gives
// HF's logits; `vte inspect` names the family; generate, exit traces and plots run on an anyres model;
// mistakes are one "error:" line with exit code 2.
using VteKernels.Formats;
using VteKernels.Synth;
using VteKernels.Tests.Reference;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class NextCliTests(ITestOutputHelper output)
{
    private static string Case => FixturePaths.NextCase("anyres-basic");

    private static string ModelDir => Path.Combine(Case, "model");

    private static string Image(string file) => Path.Combine(FixturePaths.NextRoot, "images", file);

    private static string HfPixels(string stem) => Path.Combine(Case, "preprocessed", stem, "pixel_values.npy");

    [Fact]
    public void PreprocessWritesWhatTheTowerReceives()
    {
        using var dir = new TempDir();
        var outPath = dir.File("a.npy");
        var r = Vte("preprocess", "-m", ModelDir, "--image", Image("img_a_37x61.png"), "--out", outPath);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("-> llava_next (preprocessor_config.json) float32 [5, 3, 28, 28]", r.Out);
        Assert.Contains("image size 61,37", r.Out);
        Assert.Contains("56 prompt tokens for LLaVA-NeXT", r.Out);
        var got = Npy.ReadFloat32(outPath);
        var want = Npy.ReadFloat32(HfPixels("img_a_37x61"));
        Assert.Equal(want.Shape, got.Shape);
        Assert.Equal(want.Data, got.Data);
        // --mode anyres says the same; a one-tile mode on the same model is CLIP's [3, S, S].
        Assert.Equal(0, Vte("preprocess", "-m", ModelDir, "--mode", "anyres", "--image", Image("img_a_37x61.png"), "--out", dir.File("b.npy")).Code);
        Assert.Equal(want.Data, Npy.ReadFloat32(dir.File("b.npy")).Data);
        var clip = Vte("preprocess", "-m", ModelDir, "--mode", "clip336", "--image", Image("img_a_37x61.png"), "--out", dir.File("c.npy"));
        Assert.Contains("float32 [3, 28, 28]", clip.Out);
    }

    [Fact]
    public void ForwardFromImageFilesOrHfPixelsGivesHfsLogits()
    {
        using var dir = new TempDir();
        var ids = FixturePaths.ReadIds(Path.Combine(Case, "input_ids.txt"));
        var want = Npy.ReadFloat32(Path.Combine(Case, "logits.npy")).Data.Select(x => (double)x).ToArray();
        // One placeholder per image: the family expands each to its own count (56 and 52).
        var compact = new List<int>();
        foreach (var id in ids) if (id != 319 || compact.Count == 0 || compact[^1] != 319) compact.Add(id);
        var files = Vte("forward", "-m", ModelDir, "--input-ids", string.Join(",", compact), "--image", Image("img_a_37x61.png"), Image("img_b_80x45.png"), "--out", dir.File("f.npy"));
        Assert.True(files.Code == 0, files.Err);
        Tolerance.AssertCloseToScale(Npy.ReadFloat32(dir.File("f.npy")).Data, want, 2e-5, "forward --image", output);

        var pixels = Vte("forward", "-m", ModelDir, "--input-ids", string.Join(",", ids), "--pixels", HfPixels("img_a_37x61"), HfPixels("img_b_80x45"),
            "--image-sizes", "61,37", "45,80", "--out", dir.File("p.npy"));
        Assert.True(pixels.Code == 0, pixels.Err);
        Assert.Equal(Npy.ReadFloat32(dir.File("f.npy")).Data, Npy.ReadFloat32(dir.File("p.npy")).Data);

        var args = new[] { "forward", "-m", ModelDir, "--input-ids", string.Join(",", ids), "--out", dir.File("x.npy") };
        AssertUserError(Vte([.. args, "--pixels", HfPixels("img_a_37x61"), HfPixels("img_b_80x45")]), "--image-sizes H,W");
        AssertUserError(Vte([.. args, "--pixels", HfPixels("img_a_37x61"), HfPixels("img_b_80x45"), "--image-sizes", "61,37"]), "one H,W per image");
        AssertUserError(Vte([.. args, "--pixels", HfPixels("img_a_37x61"), "--image-sizes", "61x"]), "is not H,W");
        AssertUserError(Vte([.. args, "--pixels", HfPixels("img_a_37x61"), HfPixels("img_b_80x45"), "--image-sizes", "61,37", "80,45"]), "image placeholder run");
        AssertUserError(Vte([.. args, "--image", Image("img_a_37x61.png"), "--pixels", HfPixels("img_a_37x61")]), "exclude each other");
    }

    [Fact]
    public void InspectNamesTheFamily()
    {
        var r = Vte("inspect", "-m", ModelDir);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("family        LLaVA-NeXT (model_type llava_next)", r.Out);
        Assert.Contains("pinpoints 28x56, 56x28, 56x56, 84x28, 28x84", r.Out);
        Assert.Contains("image_newline", r.Out);
        Assert.Contains("problems      none", r.Out);
    }

    [Fact]
    public void GenerateTraceAndPlotRunOnAnAnyresModel()
    {
        var dir = TestModels.Custom(SynthPreset.Get("next-tiny"));
        using var work = new TempDir();
        var g = Vte("generate", "-m", dir, "--image", Image("img_b_80x45.png"), "-n", "3", "--exit", "attn:0.9", "--trace", work.File("t.json"));
        Assert.True(g.Code == 0, g.Err);
        Assert.Contains("3 tokens", g.Err);
        Assert.Contains("wrote trace", g.Err);
        var p = Vte("plot", work.File("t.json"), "--out", work.File("t.svg"));
        Assert.True(p.Code == 0, p.Err);
        Assert.True(new FileInfo(work.File("t.svg")).Length > 0);
        AssertUserError(Vte("generate", "-m", dir, "--image-mode", "pad", "-n", "1"), "does not pad images to a square");
        AssertUserError(Vte("generate", "-m", dir, "--input-ids", "1,510,5", "-n", "1"), "--image-sizes");
    }
}
