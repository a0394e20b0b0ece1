// DyVTE gate training: the router's hand-written gradient against finite differences, AdamW's first steps
// against their closed form, the label rule on hand-made logits, the gate input against what the engine's
// gate sees, the features of the prompt + answer run against a prompt-only run, labels on a model built so
// that the image stops mattering after a known layer (GateTrainingFixture), held-out accuracy of gates trained
// on it and their exit layer in the engine, resume against an uninterrupted run, the feature cache, and the
// data file's errors.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Models;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class GateTrainingTests(ITestOutputHelper output)
{
    // ------------------------------------------------------------------ backprop and optimizer

    public static TheoryData<int, int, int, int> GradientCases => new()
    {
        { 7, 10, 5, 1 },    // hidden, inputs, pairs, seed
        { 1, 2, 1, 2 },
        { 13, 6, 3, 3 },
        { 5, 33, 8, 4 },
    };

    [Theory, MemberData(nameof(GradientCases))]
    public void GradientMatchesFiniteDifferences(int hidden, int inputs, int pairs, int seed)
    {
        var rng = new Random(seed);
        float R(double scale) => (float)((rng.NextDouble() * 2 - 1) * scale);
        var w1 = Enumerable.Range(0, hidden * inputs).Select(_ => R(2 / Math.Sqrt(inputs))).ToArray();
        var w2 = Enumerable.Range(0, 2 * hidden).Select(_ => R(2 / Math.Sqrt(hidden))).ToArray();
        var features = Enumerable.Range(0, pairs).Select(_ => (ReadOnlyMemory<float>)Enumerable.Range(0, inputs).Select(_ => R(2)).ToArray()).ToArray();
        var labels = Enumerable.Range(0, pairs).Select(p => (p + seed) % 2).ToArray();
        double scale = 1.0 / pairs;
        var g1 = Enumerable.Repeat(double.NaN, w1.Length).ToArray();   // poisoned: Gradient must overwrite
        var g2 = Enumerable.Repeat(double.NaN, w2.Length).ToArray();
        GateBackprop.Gradient(w1, w2, hidden, inputs, features, labels, scale, g1, g2);

        double Loss() => scale * GateBackprop.Gradient(w1, w2, hidden, inputs, features, labels, scale, new double[w1.Length], new double[w2.Length]).LossSum;
        double worst = 0;
        void Check(float[] w, double[] g, string name)
        {
            for (int i = 0; i < w.Length; i++)
            {
                float keep = w[i];
                float hi = keep + 1e-4f, lo = keep - 1e-4f;   // hi - lo is exact in double; truncation error ~h²
                w[i] = hi;
                double up = Loss();
                w[i] = lo;
                double down = Loss();
                w[i] = keep;
                double fd = (up - down) / ((double)hi - lo);
                double err = Math.Abs(fd - g[i]);
                worst = Math.Max(worst, err / (1e-6 + Math.Abs(fd)));
                Assert.True(err <= 1e-9 + 1e-5 * Math.Abs(fd), $"{name}[{i}] (hidden {hidden}, inputs {inputs}, seed {seed}): analytic {g[i]:E6}, finite difference {fd:E6}");
            }
        }
        Check(w1, g1, "dW1");
        Check(w2, g2, "dW2");
        Assert.Contains(g1, v => Math.Abs(v) > 1e-4);   // not a vacuous comparison of zeros
        output.WriteLine($"largest relative error {worst:E2}");
    }

    [Fact]
    public void AdamWFirstStepsMoveEachWeightByTheLearningRate()
    {
        // With a constant gradient, the bias-corrected m̂ / sqrt(v̂) is g / |g| at every step: each weight moves
        // by lr against its gradient's sign, after the decoupled decay p ← p (1 − lr wd).
        float[] p = [0.5f, -1.25f, 2f, 0.125f];
        double[] g = [0.3, -2e-3, 5.0, -0.7];
        var m = new float[4];
        var v = new float[4];
        double lr = 0.01, wd = 0.1;
        var want = p.Select(x => (double)x).ToArray();
        for (int t = 1; t <= 3; t++)
        {
            GateBackprop.AdamW(p, m, v, g, lr, 0.9, 0.999, 1e-8, wd, t);
            for (int i = 0; i < 4; i++)
            {
                want[i] = want[i] * (1 - lr * wd) - lr * Math.Sign(g[i]);
                Assert.Equal(want[i], p[i], 1e-6);
            }
        }
    }

    // ------------------------------------------------------------------ label rule

    /// <summary>-log softmax([a, 0, 0])[0] = log(1 + 2 e^-a).</summary>
    private static double PeakLoss(double a) => Math.Log(1 + 2 * Math.Exp(-a));

    public static TheoryData<string, float[], float[], int[], double, bool> LabelCases => new()
    {
        // name, full [A, 3], exit [A, 3], answer, argmax agreement, keeps the answer
        { "identical", [3, 0, 0, 0, 3, 0], [3, 0, 0, 0, 3, 0], [0, 1], 1.0, true },
        { "one argmax of three flips", [3, 0, 0, 0, 3, 0, 0, 0, 3], [3, 0, 0, 0, 3, 0, 0, 4, 3], [0, 1, 2], 2 / 3.0, false },
        { "same argmax, much flatter", [3, 0, 0, 0, 3, 0], [2, 0, 0, 0, 2, 0], [0, 1], 1.0, false },
        { "same argmax, sharper (lower loss)", [3, 0, 0, 0, 3, 0], [4, 0, 0, 0, 4, 0], [0, 1], 1.0, true },
        { "loss x1.019 (peak 2.98)", [3, 0, 0, 0, 3, 0], [2.98f, 0, 0, 0, 2.98f, 0], [0, 1], 1.0, true },
        { "loss x1.039 (peak 2.96)", [3, 0, 0, 0, 3, 0], [2.96f, 0, 0, 0, 2.96f, 0], [0, 1], 1.0, false },
        { "argmax flips where the answer is not the argmax", [0, 3, 0], [0, 0, 3], [0], 0.0, false },
    };

    [Theory, MemberData(nameof(LabelCases))]
    public void LabelRuleOnHandMadeLogits(string name, float[] full, float[] exit, int[] answer, double agreement, bool keeps)
    {
        var s = GateLabels.Score(full, exit, answer, vocab: 3);
        Assert.Equal(agreement, s.ArgmaxAgreement, 12);
        if (full.Length == 6 && full[0] == 3) Assert.Equal(PeakLoss(3), s.FullLoss, 12);
        Assert.True(keeps == s.KeepsAnswer, $"{name}: agreement {s.ArgmaxAgreement}, loss {s.FullLoss} -> {s.ExitLoss}");
    }

    [Fact]
    public void LabelThresholdsAreStrict()
    {
        Assert.False(new ExitBranchScore(0.99, 1, 1).KeepsAnswer);     // "more than 99%"
        Assert.True(new ExitBranchScore(0.991, 1, 1).KeepsAnswer);
        Assert.False(new ExitBranchScore(1, 1, 1.03).KeepsAnswer);     // "below 1.03x"
        Assert.True(new ExitBranchScore(1, 1, 1.0299).KeepsAnswer);

        // 100 answer tokens, one argmax flips: 99% is not more than 99%.
        var full = new float[100 * 3];
        for (int i = 0; i < 100; i++) full[i * 3] = 2;
        var exit = (float[])full.Clone();
        exit[57 * 3 + 1] = 5;
        var s = GateLabels.Score(full, exit, new int[100], 3);
        Assert.Equal(0.99, s.ArgmaxAgreement, 12);
        Assert.False(s.KeepsAnswer);
        Assert.Throws<ArgumentException>(() => GateLabels.Score(full, exit, new int[99], 3));
        Assert.Throws<ArgumentException>(() => GateLabels.Score([], [], [], 3));
    }

    // ------------------------------------------------------------------ features

    [Theory]
    [InlineData(7)]
    [InlineData(2)]
    public void FeatureIsWhatTheEnginesGateSees(int suffix)
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        int d = cfg.Text.HiddenSize;
        var ids = TestModels.PromptIds(cfg, seed: 40 + suffix, suffix: suffix);
        var input = new PromptInput(ids, [ImageInput.Square(TestModels.Pixels(cfg, 40), cfg.Vision.ImageSize)]);
        var spans = input.FindImageSpans(cfg);
        using var a = model.CreateSession();
        var hs = a.Prefill(input, new PrefillOptions { OutputHiddenStates = true }).HiddenStates!;

        var rng = new Random(suffix);
        var gates = new ExitGates(Enumerable.Range(0, cfg.Text.NumLayers).Select(l => new ExitGate(l, d, 24,
            Enumerable.Range(0, 24 * 2 * d).Select(_ => (float)(rng.NextDouble() - 0.5) / 8).ToArray(),
            Enumerable.Range(0, 48).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray())));
        using var b = model.CreateSession();
        var report = b.Prefill(input, new PrefillOptions { Exit = ExitPolicy.FromGates(gates) }).Report!;
        int compared = 0;
        foreach (var t in report.Layers.Where(t => t.GateLogits is not null))
        {
            var feature = ExitGates.Feature(hs[t.Layer + 1], ids.Length, d, spans);
            Assert.NotNull(feature);
            var (stay, exit) = gates.ForLayer(t.Layer)!.Evaluate(feature);
            Assert.Equal(t.GateLogits![0], stay);   // bit for bit: same rows, same summation order
            Assert.Equal(t.GateLogits[1], exit);
            compared++;
        }
        Assert.True(compared >= 1, "the engine evaluated no gate");
        // The mean must leave out the last row and everything up to the image: other ranges give other bits.
        var f0 = ExitGates.Feature(hs[1], ids.Length, d, spans)!;
        var withLast = ExitGates.Feature(hs[1], ids.Length - 1, d, spans);
        Assert.NotEqual(f0.AsSpan(0, d).ToArray(), withLast?.AsSpan(0, d).ToArray() ?? []);
        // No text between the image and the last row: no feature, as the engine's gate does not decide.
        Assert.Null(ExitGates.Feature(hs[1], spans[^1].End + 1, d, spans));
    }

    [Fact]
    public void PromptRowFeaturesOfThePromptPlusAnswerRunEqualAPromptOnlyRun()
    {
        var ds = GateTrainingFixture.Dataset;
        var dir = GateTrainingFixture.ModelDir;
        var samples = GateSamples.Read(GateTrainingFixture.DataPath);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var tokenizer = Tokenizer.Load(dir);
        var clip = MultimodalPrompt.PreprocessingFor(dir, cfg, pad: false);
        foreach (int s in new[] { 0, 1, 6 })
        {
            var sample = samples.Single(x => x.Line == ds.Lines[s]);
            List<ImageInput> images = sample.ImagePath is string p ? [MultimodalPrompt.LoadImage(p, clip, cfg)] : [];
            var prompt = GateDataset.BuildPrompt(cfg, tokenizer, dir, "llava", sample.Question, images);
            using var session = model.CreateSession();
            var hs = session.Prefill(prompt, new PrefillOptions { OutputHiddenStates = true }).HiddenStates!;
            for (int k = 0; k < ds.Layers.Count; k++)
            {
                var want = ExitGates.Feature(hs[ds.Layers[k] + 1], prompt.TokenIds.Length, cfg.Text.HiddenSize, prompt.FindImageSpans(cfg))!;
                Tolerance.AssertCloseToScale(ds.Feature(s, k), want.Select(x => (double)x).ToArray(), 1e-6, $"line {sample.Line} layer {ds.Layers[k]}", output);
            }
        }
    }

    // ------------------------------------------------------------------ labels on the designed model

    [Fact]
    public void LabelsComeOutAsDesigned()
    {
        var ds = GateTrainingFixture.Dataset;
        var samples = GateSamples.Read(GateTrainingFixture.DataPath).ToDictionary(s => s.Line);
        Assert.Equal(GateTrainingFixture.SampleCount, ds.Count);
        Assert.Empty(ds.Skipped);
        Assert.Equal([0, 1, 2], ds.Layers);
        for (int s = 0; s < ds.Count; s++)
        {
            bool image = samples[ds.Lines[s]].ImagePath is not null;
            for (int k = 0; k < ds.Layers.Count; k++)
            {
                int layer = ds.Layers[k];
                var score = ds.Score(s, k);
                Assert.True(GateTrainingFixture.DesignedLabel(layer, image) == ds.Label(s, k),
                    $"line {ds.Lines[s]} layer {layer} (image: {image}): label {ds.Label(s, k)}, agreement {score.ArgmaxAgreement:F2}, loss {score.FullLoss:F4} -> {score.ExitLoss:F4}");
            }
        }
        output.WriteLine($"label 1 per layer: {string.Join(", ", ds.PositivesPerLayer())} of {ds.Count}");
        for (int k = 0; k < ds.Layers.Count; k++)
        {
            var sc = Enumerable.Range(0, ds.Count).Where(s => samples[ds.Lines[s]].ImagePath is not null).Select(s => ds.Score(s, k)).ToList();
            double mean = sc.Average(x => x.ArgmaxAgreement);
            output.WriteLine($"layer {ds.Layers[k]}, image samples: argmax agreement {sc.Min(x => x.ArgmaxAgreement):F2}..{sc.Max(x => x.ArgmaxAgreement):F2} " +
                $"(mean {mean:F2}), loss ratio {sc.Min(x => x.ExitLoss / x.FullLoss):F3}..{sc.Max(x => x.ExitLoss / x.FullLoss):F3}");
            // The image matters broadly before the designed layer (many argmaxes flip), not by a hair.
            if (ds.Layers[k] < GateTrainingFixture.ImageIrrelevantFrom - 1) Assert.True(mean < 0.85, $"layer {ds.Layers[k]}: mean argmax agreement {mean:F2}");
        }
    }

    // ------------------------------------------------------------------ training

    private static readonly GateTrainingOptions SmallRun = new()
    {
        Hidden = 32, Epochs = 30, BatchSize = 8, LearningRate = 1e-2, ValFraction = 0.25, Seed = 3, WarmupFraction = 0.05,
    };

    [Fact]
    public void TrainedGatesPassHeldOutSamplesAndFireAtTheDesignedLayer()
    {
        var ds = GateTrainingFixture.Dataset;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var result = new GateTrainer(ds, SmallRun).Run(cancel: TestContext.Current.CancellationToken);
        output.WriteLine($"{result.Steps} steps in {clock.ElapsedMilliseconds} ms; train accuracy {result.Train.Accuracy:F3}, held-out {result.HeldOut!.Accuracy:F3} " +
            $"({string.Join(", ", result.HeldOut.AccuracyPerLayer.Select(kv => $"layer {kv.Key}: {kv.Value:F2}"))}) on {result.HeldOut.Pairs} pairs");
        Assert.True(result.HeldOut.Accuracy > 0.9, $"held-out accuracy {result.HeldOut.Accuracy:F3}");
        // Every layer, including those where half the labels are 0: a constant gate would score 50% there.
        Assert.All(result.HeldOut.AccuracyPerLayer, kv => Assert.True(kv.Value > 0.9, $"layer {kv.Key}: {kv.Value:F2}"));

        var path = Path.Combine(TestModels.NewTempDir("trained-gates"), "gates.safetensors");
        result.Gates.Save(path);
        var loaded = ExitGates.Load(path);
        Assert.Equal(result.Gates.Gates.Select(g => g.W1), loaded.Gates.Select(g => g.W1));

        // In the engine, on the held-out prompts alone (no answer): image prompts exit after the designed
        // layer (the first whose branch keeps the answer), text-only prompts never consult the gates.
        var dir = GateTrainingFixture.ModelDir;
        var samples = GateSamples.Read(GateTrainingFixture.DataPath).ToDictionary(s => s.Line);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var tokenizer = Tokenizer.Load(dir);
        var clip = MultimodalPrompt.PreprocessingFor(dir, cfg, pad: false);
        var trainer = new GateTrainer(ds, SmallRun);
        int images = 0;
        foreach (int s in trainer.HeldOutSamples)
        {
            var sample = samples[ds.Lines[s]];
            List<ImageInput> pixels = sample.ImagePath is string p ? [MultimodalPrompt.LoadImage(p, clip, cfg)] : [];
            var prompt = GateDataset.BuildPrompt(cfg, tokenizer, dir, "llava", sample.Question, pixels);
            using var session = model.CreateSession();
            var r = session.Prefill(prompt, new PrefillOptions { Exit = ExitPolicy.FromGates(loaded) });
            if (pixels.Count == 0) Assert.Null(r.Report!.ExitLayer);
            else
            {
                Assert.True(GateTrainingFixture.ImageIrrelevantFrom == r.Report!.ExitLayer, $"line {sample.Line}: exit after {r.Report.ExitLayer} layers");
                images++;
            }
        }
        Assert.True(images >= 3, $"only {images} held-out image samples");
    }

    [Fact]
    public void ResumedRunEndsWithTheSameWeightsAndLogAsAnUninterruptedOne()
    {
        var ds = GateTrainingFixture.Dataset;
        var options = SmallRun with { Hidden = 12, Epochs = 4, CheckpointEvery = 4 };
        var dir = TestModels.NewTempDir("gate-resume");
        string Ckpt(string run) => Path.Combine(dir, $"{run}.ckpt");
        string Log(string run) => Path.Combine(dir, $"{run}.jsonl");

        GateTrainingResult whole;
        using (var log = GateTrainingLog.Open(Log("a"), null)) whole = new GateTrainer(ds, options).Run(Ckpt("a"), log, cancel: TestContext.Current.CancellationToken);

        using var cancel = new CancellationTokenSource();
        var first = new GateTrainer(ds, options);
        Assert.True(first.TotalSteps > 10, $"{first.TotalSteps} steps");
        using (var log = GateTrainingLog.Open(Log("b"), null))
            Assert.ThrowsAny<OperationCanceledException>(() => first.Run(Ckpt("b"), log, p => { if (p.Step == 10) cancel.Cancel(); }, cancel.Token));
        Assert.Equal(10, first.Step);

        var resumed = GateTrainer.Resume(ds, options, Ckpt("b"));
        Assert.Equal(8, resumed.Step);   // the last checkpoint before the interruption
        GateTrainingResult rest;
        using (var log = GateTrainingLog.Open(Log("b"), resumed.Step)) rest = resumed.Run(Ckpt("b"), log, cancel: TestContext.Current.CancellationToken);

        Assert.Equal(whole.Steps, rest.Steps);
        for (int g = 0; g < whole.Gates.Gates.Count; g++)
        {
            Assert.Equal(whole.Gates.Gates[g].W1, rest.Gates.Gates[g].W1);
            Assert.Equal(whole.Gates.Gates[g].W2, rest.Gates.Gates[g].W2);
        }
        Assert.Equal(File.ReadAllText(Log("a")), File.ReadAllText(Log("b")));
        Assert.NotEqual(whole.Gates.Gates[0].W1, new GateTrainer(ds, options).Gates().Gates[0].W1);   // training moved the weights

        var other = Assert.Throws<InvalidInputException>(() => GateTrainer.Resume(ds, options with { LearningRate = 0.5 }, Ckpt("b")));
        Assert.Contains("lr", other.Message);
        Assert.Equal(whole.Steps, GateTrainer.Resume(ds, options with { CheckpointEvery = 1 }, Ckpt("b")).Step);   // not part of the run's identity
    }

    [Fact]
    public void LearningRateWarmsUpLinearlyThenDecaysAlongACosine()
    {
        var t = new GateTrainer(GateTrainingFixture.Dataset, SmallRun with { Epochs = 10, WarmupFraction = 0.1, LearningRate = 2 });
        int total = t.TotalSteps, warm = (int)Math.Ceiling(0.1 * total);
        Assert.Equal(2.0 / warm, t.LearningRate(0), 12);
        Assert.Equal(2.0, t.LearningRate(warm - 1), 12);
        Assert.Equal(2.0, t.LearningRate(warm), 12);
        Assert.Equal(1.0, t.LearningRate(warm + (total - warm) / 2), 1);
        Assert.True(t.LearningRate(total - 1) < 0.01);
    }

    // ------------------------------------------------------------------ cache and data

    [Fact]
    public void FeatureCacheRoundTripsAndIsKeyedByTheFingerprint()
    {
        var ds = GateTrainingFixture.Dataset;
        var path = Path.Combine(TestModels.NewTempDir("gate-cache"), "gates.safetensors.features");
        ds.Save(path);
        var back = GateDataset.TryLoad(path, ds.Fingerprint)!;
        Assert.Equal(ds.Layers, back.Layers);
        Assert.Equal(ds.Lines, back.Lines);
        for (int s = 0; s < ds.Count; s++)
            for (int k = 0; k < ds.Layers.Count; k++)
            {
                Assert.Equal(ds.Feature(s, k).ToArray(), back.Feature(s, k).ToArray());
                Assert.Equal(ds.Label(s, k), back.Label(s, k));
                Assert.Equal(ds.Score(s, k), back.Score(s, k));
            }
        Assert.Null(GateDataset.TryLoad(path, "another"));
        File.WriteAllText(path, "not a cache");
        Assert.Null(GateDataset.TryLoad(path, ds.Fingerprint));

        var samples = GateSamples.Read(GateTrainingFixture.DataPath);
        string Key(GateDataOptions o) => GateDataset.ComputeFingerprint(GateTrainingFixture.ModelDir, GateTrainingFixture.DataPath, samples, o, 4);
        var baseKey = Key(new GateDataOptions());
        Assert.Equal(baseKey, Key(new GateDataOptions { Layers = [2, 1, 0] }));   // the same layers
        Assert.NotEqual(baseKey, Key(new GateDataOptions { Layers = [1, 2] }));
        Assert.NotEqual(baseKey, Key(new GateDataOptions { AppendEos = false }));
        Assert.NotEqual(baseKey, Key(new GateDataOptions { PromptStyle = "vicuna" }));
    }

    [Fact]
    public void SamplesResolveImagesAgainstTheDataFilesFolder()
    {
        var dir = TestModels.NewTempDir("gate-samples");
        Directory.CreateDirectory(Path.Combine(dir, "img"));
        File.WriteAllBytes(Path.Combine(dir, "img", "a.ppm"), [1]);
        var path = Path.Combine(dir, "d.jsonl");
        File.WriteAllText(path, "\n{\"image\": \"img/a.ppm\", \"question\": \"q1\", \"answer\": \"a1\", \"id\": 7}\n\n" +
            "{\"question\": \"q2\", \"answer\": \"a2\", \"image\": null}\n{\"question\": \"\", \"answer\": \"a3\"}\n");
        var s = GateSamples.Read(path);
        Assert.Equal([2, 4, 5], s.Select(x => x.Line));
        Assert.Equal(Path.Combine(dir, "img", "a.ppm"), s[0].ImagePath);
        Assert.Null(s[1].ImagePath);
        Assert.Equal(("q1", "a1"), (s[0].Question, s[0].Answer));
    }

    public static TheoryData<string, string> BadData => new()
    {
        { "{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": \"q\", \"answer\": }\n", "bad.jsonl:2: not valid JSON" },
        { "{\"question\": \"q\"}\n", "bad.jsonl:1: \"answer\" is missing or not a string" },
        { "\n{\"question\": 3, \"answer\": \"a\"}\n", "bad.jsonl:2: \"question\" is missing or not a string" },
        { "{\"question\": \"q\", \"answer\": \"  \"}\n", "bad.jsonl:1: \"answer\" is empty" },
        { "[\"q\", \"a\"]\n", "bad.jsonl:1: expected a JSON object" },
        { "{\"question\": \"q\", \"answer\": \"a\", \"image\": \"missing.png\"}\n", "bad.jsonl:1: image 'missing.png' does not exist" },
        { "{\"question\": \"q\", \"answer\": \"a\", \"image\": 5}\n", "bad.jsonl:1: \"image\" must be a file path" },
        { "\n   \n", "bad.jsonl: no samples" },
    };

    [Theory, MemberData(nameof(BadData))]
    public void BadDataLinesNameTheirLine(string content, string expected)
    {
        var path = Path.Combine(TestModels.NewTempDir("gate-bad"), "bad.jsonl");
        File.WriteAllText(path, content);
        var e = Assert.Throws<InvalidInputException>(() => GateSamples.Read(path));
        Assert.StartsWith(expected, e.Message);
    }

    [Fact]
    public void GateLayersOutsideTheModelAreRejected()
    {
        Assert.Equal([0, 1, 2], new GateDataOptions().ResolveLayers(4));
        Assert.Contains("outside 0..2", Assert.Throws<InvalidInputException>(() => new GateDataOptions { Layers = [1, 3] }.ResolveLayers(4)).Message);
        Assert.Throws<InvalidInputException>(() => new GateDataOptions { Layers = [] }.ResolveLayers(4));
    }
}
