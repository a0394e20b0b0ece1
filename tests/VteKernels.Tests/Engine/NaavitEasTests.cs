// NAAViT and EAS on the CPU backend against references that take another code path: HF transformers'
// NAAViT output (fixture logits_naavit.npy) and the float64 naive forward pass, which implements NAAViT as
// "visual rows keep their input state" over the full sequence, attention skipping by leaving the block out,
// and the PIA adapters in their convolution form (grouped 1x1 convolutions, means over the prefill rows).
// Also: folded adapters equal explicit ones, skipped layers hold no cache, the multiply-add report.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Tests.Reference;
using Xunit;

using static VteKernels.Tests.Reference.PromptRows;

namespace VteKernels.Tests.Engine;

public sealed class NaavitEasTests(ITestOutputHelper output)
{
    private const double Rel = 2e-5;

    private void AssertClose(string what, ReadOnlySpan<float> got, ReadOnlySpan<double> want, double rel = Rel) =>
        Tolerance.AssertCloseToScale(got, want, rel, what, output);

    private static List<ImageInput> Images(LlavaConfig cfg, IEnumerable<float[]> pixels) =>
        pixels.Select(p => ImageInput.Square(p, cfg.Vision.ImageSize)).ToList();

    // ------------------------------------------------------------------ NAAViT

