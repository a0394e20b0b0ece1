// The engine on the CPU backend against two oracles nobody here wrote or that share no code with it:
// HF transformers' own outputs (the hf-llava-tiny fixtures) and the float64 naive forward pass in
// tests/Reference, on synthetic models of several shapes and dtypes. Also: decoding with the KV cache
// equals recomputing the whole prefix, and a prompt fed in pieces equals the prompt fed at once.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class LlavaEngineTests(ITestOutputHelper output)
{
    /// <summary>max |got - want| &lt;= rel * max(1, max |want|); logs the figures.</summary>
    private void AssertClose(string what, ReadOnlySpan<float> got, ReadOnlySpan<float> want, double rel)
    {
        var wide = new double[want.Length];
        for (int i = 0; i < want.Length; i++) wide[i] = want[i];
        Tolerance.AssertCloseToScale(got, wide, rel, what, output);
    }

    private void AssertClose(string what, ReadOnlySpan<float> got, double[] want, double rel) =>
        AssertClose(what, got, want.Select(x => (float)x).ToArray(), rel);

    public static TheoryData<string> FixtureCases => new() { "basic", "gqa-minimal-bf16" };

    [Theory, MemberData(nameof(FixtureCases))]
    public void MatchesHfTransformersFixture(string name)
    {
        var dir = FixturePaths.Case(name);
        using var model = LlavaModel.Load(Path.Combine(dir, "model"), TestModels.Float32Cpu());
        var cfg = model.Config;
        var ids = FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt"));
        var px = Npy.ReadFloat32(Path.Combine(dir, "pixels.npy"));
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, [ImageInput.Square(px.Data, cfg.Vision.ImageSize)]),
            new PrefillOptions { AllLogits = true, OutputHiddenStates = true, OutputVisionStates = true });

        // fp32 against HF's fp32: the fixture README expects ~1e-5 of the logits' scale.
        const double rel = 2e-5;
        AssertClose($"{name} logits", r.Logits.Values, Npy.ReadFloat32(Path.Combine(dir, "logits.npy")).Data, rel);
        AssertClose($"{name} image_features", r.ImageFeatures![0], Npy.ReadFloat32(Path.Combine(dir, "intermediates", "image_features.npy")).Data, rel);
        Assert.Equal(cfg.Text.NumLayers + 1, r.HiddenStates!.Count);
        for (int i = 0; i < r.HiddenStates.Count; i++)
            AssertClose($"{name} text_hidden_{i:D2}", r.HiddenStates[i], Npy.ReadFloat32(Path.Combine(dir, "intermediates", $"text_hidden_{i:D2}.npy")).Data, rel);
        // The tower stops at the feature layer: states 0..VisionLayersNeeded exist and match HF's.
        Assert.Equal(cfg.VisionLayersNeeded + 1, r.VisionHiddenStates![0].Count);
        for (int i = 0; i < r.VisionHiddenStates[0].Count; i++)
            AssertClose($"{name} vision_hidden_{i:D2}", r.VisionHiddenStates[0][i], Npy.ReadFloat32(Path.Combine(dir, "intermediates", $"vision_hidden_{i:D2}.npy")).Data, rel);
    }

    [Theory, MemberData(nameof(FixtureCases))]
    public async Task GreedyDecodingWithCacheMatchesHf(string name)
    {
        var dir = FixturePaths.Case(name);
        using var model = LlavaModel.Load(Path.Combine(dir, "model"), TestModels.Float32Cpu());
        var ids = FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt"));
        var px = Npy.ReadFloat32(Path.Combine(dir, "pixels.npy"));
        var want = FixturePaths.ReadIds(Path.Combine(dir, "greedy8.txt"));
        using var session = model.CreateSession();
        var got = await Generator.GenerateAsync(session, new PromptInput(ids, [ImageInput.Square(px.Data, model.Config.Vision.ImageSize)]),
            new GenerationOptions { MaxNewTokens = 8, StopTokens = [] }, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(want, got.Ids);
    }

    public static TheoryData<string, DType, int> SyntheticCases => new()
    {
        { "tiny", DType.F32, 1 },
        { "tiny", DType.BF16, 2 },
        { "tiny", DType.F16, 3 },
        { "full-strategy-multilayer", DType.F32, 4 },
    };

    private static SynthPreset PresetFor(string name) => name switch
    {
        "full-strategy-multilayer" => new SynthPreset(name, SynthPreset.Get("tiny").Config with
        {
            // Class token kept, two feature layers concatenated, MHA (no GQA), odd sizes.
            Vision = new VisionConfig(48, 96, 3, 3, 70, 14, 3, 1e-5f, "gelu"),
            Text = new TextConfig(96, 200, 3, 6, 6, 16, 400, 1e-6f, 5000f, 512, "silu", false, 1, 2),
            ImageTokenIndex = 397,
            VisionFeatureLayers = [-1, 1],
            VisionFeatureSelectStrategy = "full",
            ImageSeqLength = 26,
        }),
        _ => SynthPreset.Get(name),
    };

    [Theory, MemberData(nameof(SyntheticCases))]
    public void MatchesNaiveFloat64Forward(string preset, DType dtype, int seed)
    {
        var dir = TestModels.Custom(PresetFor(preset), dtype, (ulong)seed);
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        int images = seed % 2 == 0 ? 2 : 1;
        var ids = TestModels.PromptIds(cfg, seed, images);
        var pixels = Enumerable.Range(0, images).Select(i => TestModels.Pixels(cfg, seed * 10 + i)).ToList();
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, pixels.Select(p => ImageInput.Square(p, cfg.Vision.ImageSize)).ToList()),
            new PrefillOptions { AllLogits = true, OutputHiddenStates = true });
        var naive = new NaiveLlava(dir).Forward(ids, pixels);
        const double rel = 2e-5;
        AssertClose($"{preset}/{dtype} logits", r.Logits.Values, naive.Logits, rel);
        for (int i = 0; i < r.HiddenStates!.Count; i++)
            AssertClose($"{preset}/{dtype} hidden {i}", r.HiddenStates[i], naive.HiddenStates[i], rel);
    }

    [Fact]
    public void DecodingWithCacheEqualsRecomputingThePrefix()
    {
        var dir = TestModels.Tiny(DType.BF16, seed: 5);
        using var model = LlavaModel.Load(dir, TestModels.Float32Cpu());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, 11);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 11), cfg.Vision.ImageSize);
        using var session = model.CreateSession();
        var step = session.Prefill(new PromptInput(ids, [image]));
        var seq = ids.ToList();
        for (int t = 0; t < 6; t++)
        {
            int next = Sampler.ArgMax(step.Logits.Last);
            seq.Add(next);
            step = session.Decode(next);
            using var fresh = model.CreateSession();
            var full = fresh.Prefill(new PromptInput([.. seq], [image]));
            AssertClose($"decode step {t}", step.Logits.Last, full.Logits.Last.ToArray(), 1e-5);
        }
        Assert.Equal(seq.Count, session.Position);
        for (int l = 0; l < cfg.Text.NumLayers; l++) Assert.Equal(seq.Count, session.Cache.Length(l));
    }

    [Fact]
    public void PromptInPiecesEqualsPromptAtOnce()
    {
        var dir = TestModels.Tiny();
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, 3);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 3), cfg.Vision.ImageSize);
        int split = ids.Length - 4;
        using var a = model.CreateSession();
        var whole = a.Prefill(new PromptInput(ids, [image]), new PrefillOptions { AllLogits = true });
        using var b = model.CreateSession();
        b.Prefill(new PromptInput(ids[..split], [image]));
        var tail = b.Prefill(PromptInput.TextOnly(ids[split..]), new PrefillOptions { AllLogits = true });
        AssertClose("continued prefill", tail.Logits.Values, whole.Logits.Values.AsSpan((split) * cfg.Text.VocabSize).ToArray(), 1e-5);
    }

    [Fact]
    public void DeepSyntheticModelHasFiniteNonDegenerateLogits()
    {
        // 32 layers like LLaVA-1.5-7B, narrow so the test is quick: the synthetic scaling must keep
        // activations finite and logits spread out at full depth.
        var deep = new SynthPreset("deep", SynthPreset.Get("tiny").Config with
        {
            Text = new TextConfig(64, 160, 32, 4, 4, 16, 512, 1e-5f, 10000f, 1024, "silu", false, 1, 2),
            Vision = new VisionConfig(32, 64, 24, 2, 56, 14, 3, 1e-5f, "quick_gelu"),
            ImageSeqLength = 16,
        });
        var dir = TestModels.Custom(deep, DType.BF16, 9);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        using var session = model.CreateSession();
        var ids = TestModels.PromptIds(cfg, 9);
        var r = session.Prefill(new PromptInput(ids, [ImageInput.Square(TestModels.Pixels(cfg, 9), cfg.Vision.ImageSize)]),
            new PrefillOptions { AllLogits = true, OutputHiddenStates = true });
        Assert.All(r.Logits.Values, v => Assert.True(float.IsFinite(v)));
        foreach (var h in r.HiddenStates!) Assert.All(h, v => Assert.True(float.IsFinite(v)));
        var last = r.Logits.Last.ToArray();
        double mean = last.Average(), std = Math.Sqrt(last.Select(v => (v - mean) * (v - mean)).Average());
        output.WriteLine($"last-row logit std {std:F3}; residual RMS of last layer {Rms(r.HiddenStates[^2]):F3}");
        Assert.InRange(std, 0.5, 10);
        var argmaxes = Enumerable.Range(0, r.Logits.Rows).Select(i => Sampler.ArgMax(r.Logits.Row(i))).Distinct().Count();
        Assert.True(argmaxes > r.Logits.Rows / 4, $"only {argmaxes} distinct argmax tokens over {r.Logits.Rows} rows");
    }

    private static double Rms(float[] x) => Math.Sqrt(x.Select(v => (double)v * v).Average());

    [Fact]
    public void InvalidInputsAreTypedErrors()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var image = ImageInput.Square(TestModels.Pixels(cfg, 1), cfg.Vision.ImageSize);
        var ids = TestModels.PromptIds(cfg, 1);
        using var s = model.CreateSession();
        Assert.Contains("outside the vocabulary", Assert.Throws<InvalidInputException>(() => s.Prefill(new PromptInput([1, cfg.Text.VocabSize], []))).Message);
        Assert.Contains("1 image(s) but 0", Assert.Throws<InvalidInputException>(() => s.Prefill(new PromptInput(ids, []))).Message);
        Assert.Contains("each image takes exactly", Assert.Throws<InvalidInputException>(() => s.Prefill(new PromptInput([1, cfg.ImageTokenIndex, 5], [image]))).Message);
        Assert.Contains("vision tower takes", Assert.Throws<InvalidInputException>(() => s.Prefill(new PromptInput(ids, [ImageInput.Square(new float[3 * 8 * 8], 8)]))).Message);
        var nan = (float[])image.Pixels.Clone();
        nan[17] = float.NaN;
        Assert.Contains("NaN", Assert.Throws<InvalidInputException>(() => s.Prefill(new PromptInput(ids, [ImageInput.Square(nan, cfg.Vision.ImageSize)]))).Message);
        Assert.Contains("exceeds the model's context", Assert.Throws<InvalidInputException>(() => s.Prefill(PromptInput.TextOnly(new int[cfg.Text.MaxPositionEmbeddings + 1]))).Message);
        Assert.Contains("prefill a prompt first", Assert.Throws<InvalidInputException>(() => s.Decode(5)).Message);
        Assert.Equal(0, s.Position);
    }
}
