// Gating of the tests that need a CUDA device. They carry [Trait("Category", "Gpu")] and call
// Gpu.Backend(...) (or Gpu.Require()) first, which skips the test with the reason when this machine has no
// usable device, so they count as skipped, never as passed; with VTE_REQUIRE_GPU=1 (CI's emulator stage,
// a GPU host) a missing device is a failure instead, so a broken driver or library cannot read as
// "0 failed". The device may be the CPU emulator of CUDA (tools/cuda-emu): Emulated says so, Scaled picks
// a smaller size there for the few shapes too slow to emulate (never the odd sizes 1, 7, 577, 641, a dtype,
// a mask mode or a head dimension), and RequireRealGpu skips what only a GPU can show. The kernel cache of
// a test run is one temporary folder, so each (kernel, dtype) is compiled once per run and the user's cache
// is left alone. Variant (an async-local) swaps kernel sources for the broken-kernel tests.
using Xunit;

namespace VteKernels.Cuda.Tests;

internal static class Gpu
{
    /// <summary>Environment variable: when "1", a test that needs a GPU fails instead of skipping when none is usable.</summary>
    public const string RequireVariable = "VTE_REQUIRE_GPU";

    private static readonly Lazy<string?> Missing = new(() => CudaDevice.IsAvailable(out var reason) ? null : reason);
    private static readonly Lazy<bool> OnEmulator = new(() => Missing.Value is null && CudaDevice.Get(0).IsEmulator);
    private static readonly AsyncLocal<IReadOnlyDictionary<string, string>?> Sources = new();

    public static readonly string KernelCacheDirectory = Path.Combine(Path.GetTempPath(), $"vte-cuda-tests-{Environment.ProcessId}", "kernels");

    /// <summary>What a GPU test does: run, skip, or fail (with the message).</summary>
    internal enum Outcome { Run, Skip, Fail }

    /// <summary>Skips the calling test unless a CUDA device is usable (fails instead under VTE_REQUIRE_GPU=1).</summary>
    public static void Require()
    {
        var (outcome, message) = Decide(Missing.Value, Environment.GetEnvironmentVariable(RequireVariable) == "1");
        if (outcome == Outcome.Fail) Assert.Fail(message);
        if (outcome == Outcome.Skip) Assert.Skip(message);
    }

    /// <summary>What <see cref="Require"/> does when <paramref name="missing"/> says why no device is usable (null: one is).</summary>
    internal static (Outcome Outcome, string Message) Decide(string? missing, bool required) =>
        missing is null ? (Outcome.Run, "")
        : required ? (Outcome.Fail, $"{RequireVariable}=1 and no CUDA device is usable: {missing}")
        : (Outcome.Skip, $"needs a CUDA GPU: {missing}");

    /// <summary>True when a CUDA device is usable here.</summary>
    public static bool Present => Missing.Value is null;

    /// <summary>True when the device is the CPU emulator of CUDA.</summary>
    public static bool Emulated => OnEmulator.Value;

    /// <summary><paramref name="gpu"/> on a GPU, <paramref name="emulated"/> on the emulator (a size the emulator runs in seconds).</summary>
    public static int Scaled(int gpu, int emulated) => Emulated ? emulated : gpu;

    /// <summary>Skips the calling test on the emulator, saying why only a GPU can run it.</summary>
    public static void RequireRealGpu(string why)
    {
        Require();
        if (Emulated) Assert.Skip($"needs a real GPU, not the CPU emulator: {why}");
    }

    /// <summary>The kernel sources the backends made on this async flow compile instead of the shipped ones (null: the shipped ones).</summary>
    public static IReadOnlyDictionary<string, string>? Variant
    {
        get => Sources.Value;
        set => Sources.Value = value;
    }

    /// <summary>The options of a test backend computing in <paramref name="dtype"/>.</summary>
    public static CudaBackendOptions Options(DType dtype, bool useGemv = true, bool fused = false) => new()
    {
        DType = dtype, UseGemv = useGemv, FusedAttention = fused, KernelCacheDirectory = KernelCacheDirectory, KernelSourceOverrides = Variant,
    };

    /// <summary>A backend computing in <paramref name="dtype"/> (skips without a GPU).</summary>
    public static CudaBackend Backend(DType dtype, bool useGemv = true, bool fused = false)
    {
        Require();
        return new CudaBackend(Options(dtype, useGemv, fused));
    }

    /// <summary>Skips the calling test unless NVRTC loads here.</summary>
    public static void RequireNvrtc()
    {
        if (!Kernels.NvrtcCompiler.IsAvailable(out var reason)) Assert.Skip($"needs NVRTC: {reason}");
    }

    /// <summary>
    /// Skips the calling test unless a real NVRTC loads here (one that emits PTX and cubins): the CPU
    /// emulator's NVRTC builds C++ instead. CI compiles every kernel with the real NVRTC in the run without
    /// the emulator.
    /// </summary>
    public static void RequireRealNvrtc()
    {
        RequireNvrtc();
        if (Kernels.NvrtcCompiler.Instance.IsEmulator)
            Assert.Skip($"needs a real NVRTC to emit PTX; this one is the CPU emulator's ({Kernels.NvrtcCompiler.Instance.LoadedFrom})");
    }
}
