// DevicePool's bookkeeping against a fake allocator (no driver): size classes, reuse from the free lists
// (steady state allocates nothing), exact blocks freed on return, retry after out-of-memory with the cache
// released, stats, and Dispose freeing everything (outstanding buffers become unusable); during a graph
// capture, returned blocks stay the graph's until it lets them go, and a capture cannot allocate.
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class DevicePoolTests
{
    private sealed class FakeAllocator : IDeviceAllocator
    {
        private ulong _next = 0x1000_0000;
        public Dictionary<ulong, long> Live { get; } = [];
        public long Limit { get; set; } = long.MaxValue;
        public int Allocations, Frees, Waits;

        public ulong Allocate(long bytes)
        {
            if (Live.Values.Sum() + bytes > Limit) throw new CudaException("cuMemAlloc_v2", 2, "CUDA_ERROR_OUT_OF_MEMORY", $"{bytes} bytes");
            var p = _next;
            _next += (ulong)((bytes + 255) / 256 * 256);
            Live[p] = bytes;
            Allocations++;
            return p;
        }

        public void Free(ulong pointer)
        {
            Assert.True(Live.Remove(pointer), $"double or foreign free of 0x{pointer:x}");
            Frees++;
        }

        public void WaitIdle() => Waits++;
    }

    [Theory]
    [InlineData(0, 512)]
    [InlineData(1, 512)]
    [InlineData(512, 512)]
    [InlineData(513, 640)]
    [InlineData(1000, 1024)]
    [InlineData(1025, 1280)]
    [InlineData(5000, 5120)]
    [InlineData(8192, 8192)]
    [InlineData(8193, 10240)]
    [InlineData(33_554_432, 33_554_432)]
    public void SizeClasses(long request, long block) => Assert.Equal(block, DevicePool.SizeClass(request));

    [Fact]
    public void SizeClassesWasteAtMostAQuarter()
    {
        var rng = new Random(7);
        for (int i = 0; i < 10_000; i++)
        {
            long bytes = rng.NextInt64(513, 1L << 36);
            long block = DevicePool.SizeClass(bytes);
            Assert.InRange(block, bytes, bytes + bytes / 4 + 1);
        }
    }

    [Fact]
    public void ReturnedBlocksAreReusedAndSteadyStateAllocatesNothing()
    {
        var fake = new FakeAllocator();
        using var pool = new DevicePool(fake);
        void Step()
        {
            using var a = pool.Rent(4096 * 2);
            using var b = pool.Rent(11008 * 2);
            using var c = pool.Rent(4096 * 2);
        }
        Step();
        int after = fake.Allocations;
        for (int i = 0; i < 10; i++) Step();
        Assert.Equal(after, fake.Allocations);
        var s = pool.Stats;
        Assert.Equal(33, s.Rents);
        Assert.Equal(30, s.Hits);
        Assert.Equal(0, s.InUseBytes);
        Assert.Equal(0, s.Outstanding);
        Assert.Equal(s.ReservedBytes, s.CachedBytes);
    }

    [Fact]
    public void ExactBlocksAreFreedNotCached()
    {
        var fake = new FakeAllocator();
        using var pool = new DevicePool(fake);
        var w = pool.AllocateExact(1000);
        Assert.Equal(1024, w.Capacity);
        Assert.False(w.Pooled);
        w.Dispose();
        Assert.Equal(1, fake.Frees);
        Assert.Equal(0, pool.Stats.ReservedBytes);
        Assert.True(fake.Waits > 0, "an exact block may still be read by queued kernels");
    }

    [Fact]
    public void DisposingABufferTwiceReturnsItOnce()
    {
        var fake = new FakeAllocator();
        using var pool = new DevicePool(fake);
        var b = pool.Rent(100);
        b.Dispose();
        b.Dispose();
        Assert.Equal(512, pool.Stats.CachedBytes);
        Assert.Throws<ObjectDisposedException>(() => b.Pointer);
    }

    [Fact]
    public void OutOfMemoryReleasesTheCacheAndRetriesOnce()
    {
        var fake = new FakeAllocator { Limit = 3 * 1024 };
        using var pool = new DevicePool(fake);
        pool.Rent(2048).Dispose();            // cached, 2048 bytes held
        using var big = pool.Rent(1280 + 256); // class 1536: 2048 + 1536 > limit, so the cache goes first
        Assert.Equal(1, fake.Frees);
        Assert.Equal(1536, pool.Stats.ReservedBytes);
        var e = Assert.Throws<CudaException>(() => pool.Rent(4096));
        Assert.True(e.IsOutOfMemory);
    }

    [Fact]
    public void TrimFreesTheCacheAfterWaiting()
    {
        var fake = new FakeAllocator();
        using var pool = new DevicePool(fake);
        using var kept = pool.Rent(1000);
        pool.Rent(3000).Dispose();
        int waits = fake.Waits;
        pool.Trim();
        Assert.True(fake.Waits > waits);
        Assert.Single(fake.Live);
        Assert.Equal(1024, pool.Stats.ReservedBytes);
    }

    [Fact]
    public void DisposeFreesEverythingIncludingOutstandingBuffers()
    {
        var fake = new FakeAllocator();
        var pool = new DevicePool(fake);
        var outstanding = pool.Rent(700);
        var weight = pool.AllocateExact(10_000);
        pool.Rent(5000).Dispose();
        pool.Dispose();
        Assert.Empty(fake.Live);
        Assert.True(outstanding.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => weight.Pointer);
        outstanding.Dispose(); // harmless after the pool is gone
        Assert.Throws<ObjectDisposedException>(() => pool.Rent(1));
    }

    [Fact]
    public void StatsTrackPeakAndOutstanding()
    {
        var fake = new FakeAllocator();
        using var pool = new DevicePool(fake);
        var a = pool.Rent(10_000);
        var b = pool.Rent(10_000);
        Assert.Equal(2, pool.Stats.Outstanding);
        long peak = pool.Stats.PeakReservedBytes;
        a.Dispose();
        b.Dispose();
        pool.Trim();
        Assert.Equal(peak, pool.Stats.PeakReservedBytes);
        Assert.Equal(0, pool.Stats.ReservedBytes);
        Assert.Equal(2, pool.Stats.DriverAllocations);
        Assert.Equal(2, pool.Stats.DriverFrees);
    }

    [Fact]
    public void BlocksReturnedDuringACaptureAreNotReusedUntilTheGraphReleasesThem()
    {
        var fake = new FakeAllocator();
        using var pool = new DevicePool(fake);
        pool.Rent(1000).Dispose(); // cached, so the capture can rent it
        pool.BeginCapture();
        var inGraph = pool.Rent(1000);
        ulong address = inGraph.Pointer;
        inGraph.Dispose(); // the graph's replays may still write here
        var memory = pool.EndCapture();
        using (var after = pool.Rent(1000))
        {
            Assert.NotEqual(address, after.Pointer);
            Assert.Equal(2, fake.Allocations);
        }
        pool.ReleaseGraphMemory(memory);
        pool.ReleaseGraphMemory(memory); // once only
        var blocks = new[] { pool.Rent(1000), pool.Rent(1000) };
        Assert.Contains(address, blocks.Select(b => b.Pointer));
        Assert.Equal(2, fake.Allocations);
        foreach (var b in blocks) b.Dispose();
    }

    [Fact]
    public void ACaptureCannotAllocateAndDisposeFreesTheGraphsBlocks()
    {
        var fake = new FakeAllocator();
        var pool = new DevicePool(fake);
        pool.BeginCapture();
        var e = Assert.Throws<InvalidOperationException>(() => pool.Rent(1000));
        Assert.Contains("run the captured work once before capturing", e.Message);
        Assert.Throws<InvalidOperationException>(() => pool.BeginCapture());
        pool.EndCapture();
        pool.Rent(1000).Dispose();
        pool.BeginCapture();
        pool.Rent(1000).Dispose();
        pool.EndCapture(); // never released: Dispose frees its block
        pool.Dispose();
        Assert.Empty(fake.Live);
    }
}