    [Theory]
    [InlineData("basic")]
    [InlineData("gqa-minimal-bf16")]
    public void NaavitMatchesHfReference(string name)
    {
        var dir = FixturePaths.Case(name);
        using var model = LlavaModel.Load(Path.Combine(dir, "model"), TestModels.Float32Cpu());
        var cfg = model.Config;
        var (ids, prompt) = FixturePaths.Prompt(dir, cfg);
        using var session = model.CreateSession();
        var r = session.Prefill(prompt, new PrefillOptions { AllLogits = true, Naavit = true });
        var visual = VisualMask(cfg, ids);
        Assert.Equal(Enumerable.Range(0, ids.Length).Where(i => !visual[i]), r.Rows);
        Assert.True(r.Report!.Naavit);
        Assert.Null(r.Report.ExitLayer);
        var want = Npy.ReadFloat32(Path.Combine(dir, "logits_naavit.npy"));
        AssertClose($"{name} naavit", r.Logits.Values, want.Data.Select(x => (double)x).ToArray());
        // Every layer keeps every row's K/V: decode attends to the visual keys.
        for (int l = 0; l < cfg.Text.NumLayers; l++) Assert.Equal(ids.Length, session.Cache.Length(l));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void NaavitMatchesNaiveFrozenVisualRowsInPrefillAndDecode(int images)
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 40 + images, images: images, prefix: 3, between: 2, suffix: 5);
        var pixels = Enumerable.Range(0, images).Select(i => TestModels.Pixels(cfg, 200 + i)).ToList();
        var visual = VisualMask(cfg, ids);
        var textRows = Enumerable.Range(0, ids.Length).Where(i => !visual[i]).ToArray();
        var frozen = new NaiveLlava.Variant { Frozen = (_, row) => row < visual.Length && visual[row] };

        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, Images(cfg, pixels)), new PrefillOptions { AllLogits = true, Naavit = true });
        Assert.Equal(textRows, r.Rows);
        var want = naive.Forward(ids, pixels, frozen);
        AssertClose($"naavit prefill, {images} image(s)", r.Logits.Values, SelectRows(want.Logits, cfg.Text.VocabSize, textRows));

        // The frozen rows really differ from the dense model (the test can tell the two apart).
        var dense = naive.Forward(ids, pixels);
        double diff = textRows.Max(row => Math.Abs(dense.Logits[row * cfg.Text.VocabSize] - want.Logits[row * cfg.Text.VocabSize]));
        Assert.True(diff > 1e-3, $"NAAViT and the dense model agree to {diff}: the reference cannot tell them apart");

        var seq = ids.ToList();
        for (int step = 0; step < 3; step++)
        {
            int next = 9 + 17 * step;
            seq.Add(next);
            var d = session.Decode(next);
            var full = naive.Forward([.. seq], pixels, frozen);
            AssertClose($"naavit decode step {step}", d.Logits.Values, SelectRows(full.Logits, cfg.Text.VocabSize, [seq.Count - 1]));
        }
    }

    [Fact]
    public void NaavitRejectsAPromptEndingWithAnImageAndIgnoresTextOnlyPrompts()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 3, images: 1, prefix: 3, suffix: 0);
        using var session = model.CreateSession();
        var e = Assert.Throws<InvalidInputException>(() =>
            session.Prefill(new PromptInput(ids, Images(cfg, [TestModels.Pixels(cfg, 1)])), new PrefillOptions { Naavit = true }));
        Assert.Contains("NAAViT", e.Message);

        int[] text = [1, 5, 7, 9];
        using var a = model.CreateSession();
        using var b = model.CreateSession();
        var ra = a.Prefill(new PromptInput(text, []), new PrefillOptions { AllLogits = true, Naavit = true });
        var rb = b.Prefill(new PromptInput(text, []), new PrefillOptions { AllLogits = true });
        Assert.Equal(rb.Logits.Values, ra.Logits.Values);
    }

    [Fact]
    public void NaavitReportCountsOnlyTheRowsThatRan()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var t = cfg.Text;
        var ids = TestModels.PromptIds(cfg, seed: 5, images: 1, prefix: 4, suffix: 7);
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, Images(cfg, [TestModels.Pixels(cfg, 2)])), new PrefillOptions { Naavit = true });
        int n = ids.Length, prefix = 4, v = cfg.TokensPerImage, text = n - prefix - v;
        // Query rows: prefix (sees itself causally) and text (sees prefix + image + earlier text).
        long seen = (long)prefix * (prefix + 1) / 2 + (long)text * (prefix + v) + (long)text * (text + 1) / 2;
        long layer = (long)n * t.HiddenSize * 2 * t.KvDim + 2L * (prefix + text) * t.QDim * t.HiddenSize
            + 2 * seen * t.HeadDim * t.NumHeads + 3L * (prefix + text) * t.HiddenSize * t.IntermediateSize;
        Assert.Equal(layer * t.NumLayers, r.Report!.Executed.Decoder);
        Assert.Equal(Cost.DecoderLayer(t, n, 0) * t.NumLayers, r.Report.Full.Decoder);
    }

    [Fact]
    public void NaavitWithExitAndTraceMatchesNaive()
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 12, images: 2, prefix: 3, between: 3, suffix: 5);
        var pixels = new[] { TestModels.Pixels(cfg, 5), TestModels.Pixels(cfg, 6) };
        var visual = VisualMask(cfg, ids);
        var textRows = Enumerable.Range(0, ids.Length).Where(i => !visual[i]).ToArray();
        const int k = 2;
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, Images(cfg, pixels)),
            new PrefillOptions { AllLogits = true, Naavit = true, Exit = ExitPolicy.AtLayer(k), Trace = true });
        Assert.Equal(k, r.Report!.ExitLayer);
        Assert.NotNull(r.Report.Layers[0].VisualMass);
        var want = naive.Forward(ids, pixels, new NaiveLlava.Variant
        {
            Frozen = (_, row) => visual[row],
            Visible = (l, q, key) => !(visual[key] && !visual[q] && l >= k),
        });
        AssertClose("naavit + exit layer:2", r.Logits.Values, SelectRows(want.Logits, cfg.Text.VocabSize, textRows));
    }

    // ------------------------------------------------------------------ SAISA

    [Fact]
    public void SaisaProjectsTheRawVisionFeaturesBeforeEveryLayerAndRunsNaavit()
    {
        var hfDir = TestModels.Tiny();
        var naive = new NaiveLlava(hfDir);
        var hfCfg = naive.Config;
        var saisaTensors = VteKernels.Tests.Models.OriginalLayoutTests.SaisaTensors(hfCfg);
        var (modelDir, clipDir) = VteKernels.Tests.Models.OriginalLayoutCheckpoints.Write(hfDir,
            new VteKernels.Tests.Models.OriginalLayoutOptions { EditModel = list => [.. list, .. saisaTensors] });
        using var model = LlavaModel.Load(modelDir, new CpuBackend(), clipDir);
        var cfg = model.Config;
        Assert.True(cfg.Saisa);

        var hfIds = TestModels.PromptIds(hfCfg, seed: 61, images: 2, prefix: 3, between: 2, suffix: 5);
        var ids = hfIds.Select(id => id == hfCfg.ImageTokenIndex ? cfg.ImageTokenIndex : id).ToArray();   // the original layout's placeholder
        var pixels = new[] { TestModels.Pixels(hfCfg, 61), TestModels.Pixels(hfCfg, 62) };
        var visual = VisualMask(hfCfg, hfIds);
        var textRows = Enumerable.Range(0, ids.Length).Where(i => !visual[i]).ToArray();
        float[] F(string name) => saisaTensors.Single(t => t.Name == name).W.ToFloatArray();
        var variant = new NaiveLlava.Variant
        {
            Frozen = (_, row) => row < visual.Length && visual[row],
            Saisa = Enumerable.Range(0, hfCfg.Text.NumLayers).Select(l =>
                (F($"model.layers.{l}.mm_projector.0.weight"), F($"model.layers.{l}.mm_projector.0.bias"),
                 F($"model.layers.{l}.mm_projector.2.weight"), F($"model.layers.{l}.mm_projector.2.bias"))).ToList(),
        };

        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, Images(cfg, pixels)), new PrefillOptions { AllLogits = true });
        Assert.True(r.Report!.Naavit);
        Assert.Equal(textRows, r.Rows);
        var want = naive.Forward(hfIds, pixels, variant);
        AssertClose("SAISA prefill, 2 images", r.Logits.Values, SelectRows(want.Logits, cfg.Text.VocabSize, textRows));
        // Without the per-layer projections (plain NAAViT) the answer differs: the test can tell.
        var plain = naive.Forward(hfIds, pixels, variant with { Saisa = null });
        Assert.True(Math.Abs(plain.Logits[^1] - want.Logits[^1]) > 1e-3, "SAISA and plain NAAViT agree: the projections do not matter here");

        var seq = hfIds.ToList();
        for (int step = 0; step < 3; step++)
        {
            int next = 6 + 13 * step;
            seq.Add(next);
            var d = session.Decode(next);
            var full = naive.Forward([.. seq], pixels, variant);
            AssertClose($"SAISA decode {step}", d.Logits.Values, SelectRows(full.Logits, cfg.Text.VocabSize, [seq.Count - 1]));
        }
    }

    // ------------------------------------------------------------------ EAS

    [Fact]
    public void TrainingFreeSkippingMatchesNaiveAndSkippedLayersHoldNoCache()
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 21, images: 1, prefix: 3, suffix: 6);
        var pixels = new[] { TestModels.Pixels(cfg, 9) };
        int[] skipped = [1, 3];
        using var session = model.CreateSession(new SessionOptions { Eas = new EasAdapters(skipped, source: "--skip-attn") });
        var r = session.Prefill(new PromptInput(ids, Images(cfg, pixels)), new PrefillOptions { AllLogits = true });
        var variant = new NaiveLlava.Variant { SkipAttention = l => skipped.Contains(l) };
        AssertClose("skip-attn 1,3 prefill", r.Logits.Values, naive.Forward(ids, pixels, variant).Logits);
        Assert.Equal(skipped, r.Report!.SkippedLayers);

        using var dense = model.CreateSession();
        dense.Prefill(new PromptInput(ids, Images(cfg, pixels)));
        var seq = ids.ToList();
        for (int step = 0; step < 3; step++)
        {
            int next = 4 + 50 * step;
            seq.Add(next);
            var d = session.Decode(next);
            dense.Decode(next);
            AssertClose($"skip-attn decode {step}", d.Logits.Values,
                SelectRows(naive.Forward([.. seq], pixels, variant).Logits, cfg.Text.VocabSize, [seq.Count - 1]));
        }
        for (int l = 0; l < cfg.Text.NumLayers; l++)
            Assert.Equal(skipped.Contains(l) ? 0 : seq.Count, session.Cache.Length(l));
        Assert.True(session.Cache.BytesHeld <= dense.Cache.BytesHeld * (cfg.Text.NumLayers - skipped.Length) / cfg.Text.NumLayers,
            $"skipping 2 of 4 layers holds {session.Cache.BytesHeld} cache bytes, the dense model {dense.Cache.BytesHeld}");
        // The report counts no attention in the skipped layers.
        var t = cfg.Text;
        long attention = Cost.Attention(t, ids.Length, ids.Length, (long)ids.Length * (ids.Length + 1) / 2);
        Assert.Equal(r.Report.Full.Decoder - skipped.Length * attention, r.Report.Executed.Decoder);
    }

    /// <summary>Seeded random adapters of width <paramref name="width"/> on every layer.</summary>
    private static EasAdapters RandomAdapters(LlavaConfig cfg, int[] skipped, ulong seed, int width = 16, float temperature = 1f) =>
        SyntheticEas.Adapters(cfg.Text, skipped, seed, adapterDim: width, replacedDim: width, temperature: temperature);

    [Theory]
    [InlineData(PiaMode.Explicit)]
    [InlineData(PiaMode.Folded)]
    public void PiaAdaptersMatchTheirConvolutionFormInPrefillAndDecode(PiaMode mode)
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 33, images: 1, prefix: 3, suffix: 6);
        var pixels = new[] { TestModels.Pixels(cfg, 11) };
        int[] skipped = [2, 3];
        var eas = RandomAdapters(cfg, skipped, seed: 7);
        using var session = model.CreateSession(new SessionOptions { Eas = eas, PiaMode = mode });
        var r = session.Prefill(new PromptInput(ids, Images(cfg, pixels)), new PrefillOptions { AllLogits = true });
        var variant = new NaiveLlava.Variant { SkipAttention = l => skipped.Contains(l), Adapters = eas.Adapters, StatRows = ids.Length };
        var want = naive.Forward(ids, pixels, variant);
        AssertClose($"PIA {mode} prefill", r.Logits.Values, want.Logits, 5e-5);

        // The adapters matter, and the expert mix is not one half (the routers are exercised).
        var plain = naive.Forward(ids, pixels, variant with { Adapters = null });
        Assert.True(Math.Abs(plain.Logits[^1] - want.Logits[^1]) > 1e-3, "the adapters do not change the output");
        Assert.Contains(session.AdapterMix.Values, mix => Math.Abs(mix[0] - 0.5) > 0.05);

        var seq = ids.ToList();
        for (int step = 0; step < 3; step++)
        {
            int next = 7 + 40 * step;
            seq.Add(next);
            var d = session.Decode(next);
            var full = naive.Forward([.. seq], pixels, variant);   // the per-sequence means stay those of the prefill
            AssertClose($"PIA {mode} decode {step}", d.Logits.Values, SelectRows(full.Logits, cfg.Text.VocabSize, [seq.Count - 1]), 5e-5);
        }
    }

    [Fact]
    public void FoldedAdaptersEqualExplicitOnes()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 8, images: 2, prefix: 2, between: 3, suffix: 4);
        var images = Images(cfg, [TestModels.Pixels(cfg, 20), TestModels.Pixels(cfg, 21)]);
        var eas = RandomAdapters(cfg, [0, 2], seed: 99, width: 8, temperature: 10f);
        using var expl = model.CreateSession(new SessionOptions { Eas = eas, PiaMode = PiaMode.Explicit });
        using var fold = model.CreateSession(new SessionOptions { Eas = eas, PiaMode = PiaMode.Folded });
        var a = expl.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true });
        var b = fold.Prefill(new PromptInput(ids, images), new PrefillOptions { AllLogits = true });
        AssertClose("folded vs explicit prefill", b.Logits.Values, a.Logits.Values.Select(x => (double)x).ToArray(), 1e-5);
        Assert.Equal(expl.AdapterMix.Keys, fold.AdapterMix.Keys);
        for (int step = 0; step < 4; step++)
        {
            var da = expl.Decode(3 + step);
            var db = fold.Decode(3 + step);
            AssertClose($"folded vs explicit decode {step}", db.Logits.Values, da.Logits.Values.Select(x => (double)x).ToArray(), 1e-5);
        }
        // Reset forgets the per-sequence terms: a new prompt resolves them again.
        expl.Reset();
        var c = expl.Prefill(new PromptInput(ids[..^2], images), new PrefillOptions { AllLogits = true });
        using var fresh = model.CreateSession(new SessionOptions { Eas = eas });
        var d2 = fresh.Prefill(new PromptInput(ids[..^2], images), new PrefillOptions { AllLogits = true });
        Assert.Equal(d2.Logits.Values, c.Logits.Values);
    }

    [Fact]
    public void SkippingCombinesWithExitAndNaavit()
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 14, images: 1, prefix: 3, suffix: 5);
        var pixels = new[] { TestModels.Pixels(cfg, 14) };
        var visual = VisualMask(cfg, ids);
        var textRows = Enumerable.Range(0, ids.Length).Where(i => !visual[i]).ToArray();
        int[] skipped = [1];
        const int k = 3;
        using var session = model.CreateSession(new SessionOptions { Eas = new EasAdapters(skipped) });
        var r = session.Prefill(new PromptInput(ids, Images(cfg, pixels)),
            new PrefillOptions { AllLogits = true, Naavit = true, Exit = ExitPolicy.AtLayer(k), ExitKvMode = ExitKvMode.DropAll });
        var want = naive.Forward(ids, pixels, new NaiveLlava.Variant
        {
            SkipAttention = l => skipped.Contains(l),
            Frozen = (_, row) => visual[row],
            Visible = (l, q, key) => !(visual[key] && !visual[q] && l >= k),
        });
        AssertClose("skip 1 + naavit + exit layer:3 drop", r.Logits.Values, SelectRows(want.Logits, cfg.Text.VocabSize, textRows));
        Assert.Equal(0, session.Cache.Length(1));
        Assert.Equal(textRows.Length, session.Cache.Length(0));
    }

    [Fact]
    public void AnEasFineTunedCheckpointLoadsWithoutTheSkippedAttentionAndRunsWithItsOwnAdapters()
    {
        // As LLaVA-EAS's fine-tuning saves it: the skipped layers' self_attn is gone, each layer holds one adapter.
        var hfDir = TestModels.Tiny();
        using var hfModel = LlavaModel.Load(hfDir, new CpuBackend());
        var hfCfg = hfModel.Config;
        int[] skipped = [2, 3];
        var eas = RandomAdapters(hfCfg, skipped, seed: 17, temperature: 10f);   // the public layout stores no s, t: the release's 1 and 10
        var adapterTensors = EasCheckpointTests.PublicTensors(eas).Select(t => (t.Name, Weight.FromFloats(t.Name, t.Values, DType.F32, t.Shape))).ToList();
        var (modelDir, clipDir) = VteKernels.Tests.Models.OriginalLayoutCheckpoints.Write(hfDir, new VteKernels.Tests.Models.OriginalLayoutOptions
        {
            EditModel = list => [.. list.Where(t => !skipped.Any(l => t.Name.StartsWith($"model.layers.{l}.self_attn.", StringComparison.Ordinal))), .. adapterTensors],
        });
        using var model = LlavaModel.Load(modelDir, new CpuBackend(), clipDir);
        var e = Assert.Throws<ModelFormatException>(() => model.CreateSession());
        Assert.Contains("2-3", e.Message);
        Assert.Throws<ModelFormatException>(() => model.CreateSession(new SessionOptions { Eas = new EasAdapters([2]) }));

        var fromCheckpoint = EasCheckpoint.Load(modelDir);   // the skip list follows from the adapters present
        Assert.Equal(skipped, fromCheckpoint.SkippedLayers);
        var hfIds = TestModels.PromptIds(hfCfg, seed: 71, images: 1, prefix: 3, suffix: 5);
        var ids = hfIds.Select(id => id == hfCfg.ImageTokenIndex ? model.Config.ImageTokenIndex : id).ToArray();
        var px = TestModels.Pixels(hfCfg, 71);
        using var s = model.CreateSession(new SessionOptions { Eas = fromCheckpoint });
        using var want = hfModel.CreateSession(new SessionOptions { Eas = eas });
        var r = s.Prefill(new PromptInput(ids, Images(hfCfg, [px])), new PrefillOptions { AllLogits = true });
        var w = want.Prefill(new PromptInput(hfIds, Images(hfCfg, [px])), new PrefillOptions { AllLogits = true });
        Assert.Equal(w.Logits.Values, r.Logits.Values);
        Assert.Equal(want.Decode(9).Logits.Values, s.Decode(9).Logits.Values);
    }

    [Fact]
    public void AttentionMassExitCountsOnlyLayersThatAttend()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 4, images: 1, prefix: 3, suffix: 5);
        using var s = model.CreateSession(new SessionOptions { Eas = new EasAdapters([1]) });
        // Every mass is below 1: the exit comes after two measured layers, 0 and 2 (layer 1 has no attention).
        var r = s.Prefill(new PromptInput(ids, Images(cfg, [TestModels.Pixels(cfg, 4)])), new PrefillOptions { Exit = ExitPolicy.OnAttentionMass(1f, 2) });
        Assert.Equal(3, r.Report!.ExitLayer);
        Assert.Null(r.Report.Layers[1].VisualMass);
        Assert.NotNull(r.Report.Layers[2].VisualMass);
    }

    [Fact]
    public void EasConfigurationsAreChecked()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var beyond = Assert.Throws<ModelFormatException>(() => model.CreateSession(new SessionOptions { Eas = new EasAdapters([2, 4]) }));
        Assert.Contains("beyond", beyond.Message);
        Assert.Throws<ArgumentException>(() => new EasAdapters([1, 1]));
        var adapters = RandomAdapters(cfg, [1], seed: 1);
        // An attention-replacing adapter on a kept layer is rejected.
        Assert.Throws<ArgumentException>(() => new EasAdapters([], adapters.Adapters.Values));
        Assert.Equal([3, 5, 7, 8, 9], EasAdapters.ParseLayers("3,5,7-9"));
        Assert.Equal("3,5,7-9", EasAdapters.FormatLayers([3, 5, 7, 8, 9]));
        Assert.Throws<FormatException>(() => EasAdapters.ParseLayers("9-7"));
        Assert.Throws<FormatException>(() => EasAdapters.ParseLayers("a-b"));
        Assert.Throws<FormatException>(() => EasAdapters.ParseLayers("1,,2"));
    }
}
