// The CPU backend's process-wide worker pool: every item runs once, worker indices stay below the thread
// count, a body's exception reaches the caller, a region started inside a region runs on its thread, and
// two callers at once (two sessions) both finish without ever running more bodies at a time than cores.
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public sealed class CpuWorkersTests
{
    [Theory]
    [InlineData(1, 0)]
    [InlineData(1000, 0)]
    [InlineData(1000, 1)]
    [InlineData(7, 2)]
    public void RunsEveryItemOnceWithWorkerIndicesBelowTheThreadCount(int items, int threads)
    {
        var seen = new int[items];
        int limit = CpuWorkers.Resolve(threads), bad = 0;
        CpuWorkers.For(items, threads, (i, w) =>
        {
            Interlocked.Increment(ref seen[i]);
            if (w < 0 || w >= limit) Interlocked.Increment(ref bad);
        });
        Assert.All(seen, c => Assert.Equal(1, c));
        Assert.Equal(0, bad);
    }

    [Fact]
    public void ABodysExceptionReachesTheCaller()
    {
        var e = Assert.Throws<InvalidOperationException>(() => CpuWorkers.For(100, 0, (i, _) =>
        {
            if (i == 37) throw new InvalidOperationException("item 37");
        }));
        Assert.Equal("item 37", e.Message);
        // The pool still works afterwards.
        int count = 0;
        CpuWorkers.For(50, 0, (_, _) => Interlocked.Increment(ref count));
        Assert.Equal(50, count);
    }

    [Fact]
    public void ARegionInsideARegionRunsOnItsThread()
    {
        int inner = 0;
        CpuWorkers.For(8, 0, (_, _) => CpuWorkers.For(10, 0, (_, w) =>
        {
            Assert.Equal(0, w);
            Interlocked.Increment(ref inner);
        }));
        Assert.Equal(80, inner);
    }

    [Fact]
    public async Task TwoCallersAtOnceShareTheCores()
    {
        int running = 0, most = 0;
        void Body(int i, int w)
        {
            int now = Interlocked.Increment(ref running);
            int seen;
            while ((seen = Volatile.Read(ref most)) < now && Interlocked.CompareExchange(ref most, now, seen) != seen) { }
            Thread.SpinWait(20_000);
            Interlocked.Decrement(ref running);
        }
        var ct = TestContext.Current.CancellationToken;
        var a = Task.Run(() => { for (int r = 0; r < 20; r++) CpuWorkers.For(16, 0, Body); }, ct);
        var b = Task.Run(() => { for (int r = 0; r < 20; r++) CpuWorkers.For(16, 0, Body); }, ct);
        await Task.WhenAll(a, b).WaitAsync(TimeSpan.FromMinutes(2), ct);
        Assert.InRange(most, 1, CpuWorkers.Cores);
    }
}
