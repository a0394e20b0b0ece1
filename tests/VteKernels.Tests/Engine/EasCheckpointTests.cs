// EAS checkpoints: our vte-eas/1 format round-trips every value; the public release's layout (any name
// prefix, Conv1d [out, in, 1] weights, bf16, a folder holding a whole model in shards) loads to the same
// numbers as a float32 file; the skip list comes from the names, or from the caller where the file does not
// record it; every malformed file is a one-line ModelFormatException naming the file and the tensor; the
// layer-list syntax; the synthetic adapters the engine tests use.
using System.Runtime.InteropServices;
using VteKernels.Engine.Eas;
using VteKernels.Formats;
using VteKernels.Synth;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class EasCheckpointTests
{
    // Odd widths on purpose: d = 14 (7 per group), H = 6 before attention (3 per group), 10 in place of it (5).
    private const int Layers = 6, Dim = 14, AdapterDim = 6, ReplacedDim = 10;

    private static EasAdapters Small(ulong seed, params int[] skipped) =>
        SyntheticEas.Adapters(Layers, Dim, skipped, seed, AdapterDim, ReplacedDim);

    internal sealed record Tensor(string Name, int[] Shape, float[] Values);

    private static void Write(string file, IEnumerable<Tensor> tensors, DType dtype = DType.F32, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        SafetensorsWriter.Write(file, list.Select(t => new TensorSpec(t.Name, dtype, t.Shape)).ToList(), (spec, stream) =>
        {
            var bytes = new byte[spec.ByteLength];
            DTypes.FromFloat(list.First(t => t.Name == spec.Name).Values, dtype, bytes);
            stream.Write(bytes);
        }, metadata);
    }

    /// <summary>The tensors of a public-release checkpoint holding these adapters (one kind per layer, as fine-tuning leaves them).</summary>
    internal static List<Tensor> PublicTensors(EasAdapters eas, string prefix = "model.", bool convDims = true)
    {
        var list = new List<Tensor>();
        foreach (var a in eas.Adapters.Values.OrderBy(a => a.Layer))
        {
            var p = $"{prefix}layers.{a.Layer}.{(a.ReplacesAttention ? "replaced_adapter" : "adapter_attn")}.";
            int d = a.ModelDim, h = a.HiddenDim, hg = h / a.Groups;
            int[] Conv(int o, int i) => convDims ? [o, i, 1] : [o, i];
            list.Add(new(p + "conv_A.weight", Conv(h, d), a.A));
            list.Add(new(p + "conv_A.bias", [h], a.ABias));
            if (a.C is not null)
            {
                list.Add(new(p + "conv_C.weight", Conv(h, d), a.C));
                list.Add(new(p + "conv_C.bias", [h], a.CBias!));
            }
            list.Add(new(p + "conv_B.weight", Conv(d, hg), a.B));
            list.Add(new(p + "conv_B.bias", [d], a.BBias));
            list.Add(new(p + "conv_D.weight", Conv(d, hg), a.D));
            list.Add(new(p + "conv_D.bias", [d], a.DBias));
            list.Add(new(p + "expert_weights.weight", [2, d], a.Expert));
            if (a.ExpertBias is not null) list.Add(new(p + "expert_weights.bias", [2], a.ExpertBias));
        }
        return list;
    }

    private static float Bf16(float x) => DTypes.FromBFloat16Bits(DTypes.ToBFloat16Bits(x));

    private static float Rounded(float x, DType dtype) => dtype switch
    {
        DType.F32 => x,
        DType.F16 => (float)(Half)x,
        _ => Bf16(x),
    };

    /// <summary>Same layers, skip list, scalars and every value (after <paramref name="round"/>).</summary>
    private static void AssertSame(EasAdapters want, EasAdapters got, Func<float, float>? round = null)
    {
        round ??= x => x;
        Assert.Equal(want.SkippedLayers, got.SkippedLayers);
        Assert.Equal(want.Adapters.Keys.Order(), got.Adapters.Keys.Order());
        foreach (var (layer, w) in want.Adapters)
        {
            var g = got.Adapters[layer];
            Assert.Equal((w.Layer, w.ModelDim, w.HiddenDim, w.Groups, w.Scale, w.Temperature), (g.Layer, g.ModelDim, g.HiddenDim, g.Groups, g.Scale, g.Temperature));
            Same(w.A, g.A, "A");
            Same(w.ABias, g.ABias, "A bias");
            Same(w.C, g.C, "C");
            Same(w.CBias, g.CBias, "C bias");
            Same(w.B, g.B, "B");
            Same(w.BBias, g.BBias, "B bias");
            Same(w.D, g.D, "D");
            Same(w.DBias, g.DBias, "D bias");
            Same(w.Expert, g.Expert, "expert");
            Same(w.ExpertBias, g.ExpertBias, "expert bias");

            void Same(float[]? x, float[]? y, string what)
            {
                if (x is null || y is null)
                {
                    Assert.True(x is null && y is null, $"layer {layer} {what}: one side is missing");
                    return;
                }
                Assert.Equal(x.Length, y.Length);
                for (int i = 0; i < x.Length; i++)
                    if (round(x[i]) != y[i]) Assert.Fail($"layer {layer} {what}[{i}]: want {round(x[i])}, got {y[i]}");
            }
        }
    }

    private static ModelFormatException AssertBad(Func<EasAdapters> load, string file, string mentions)
    {
        var ex = Assert.Throws<ModelFormatException>(() => load());
        Assert.DoesNotContain('\n', ex.Message);
        Assert.Contains(Path.GetFileName(file), ex.Message);
        Assert.Contains(mentions, ex.Message);
        return ex;
    }

    // ------------------------------------------------------------------ our format

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void OurFormatRoundTripsEveryValue(DType dtype)
    {
        var random = Small(11, 1, 4, 5);
        // Per-layer scalars that differ from the file-wide ones go to scale.{l} / temperature.{l}.
        var eas = new EasAdapters(random.SkippedLayers, random.Adapters.Values.Select(a => a.Layer switch
        {
            2 => a with { Scale = 0.375f },
            4 => a with { Temperature = 3.25f },
            _ => a,
        }));
        var dir = TestModels.NewTempDir("eas-ours");
        var file = Path.Combine(dir, "adapters.safetensors");
        EasCheckpoint.Save(eas, file, dtype);
        var back = EasCheckpoint.Load(file);
        AssertSame(eas, back, x => Rounded(x, dtype));
        Assert.Equal(file, back.Source);
        Assert.Equal([1, 4, 5], back.SkippedLayers);
        Assert.Equal(0.375f, back.Adapters[2].Scale);
        Assert.Equal(3.25f, back.Adapters[4].Temperature);

        using var st = SafetensorsFile.Open(file);
        Assert.Equal("vte-eas/1", st.Metadata["format"]);
        Assert.Equal("1,4-5", st.Metadata["skipped_layers"]);
        Assert.Equal("0.375", st.Metadata["scale.2"]);
        Assert.False(st.Metadata.ContainsKey("scale.3"));
        Assert.Equal([ReplacedDim, Dim], st.GetEntry("eas.4.C").Shape);
        Assert.Equal([Dim, AdapterDim / 2], st.GetEntry("eas.0.B").Shape);
        Assert.False(st.Contains("eas.0.expert_bias"));
        Assert.True(st.Contains("eas.1.expert_bias"));
    }

    [Fact]
    public void SkipListsWithoutAdaptersRoundTrip()
    {
        var dir = TestModels.NewTempDir("eas-bare");
        foreach (int[] skipped in new[] { new[] { 7, 3, 4 }, Array.Empty<int>() })
        {
            var file = Path.Combine(dir, $"skip{skipped.Length}.safetensors");
            EasCheckpoint.Save(new EasAdapters(skipped), file);
            var back = EasCheckpoint.Load(file);
            Assert.Equal(skipped.Order(), back.SkippedLayers);
            Assert.Empty(back.Adapters);
        }
    }

    [Fact]
    public void SaveRefusesASkippedLayerWithoutAdapterNextToAdapters()
    {
        var some = Small(2, 1).Adapters.Values.Where(a => a.Layer <= 1);
        var eas = new EasAdapters([1, 3], some);
        Assert.Throws<ArgumentException>(() => EasCheckpoint.Save(eas, Path.Combine(TestModels.NewTempDir("eas-refuse"), "x.safetensors")));
    }

    [Fact]
    public void OurFormatTakesAMatchingSkipListFromTheCallerAndRefusesAnother()
    {
        var file = Path.Combine(TestModels.NewTempDir("eas-caller"), "a.safetensors");
        EasCheckpoint.Save(Small(4, 2, 3), file);
        Assert.Equal([2, 3], EasCheckpoint.Load(file, [3, 2]).SkippedLayers);
        AssertBad(() => EasCheckpoint.Load(file, [2, 3, 4]), file, "records skipped layers 2-3");
        AssertBad(() => EasCheckpoint.Load(file, [2, 2]), file, "twice");
    }

    /// <summary>A valid vte-eas/1 file's tensors and metadata, for damaging.</summary>
    private static (List<Tensor> Tensors, Dictionary<string, string> Metadata) OurParts()
    {
        var file = Path.Combine(TestModels.NewTempDir("eas-parts"), "ok.safetensors");
        EasCheckpoint.Save(Small(6, 1, 4), file);
        using var st = SafetensorsFile.Open(file);
        return (st.Entries.Select(e => new Tensor(e.Name, e.Shape, st.GetWeight(e.Name).ToFloatArray())).ToList(),
            st.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    [Theory]
    [InlineData("missing tensor", "eas.2.B")]
    [InlineData("D narrower than H / groups", "eas.0.D")]
    [InlineData("A bias disagrees with A's H", "eas.1.A_bias")]
    [InlineData("non-finite value", "eas.5.expert")]
    [InlineData("unexpected tensor", "eas.0.Q")]
    [InlineData("kept layer has C", "eas.1.C")]
    [InlineData("skipped layer lacks C", "eas.2.C")]
    [InlineData("skip list beyond the file's layers", "eas.9.C")]
    [InlineData("groups disagree with B", "eas.0.B")]
    [InlineData("NaN scale", "'scale'")]
    [InlineData("infinite scale", "'scale'")]
    [InlineData("zero per-layer temperature", "'temperature.3'")]
    [InlineData("unknown format", "vte-eas/2")]
    [InlineData("eas tensors without our format", "vte-eas/1")]
    [InlineData("unparsable skip list", "skipped_layers")]
    [InlineData("no groups", "'groups'")]
    public void MalformedOurFilesNameTheTensor(string damage, string mentions)
    {
        var (tensors, meta) = OurParts();
        void Replace(string name, int[] shape) =>
            tensors[tensors.FindIndex(t => t.Name == name)] = new Tensor(name, shape, new float[shape.Aggregate(1, (x, y) => x * y)]);
        switch (damage)
        {
            case "missing tensor": tensors.RemoveAll(t => t.Name == "eas.2.B"); break;
            case "D narrower than H / groups": Replace("eas.0.D", [Dim, 4]); break;
            case "A bias disagrees with A's H": Replace("eas.1.A_bias", [ReplacedDim - 1]); break;
            case "non-finite value": tensors.First(t => t.Name == "eas.5.expert").Values[1] = float.PositiveInfinity; break;
            case "unexpected tensor": tensors.Add(new("eas.0.Q", [2], [1, 2])); break;
            case "kept layer has C": meta["skipped_layers"] = "4"; break;
            case "skipped layer lacks C": meta["skipped_layers"] = "1,2,4"; break;
            case "skip list beyond the file's layers": meta["skipped_layers"] = "1,4,9"; break;
            case "groups disagree with B": meta["groups.0"] = "1"; break;
            case "NaN scale": meta["scale"] = "NaN"; break;
            case "infinite scale": meta["scale"] = "Infinity"; break;
            case "zero per-layer temperature": meta["temperature.3"] = "0"; break;
            case "unknown format": meta["format"] = "vte-eas/2"; break;
            case "eas tensors without our format": meta["format"] = "pt"; break;
            case "unparsable skip list": meta["skipped_layers"] = "1-x"; break;
            case "no groups": meta.Remove("groups"); break;
            default: throw new ArgumentOutOfRangeException(nameof(damage));
        }
        var file = Path.Combine(TestModels.NewTempDir("eas-bad"), "damaged.safetensors");
        Write(file, tensors, metadata: meta);
        AssertBad(() => EasCheckpoint.Load(file), file, mentions);
    }

    // ------------------------------------------------------------------ the public release's layout

    [Fact]
    public void PublicLayoutInBf16InAModelFolderLoadsAsFloat32Does()
    {
        var eas = Small(3, 2, 3, 5);
        var prefix = "base_model.model.model.";
        var tensors = PublicTensors(eas, prefix, convDims: true);
        // The rest of a checkpoint folder: model weights, the retrained projector, a kept layer's attention.
        tensors.Add(new(prefix + "norm.weight", [Dim], Enumerable.Repeat(1f, Dim).ToArray()));
        tensors.Add(new(prefix + "layers.0.self_attn.q_proj.weight", [Dim, Dim], new float[Dim * Dim]));
        tensors.Add(new(prefix + "layers.0.post_attention_layernorm.weight", [Dim], new float[Dim]));
        tensors.Add(new(prefix + "mm_projector.0.weight", [Dim, 7], new float[Dim * 7]));
        tensors.Add(new("base_model.model.lm_head.weight", [20, Dim], new float[20 * Dim]));
        var folder = TestModels.NewTempDir("eas-public");
        Write(Path.Combine(folder, "model-00001-of-00002.safetensors"), tensors.Where((_, i) => i % 2 == 0), DType.BF16, new Dictionary<string, string> { ["format"] = "pt" });
        Write(Path.Combine(folder, "model-00002-of-00002.safetensors"), tensors.Where((_, i) => i % 2 == 1), DType.BF16, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(folder, "config.json"), "{}");

        // The same adapters, rounded to bf16, stored as float32 matrices under the plain "model." prefix.
        var f32 = Path.Combine(TestModels.NewTempDir("eas-public-f32"), "adapters.safetensors");
        Write(f32, PublicTensors(eas, "model.", convDims: false).Select(t => t with { Values = t.Values.Select(Bf16).ToArray() }));

        var fromBf16 = EasCheckpoint.Load(folder);
        var fromF32 = EasCheckpoint.Load(f32);
        AssertSame(fromF32, fromBf16);
        AssertSame(eas, fromBf16, Bf16);
        Assert.Equal([2, 3, 5], fromBf16.SkippedLayers);
        Assert.All(fromBf16.Adapters.Values, a => Assert.Equal((1f, 10f, 2), (a.Scale, a.Temperature, a.Groups)));
        Assert.Null(fromBf16.Adapters[0].ExpertBias);
        Assert.NotNull(fromBf16.Adapters[2].ExpertBias);
        Assert.Equal(ReplacedDim, fromBf16.Adapters[3].HiddenDim);
        Assert.Equal(folder, fromBf16.Source);
    }

    [Fact]
    public void FineTunedLayoutAcceptsAMatchingSkipListAndRefusesOthers()
    {
        var file = Path.Combine(TestModels.NewTempDir("eas-ft"), "ft.safetensors");
        Write(file, PublicTensors(Small(8, 2, 3)));
        Assert.Equal([2, 3], EasCheckpoint.Load(file, [3, 2]).SkippedLayers);
        AssertBad(() => EasCheckpoint.Load(file, [2]), file, "model.layers.3.adapter_attn.conv_A.weight");
        AssertBad(() => EasCheckpoint.Load(file, [2, 3, 9]), file, "model.layers.9.replaced_adapter.conv_A.weight");
        AssertBad(() => EasCheckpoint.Load(file, [1, 2, 3]), file, "model.layers.1.replaced_adapter");
        AssertBad(() => EasCheckpoint.Load(file, [-1]), file, "negative");
    }

    [Fact]
    public void SearchStageLayoutNeedsTheSkipListFromTheCaller()
    {
        // Both adapters in every layer, as a --finetuning False run saves them.
        var kept = Small(21);
        var replaced = Small(22, Enumerable.Range(0, Layers).ToArray());
        var file = Path.Combine(TestModels.NewTempDir("eas-search"), "search.safetensors");
        Write(file, PublicTensors(kept).Concat(PublicTensors(replaced)), DType.F16);

        var ex = AssertBad(() => EasCheckpoint.Load(file), file, "--skip-attn");
        Assert.Contains("0-5", ex.Message);

        var eas = EasCheckpoint.Load(file, EasAdapters.ParseLayers("1,4"));
        Assert.Equal([1, 4], eas.SkippedLayers);
        var want = new EasAdapters([1, 4], Enumerable.Range(0, Layers).Select(l => l is 1 or 4 ? replaced.Adapters[l] : kept.Adapters[l]));
        AssertSame(want, eas, x => (float)(Half)x);
        AssertBad(() => EasCheckpoint.Load(file, [1, 6]), file, "model.layers.6.replaced_adapter.conv_A.weight");
    }

    [Theory]
    [InlineData("missing tensor", "model.layers.1.adapter_attn.conv_B.bias")]
    [InlineData("kernel of 2", "model.layers.0.adapter_attn.conv_A.weight")]
    [InlineData("B's width disagrees with A's H", "model.layers.2.replaced_adapter.conv_B.weight")]
    [InlineData("C's H disagrees with A's", "model.layers.3.replaced_adapter.conv_C.weight")]
    [InlineData("bias length", "model.layers.0.adapter_attn.conv_A.bias")]
    [InlineData("router shape", "model.layers.4.adapter_attn.expert_weights.weight")]
    [InlineData("hidden size differs across layers", "model.layers.5.adapter_attn.conv_A.weight")]
    [InlineData("conv_C in adapter_attn", "model.layers.0.adapter_attn.conv_C.weight")]
    [InlineData("unknown parameter", "model.layers.0.adapter_attn.conv_E.weight")]
    [InlineData("non-finite value", "model.layers.1.adapter_attn.conv_D.weight")]
    [InlineData("stored twice under two prefixes", "layers.0.adapter_attn.conv_A.weight")]
    public void MalformedPublicFilesNameTheTensor(string damage, string tensor)
    {
        var tensors = PublicTensors(Small(5, 2, 3));
        Tensor Find(string name) => tensors.First(t => t.Name == name);
        void Replace(string name, int[] shape) =>
            tensors[tensors.FindIndex(t => t.Name == name)] = new Tensor(name, shape, new float[shape.Aggregate(1, (x, y) => x * y)]);
        switch (damage)
        {
            case "missing tensor": tensors.RemoveAll(t => t.Name == tensor); break;
            case "kernel of 2": Replace(tensor, [AdapterDim, Dim, 2]); break;
            case "B's width disagrees with A's H": Replace(tensor, [Dim, ReplacedDim / 2 - 1, 1]); break;
            case "C's H disagrees with A's": Replace(tensor, [ReplacedDim - 1, Dim, 1]); break;
            case "bias length": Replace(tensor, [AdapterDim - 1]); break;
            case "router shape": Replace(tensor, [3, Dim]); break;
            case "hidden size differs across layers":
                var wider = PublicTensors(SyntheticEas.Adapters(Layers, Dim + 2, [2, 3], 5, AdapterDim, ReplacedDim));
                tensors.RemoveAll(t => t.Name.Contains(".layers.5.", StringComparison.Ordinal));
                tensors.AddRange(wider.Where(t => t.Name.Contains(".layers.5.", StringComparison.Ordinal)));
                break;
            case "conv_C in adapter_attn": tensors.Add(new(tensor, [AdapterDim, Dim, 1], new float[AdapterDim * Dim])); break;
            case "unknown parameter": tensors.Add(new(tensor, [AdapterDim, Dim, 1], new float[AdapterDim * Dim])); break;
            case "non-finite value": Find(tensor).Values[3] = float.NaN; break;
            case "stored twice under two prefixes": tensors.Add(Find("model." + tensor) with { Name = "base_model.model.model." + tensor }); break;
            default: throw new ArgumentOutOfRangeException(nameof(damage));
        }
        var file = Path.Combine(TestModels.NewTempDir("eas-public-bad"), "damaged.safetensors");
        Write(file, tensors, DType.BF16);
        var ex = AssertBad(() => EasCheckpoint.Load(file), file, tensor);
        Assert.NotNull(ex.TensorName);
    }

    // ------------------------------------------------------------------ files that are not checkpoints

    [Fact]
    public void PyTorchFilesAskForConversion()
    {
        var dir = TestModels.NewTempDir("eas-bin");
        var bin = Path.Combine(dir, "pytorch_model-00001-of-00002.bin");
        File.WriteAllBytes(bin, [.. "PK\x03\x04"u8, 0, 0, 0, 0]);
        AssertBad(() => EasCheckpoint.Load(bin), bin, "tools/convert/bin_to_safetensors.py");
        AssertBad(() => EasCheckpoint.Load(dir), dir, "tools/convert/bin_to_safetensors.py");
        var disguised = Path.Combine(TestModels.NewTempDir("eas-zip"), "adapters.safetensors");
        File.Copy(bin, disguised);
        AssertBad(() => EasCheckpoint.Load(disguised), disguised, "bin_to_safetensors");
    }

    [Fact]
    public void MissingEmptyAndAdapterlessPathsAreFormatErrors()
    {
        var dir = TestModels.NewTempDir("eas-empty");
        AssertBad(() => EasCheckpoint.Load(Path.Combine(dir, "absent.safetensors")), "absent.safetensors", "does not exist");
        AssertBad(() => EasCheckpoint.Load(dir), dir, "no *.safetensors");
        var model = Path.Combine(dir, "model.safetensors");
        Write(model, [new("model.norm.weight", [4], [1, 2, 3, 4])], metadata: new Dictionary<string, string> { ["format"] = "pt" });
        AssertBad(() => EasCheckpoint.Load(model), model, "no EAS adapter tensors");
    }

    [Fact]
    public void OurFileNextToPublicAdaptersIsAmbiguous()
    {
        var dir = TestModels.NewTempDir("eas-mixed");
        EasCheckpoint.Save(Small(1, 2), Path.Combine(dir, "a.safetensors"));
        Write(Path.Combine(dir, "b.safetensors"), PublicTensors(Small(1, 2)));
        AssertBad(() => EasCheckpoint.Load(dir), "b.safetensors", "give one of them");
    }

    // ------------------------------------------------------------------ layer lists

    [Theory]
    [InlineData("20-31", "20,21,22,23,24,25,26,27,28,29,30,31", "20-31")]
    [InlineData("3,5,7-9", "3,5,7,8,9", "3,5,7-9")]
    [InlineData(" 9 , 1 - 2 ", "1,2,9", "1-2,9")]
    [InlineData("5,3,5,4", "3,4,5", "3-5")]
    [InlineData("7-7", "7", "7")]
    [InlineData("0", "0", "0")]
    public void LayerListsParseAndFormat(string text, string layers, string formatted)
    {
        var parsed = EasAdapters.ParseLayers(text);
        Assert.Equal(layers.Split(',').Select(int.Parse), parsed);
        Assert.Equal(formatted, EasAdapters.FormatLayers(parsed));
        Assert.Equal(parsed, EasAdapters.ParseLayers(EasAdapters.FormatLayers(parsed)));
    }

    [Theory]
    [InlineData("")]
    [InlineData(" ")]
    [InlineData("1,,2")]
    [InlineData("a")]
    [InlineData("-1")]
    [InlineData("1-")]
    [InlineData("5-3")]
    [InlineData("+3")]
    [InlineData("1.5")]
    [InlineData("99999999999")]
    public void BadLayerListsAreFormatErrors(string text) =>
        Assert.Throws<FormatException>(() => EasAdapters.ParseLayers(text));

    [Fact]
    public void AnEmptyLayerListFormatsAsNoneAndParsesBack()
    {
        Assert.Equal("none", EasAdapters.FormatLayers([]));
        Assert.Empty(EasAdapters.ParseLayers("none"));
    }

    // ------------------------------------------------------------------ synthetic adapters

    [Fact]
    public void SyntheticAdaptersAreSeededTrainedLookingAndOfTheRightKinds()
    {
        int d = 64, h = 32, hr = 48;
        var eas = SyntheticEas.Adapters(4, d, [1, 2], 7, h, hr);
        Assert.Equal([1, 2], eas.SkippedLayers);
        foreach (var a in eas.Adapters.Values)
        {
            bool skipped = a.Layer is 1 or 2;
            Assert.Equal(skipped, a.ReplacesAttention);
            Assert.Equal(skipped ? hr : h, a.HiddenDim);
            Assert.Equal(skipped, a.ExpertBias is not null);
            Assert.True(Rms(a.B) > 0 && Rms(a.D) > 0 && Rms(a.BBias) > 0, "B and D of a trained adapter are not zero");
            // xavier-uniform: std sqrt(2 / (fan_in + fan_out)).
            Assert.InRange(Rms(a.A) / MathF.Sqrt(2f / (d + a.HiddenDim)), 0.9f, 1.1f);
            Assert.InRange(Rms(a.B) / MathF.Sqrt(2f / (d + a.HiddenDim / 2)), 0.9f, 1.1f);
        }
        var again = SyntheticEas.Adapters(4, d, [1, 2], 7, h, hr);
        AssertSame(eas, again);
        var other = SyntheticEas.Adapters(4, d, [1, 2], 8, h, hr);
        Assert.NotEqual(eas.Adapters[0].A, other.Adapters[0].A);
        // A layer's adapter does not depend on the other layers' kinds.
        Assert.Equal(eas.Adapters[0].A, SyntheticEas.Adapters(4, d, [3], 7, h, hr).Adapters[0].A);

        static float Rms(float[] v) => MathF.Sqrt(v.Sum(x => x * x) / v.Length);
    }
}
