// LLaVA-NeXT against the float64 naive reference (tests/Reference/NaiveLlava.cs, anyres packing written from
// FACTS.md as a lookup into the tile grid's feature map), and the methods on it: the fixed-layer exit (both
// K/V modes, prefill and decode), the DyVTE gate and the attention-mass policy, NAAViT and EAS skipping, each
// equal to its masked reference over the full sequence. Every image's rows - base tile, grid rows and the
// image_newline rows - are visual rows: they leave together and text never sees them after the exit.
// The naive reference itself is first checked against HF transformers' fixtures.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Families.LlavaNext;
using VteKernels.Formats;
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Tests.Reference;
using Xunit;

using static VteKernels.Tests.Reference.PromptRows;

namespace VteKernels.Tests.Families;

public sealed class LlavaNextMethodsTests(ITestOutputHelper output)
{
    private const double Rel = 2e-5;

    private void AssertClose(string what, ReadOnlySpan<float> got, double[] want) => Tolerance.AssertCloseToScale(got, want, Rel, what, output);

    private static string NextTiny(DType dtype = DType.F32, ulong seed = 0) => TestModels.Custom(SynthPreset.Get("next-tiny"), dtype, seed);

    /// <summary>A deterministic RGB picture: gradients, a rectangle, a checker row.</summary>
    private static RgbImage Picture(int width, int height, int seed)
    {
        var img = new RgbImage(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                var px = img[x, y];
                px[0] = (byte)((x * 255 / Math.Max(1, width - 1) + seed * 40) & 255);
                px[1] = (byte)((y * 255 / Math.Max(1, height - 1) + seed * 17) & 255);
                px[2] = (byte)(((x / 5 + y / 7 + seed) % 2 == 0 ? 200 : 30) + (y == height / 2 ? 25 : 0));
            }
        return img;
    }

    /// <summary>Images of odd sizes through the model's anyres preprocessing, and the same for the naive pass.</summary>
    private static (List<ImageInput> Engine, List<NaiveLlava.Image> Naive) Images(string dir, LlavaConfig cfg, params (int W, int H)[] sizes)
    {
        var pre = MultimodalPrompt.PreprocessorFor(dir, cfg, pad: false);
        var engine = sizes.Select((s, i) => pre.Preprocess(Picture(s.W, s.H, i))).ToList();
        return (engine, engine.Select(e => new NaiveLlava.Image(e.Pixels, e.Tiles, e.SourceSize!.Value.Height, e.SourceSize.Value.Width)).ToList());
    }

    /// <summary>BOS, text, each image's run (as long as its family count), text between and after.</summary>
    private static int[] Prompt(LlavaConfig cfg, IReadOnlyList<ImageInput> images, int seed, int prefix = 3, int between = 3, int suffix = 5)
    {
        var rng = new Random(seed);
        int Text() => rng.Next(3, cfg.ImageTokenIndex);
        var ids = new List<int> { 1 };
        for (int i = 1; i < prefix; i++) ids.Add(Text());
        for (int k = 0; k < images.Count; k++)
        {
            ids.AddRange(Enumerable.Repeat(cfg.ImageTokenIndex, cfg.Family.TokenCount(cfg, images[k])));
            if (k + 1 < images.Count) for (int i = 0; i < between; i++) ids.Add(Text());
        }
        for (int i = 0; i < suffix; i++) ids.Add(Text());
        return [.. ids];
    }

    // The sizes (width x height) give a 1x2 grid (150x90), a 3x1 grid (40x300) and a 2x2 grid (224x224).
    private static readonly (int W, int H)[] TwoImages = [(150, 90), (40, 300)];

