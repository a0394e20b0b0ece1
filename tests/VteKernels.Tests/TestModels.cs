// Synthetic models written once per test run into a temporary folder and shared by the tests that read
// them (writing is deterministic, so sharing cannot couple tests).
using System.Collections.Concurrent;
using VteKernels.Backends.Cpu;
using VteKernels.Models;
using VteKernels.Synth;

namespace VteKernels.Tests;

internal static class TestModels
{
    private static readonly string Root = Path.Combine(Path.GetTempPath(), $"vte-tests-{Environment.ProcessId}");
    private static readonly ConcurrentDictionary<string, Lazy<string>> Dirs = new();

    static TestModels() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        try { if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    };

    /// <summary>
    /// A CPU backend that keeps the KV cache in float32 too, as the float32 references (HF run in float32, the
    /// float64 naive pass) do; a 16-bit model otherwise gets a 16-bit cache by default.
    /// </summary>
    public static CpuBackend Float32Cpu() => new(new CpuBackendOptions { KvCache = DType.F32 });

    /// <summary>The tiny preset written with <paramref name="dtype"/> and <paramref name="seed"/>.</summary>
    public static string Tiny(DType dtype = DType.F32, ulong seed = 0) => Custom(SynthPreset.Get("tiny"), dtype, seed);

    /// <summary>The config of <see cref="Tiny"/>.</summary>
    public static LlavaConfig Config() => LlavaConfig.Load(Path.Combine(Tiny(), "config.json"));

    /// <summary>Any preset or hand-made config, written once.</summary>
    public static string Custom(SynthPreset preset, DType dtype = DType.F32, ulong seed = 0, long maxShardBytes = SyntheticModel.DefaultMaxShardBytes)
    {
        var key = $"{preset.Name}-{dtype}-{seed}-{maxShardBytes}-{preset.Config.GetHashCode():X8}";
        return Dirs.GetOrAdd(key, k => new Lazy<string>(() =>
        {
            var dir = Path.Combine(Root, k);
            SyntheticModel.Write(preset, dir, seed, dtype, maxShardBytes: maxShardBytes);
            return dir;
        })).Value;
    }

    /// <summary>A fresh empty folder under the run's temporary root.</summary>
    public static string NewTempDir(string name)
    {
        var dir = Path.Combine(Root, "tmp", $"{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Copies a model folder so a test can damage the copy.</summary>
    public static string CopyOf(string modelDir)
    {
        var dst = NewTempDir(Path.GetFileName(modelDir));
        foreach (var f in Directory.GetFiles(modelDir)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    /// <summary>Seeded normal-ish pixels for an image of the config's size.</summary>
    public static float[] Pixels(LlavaConfig cfg, int seed)
    {
        var rng = new Random(seed);
        var px = new float[cfg.Vision.NumChannels * cfg.Vision.ImageSize * cfg.Vision.ImageSize];
        for (int i = 0; i < px.Length; i++) px[i] = (float)(rng.NextDouble() * 2 + rng.NextDouble() * 2 - 2);
        return px;
    }

    /// <summary>A prompt of random text ids around <paramref name="images"/> image spans.</summary>
    public static int[] PromptIds(LlavaConfig cfg, int seed, int images = 1, int prefix = 3, int between = 4, int suffix = 5)
    {
        var rng = new Random(seed);
        int Text() => rng.Next(3, cfg.ImageTokenIndex);
        var ids = new List<int> { cfg.Text.BosTokenId ?? 1 };
        for (int i = 1; i < prefix; i++) ids.Add(Text());
        for (int k = 0; k < images; k++)
        {
            ids.AddRange(Enumerable.Repeat(cfg.ImageTokenIndex, cfg.TokensPerImage));
            if (k + 1 < images) for (int i = 0; i < between; i++) ids.Add(Text());
        }
        for (int i = 0; i < suffix; i++) ids.Add(Text());
        return [.. ids];
    }
}
