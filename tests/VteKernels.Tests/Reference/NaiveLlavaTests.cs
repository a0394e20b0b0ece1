// Checks the float64 reference LLaVA forward pass against HF transformers' own float32 outputs (the
// hf-llava-tiny fixtures): CLIP hidden states, projector output, decoder hidden states, logits and greedy
// decoding; plus its erf, its safetensors reader and both tensor naming layouts.
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace VteKernels.Tests.Reference;

public sealed class NaiveLlavaTests(ITestOutputHelper output)
{
    /// <summary>Relative agreement required with the float32 HF outputs.</summary>
    private const double Tolerance = 1e-4;

    private sealed record CaseRun(NaiveLlava Model, int[] Ids, float[] Pixels, NaiveLlava.Result Result);

    private static readonly ConcurrentDictionary<string, Lazy<CaseRun>> Runs = new();

    private static CaseRun Run(string name) => Runs.GetOrAdd(name, n => new Lazy<CaseRun>(() =>
    {
        var dir = FixturePaths.Case(n);
        var model = new NaiveLlava(Path.Combine(dir, "model"));
        var ids = FixturePaths.ReadIds(Path.Combine(dir, "input_ids.txt"));
        var (pixels, shape) = NaiveNpy.Read(Path.Combine(dir, "pixels.npy"));
        Assert.Equal([1, model.Config.Vision.NumChannels, model.Config.Vision.ImageSize, model.Config.Vision.ImageSize], shape);
        return new CaseRun(model, ids, pixels, model.Forward(ids, [pixels]));
    })).Value;

