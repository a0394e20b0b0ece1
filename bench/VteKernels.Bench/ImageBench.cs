// `image`: decode and CLIP preprocessing times for a 1024x768 JPEG (4:2:0, q80) and PNG (RGB, noise-free
// content) from the test data, single-threaded. Before timing, each decode is checked against PIL's
// (SHA-256 from decode.json). Median of several runs after a warm-up.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- image [--quick] [--out bench/results/cpu-image.json]
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Encodings.Web;
using System.Text.Json;
using VteKernels.Backends.Cpu;
using VteKernels.Imaging;

namespace VteKernels.Bench;

internal static class ImageBench
{
    private const string DataDir = "tests/VteKernels.Tests/Data/images";

    private sealed record Row(string File, string Step, int Width, int Height, double MedianMs, double MinMs, int Samples, double MegapixelsPerSecond);

    public static int Run(bool quick, string outPath)
    {
        Console.WriteLine($"{CpuInfo.ProcessorName}, {RuntimeInformation.FrameworkDescription}, one thread");
        using var manifest = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(DataDir, "decode.json")));
        var rows = new List<Row>();
        foreach (var file in (string[])["scene_1024x768.jpg", "scene_1024x768.png"])
        {
            var bytes = File.ReadAllBytes(Path.Combine(DataDir, file));
            var image = ImageDecoder.Decode(bytes);
            var want = manifest.RootElement.GetProperty("images").EnumerateArray().Single(e => e.GetProperty("file").GetString() == file).GetProperty("sha256").GetString();
            if (Convert.ToHexStringLower(SHA256.HashData(image.Pixels)) != want)
            {
                Console.Error.WriteLine($"{file}: decode differs from PIL's; not timing a wrong answer");
                return 1;
            }
            rows.Add(Time(file, "decode", image, quick, () => ImageDecoder.Decode(bytes)));
            rows.Add(Time(file, "preprocess clip336", image, quick, () => ClipPreprocessor.Preprocess(image, ClipOptions.Clip336)));
            var pad = ClipOptions.Clip336 with { PadToSquare = true };
            rows.Add(Time(file, "preprocess llava-pad336", image, quick, () => ClipPreprocessor.Preprocess(image, pad)));
            rows.Add(Time(file, "decode + clip336", image, quick, () => ClipPreprocessor.Preprocess(ImageDecoder.Decode(bytes), ClipOptions.Clip336)));
        }
        Console.WriteLine("correctness: both decodes equal PIL's (SHA-256)");
        Console.WriteLine();
        Console.WriteLine($"{"file",-20} | {"step",-24} | {"ms",8} | {"MPix/s",7}");
        Console.WriteLine(new string('-', 68));
        foreach (var r in rows) Console.WriteLine($"{r.File,-20} | {r.Step,-24} | {r.MedianMs,8:F2} | {r.MegapixelsPerSecond,7:F1}");

        var dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        var doc = new
        {
            benchmark = "image decode and CLIP preprocessing (CPU, one thread)",
            date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            quick,
            note = "MPix/s counts input pixels (1024x768). Other processes may share the cores.",
            machine = new { processor = CpuInfo.ProcessorName, logicalCores = Environment.ProcessorCount, dotnet = RuntimeInformation.FrameworkDescription, os = RuntimeInformation.OSDescription },
            rows = rows.Select(r => new
            {
                file = r.File, step = r.Step, width = r.Width, height = r.Height, medianMs = Math.Round(r.MedianMs, 3),
                minMs = Math.Round(r.MinMs, 3), samples = r.Samples, megapixelsPerSecond = Math.Round(r.MegapixelsPerSecond, 1),
            }),
        };
        File.WriteAllText(outPath, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
        Console.WriteLine();
        Console.WriteLine($"wrote {outPath}");
        return 0;
    }

    private static Row Time(string file, string step, RgbImage image, bool quick, Action run)
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < 3 || sw.ElapsedMilliseconds < 300; i++) run();
        int samples = quick ? 5 : 15;
        var times = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            sw.Restart();
            run();
            times[s] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        double median = times[samples / 2];
        Console.WriteLine($"  {file} {step}: {median:F2} ms");
        return new Row(file, step, image.Width, image.Height, median, times[0], samples, image.Width * image.Height / 1e6 / (median / 1e3));
    }
}
