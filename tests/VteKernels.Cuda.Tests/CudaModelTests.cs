// GPU: the whole tiny synthetic LLaVA (CLIP tower, projector, GQA decoder; see TestModels and Synth) run by
// the unchanged orchestrator on the CUDA backend against the CPU backend: prefill logits and every hidden
// state, greedy decode steps, prefill + decode equal to one longer prefill (the device KV cache and the
// causal suffix mask), and decode steps that allocate no device memory once warm. F32 on the device must
// agree to float32 accumulation noise; bf16 and f16 carry a rounding at every op through 4 + 3 layers, so
// they are held to a share of the logit range and to the CPU's greedy choice where its top-2 margin is
// clear. Each case runs with the reference attention kernel and again with the fused kernels
// (CudaBackendOptions.FusedAttention) on a model they take: head dim 64 in both towers, 257 vision tokens,
// prompts past the 256 keys from which decode splits.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Tests;
using Xunit;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class CudaModelTests
{
    /// <summary>
    /// A small model whose attention the fused kernels take (the tiny preset's head dims, 16 and 32, are not
    /// among flash_attention's): head dim 64 in the vision tower (257 tokens at 224 px) and the language model
    /// (GQA 2:1), prompts of 264 tokens so that decode steps reach flash_decode.
    /// </summary>
    internal static readonly Synth.SynthPreset FusedPreset = new("tiny-fused", new Models.LlavaConfig(
        new Models.VisionConfig(128, 256, 2, 2, 224, 14, 3, 1e-5f, "quick_gelu"),
        new Models.TextConfig(128, 352, 3, 2, 1, 64, 512, 1e-5f, 10000f, 1024, "silu", false, 1, 2),
        ImageTokenIndex: 510, VisionFeatureLayers: [-2], VisionFeatureSelectStrategy: "default",
        ProjectorHiddenAct: "gelu", ProjectorBias: true, ImageSeqLength: 256));

    /// <summary>The model a case runs on: the tiny preset, or with the fused kernels the one they take.</summary>
    private static string Model(bool fused, DType stored = DType.F32, ulong seed = 0) =>
        fused ? TestModels.Custom(FusedPreset, stored, seed) : TestModels.Tiny(stored, seed);

    /// <summary>Largest |device − CPU| allowed, as a share of max |CPU logit|, per device type.</summary>
    private static double LogitTolerance(DType t) => t switch { DType.F32 => 2e-4, DType.F16 => 1e-2, _ => 5e-2 };

    private static (PromptInput Prompt, Models.LlavaConfig Config) Prompt(LlavaModel model, int seed)
    {
        var cfg = model.Config;
        var pixels = TestModels.Pixels(cfg, seed);
        return (new PromptInput(TestModels.PromptIds(cfg, seed), [ImageInput.Square(pixels, cfg.Vision.ImageSize)]), cfg);
    }

    private static void AssertLogitsClose(ReadOnlySpan<float> device, ReadOnlySpan<float> cpu, int vocab, DType t, string context)
    {
        double scale = DeviceTolerance.MaxAbs(cpu), maxErr = 0;
        int at = -1;
        for (int i = 0; i < cpu.Length; i++)
        {
            double e = Math.Abs(device[i] - cpu[i]);
            Assert.False(double.IsNaN(e), $"{context}: NaN at [{i}]");
            if (e > maxErr) { maxErr = e; at = i; }
        }
        Assert.True(maxErr <= LogitTolerance(t) * scale,
            $"{context} {t}: max |device − cpu| {maxErr:E3} at [{at}] (row {at / vocab}, token {at % vocab}) over {LogitTolerance(t)} × max |logit| {scale:E3}");
        for (int r = 0; r < cpu.Length / vocab; r++)
        {
            var c = cpu.Slice(r * vocab, vocab);
            int best = Sampler.ArgMax(c);
            float second = float.NegativeInfinity;
            for (int i = 0; i < vocab; i++) if (i != best) second = Math.Max(second, c[i]);
            if (c[best] - second > 4 * LogitTolerance(t) * scale)
                Assert.True(best == Sampler.ArgMax(device.Slice(r * vocab, vocab)), $"{context} {t}: row {r} greedy token differs from the CPU's ({best})");
        }
    }

    [Theory]
    [InlineData(DType.F32, 2, Engine.Exit.ExitKvMode.KeepEarly, false)]
    [InlineData(DType.F32, 1, Engine.Exit.ExitKvMode.DropAll, false)]
    [InlineData(DType.BF16, 3, Engine.Exit.ExitKvMode.KeepEarly, false)]
    [InlineData(DType.F32, 1, Engine.Exit.ExitKvMode.DropAll, true)]
    [InlineData(DType.BF16, 2, Engine.Exit.ExitKvMode.KeepEarly, true)]
    public void VisualTokenExitMatchesTheCpuBackendInPrefillAndDecode(DType device, int exitLayer, Engine.Exit.ExitKvMode mode, bool fused)
    {
        var dir = Model(fused);
        using var gpu = Gpu.Backend(device, fused: fused);
        using var cpuModel = LlavaModel.Load(dir, new CpuBackend());
        using var gpuModel = LlavaModel.Load(dir, gpu);
        var (prompt, cfg) = Prompt(cpuModel, 7);
        var options = new PrefillOptions { AllLogits = true, Exit = Engine.Exit.ExitPolicy.AtLayer(exitLayer), ExitKvMode = mode, Trace = true };
        using var cs = cpuModel.CreateSession();
        using var gs = gpuModel.CreateSession();
        var c = cs.Prefill(prompt, options);
        var g = gs.Prefill(prompt, options);
        Assert.Equal(c.Rows, g.Rows);
        Assert.Equal(c.Report!.KvLengths, g.Report!.KvLengths);
        AssertLogitsClose(g.Logits.Values, c.Logits.Values, cfg.Text.VocabSize, device, $"exit layer:{exitLayer} {mode} fused={fused}");
        for (int l = 0; l < exitLayer; l++)
            Assert.Equal(c.Report.Layers[l].VisualMass!.Value, g.Report.Layers[l].VisualMass!.Value, LogitTolerance(device));
        for (int step = 0; step < 3; step++)
            AssertLogitsClose(gs.Decode(11 + step).Logits.Values, cs.Decode(11 + step).Logits.Values, cfg.Text.VocabSize, device, $"decode {step} after exit");
    }

    [Theory]
    [InlineData(DType.F32, Engine.Eas.PiaMode.Explicit, false)]
    [InlineData(DType.BF16, Engine.Eas.PiaMode.Explicit, false)]
    [InlineData(DType.F32, Engine.Eas.PiaMode.Folded, false)]
    [InlineData(DType.BF16, Engine.Eas.PiaMode.Explicit, true)]
    [InlineData(DType.F32, Engine.Eas.PiaMode.Folded, true)]
    public void NaavitAndAttentionSkippingMatchTheCpuBackendInPrefillAndDecode(DType device, Engine.Eas.PiaMode mode, bool fused)
    {
        var dir = Model(fused);
        using var gpu = Gpu.Backend(device, fused: fused);
        using var cpuModel = LlavaModel.Load(dir, new CpuBackend());
        using var gpuModel = LlavaModel.Load(dir, gpu);
        var (prompt, cfg) = Prompt(cpuModel, 9);
        // Layer 1 and the last layer (3 of the tiny preset's 4, 2 of the fused preset's 3) skip attention.
        int[] skipped = [1, cfg.Text.NumLayers - 1];
        var eas = Synth.SyntheticEas.Adapters(cfg.Text, skipped, seed: 4, adapterDim: 16, replacedDim: 32);
        var session = new SessionOptions { Eas = eas, PiaMode = mode };
        var options = new PrefillOptions { AllLogits = true, Naavit = true, Trace = true };
        using var cs = cpuModel.CreateSession(session);
        using var gs = gpuModel.CreateSession(session);
        var c = cs.Prefill(prompt, options);
        var g = gs.Prefill(prompt, options);
        Assert.Equal(c.Rows, g.Rows);
        Assert.Equal(c.Report!.KvLengths, g.Report!.KvLengths);
        Assert.Equal(0, gs.Cache.Length(1));
        AssertLogitsClose(g.Logits.Values, c.Logits.Values, cfg.Text.VocabSize, device, $"naavit + skip {string.Join(',', skipped)} + PIA {mode}");
        for (int step = 0; step < 3; step++)
            AssertLogitsClose(gs.Decode(5 + step).Logits.Values, cs.Decode(5 + step).Logits.Values, cfg.Text.VocabSize, device, $"decode {step} with PIA {mode}");
    }

    [Theory]
    [InlineData(DType.F32, DType.F32, 1, false)]
    [InlineData(DType.F32, DType.BF16, 2, false)]
    [InlineData(DType.BF16, DType.BF16, 3, false)]
    [InlineData(DType.F16, DType.F16, 4, false)]
    [InlineData(DType.BF16, DType.BF16, 3, true)]
    [InlineData(DType.F16, DType.F16, 4, true)]
    public void PrefillMatchesTheCpuBackend(DType stored, DType device, int seed, bool fused)
    {
        var dir = Model(fused, stored, (ulong)seed);
        using var gpu = Gpu.Backend(device, fused: fused);
        using var cpuModel = LlavaModel.Load(dir, new CpuBackend());
        using var gpuModel = LlavaModel.Load(dir, gpu);
        var (prompt, cfg) = Prompt(cpuModel, seed);
        var options = new PrefillOptions { AllLogits = true, OutputHiddenStates = true };

        using var cs = cpuModel.CreateSession();
        using var gs = gpuModel.CreateSession();
        var c = cs.Prefill(prompt, options);
        var g = gs.Prefill(prompt, options);

        AssertLogitsClose(g.Logits.Values, c.Logits.Values, cfg.Text.VocabSize, device, $"prefill stored={stored} seed={seed} fused={fused}");
        Assert.Equal(c.HiddenStates!.Count, g.HiddenStates!.Count);
        for (int l = 0; l < c.HiddenStates.Count; l++)
        {
            double scale = DeviceTolerance.MaxAbs(c.HiddenStates[l]), err = 0;
            for (int i = 0; i < c.HiddenStates[l].Length; i++) err = Math.Max(err, Math.Abs(g.HiddenStates[l][i] - c.HiddenStates[l][i]));
            Assert.True(err <= LogitTolerance(device) * scale, $"hidden state {l}: max error {err:E3} over {LogitTolerance(device)} × {scale:E3} ({device})");
        }
    }

    [Theory]
    [InlineData(DType.F32, 5, false)]
    [InlineData(DType.BF16, 6, false)]
    [InlineData(DType.F32, 5, true)]
    [InlineData(DType.BF16, 6, true)]
    public void GreedyDecodeMatchesTheCpuBackend(DType device, int seed, bool fused)
    {
        var dir = Model(fused, DType.F32, (ulong)seed);
        using var gpu = Gpu.Backend(device, fused: fused);
        using var cpuModel = LlavaModel.Load(dir, new CpuBackend());
        using var gpuModel = LlavaModel.Load(dir, gpu);
        var (prompt, cfg) = Prompt(cpuModel, seed);
        using var cs = cpuModel.CreateSession();
        using var gs = gpuModel.CreateSession();
        var c = cs.Prefill(prompt);
        var g = gs.Prefill(prompt);
        for (int step = 0; step < 6; step++)
        {
            AssertLogitsClose(g.Logits.Last, c.Logits.Last, cfg.Text.VocabSize, device, $"decode step {step} seed={seed} fused={fused}");
            int next = Sampler.ArgMax(c.Logits.Last); // both continue with the CPU's token, so one early tie cannot derail the rest
            c = cs.Decode(next);
            g = gs.Decode(next);
        }
        Assert.Equal(cs.Cache.Length(0), gs.Cache.Length(0));
    }

    [Fact]
    public void PrefillThenDecodeEqualsOneLongerPrefill()
    {
        var dir = TestModels.Tiny(DType.F32, 7);
        using var gpu = Gpu.Backend(DType.F32);
        using var model = LlavaModel.Load(dir, gpu);
        var (prompt, cfg) = Prompt(model, 7);
        var ids = prompt.TokenIds;
        int extra = 3;
        var longer = ids.Concat(Enumerable.Range(0, extra).Select(i => 5 + i)).ToArray();

        using var one = model.CreateSession();
        var full = one.Prefill(new PromptInput(longer, prompt.Images), new PrefillOptions { AllLogits = true });
        using var steps = model.CreateSession();
        steps.Prefill(prompt);
        for (int i = 0; i < extra; i++)
        {
            var d = steps.Decode(longer[ids.Length + i]);
            var expected = full.Logits.Row(ids.Length + i);
            AssertLogitsClose(d.Logits.Last, expected, cfg.Text.VocabSize, DType.F32, $"decode {i} vs prefill row {ids.Length + i}");
        }
        Assert.True(steps.Cache.BytesHeld > 0);
    }

    [Fact]
    public void WarmDecodeStepsAllocateNoDeviceMemory()
    {
        var dir = TestModels.Tiny(DType.BF16, 8);
        using var gpu = Gpu.Backend(DType.BF16);
        using var model = LlavaModel.Load(dir, gpu);
        var (prompt, _) = Prompt(model, 8);
        using var s = model.CreateSession();
        var r = s.Prefill(prompt);
        for (int i = 0; i < 2; i++) r = s.Decode(Sampler.ArgMax(r.Logits.Last));
        var before = gpu.Pool.Stats;
        for (int i = 0; i < 5; i++) r = s.Decode(Sampler.ArgMax(r.Logits.Last));
        var after = gpu.Pool.Stats;
        Assert.Equal(before.DriverAllocations, after.DriverAllocations);
        Assert.True(after.Hits > before.Hits);
        Assert.Equal(before.Outstanding, after.Outstanding); // nothing leaks per step
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheModelRunsTheAttentionKernelsItWasAskedFor(bool fused)
    {
        var dir = Model(fused: true, DType.BF16);
        using var gpu = Gpu.Backend(DType.BF16, fused: fused);
        using var model = LlavaModel.Load(dir, gpu);
        var (prompt, _) = Prompt(model, 3);
        using var s = model.CreateSession();
        var r = s.Prefill(prompt);
        s.Decode(Sampler.ArgMax(r.Logits.Last));
        var files = gpu.LoadedKernelFiles;
        Assert.Equal(fused, files.Contains("flash_attention.cu"));
        Assert.Equal(fused, files.Contains("flash_decode.cu"));
        Assert.Equal(!fused, files.Contains("attention_reference.cu"));
    }

    [Fact]
    public void DeviceStringNamesTheGpuAndItsMemory()
    {
        using var gpu = Gpu.Backend(DType.BF16);
        Assert.Equal("cuda", gpu.Name);
        Assert.Contains(gpu.Info.Name, gpu.Device);
        Assert.Contains("GiB", gpu.Device);
        Assert.Matches(@"sm_\d+", gpu.Device);
    }
}