    /// <summary>Asserts max |got - want| &lt;= Tolerance * max(1, max |want|) and logs both numbers.</summary>
    private void AssertClose(string what, double[] got, float[] want)
    {
        Assert.Equal(want.Length, got.Length);
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < got.Length; i++)
        {
            Assert.False(double.IsNaN(got[i]), $"{what}: NaN at {i}");
            maxDiff = Math.Max(maxDiff, Math.Abs(got[i] - want[i]));
            maxRef = Math.Max(maxRef, Math.Abs((double)want[i]));
        }
        double bound = Tolerance * Math.Max(1, maxRef);
        output.WriteLine($"{what}: max |diff| = {maxDiff:E3}, max |ref| = {maxRef:F4}, bound {bound:E2}");
        Assert.True(maxDiff <= bound, $"{what}: max |diff| {maxDiff:E3} exceeds {bound:E3} (max |ref| {maxRef})");
    }

    [Theory]
    [InlineData("basic")]
    [InlineData("gqa-minimal-bf16")]
    public void VisionHiddenStatesMatchHf(string name)
    {
        var run = Run(name);
        var states = run.Model.VisionHiddenStates(run.Pixels);
        Assert.Equal(run.Model.Config.Vision.NumLayers + 1, states.Length);
        for (int i = 0; i < states.Length; i++)
        {
            var (want, _) = NaiveNpy.Read(Path.Combine(FixturePaths.Case(name), "intermediates", $"vision_hidden_{i:D2}.npy"));
            AssertClose($"{name} vision_hidden_{i:D2}", states[i], want);
        }
    }

    [Theory]
    [InlineData("basic")]
    [InlineData("gqa-minimal-bf16")]
    public void ImageFeaturesMatchHf(string name)
    {
        var run = Run(name);
        var (want, shape) = NaiveNpy.Read(Path.Combine(FixturePaths.Case(name), "intermediates", "image_features.npy"));
        Assert.Equal(run.Model.Config.TokensPerImage * run.Model.Config.Text.HiddenSize, want.Length);
        output.WriteLine($"image_features shape [{string.Join(",", shape)}]");
        AssertClose($"{name} image_features", run.Model.ImageFeatures(run.Pixels), want);
        AssertClose($"{name} image_features (in Forward)", run.Result.ImageFeatures, want);
    }

    [Theory]
    [InlineData("basic")]
    [InlineData("gqa-minimal-bf16")]
    public void TextHiddenStatesMatchHf(string name)
    {
        var run = Run(name);
        var hidden = run.Result.HiddenStates;
        Assert.Equal(run.Model.Config.Text.NumLayers + 1, hidden.Length);
        var dir = Path.Combine(FixturePaths.Case(name), "intermediates");
        Assert.False(File.Exists(Path.Combine(dir, $"text_hidden_{hidden.Length:D2}.npy")), "fixture has more text hidden states than layers + 1");
        for (int i = 0; i < hidden.Length; i++)
        {
            var (want, _) = NaiveNpy.Read(Path.Combine(dir, $"text_hidden_{i:D2}.npy"));
            AssertClose($"{name} text_hidden_{i:D2}", hidden[i], want);
        }
    }

    [Theory]
    [InlineData("basic")]
    [InlineData("gqa-minimal-bf16")]
    public void LogitsMatchHf(string name)
    {
        var run = Run(name);
        var (want, shape) = NaiveNpy.Read(Path.Combine(FixturePaths.Case(name), "logits.npy"));
        Assert.Equal(run.Ids.Length * run.Model.Config.Text.VocabSize, want.Length);
        output.WriteLine($"logits shape [{string.Join(",", shape)}]");
        AssertClose($"{name} logits", run.Result.Logits, want);
    }

    [Theory]
    [InlineData("basic")]
    [InlineData("gqa-minimal-bf16")]
    public void GreedyDecodingWithoutCacheMatchesHf(string name)
    {
        var run = Run(name);
        var want = FixturePaths.ReadIds(Path.Combine(FixturePaths.Case(name), "greedy8.txt"));
        Assert.Equal(8, want.Length);
        int vocab = run.Model.Config.Text.VocabSize;
        var ids = run.Ids.ToList();
        var got = new List<int>();
        var margins = new List<double>();
        for (int step = 0; step < want.Length; step++)
        {
            var logits = run.Model.Forward(ids.ToArray(), [run.Pixels]).Logits;
            int row = (ids.Count - 1) * vocab, best = 0;
            for (int v = 1; v < vocab; v++) if (logits[row + v] > logits[row + best]) best = v;
            double second = double.NegativeInfinity;
            for (int v = 0; v < vocab; v++) if (v != best) second = Math.Max(second, logits[row + v]);
            margins.Add(logits[row + best] - second);
            got.Add(best);
            ids.Add(best);
        }
        output.WriteLine($"{name} greedy: {string.Join(",", got)}; top-1 margins {string.Join(", ", margins.Select(m => m.ToString("E2")))}");
        Assert.Equal(want, got.ToArray());
    }

    [Theory]
    [InlineData(0.0, 0.0)]
    [InlineData(1e-10, 1.1283791670955126e-10)]
    [InlineData(0.1, 0.1124629160182849)]
    [InlineData(0.5, 0.5204998778130465)]
    [InlineData(1.0, 0.8427007929497149)]
    [InlineData(2.0, 0.9953222650189527)]
    [InlineData(2.9, 0.9999589021219005)]
    [InlineData(3.0, 0.9999779095030014)]
    [InlineData(3.5, 0.9999992569016276)]
    [InlineData(5.0, 0.9999999999984626)]
    [InlineData(-1.5, -0.9661051464753108)]
    [InlineData(7.0, 1.0)]
    public void ErfIsAccurate(double x, double want)
    {
        Assert.True(Math.Abs(NaiveLlava.Erf(x) - want) <= 2e-16 + 2e-15 * Math.Abs(want),
            $"erf({x}) = {NaiveLlava.Erf(x):R}, expected {want:R}");
    }

    [Fact]
    public void SafetensorsReaderWidensF32F16AndBf16()
    {
        var path = Path.Combine(Path.GetTempPath(), $"naive-st-{Guid.NewGuid():N}.safetensors");
        try
        {
            var f32 = new[] { 1.5f, -2.25f, 1e-3f };
            var f16 = new[] { (Half)0.5, (Half)(-3.0), (Half)65504 };
            var bf16 = new[] { 1.0f, -0.15625f, 3.0e38f }; // the last one loses mantissa bits when truncated to bfloat16
            var blobs = new List<(string Name, string DType, int[] Shape, byte[] Data)>
            {
                ("a", "F32", [3], f32.SelectMany(v => BitConverter.GetBytes(v)).ToArray()),
                ("b", "F16", [1, 3], f16.SelectMany(v => BitConverter.GetBytes(v)).ToArray()),
                ("c", "BF16", [3, 1], bf16.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >> 16))).ToArray()),
            };
            WriteSafetensors(path, blobs);
            var st = NaiveSafetensors.Read(path);
            Assert.Equal(f32.Select(v => (double)v), st.Get("a").Data);
            Assert.Equal(f16.Select(v => (double)v), st.Get("b").Data);
            Assert.Equal([1, 3], st.Get("b").Shape);
            var truncated = bf16.Select(v => (double)BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & unchecked((int)0xFFFF0000)));
            Assert.Equal(truncated, st.Get("c").Data);
            Assert.Equal(1.0, st.Get("c").Data[0]);
            Assert.Equal(-0.15625, st.Get("c").Data[1]);
            Assert.False(st.Has("d"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TransformersV5NamesAndTiedEmbeddingsGiveTheSameModel()
    {
        var src = Path.Combine(FixturePaths.Case("basic"), "model");
        var original = NaiveSafetensors.Read(Path.Combine(src, "model.safetensors"));
        var run = Run("basic");
        var tmp = Path.Combine(Path.GetTempPath(), $"naive-v5-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            // Same weights under transformers 5.x names: results must be bit-identical.
            static string Rename(string n) =>
                n.StartsWith("language_model.model.", StringComparison.Ordinal) ? "model.language_model." + n["language_model.model.".Length..]
                : n == "language_model.lm_head.weight" ? "lm_head.weight"
                : "model." + n;
            WriteSafetensors(Path.Combine(tmp, "model.safetensors"),
                original.Names.Select(n => (Rename(n), "F32", original.Get(n).Shape, ToF32(original.Get(n).Data))).ToList());
            File.Copy(Path.Combine(src, "config.json"), Path.Combine(tmp, "config.json"));
            var v5 = new NaiveLlava(tmp).Forward(run.Ids, [run.Pixels]);
            Assert.Equal(run.Result.Logits, v5.Logits);

            // No lm_head and tie_word_embeddings: logits = final hidden state x embed_tokens^T.
            WriteSafetensors(Path.Combine(tmp, "model.safetensors"),
                original.Names.Where(n => !n.Contains("lm_head", StringComparison.Ordinal))
                    .Select(n => (Rename(n), "F32", original.Get(n).Shape, ToF32(original.Get(n).Data))).ToList());
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
            cfg["text_config"]!["tie_word_embeddings"] = true;
            File.WriteAllText(Path.Combine(tmp, "config.json"), cfg.ToJsonString());
            var tied = new NaiveLlava(tmp).Forward(run.Ids, [run.Pixels]);
            var embed = original.Get("language_model.model.embed_tokens.weight").Data;
            var last = tied.HiddenStates[^1];
            int d = run.Model.Config.Text.HiddenSize, vocab = run.Model.Config.Text.VocabSize;
            for (int i = 0; i < run.Ids.Length; i++)
                for (int v = 0; v < vocab; v++)
                {
                    double acc = 0;
                    for (int j = 0; j < d; j++) acc += last[i * d + j] * embed[v * d + j];
                    Assert.Equal(acc, tied.Logits[i * vocab + v]);
                }
        }
        finally
        {
            Directory.Delete(tmp, recursive: true);
        }
    }

    private static byte[] ToF32(double[] data)
    {
        var bytes = new byte[data.Length * 4];
        for (int i = 0; i < data.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), (float)data[i]);
        return bytes;
    }

    private static void WriteSafetensors(string path, IReadOnlyList<(string Name, string DType, int[] Shape, byte[] Data)> tensors)
    {
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        long offset = 0;
        foreach (var t in tensors)
        {
            header[t.Name] = new { dtype = t.DType, shape = t.Shape, data_offsets = new[] { offset, offset + t.Data.Length } };
            offset += t.Data.Length;
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var fs = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
        fs.Write(len);
        fs.Write(json);
        foreach (var t in tensors) fs.Write(t.Data);
    }
}
