// GPU: the driver-level pieces on a device: the caching pool serves repeats without cuMemAlloc, events
// time work, kernels compile once and then come from the cache, and running out of device memory is a
// CudaException. (CUDA graphs: CudaGraphTests.)
using Xunit;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class CudaDriverTests
{
    [Fact]
    public void PoolReusesBlocksOnTheDevice()
    {
        using var b = Gpu.Backend(DType.BF16);
        var start = b.Pool.Stats;
        for (int i = 0; i < 10; i++)
        {
            using var t = b.Allocate(640, 4096);
            using var u = b.Allocate(640, 11008);
        }
        var end = b.Pool.Stats;
        Assert.Equal(start.DriverAllocations + 2, end.DriverAllocations);
        Assert.Equal(start.Hits + 18, end.Hits);
        b.Pool.Trim();
        Assert.Equal(0, b.Pool.Stats.CachedBytes);
    }

    [Fact]
    public void EventsTimeQueuedWork()
    {
        using var b = Gpu.Backend(DType.BF16);
        using var x = b.Allocate(Gpu.Scaled(4096, 512), 4096);
        using var start = new CudaEvent(b.Context);
        using var end = new CudaEvent(b.Context);
        start.Record();
        for (int i = 0; i < 10; i++) b.Add(x, x, x);
        end.Record();
        float ms = CudaEvent.ElapsedMs(start, end);
        Assert.InRange(ms, 0.001f, 10_000f);
    }

    [Fact]
    public void KernelsCompileOnceThenComeFromTheCache()
    {
        Gpu.Require();
        var dir = Path.Combine(Path.GetTempPath(), $"vte-kernel-cache-{Guid.NewGuid():N}");
        try
        {
            using (var first = new CudaBackend(Gpu.Options(DType.F16) with { KernelCacheDirectory = dir }))
            {
                first.LoadKernels();
                Assert.Equal(Kernels.KernelCatalog.All.Count, first.KernelStats.Compiled);
            }
            using var second = new CudaBackend(Gpu.Options(DType.F16) with { KernelCacheDirectory = dir });
            second.LoadKernels();
            Assert.Equal(0, second.KernelStats.Compiled);
            Assert.Equal(Kernels.KernelCatalog.All.Count, second.KernelStats.CacheHits);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void DeviceMemoryRunsOutAsACudaException()
    {
        using var b = Gpu.Backend(DType.BF16);
        var e = Assert.Throws<CudaException>(() => b.Allocate(1 << 30, 1 << 20)); // 2 PiB
        Assert.True(e.IsOutOfMemory, e.Message);
        Assert.Equal("cuMemAlloc_v2", e.Api);
    }
}
