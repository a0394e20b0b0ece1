// The gate of the GPU tests (Gpu.Require): without a usable device a test skips, saying why; with
// VTE_REQUIRE_GPU=1 (CI's emulator stage, a GPU host) it fails instead, so a driver, library or cuInit
// failure cannot pass as "0 failed, N skipped". Runs anywhere.
using Xunit;
using Xunit.Sdk;

namespace VteKernels.Cuda.Tests;

public sealed class GpuGateTests
{
    [Fact]
    public void WithoutADeviceAGpuTestSkipsWithTheReason()
    {
        var e = Assert.ThrowsAny<Exception>(() => Gpu.Decide("cuInit failed", required: false));
        Assert.IsType<SkipException>(e, exactMatch: false);
        Assert.Contains("cuInit failed", e.Message);
    }

    [Fact]
    public void WhenAGpuIsRequiredAMissingDeviceFails()
    {
        var e = Assert.ThrowsAny<Exception>(() => Gpu.Decide("cuInit failed", required: true));
        Assert.False(e is SkipException, "a required GPU that is missing must fail the test, not skip it");
        Assert.Contains(Gpu.RequireVariable, e.Message);
        Assert.Contains("cuInit failed", e.Message);
    }

    [Fact]
    public void WithADeviceTheGateLetsTheTestRun() => Gpu.Decide(null, required: true);
}
