// Gating of the tests that need a CUDA device. They carry [Trait("Category", "Gpu")] and call
// Gpu.Backend(...) (or Gpu.Require()) first, which skips the test with the reason when this machine has no
// usable device, so they count as skipped, never as passed. The kernel cache of a test run is one temporary
// folder, so each (kernel, dtype) is compiled once per run and the user's cache is left alone.
using Xunit;

namespace VteKernels.Cuda.Tests;

internal static class Gpu
{
    private static readonly Lazy<string?> Missing = new(() => CudaDevice.IsAvailable(out var reason) ? null : reason);

    public static readonly string KernelCacheDirectory = Path.Combine(Path.GetTempPath(), $"vte-cuda-tests-{Environment.ProcessId}", "kernels");

    /// <summary>Skips the calling test unless a CUDA device is usable.</summary>
    public static void Require()
    {
        if (Missing.Value is { } reason) Assert.Skip($"needs a CUDA GPU: {reason}");
    }

    /// <summary>True when a CUDA device is usable here.</summary>
    public static bool Present => Missing.Value is null;

    /// <summary>A backend computing in <paramref name="dtype"/> (skips without a GPU).</summary>
    public static CudaBackend Backend(DType dtype, bool useGemv = true)
    {
        Require();
        return new CudaBackend(new CudaBackendOptions { DType = dtype, UseGemv = useGemv, KernelCacheDirectory = KernelCacheDirectory });
    }

    /// <summary>Skips the calling test unless NVRTC loads here.</summary>
    public static void RequireNvrtc()
    {
        if (!Kernels.NvrtcCompiler.IsAvailable(out var reason)) Assert.Skip($"needs NVRTC: {reason}");
    }
}
