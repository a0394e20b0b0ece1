// GPU: the driver-level pieces on a real device: the caching pool serves repeats without cuMemAlloc, a
// captured CUDA graph replays kernels (the shape the decode step will take), events time work, and a
// failing launch surfaces as a CudaException naming the kernel.
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
    public void ACapturedGraphReplaysItsKernels()
    {
        using var b = Gpu.Backend(DType.F32);
        var one = Enumerable.Repeat(1f, 1000).ToArray();
        using var x = CudaOpTests.Put(b, new float[1000], 10, 100);
        using var inc = CudaOpTests.Put(b, one, 10, 100);
        b.LoadKernels(); // no module load inside a capture
        b.Synchronize();
        using var graph = CudaGraph.Capture(b.Context, () =>
        {
            b.Add(x, inc, x);
            b.Add(x, inc, x);
        });
        Assert.All(CudaOpTests.Get(b, x), v => Assert.Equal(0f, v)); // capturing runs nothing
        for (int i = 0; i < 5; i++) graph.Launch();
        Assert.All(CudaOpTests.Get(b, x), v => Assert.Equal(10f, v));
    }

    [Fact]
    public void EventsTimeQueuedWork()
    {
        using var b = Gpu.Backend(DType.BF16);
        using var x = b.Allocate(4096, 4096);
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
            using (var first = new CudaBackend(new CudaBackendOptions { DType = DType.F16, KernelCacheDirectory = dir }))
            {
                first.LoadKernels();
                Assert.Equal(Kernels.KernelCatalog.All.Count, first.KernelStats.Compiled);
            }
            using var second = new CudaBackend(new CudaBackendOptions { DType = DType.F16, KernelCacheDirectory = dir });
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
