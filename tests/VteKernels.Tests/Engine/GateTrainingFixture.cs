// A model and a data set built so that the right gate labels are known in advance. The tiny synthetic model
// (4 decoder layers; images of 56 px, 16 image tokens, to keep the 1 + 3 prefills per sample cheap) is
// written and its attention output projections rewritten: o_proj is zero in layers
// >= ImageIrrelevantFrom, so masking the visual keys from there on changes nothing (exit branches of layers
// >= ImageIrrelevantFrom - 1 equal the full model: label 1), and multiplied by EarlyAttentionGain in layers
// 1 .. ImageIrrelevantFrom - 1, so the image's share of those layers' attention output dominates the text
// rows and masking it there flips answer argmaxes (label 0). Half the samples have no image; their labels are
// 1 at every layer, so a gate that ignored its input could not reach 90% at the early layers.
// Written once per test run and shared (writing is deterministic).
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Formats;
using VteKernels.Synth;
using VteKernels.Text;

namespace VteKernels.Tests.Engine;

internal static class GateTrainingFixture
{
    /// <summary>The first decoder layer whose attention output is zero.</summary>
    public const int ImageIrrelevantFrom = 3;

    /// <summary>Factor on o_proj of layers 1 .. ImageIrrelevantFrom - 1.</summary>
    public const float EarlyAttentionGain = 8f;

    /// <summary>Image side in pixels (the vision tower's input; the files are written at this size).</summary>
    public const int ImageSize = 56;

    /// <summary>Samples in the data file; even ones have an image.</summary>
    public const int SampleCount = 40;

    private static readonly string[] Nouns = ["car", "dog", "cat", "tree", "man", "woman", "table", "street", "sky", "water"];
    private static readonly string[] Colors = ["red", "blue", "green", "white", "black"];
    private static readonly string[] Fillers = ["the", "is", "on", "near", "left", "right", "front", "behind", "two", "small", "large"];

    private static readonly Lazy<(string Model, string Data)> Files = new(Write);
    private static readonly Lazy<GateDataset> Data = new(() => BuildDataset(new GateDataOptions()));

    public static string ModelDir => Files.Value.Model;

    public static string DataPath => Files.Value.Data;

    /// <summary>The features and labels of the data file on the model, with the default options (all layers but the last).</summary>
    public static GateDataset Dataset => Data.Value;

    public static GateDataset BuildDataset(GateDataOptions options)
    {
        using var model = LlavaModel.Load(ModelDir, new CpuBackend());
        return GateDataset.Build(model, Tokenizer.Load(ModelDir), ModelDir, GateSamples.Read(DataPath), options);
    }

    /// <summary>The label the construction promises for an image sample at <paramref name="layer"/>.</summary>
    public static int DesignedLabel(int layer, bool hasImage) => !hasImage || layer >= ImageIrrelevantFrom - 1 ? 1 : 0;

    private static (string, string) Write()
    {
        var tiny = SynthPreset.Get("tiny");
        var source = TestModels.Custom(tiny with
        {
            Name = "tiny-56px",
            Config = tiny.Config with { Vision = tiny.Config.Vision with { ImageSize = ImageSize }, ImageSeqLength = ImageSize / 14 * (ImageSize / 14) },
        });
        var model = TestModels.NewTempDir("gate-model");
        foreach (var f in Directory.GetFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        using (var st = SafetensorsFile.Open(Path.Combine(source, "model.safetensors")))
        {
            var specs = st.Entries.Select(e => new TensorSpec(e.Name, e.DType, e.Shape)).ToList();
            SafetensorsWriter.Write(Path.Combine(model, "model.safetensors"), specs, (spec, stream) =>
            {
                var values = st.GetWeight(spec.Name).ToFloatArray();
                if (OProjLayer(spec.Name) is int l)
                {
                    float gain = l >= ImageIrrelevantFrom ? 0f : l >= 1 ? EarlyAttentionGain : 1f;
                    for (int i = 0; i < values.Length; i++) values[i] *= gain;
                }
                stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
            }, st.Metadata.ToDictionary());
        }

        var data = TestModels.NewTempDir("gate-data");
        Directory.CreateDirectory(Path.Combine(data, "images"));
        var rng = new Random(7);
        string Pick(string[] words) => words[rng.Next(words.Length)];
        var lines = new StringBuilder();
        for (int i = 0; i < SampleCount; i++)
        {
            var noun = Pick(Nouns);
            var answer = string.Join(' ', new[] { Pick(Fillers), Pick(Colors), noun, Pick(Fillers), Pick(Fillers), Pick(Nouns) });
            var o = new JsonObject { ["question"] = $"what color is the {noun}", ["answer"] = answer };
            if (i % 2 == 0)
            {
                var name = $"images/{i:D3}.ppm";
                WritePpm(Path.Combine(data, name), ImageSize, seed: 1000 + i);
                o["image"] = name;
            }
            lines.Append(o.ToJsonString()).Append('\n');
        }
        var path = Path.Combine(data, "train.jsonl");
        File.WriteAllText(path, lines.ToString());
        return (model, path);
    }

    private static int? OProjLayer(string name)
    {
        const string Prefix = "language_model.model.layers.";
        if (!name.StartsWith(Prefix, StringComparison.Ordinal) || !name.EndsWith(".self_attn.o_proj.weight", StringComparison.Ordinal)) return null;
        return int.Parse(name[Prefix.Length..name.IndexOf('.', Prefix.Length)], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>A binary PPM of smooth random colour blobs.</summary>
    public static void WritePpm(string path, int size, int seed)
    {
        var rng = new Random(seed);
        var header = Encoding.ASCII.GetBytes($"P6\n{size} {size}\n255\n");
        var px = new byte[size * size * 3];
        double fx = 1 + rng.NextDouble() * 6, fy = 1 + rng.NextDouble() * 6;
        var phase = new[] { rng.NextDouble() * 6, rng.NextDouble() * 6, rng.NextDouble() * 6 };
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                for (int c = 0; c < 3; c++)
                {
                    double v = Math.Sin(fx * x / size * 6 + phase[c]) * Math.Cos(fy * y / size * 6 + c) + (rng.NextDouble() - 0.5) * 0.6;
                    px[(y * size + x) * 3 + c] = (byte)Math.Clamp(128 + 110 * v, 0, 255);
                }
        using var f = File.Create(path);
        f.Write(header);
        f.Write(px);
    }
}
