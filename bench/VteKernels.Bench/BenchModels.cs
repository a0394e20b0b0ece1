// What the model-level CPU benchmarks share: the LLaVA-1.5-7B-shaped slice, LLaVA's prompt layout with
// seeded ids and pixels, medians, and writing the results.
using System.Text.Json;
using VteKernels.Engine;
using VteKernels.Models;
using VteKernels.Synth;

namespace VteKernels.Bench;

internal static class BenchModels
{
    /// <summary>Vicuna-7B's decoder layer shape with 4 layers, CLIP ViT-L/14-336's layer shape with 2 layers.</summary>
    public static SynthPreset SevenBSlice()
    {
        var seven = SynthPreset.Get("llava-1.5-7b").Config;
        return new SynthPreset("llava-1.5-7b-slice4", seven with
        {
            Vision = seven.Vision with { NumLayers = 2 },
            Text = seven.Text with { NumLayers = 4 },
        });
    }

    /// <summary>BOS, <paramref name="prefix"/> - 1 random ids, one image's placeholders, <paramref name="question"/> random ids; seeded pixels.</summary>
    public static (List<int> Ids, PromptInput Prompt) LlavaPrompt(LlavaConfig cfg, int prefix, int question)
    {
        var rng = new Random(1);
        var ids = new List<int> { 1 };
        ids.AddRange(Enumerable.Range(0, prefix - 1).Select(_ => rng.Next(3, Math.Min(cfg.Text.VocabSize, cfg.ImageTokenIndex))));
        ids.AddRange(Enumerable.Repeat(cfg.ImageTokenIndex, cfg.TokensPerImage));
        ids.AddRange(Enumerable.Range(0, question).Select(_ => rng.Next(3, Math.Min(cfg.Text.VocabSize, cfg.ImageTokenIndex))));
        var px = new float[3 * cfg.Vision.ImageSize * cfg.Vision.ImageSize];
        for (int i = 0; i < px.Length; i++) px[i] = (float)(rng.NextDouble() * 4 - 2);
        return (ids, new PromptInput([.. ids], [ImageInput.Square(px, cfg.Vision.ImageSize)]));
    }

    public static double Median(List<double> xs)
    {
        var s = xs.Order().ToArray();
        return s.Length == 0 ? double.NaN : s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>
    /// Writes <paramref name="body"/> as indented snake_case JSON after the fields every benchmark starts with:
    /// benchmark, machine, processor, threads, runtime, UTC date, quick.
    /// </summary>
    public static void WriteJson(string benchmark, bool quick, object body, string outPath)
    {
        var doc = new System.Text.Json.Nodes.JsonObject
        {
            ["benchmark"] = benchmark,
            ["machine"] = System.Environment.MachineName,
            ["processor"] = VteKernels.Backends.Cpu.CpuInfo.ProcessorName,
            ["threads"] = System.Environment.ProcessorCount,
            ["runtime"] = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
            ["quick"] = quick,
        };
        foreach (var (key, value) in JsonSerializer.SerializeToNode(body, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!.AsObject())
            doc[key] = value?.DeepClone();
        WriteJson(doc, outPath);
    }

    /// <summary>Writes <paramref name="doc"/> as indented snake_case JSON.</summary>
    public static void WriteJson(object doc, string outPath)
    {
        var full = Path.GetFullPath(outPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllText(full, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        Console.WriteLine($"wrote {outPath}");
    }
}