    [Theory]
    [InlineData("anyres-basic")]
    [InlineData("anyres-gqa-bf16")]
    public void NaiveReferenceMatchesHfTransformers(string name)
    {
        var dir = FixturePaths.NextCase(name);
        var naive = new NaiveLlava(Path.Combine(dir, "model"));
        var files = File.ReadAllLines(Path.Combine(dir, "prompt.txt"))[0].Split(':')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var images = files.Select(f =>
        {
            var pre = Path.Combine(dir, "preprocessed", Path.GetFileNameWithoutExtension(f));
            var px = Npy.ReadFloat32(Path.Combine(pre, "pixel_values.npy"));
            var hw = File.ReadAllText(Path.Combine(pre, "image_sizes.txt")).Trim().Split(',').Select(int.Parse).ToArray();
            return new NaiveLlava.Image(px.Data, px.Shape[0], hw[0], hw[1]);
        }).ToList();
        var r = naive.Forward(FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt")), images);
        Tolerance.AssertCloseToScale(r.Logits.Select(x => (float)x).ToArray(), Npy.ReadFloat32(Path.Combine(dir, "logits.npy")).Data.Select(x => (double)x).ToArray(), Rel, $"naive {name}", output);
    }

    [Theory]
    [InlineData(DType.F32, 1)]
    [InlineData(DType.BF16, 2)]
    public void EngineMatchesNaiveFloat64(DType dtype, int seed)
    {
        var dir = NextTiny(dtype, (ulong)seed);
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var (images, naiveImages) = Images(dir, cfg, [.. TwoImages, (224, 224)]);
        Assert.Equal([3, 4, 5], images.Select(i => i.Tiles));
        var ids = Prompt(cfg, images, seed);
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true, OutputHiddenStates = true });
        var naive = new NaiveLlava(dir).Forward(ids, naiveImages);
        AssertClose($"next-tiny/{dtype} logits", r.Logits.Values, naive.Logits);
        for (int i = 0; i < r.HiddenStates!.Count; i++) AssertClose($"next-tiny/{dtype} hidden {i}", r.HiddenStates[i], naive.HiddenStates[i]);
    }

    /// <summary>The naive pass with visual keys hidden from text queries in layers &gt;= k (and from rows at or after dropFrom in every layer).</summary>
    private static NaiveLlava.Result Masked(NaiveLlava naive, int[] ids, IReadOnlyList<NaiveLlava.Image> images, int k, int dropFrom = int.MaxValue)
    {
        var visual = VisualMask(naive.Config, ids);
        return naive.Forward(ids, images, new NaiveLlava.Variant { Visible = (l, q, key) => !(visual[key] && !visual[q] && (l >= k || q >= dropFrom)) });
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    public void FixedExitMatchesTheMaskedReferenceInPrefillAndDecode(int k)
    {
        var dir = NextTiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var (images, naiveImages) = Images(dir, cfg, TwoImages);
        var ids = Prompt(cfg, images, seed: 30 + k);
        var textRows = TextRows(cfg, ids);
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(k) });
        Assert.Equal(textRows, r.Rows);   // every image's rows left, newline rows included
        Assert.Equal(k, r.Report!.ExitLayer);
        AssertClose($"anyres prefill layer:{k}", r.Logits.Values, SelectRows(Masked(naive, ids, naiveImages, k).Logits, cfg.Text.VocabSize, textRows));
        var seq = ids.ToList();
        for (int step = 0; step < 2; step++)
        {
            int next = 7 + 40 * step;
            seq.Add(next);
            var d = session.Decode(next);
            AssertClose($"anyres decode {step} layer:{k}", d.Logits.Values,
                SelectRows(Masked(naive, [.. seq], naiveImages, k).Logits, cfg.Text.VocabSize, [seq.Count - 1]));
        }
    }

    [Fact]
    public void DropAllModeMatchesTheReferenceAndHoldsNoVisualRow()
    {
        var dir = NextTiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var (images, naiveImages) = Images(dir, cfg, TwoImages);
        var ids = Prompt(cfg, images, seed: 5);
        int n = ids.Length, visualRows = VisualMask(cfg, ids).Count(v => v);
        Assert.Equal(images.Sum(i => cfg.Family.TokenCount(cfg, i)), visualRows);
        using var session = model.CreateSession();
        session.Prefill(new PromptInput(ids, images), new PrefillOptions { Exit = ExitPolicy.AtLayer(2), ExitKvMode = ExitKvMode.DropAll });
        for (int l = 0; l < cfg.Text.NumLayers; l++) Assert.Equal(n - visualRows, session.Cache.Length(l));
        var seq = ids.Append(11).ToArray();
        var d = session.Decode(11);
        AssertClose("anyres drop-all decode", d.Logits.Values, SelectRows(Masked(naive, seq, naiveImages, 2, dropFrom: n).Logits, cfg.Text.VocabSize, [seq.Length - 1]));
    }

    [Fact]
    public void NaavitAndSkippingMatchTheReference()
    {
        var dir = NextTiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var (images, naiveImages) = Images(dir, cfg, TwoImages);
        var ids = Prompt(cfg, images, seed: 8);
        var visual = VisualMask(cfg, ids);
        var textRows = TextRows(cfg, ids);

        // NAAViT: every visual row (newlines too) keeps its input state, in prefill and decode.
        var frozen = new NaiveLlava.Variant { Frozen = (_, row) => row < visual.Length && visual[row] };
        using (var s = model.CreateSession())
        {
            var r = s.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true, Naavit = true });
            Assert.Equal(textRows, r.Rows);
            AssertClose("anyres naavit prefill", r.Logits.Values, SelectRows(naive.Forward(ids, naiveImages, frozen).Logits, cfg.Text.VocabSize, textRows));
            var seq = ids.Append(13).ToArray();
            AssertClose("anyres naavit decode", s.Decode(13).Logits.Values, SelectRows(naive.Forward(seq, naiveImages, frozen).Logits, cfg.Text.VocabSize, [seq.Length - 1]));
        }

        // EAS skipping of layers 1 and 3 with NAAViT and an exit after 2 layers.
        int[] skipped = [1, 3];
        using (var s = model.CreateSession(new SessionOptions { Eas = new EasAdapters(skipped, source: "--skip-attn") }))
        {
            var r = s.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true, Naavit = true, Exit = ExitPolicy.AtLayer(2) });
            var want = naive.Forward(ids, naiveImages, new NaiveLlava.Variant
            {
                SkipAttention = l => skipped.Contains(l),
                Frozen = (_, row) => visual[row],
                Visible = (l, q, key) => !(visual[key] && !visual[q] && l >= 2),
            });
            AssertClose("anyres skip-attn 1,3 + naavit + layer:2", r.Logits.Values, SelectRows(want.Logits, cfg.Text.VocabSize, textRows));
            for (int l = 0; l < cfg.Text.NumLayers; l++) Assert.Equal(skipped.Contains(l) ? 0 : l < 2 ? ids.Length : textRows.Length, s.Cache.Length(l));
        }
    }

    [Fact]
    public void AttentionMassCountsEveryVisualRowAndTheGateExitsWhereItSays()
    {
        var dir = NextTiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var (images, naiveImages) = Images(dir, cfg, TwoImages);
        var ids = Prompt(cfg, images, seed: 12);
        var visual = VisualMask(cfg, ids);
        int first = Array.IndexOf(ids, cfg.ImageTokenIndex), heads = cfg.Text.NumHeads, layers = cfg.Text.NumLayers;
        var text = Enumerable.Range(0, ids.Length).Where(i => i > first && !visual[i]).ToHashSet();
        var want = new double[layers, heads];
        naive.Forward(ids, naiveImages, new NaiveLlava.Variant
        {
            Probe = (l, h, q, p) =>
            {
                if (!text.Contains(q)) return;
                double m = 0;
                for (int j = 0; j < p.Length; j++) if (visual[j]) m += p[j];
                want[l, h] += m / text.Count;
            },
        });
        using var s = model.CreateSession();
        var r = s.Prefill(new PromptInput(ids, images), new PrefillOptions { Trace = true, OutputHiddenStates = true });
        for (int l = 0; l < layers; l++)
            for (int h = 0; h < heads; h++) Assert.Equal(want[l, h], r.Report!.Layers[l].VisualMassPerHead![h], 2e-5);

        // A DyVTE gate on layer 1 only, oriented (by its own evaluation on the full run's states) to say "exit":
        // the visual rows leave after 2 layers, exactly as layer:2 does.
        int d = cfg.Text.HiddenSize;
        var rng = new Random(3);
        var gate = new ExitGate(1, d, 16, [.. Enumerable.Range(0, 16 * 2 * d).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.2f)],
            [.. Enumerable.Range(0, 32).Select(_ => (float)(rng.NextDouble() - 0.5))]);
        var spans = new PromptInput(ids, images).FindImageSpans(cfg);
        var (stay, go) = gate.Evaluate(ExitGates.Feature(r.HiddenStates![2], ids.Length, d, spans)!);
        if (go <= stay) gate = gate with { W2 = [.. gate.W2.AsSpan(16).ToArray(), .. gate.W2.AsSpan(0, 16).ToArray()] };
        s.Reset();
        var gated = s.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.FromGates(new ExitGates([gate])) });
        Assert.Equal(2, gated.Report!.ExitLayer);
        s.Reset();
        Assert.Equal(s.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(2) }).Logits.Values, gated.Logits.Values);
    }

    [Fact]
    public void TheReportsMultiplyAddsCoverEveryTile()
    {
        var dir = NextTiny();
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var (images, _) = Images(dir, cfg, TwoImages);
        var ids = Prompt(cfg, images, seed: 2);
        using var s = model.CreateSession();
        var r = s.Prefill(new PromptInput(ids, images), new PrefillOptions { Exit = ExitPolicy.AtLayer(1) }).Report!;
        var v = cfg.Vision;
        long dv = v.HiddenSize, np = v.NumPositions, d = cfg.Text.HiddenSize;
        long perTile = (long)v.NumPatches * 3 * v.PatchSize * v.PatchSize * dv
            + cfg.VisionLayersNeeded * (np * 4 * dv * dv + 2 * np * np * dv + 2 * np * dv * v.IntermediateSize)
            + cfg.TokensPerImage * (cfg.ProjectorInputSize * d + d * d);
        Assert.Equal((3 + 4) * perTile, r.Full.Vision);
        Assert.Equal(r.Full.Vision, r.Executed.Vision);
        int visualRows = VisualMask(cfg, ids).Count(x => x);
        Assert.Equal(r.PromptRows - visualRows, r.TokensPerLayer[^1]);
        Assert.Equal(visualRows, r.VisualRows);
    }
}
