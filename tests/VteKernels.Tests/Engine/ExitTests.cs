// Visual-token exit on the CPU backend against references that take a different code path: HF
// transformers' masked-attention outputs (fixtures logits_exit_layers{K}.npy) and the float64 naive
// forward pass run over the full sequence with visual keys masked out of every layer from K on. Also:
// cache lengths and bytes after the exit, the DyVTE gate decision against a router computed by hand, the
// attention-mass policy against probabilities from the naive pass, several images, and the report.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Tests.Reference;
using Xunit;

using static VteKernels.Tests.Reference.PromptRows;

namespace VteKernels.Tests.Engine;

public sealed class ExitTests(ITestOutputHelper output)
{
    private const double Rel = 2e-5;

    private void AssertClose(string what, ReadOnlySpan<float> got, ReadOnlySpan<double> want) =>
        Tolerance.AssertCloseToScale(got, want, Rel, what, output);

    // ------------------------------------------------------------------ HF transformers fixtures

    public static TheoryData<string, int> FixtureExitCases => new() { { "basic", 0 }, { "basic", 1 }, { "gqa-minimal-bf16", 0 }, { "gqa-minimal-bf16", 1 } };

    [Theory, MemberData(nameof(FixtureExitCases))]
    public void FixedExitMatchesHfMaskedReference(string name, int k)
    {
        var dir = FixturePaths.Case(name);
        using var model = LlavaModel.Load(Path.Combine(dir, "model"), TestModels.Float32Cpu());
        var cfg = model.Config;
        var ids = FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt"));
        var px = Npy.ReadFloat32(Path.Combine(dir, "pixels.npy"));
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, [ImageInput.Square(px.Data, cfg.Vision.ImageSize)]),
            new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(k) });
        var want = Npy.ReadFloat32(Path.Combine(dir, $"logits_exit_layers{k}.npy"));
        var visual = VisualMask(cfg, ids);
        Assert.Equal(Enumerable.Range(0, ids.Length).Where(i => !visual[i]), r.Rows);
        Assert.Equal(k, r.Report!.ExitLayer);
        AssertClose($"{name} exit layer:{k}", r.Logits.Values, want.Data.Select(x => (double)x).ToArray());
    }

    // ------------------------------------------------------------------ naive masked reference

    /// <summary>The naive pass with visual keys hidden from text queries in layers &gt;= k (and, when dropAll, from rows at or after dropFrom in every layer).</summary>
    private static NaiveLlava.Result Masked(NaiveLlava naive, int[] ids, IReadOnlyList<float[]> images, int k, int dropFrom = int.MaxValue)
    {
        var visual = VisualMask(naive.Config, ids);
        return naive.Forward(ids, images, (l, q, key) => !(visual[key] && !visual[q] && (l >= k || q >= dropFrom)), null);
    }

    public static TheoryData<int, int> SynthExitCases => new()
    {
        { 1, 0 }, { 1, 1 }, { 1, 2 }, { 1, 3 }, { 2, 0 }, { 2, 2 }, { 3, 1 },
    };

    [Theory, MemberData(nameof(SynthExitCases))]
    public void FixedExitMatchesNaiveMaskedReferenceInPrefillAndDecode(int images, int k)
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 10 + images * 7 + k, images: images, prefix: 3, between: 3, suffix: 6);
        var pixels = Enumerable.Range(0, images).Select(i => TestModels.Pixels(cfg, 100 + i)).ToList();
        var visual = VisualMask(cfg, ids);
        var textRows = Enumerable.Range(0, ids.Length).Where(i => !visual[i]).ToArray();

        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, pixels.Select(p => ImageInput.Square(p, cfg.Vision.ImageSize)).ToList()),
            new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(k) });
        Assert.Equal(textRows, r.Rows);
        var want = Masked(naive, ids, pixels, k);
        AssertClose($"prefill {images} image(s) layer:{k}", r.Logits.Values, SelectRows(want.Logits, cfg.Text.VocabSize, textRows));

        // Decode three tokens against the naive pass over the longer sequence, same mask.
        var seq = ids.ToList();
        for (int step = 0; step < 3; step++)
        {
            int next = 5 + 31 * step;
            seq.Add(next);
            var d = session.Decode(next);
            var full = Masked(naive, [.. seq], pixels, k);
            AssertClose($"decode step {step} layer:{k}", d.Logits.Values, SelectRows(full.Logits, cfg.Text.VocabSize, [seq.Count - 1]));
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(3)]
    public void DropAllModeMatchesNaiveAndFreesEveryLayersVisualCache(int k)
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 77, images: 2, between: 2);
        var pixels = new[] { TestModels.Pixels(cfg, 1), TestModels.Pixels(cfg, 2) };
        int n = ids.Length, visualRows = 2 * cfg.TokensPerImage;
        using var session = model.CreateSession();
        session.Prefill(new PromptInput(ids, pixels.Select(p => ImageInput.Square(p, cfg.Vision.ImageSize)).ToList()),
            new PrefillOptions { Exit = ExitPolicy.AtLayer(k), ExitKvMode = ExitKvMode.DropAll });
        for (int l = 0; l < cfg.Text.NumLayers; l++) Assert.Equal(n - visualRows, session.Cache.Length(l));
        // Physically compacted: the cache holds as many bytes as one that never saw the images.
        using (var textOnly = model.CreateSession())
        {
            textOnly.Prefill(PromptInput.TextOnly(ids.Where(id => id != cfg.ImageTokenIndex).ToArray()));
            Assert.Equal(textOnly.Cache.BytesHeld, session.Cache.BytesHeld);
        }

        var seq = ids.ToList();
        int next = 17;
        seq.Add(next);
        var step = session.Decode(next);
        // Decode rows see no visual key in any layer; prompt rows saw them in layers < k.
        var want = Masked(naive, [.. seq], pixels, k, dropFrom: n);
        AssertClose($"drop-all decode layer:{k}", step.Logits.Values, SelectRows(want.Logits, cfg.Text.VocabSize, [seq.Count - 1]));
    }

    [Fact]
    public void KeepModeCacheLengthsShrinkExactlyAfterTheExitLayer()
    {
        var dir = TestModels.Tiny();
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 5);
        int n = ids.Length, v = cfg.TokensPerImage, k = 2;
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, [ImageInput.Square(TestModels.Pixels(cfg, 3), cfg.Vision.ImageSize)]),
            new PrefillOptions { Exit = ExitPolicy.AtLayer(k) });
        var expect = Enumerable.Range(0, cfg.Text.NumLayers).Select(l => l < k ? n : n - v).ToArray();
        Assert.Equal(expect, Enumerable.Range(0, cfg.Text.NumLayers).Select(session.Cache.Length));
        Assert.Equal(expect, r.Report!.KvLengths);
        Assert.Equal(expect, r.Report.TokensPerLayer);
        Assert.Equal(expect.Sum(x => (long)x) * cfg.Text.KvDim * 2 * sizeof(float), r.Report.KvBytes);
        // Layers after the exit never held a visual row: their storage is below what a full row count needs.
        session.Decode(9);
        Assert.Equal(expect.Select(x => x + 1), Enumerable.Range(0, cfg.Text.NumLayers).Select(session.Cache.Length));
    }

    [Fact]
    public void ExitAtTheLastLayerEqualsNoExit()
    {
        var dir = TestModels.Tiny();
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 8);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 8), cfg.Vision.ImageSize);
        using var a = model.CreateSession();
        using var b = model.CreateSession();
        var full = a.Prefill(new PromptInput(ids, [image]), new PrefillOptions { AllLogits = true });
        var last = b.Prefill(new PromptInput(ids, [image]), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(cfg.Text.NumLayers) });
        Assert.Equal(full.Logits.Values, last.Logits.Values);
        Assert.Null(last.Report!.ExitLayer);
        Assert.Equal(full.Report!.Executed, last.Report.Executed);
        Assert.Equal(a.Decode(4).Logits.Values, b.Decode(4).Logits.Values);
    }

    [Fact]
    public void ExitBeyondTheModelDepthIsRejected()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        using var s = model.CreateSession();
        var e = Assert.Throws<InvalidInputException>(() => s.Prefill(
            new PromptInput(TestModels.PromptIds(cfg, 1), [ImageInput.Square(TestModels.Pixels(cfg, 1), cfg.Vision.ImageSize)]),
            new PrefillOptions { Exit = ExitPolicy.AtLayer(cfg.Text.NumLayers + 1) }));
        Assert.Contains("layer:5", e.Message);
        Assert.Equal(0, s.Position);
    }

    [Fact]
    public void TextOnlyPromptIgnoresTheExitPolicy()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        using var a = model.CreateSession();
        using var b = model.CreateSession();
        int[] ids = [1, 20, 30, 40];
        var r1 = a.Prefill(PromptInput.TextOnly(ids), new PrefillOptions { AllLogits = true });
        var r2 = b.Prefill(PromptInput.TextOnly(ids), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(0) });
        Assert.Equal(r1.Logits.Values, r2.Logits.Values);
        Assert.Null(r2.Report!.ExitLayer);
    }

    // ------------------------------------------------------------------ DyVTE gates

    /// <summary>Random gates for every layer, scaled so that logits are O(1).</summary>
    private static List<ExitGate> RandomGates(LlavaConfig cfg, int hidden, int seed)
    {
        var rng = new Random(seed);
        int d = cfg.Text.HiddenSize;
        float R(double scale) => (float)((rng.NextDouble() * 2 - 1) * scale);
        return Enumerable.Range(0, cfg.Text.NumLayers).Select(l => new ExitGate(l, d, hidden,
            Enumerable.Range(0, hidden * 2 * d).Select(_ => R(1 / Math.Sqrt(2 * d))).ToArray(),
            Enumerable.Range(0, 2 * hidden).Select(_ => R(1 / Math.Sqrt(hidden))).ToArray())).ToList();
    }

    /// <summary>The router by hand in float64: W2 · gelu(W1 · [mean(text after image, last excluded); last]).</summary>
    private static (double Stay, double Exit) HandRouter(ExitGate g, float[] hidden, int rows, int d, int textStart)
    {
        var feat = new double[2 * d];
        int count = rows - 1 - textStart;
        for (int r = textStart; r < rows - 1; r++)
            for (int j = 0; j < d; j++) feat[j] += hidden[r * d + j] / count;
        for (int j = 0; j < d; j++) feat[d + j] = hidden[(rows - 1) * d + j];
        var h = new double[g.Hidden];
        for (int i = 0; i < g.Hidden; i++)
        {
            double acc = 0;
            for (int j = 0; j < 2 * d; j++) acc += g.W1[i * 2 * d + j] * feat[j];
            h[i] = NaiveLlava.Gelu(acc);
        }
        double s0 = 0, s1 = 0;
        for (int i = 0; i < g.Hidden; i++) { s0 += g.W2[i] * h[i]; s1 += g.W2[g.Hidden + i] * h[i]; }
        return (s0, s1);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void GateExitFiresWhereTheHandComputedRouterSays(int wantExitAfter)
    {
        var dir = TestModels.Tiny();
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        int d = cfg.Text.HiddenSize;
        var ids = TestModels.PromptIds(cfg, seed: 21, suffix: 7);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 21), cfg.Vision.ImageSize);
        int textStart = Array.LastIndexOf(ids, cfg.ImageTokenIndex) + 1;

        // Hidden states of the full model: identical to the gate run's up to the exit.
        using var reference = model.CreateSession();
        var hs = reference.Prefill(new PromptInput(ids, [image]), new PrefillOptions { OutputHiddenStates = true }).HiddenStates!;

        // Orient each random gate (swap its two output rows if needed) so that layers before the wanted one
        // say "stay" and the wanted one says "exit", by the hand-computed router.
        var gates = RandomGates(cfg, hidden: 48, seed: wantExitAfter).Select(g =>
        {
            var (stay, exit) = HandRouter(g, hs[g.Layer + 1], ids.Length, d, textStart);
            bool wantExit = g.Layer == wantExitAfter - 1;
            if (wantExit != exit > stay)
                g = g with { W2 = [.. g.W2.AsSpan(g.Hidden).ToArray(), .. g.W2.AsSpan(0, g.Hidden).ToArray()] };
            return g;
        }).ToList();

        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, [image]), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.FromGates(new ExitGates(gates)) });
        Assert.Equal(wantExitAfter, r.Report!.ExitLayer);
        for (int l = 0; l < wantExitAfter; l++)
        {
            var trace = r.Report.Layers[l];
            var (stay, exit) = HandRouter(gates[l], hs[l + 1], ids.Length, d, textStart);
            Assert.NotNull(trace.GateLogits);
            Assert.Equal(stay, trace.GateLogits![0], 1e-4 * Math.Max(1, Math.Abs(stay)));
            Assert.Equal(exit, trace.GateLogits[1], 1e-4 * Math.Max(1, Math.Abs(exit)));
            Assert.Equal(l == wantExitAfter - 1, trace.ExitAfter);
        }
        Assert.All(r.Report.Layers.Skip(wantExitAfter), t => Assert.Null(t.GateLogits));

        // Same rows and logits as the fixed exit at that layer.
        using var fixedSession = model.CreateSession();
        var f = fixedSession.Prefill(new PromptInput(ids, [image]), new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(wantExitAfter) });
        Assert.Equal(f.Logits.Values, r.Logits.Values);
    }

    [Fact]
    public void GateCannotDecideWithoutTextBetweenImageAndLastToken()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 2, suffix: 1);   // image directly followed by the last token
        var gates = RandomGates(cfg, 16, 3).Select(g => g with { W2 = [.. Enumerable.Repeat(-1f, g.Hidden), .. Enumerable.Repeat(1f, g.Hidden)] }).ToList();
        using var s = model.CreateSession();
        var r = s.Prefill(new PromptInput(ids, [ImageInput.Square(TestModels.Pixels(cfg, 2), cfg.Vision.ImageSize)]),
            new PrefillOptions { Exit = ExitPolicy.FromGates(new ExitGates(gates)) });
        Assert.Null(r.Report!.ExitLayer);
        Assert.All(r.Report.Layers, t => Assert.Null(t.GateLogits));
    }

    [Fact]
    public void GateFilesRoundTripAndAcceptThePublicNames()
    {
        var cfg = LlavaConfig.Load(Path.Combine(TestModels.Tiny(), "config.json"));
        var gates = new ExitGates(RandomGates(cfg, 8, 4).Where(g => g.Layer != 1));
        var dir = TestModels.NewTempDir("gates");
        var ours = Path.Combine(dir, "ours.safetensors");
        gates.Save(ours);
        var back = ExitGates.Load(ours);
        Assert.Equal(gates.Gates.Select(g => g.Layer), back.Gates.Select(g => g.Layer));
        Assert.Null(back.ForLayer(1));
        Assert.Equal(gates.Gates[2].W1, back.Gates[2].W1);
        back.Validate(cfg);

        // The original checkpoints' names, bf16, inside a folder with other tensors.
        var orig = Path.Combine(dir, "orig");
        Directory.CreateDirectory(orig);
        var specs = new List<TensorSpec>();
        var data = new Dictionary<string, float[]>();
        foreach (var g in gates.Gates)
        {
            specs.Add(new TensorSpec($"model.visual_gates_router.{g.Layer}.w1.weight", DType.BF16, [g.Hidden, 2 * g.ModelDim]));
            specs.Add(new TensorSpec($"model.visual_gates_router.{g.Layer}.w2.weight", DType.BF16, [2, g.Hidden]));
            data[specs[^2].Name] = g.W1;
            data[specs[^1].Name] = g.W2;
        }
        specs.Add(new TensorSpec("model.norm.weight", DType.BF16, [cfg.Text.HiddenSize]));
        data["model.norm.weight"] = new float[cfg.Text.HiddenSize];
        SafetensorsWriter.Write(Path.Combine(orig, "model-00001-of-00001.safetensors"), specs, (spec, stream) =>
        {
            foreach (var x in data[spec.Name]) { ushort b = DTypes.ToBFloat16Bits(x); stream.WriteByte((byte)b); stream.WriteByte((byte)(b >> 8)); }
        });
        var loaded = ExitGates.Load(orig);
        Assert.Equal(gates.Gates.Select(g => g.Layer), loaded.Gates.Select(g => g.Layer));
        Assert.Equal(DTypes.FromBFloat16Bits(DTypes.ToBFloat16Bits(gates.Gates[0].W1[5])), loaded.Gates[0].W1[5]);
    }

    [Fact]
    public void BadGateFilesGiveTypedErrors()
    {
        var cfg = LlavaConfig.Load(Path.Combine(TestModels.Tiny(), "config.json"));
        var dir = TestModels.NewTempDir("badgates");
        void Write(string name, params (string Name, int[] Shape)[] tensors) =>
            SafetensorsWriter.Write(Path.Combine(dir, name), tensors.Select(t => new TensorSpec(t.Name, DType.F32, t.Shape)).ToList(),
                (spec, stream) => stream.Write(new byte[spec.ByteLength]));
        int d2 = 2 * cfg.Text.HiddenSize;
        Write("none.safetensors", ("model.norm.weight", [4]));
        Write("now2.safetensors", ("gates.0.w1.weight", [8, d2]));
        Write("badw2.safetensors", ("gates.0.w1.weight", [8, d2]), ("gates.0.w2.weight", [3, 8]));
        Write("odd.safetensors", ("gates.0.w1.weight", [8, 7]), ("gates.0.w2.weight", [2, 8]));
        Write("wrongd.safetensors", ("gates.0.w1.weight", [8, 20]), ("gates.0.w2.weight", [2, 8]));
        Write("deep.safetensors", ("gates.9.w1.weight", [8, d2]), ("gates.9.w2.weight", [2, 8]));
        Assert.Contains("no gate tensors", Assert.Throws<ModelFormatException>(() => ExitGates.Load(Path.Combine(dir, "none.safetensors"))).Message);
        Assert.Contains("no w2", Assert.Throws<ModelFormatException>(() => ExitGates.Load(Path.Combine(dir, "now2.safetensors"))).Message);
        Assert.Contains("expected [2, 8]", Assert.Throws<ModelFormatException>(() => ExitGates.Load(Path.Combine(dir, "badw2.safetensors"))).Message);
        Assert.Contains("even", Assert.Throws<ModelFormatException>(() => ExitGates.Load(Path.Combine(dir, "odd.safetensors"))).Message);
        Assert.Contains("hidden size", Assert.Throws<ModelFormatException>(() => ExitGates.Load(Path.Combine(dir, "wrongd.safetensors")).Validate(cfg)).Message);
        Assert.Contains("layer 9", Assert.Throws<ModelFormatException>(() => ExitGates.Load(Path.Combine(dir, "deep.safetensors")).Validate(cfg)).Message);
        Assert.Throws<ModelFormatException>(() => ExitGates.Load(Path.Combine(dir, "missing.safetensors")));
    }

    // ------------------------------------------------------------------ attention mass

    [Fact]
    public void TracedVisualMassMatchesTheNaiveAttentionProbabilities()
    {
        var dir = TestModels.Tiny();
        var naive = new NaiveLlava(dir);
        using var model = LlavaModel.Load(dir, new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 31, images: 2, between: 3, suffix: 4);
        var pixels = new[] { TestModels.Pixels(cfg, 5), TestModels.Pixels(cfg, 6) };
        var visual = VisualMask(cfg, ids);
        int firstImage = Array.IndexOf(ids, cfg.ImageTokenIndex);
        var text = Enumerable.Range(0, ids.Length).Where(i => i > firstImage && !visual[i]).ToHashSet();
        int heads = cfg.Text.NumHeads, layers = cfg.Text.NumLayers;
        var want = new double[layers, heads];
        naive.Forward(ids, pixels, null, (l, h, q, p) =>
        {
            if (!text.Contains(q)) return;
            double m = 0;
            for (int j = 0; j < p.Length; j++) if (visual[j]) m += p[j];
            want[l, h] += m / text.Count;
        });

        using var s = model.CreateSession();
        var r = s.Prefill(new PromptInput(ids, pixels.Select(p => ImageInput.Square(p, cfg.Vision.ImageSize)).ToList()), new PrefillOptions { Trace = true });
        for (int l = 0; l < layers; l++)
        {
            var t = r.Report!.Layers[l];
            for (int h = 0; h < heads; h++) Assert.Equal(want[l, h], t.VisualMassPerHead![h], 2e-5);
            double mean = Enumerable.Range(0, heads).Average(h => want[l, h]);
            Assert.Equal(mean, t.VisualMass!.Value, 2e-5);
            output.WriteLine($"layer {l}: visual mass {t.VisualMass:F4}");
        }
        Assert.Contains(r.Report!.Layers, t => t.VisualMass > 0.05);   // not a degenerate all-zero trace
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void AttentionMassPolicyExitsAfterMConsecutiveLayersBelowTheThreshold(int m)
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed: 4);
        var image = ImageInput.Square(TestModels.Pixels(cfg, 4), cfg.Vision.ImageSize);
        using var s = model.CreateSession();
        // Mass is always below 1 (the prefix keys take some): the exit fires after exactly m layers.
        var r = s.Prefill(new PromptInput(ids, [image]), new PrefillOptions { Exit = ExitPolicy.OnAttentionMass(1f, m) });
        Assert.Equal(m, r.Report!.ExitLayer);
        s.Reset();
        // A threshold between the measured masses: the exit follows the trace.
        var traced = s.Prefill(new PromptInput(ids, [image]), new PrefillOptions { Trace = true }).Report!.Layers;
        s.Reset();
        float tau = traced[1].VisualMass!.Value + 1e-6f;
        var r2 = s.Prefill(new PromptInput(ids, [image]), new PrefillOptions { Exit = ExitPolicy.OnAttentionMass(tau, 1) });
        int expect = Enumerable.Range(0, cfg.Text.NumLayers - 1).First(l => traced[l].VisualMass < tau) + 1;
        Assert.Equal(expect, r2.Report!.ExitLayer);
        s.Reset();
        Assert.Null(s.Prefill(new PromptInput(ids, [image]), new PrefillOptions { Exit = ExitPolicy.OnAttentionMass(0f, 1) }).Report!.ExitLayer);
    }

    // ------------------------------------------------------------------ reports and parsing

    [Fact]
    public void ReportCountsMultiplyAddsByTheDocumentedFormula()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var t = cfg.Text;
        var ids = TestModels.PromptIds(cfg, seed: 6);
        int n = ids.Length, v = cfg.TokensPerImage, k = 1;
        using var s = model.CreateSession();
        var r = s.Prefill(new PromptInput(ids, [ImageInput.Square(TestModels.Pixels(cfg, 6), cfg.Vision.ImageSize)]),
            new PrefillOptions { Exit = ExitPolicy.AtLayer(k) }).Report!;

        // By hand for the tiny preset.
        long d = t.HiddenSize, dv = cfg.Vision.HiddenSize, np = cfg.Vision.NumPositions;
        long Layer(long rows) => rows * d * (t.QDim + 2 * t.KvDim) + rows * t.QDim * d + 2 * (rows * (rows + 1) / 2) * t.HeadDim * t.NumHeads + 3 * rows * d * t.IntermediateSize;
        long vision = (long)cfg.Vision.NumPatches * 3 * cfg.Vision.PatchSize * cfg.Vision.PatchSize * dv
            + cfg.VisionLayersNeeded * (np * 4 * dv * dv + 2 * np * np * dv + 2 * np * dv * cfg.Vision.IntermediateSize)
            + v * (cfg.ProjectorInputSize * d + d * d);
        Assert.Equal(vision, r.Executed.Vision);
        Assert.Equal(vision, r.Full.Vision);
        Assert.Equal(k * Layer(n) + (t.NumLayers - k) * Layer(n - v), r.Executed.Decoder);
        Assert.Equal(t.NumLayers * Layer(n), r.Full.Decoder);
        Assert.Equal(d * t.VocabSize, r.Executed.Head);
        Assert.True(r.MacRatio < 1);
        Assert.Contains("exit after 1 of 4 layers", r.Summary());

        using var stream = new MemoryStream();
        r.WriteJson(stream);
        using var doc = System.Text.Json.JsonDocument.Parse(stream.ToArray());
        Assert.Equal(1, doc.RootElement.GetProperty("exit_layer").GetInt32());
        Assert.Equal(t.NumLayers, doc.RootElement.GetProperty("layers").GetArrayLength());
        Assert.True(doc.RootElement.GetProperty("layers")[0].GetProperty("exit_after").GetBoolean());
    }

    [Fact]
    public void LayerZeroSkipsTheVisionTower()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        using var s = model.CreateSession();
        var r = s.Prefill(new PromptInput(TestModels.PromptIds(cfg, 3), [ImageInput.Square(TestModels.Pixels(cfg, 3), cfg.Vision.ImageSize)]),
            new PrefillOptions { Exit = ExitPolicy.AtLayer(0) }).Report!;
        Assert.Equal(0, r.Executed.Vision);
        Assert.True(r.Full.Vision > 0);
        Assert.Equal(0, r.ExitLayer);
    }

    public static TheoryData<string, string> PolicyTexts => new()
    {
        { "none", "none" }, { "layer:0", "layer:0" }, { " layer:12 ", "layer:12" }, { "attn:0.1", "attn:0.1:1" }, { "attn:0.05:3", "attn:0.05:3" },
    };

    [Theory, MemberData(nameof(PolicyTexts))]
    public void PoliciesParse(string text, string canonical) =>
        Assert.Equal(canonical, ExitPolicy.Parse(text, _ => throw new InvalidOperationException()).ToString());

    [Theory]
    [InlineData("")]
    [InlineData("layer")]
    [InlineData("layer:-1")]
    [InlineData("layer:x")]
    [InlineData("attn")]
    [InlineData("attn:2")]
    [InlineData("attn:0.1:0")]
    [InlineData("attn:0.1:2:3")]
    [InlineData("gate:")]
    [InlineData("fast")]
    public void BadPoliciesAreRejected(string text) =>
        Assert.Throws<FormatException>(() => ExitPolicy.Parse(text, _ => throw new InvalidOperationException()));
}
