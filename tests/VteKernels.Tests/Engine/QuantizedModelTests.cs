// Quantized models end to end: a model written by `vte quantize` computes exactly what quantizing at load
// computes (same blocks, same kernels), sharded checkpoints included; the exact prefill (which dequantizes
// the weights exactly and keeps x in float32) matches the float64 naive pass over the dequantized weights as
// closely as a float32 model matches it; the default prefill (x quantized per block, integer dot products)
// computes what feeding the prompt one token at a time through decode computes; and logits are bitwise the
// same on one thread and on all.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Formats;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Tests.Reference;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Engine;

public sealed class QuantizedModelTests(ITestOutputHelper output)
{
    private static (List<float[]> Logits, int[] Tokens) Run(LlavaModel model, int seed, int steps = 3)
    {
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, seed);
        var image = ImageInput.Square(TestModels.Pixels(cfg, seed), cfg.Vision.ImageSize);
        using var session = model.CreateSession();
        var step = session.Prefill(new PromptInput(ids, [image]), new PrefillOptions { AllLogits = true });
        var logits = new List<float[]> { step.Logits.Values };
        var tokens = new int[steps];
        for (int t = 0; t < steps; t++)
        {
            tokens[t] = Sampler.ArgMax(step.Logits.Last);
            step = session.Decode(tokens[t]);
            logits.Add(step.Logits.Last.ToArray());
        }
        return (logits, tokens);
    }

    private static void AssertBitwise(List<float[]> want, List<float[]> got, string what)
    {
        Assert.Equal(want.Count, got.Count);
        for (int s = 0; s < want.Count; s++)
            for (int i = 0; i < want[s].Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(want[s][i]) == BitConverter.SingleToInt32Bits(got[s][i]),
                    $"{what}: step {s} [{i}] {got[s][i]:R}, want {want[s][i]:R}");
    }

    [Theory]
    [InlineData("q8_0", false)]
    [InlineData("q4_0", true)]
    public void QuantizedFileComputesWhatQuantizingAtLoadComputes(string format, bool sharded)
    {
        var src = sharded ? TestModels.Custom(SynthPreset.Get("tiny"), DType.BF16, 4, maxShardBytes: 300_000) : TestModels.Tiny(DType.BF16, 4);
        var dst = TestModels.NewTempDir("quantized");
        var r = Vte("quantize", "-m", src, "--to", format, "--out", dst);
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(sharded, File.Exists(Path.Combine(dst, WeightStore.IndexFileName)));
        var type = DTypes.Parse(format);
        using var fromFile = LlavaModel.Load(dst, new CpuBackend());
        Assert.Equal(type, fromFile.Weights.Text.Layers[0].GateProj.DType);
        Assert.Equal(DType.BF16, fromFile.Weights.Vision.Layers[0].QWeight.DType);   // the tower stays as it was
        using var atLoad = LlavaModel.Load(src, new CpuBackend(new CpuBackendOptions { Quantize = type }));
        AssertBitwise(Run(atLoad, 4).Logits, Run(fromFile, 4).Logits, $"{format} file against quantizing at load");
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    public void PrefillMatchesTheFloat64PassOverTheDequantizedWeights(DType type)
    {
        // The reference reads a float32 copy of the quantized model: every quantized matrix dequantized.
        var src = TestModels.Tiny(DType.BF16, 6);
        var quantized = TestModels.NewTempDir("quantized-ref");
        Assert.Equal(0, Vte("quantize", "-m", src, "--to", type.Name(), "--out", quantized).Code);
        var dequantized = TestModels.NewTempDir("dequantized");
        foreach (var f in Directory.EnumerateFiles(quantized).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dequantized, Path.GetFileName(f)));
        using (var store = WeightStore.Open(quantized))
            SafetensorsWriter.Write(Path.Combine(dequantized, WeightStore.SingleFileName),
                store.Names.Select(n => new TensorSpec(n, DType.F32, [.. store.Get(n).Shape])).ToList(),
                (spec, s) => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(store.Get(spec.Name).ToFloatArray().AsSpan())));

        using var model = LlavaModel.Load(quantized, new CpuBackend(new CpuBackendOptions { KvCache = DType.F32, ExactQuantizedPrefill = true }));
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, 6);
        var px = TestModels.Pixels(cfg, 6);
        using var session = model.CreateSession();
        var r = session.Prefill(new PromptInput(ids, [ImageInput.Square(px, cfg.Vision.ImageSize)]), new PrefillOptions { AllLogits = true });
        var naive = new NaiveLlava(dequantized).Forward(ids, [px]);
        Tolerance.AssertCloseToScale(r.Logits.Values, naive.Logits, 2e-5, $"{type} prefill logits", output);
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    public void DefaultPrefillComputesWhatDecodeComputes(DType type)
    {
        // Text only, so that every prompt row can also go through Decode; 40 rows: two panels of the integer kernel.
        var dir = TestModels.Tiny(DType.BF16, 9);
        using var model = LlavaModel.Load(dir, new CpuBackend(new CpuBackendOptions { KvCache = DType.F32, Quantize = type }));
        using var exact = LlavaModel.Load(dir, new CpuBackend(new CpuBackendOptions { KvCache = DType.F32, Quantize = type, ExactQuantizedPrefill = true }));
        var rng = new Random(9);
        var ids = Enumerable.Range(0, 40).Select(_ => rng.Next(3, model.Config.ImageTokenIndex)).ToArray();
        float[] Prefill(LlavaModel m)
        {
            using var session = m.CreateSession();
            return session.Prefill(new PromptInput(ids, []), new PrefillOptions { AllLogits = true }).Logits.Values;
        }
        var prefill = Prefill(model);
        var stepwise = new List<float>();
        using (var session = model.CreateSession())
        {
            stepwise.AddRange(session.Prefill(new PromptInput(ids[..1], []), new PrefillOptions { AllLogits = true }).Logits.Values);
            foreach (var id in ids[1..]) stepwise.AddRange(session.Decode(id).Logits.Last.ToArray());
        }
        var reference = stepwise.Select(v => (double)v).ToArray();
        var exactLogits = Prefill(exact);
        double Diff(float[] a) => a.Zip(reference, (u, v) => Math.Abs(u - v)).Max();
        output.WriteLine($"{type}: max |prefill - decode| {Diff(prefill):E2}; exact prefill against decode {Diff(exactLogits):E2}");
        // The exact prefill differs from decode by x's quantization; the default one by rounding alone.
        Tolerance.AssertCloseToScale(prefill, reference, 1e-4, $"{type} prefill against decode, token by token", output);
        Assert.True(Diff(exactLogits) > 10 * Diff(prefill), "x's quantization should dominate the exact prefill's difference");
    }

    [Theory]
    [InlineData(DType.BF16, null)]
    [InlineData(DType.F16, null)]
    [InlineData(DType.BF16, DType.Q4_0)]
    [InlineData(DType.BF16, DType.Q8_0)]
    public void LogitsAreBitwiseTheSameOnOneThreadAndOnAll(DType weights, DType? quantize)
    {
        var dir = TestModels.Tiny(weights, 7);
        using var one = LlavaModel.Load(dir, new CpuBackend(new CpuBackendOptions { Threads = 1, Quantize = quantize }));
        using var all = LlavaModel.Load(dir, new CpuBackend(new CpuBackendOptions { Quantize = quantize }));
        AssertBitwise(Run(one, 7).Logits, Run(all, 7).Logits, $"{weights} {quantize}: 1 thread against all");
    }

    [Fact]
    public void HugePageCopiesComputeWhatTheMappedFileComputes()
    {
        var dir = TestModels.Tiny(DType.BF16, 8);
        using var copied = LlavaModel.Load(dir, new CpuBackend());
        using var mapped = LlavaModel.Load(dir, new CpuBackend(new CpuBackendOptions { HugePages = false }));
        AssertBitwise(Run(mapped, 8).Logits, Run(copied, 8).Logits, "huge-page copies against the mapped file");
    }
}
