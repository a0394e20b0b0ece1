// The gate of the GPU tests (Gpu.Require): without a usable device a test skips, saying why; with
// VTE_REQUIRE_GPU=1 (CI's emulator stage, a GPU host) it fails instead, so a driver, library or cuInit
// failure cannot pass as "0 failed, N skipped". Runs anywhere.
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class GpuGateTests
{
    [Fact]
    public void WithoutADeviceAGpuTestSkipsWithTheReason()
    {
        var (outcome, message) = Gpu.Decide("cuInit failed", required: false);
        Assert.Equal(Gpu.Outcome.Skip, outcome);
        Assert.Contains("cuInit failed", message);
    }

    [Fact]
    public void WhenAGpuIsRequiredAMissingDeviceFails()
    {
        var (outcome, message) = Gpu.Decide("cuInit failed", required: true);
        Assert.Equal(Gpu.Outcome.Fail, outcome);
        Assert.Contains(Gpu.RequireVariable, message);
        Assert.Contains("cuInit failed", message);
    }

    [Fact]
    public void WithADeviceTheGateLetsTheTestRun() => Assert.Equal(Gpu.Outcome.Run, Gpu.Decide(null, required: true).Outcome);
}
