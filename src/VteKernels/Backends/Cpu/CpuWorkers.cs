// The CPU backend's threads: one process-wide set of workers (logical cores - 1 of them; the calling thread
// is the last one), shared by every CpuBackend and every CpuOps call, so that two sessions running at once
// never have more busy threads than there are cores.
//
// A parallel region hands out work items 0..items-1 through one atomic counter: whoever is free takes the
// next one, so a core that another process is using slows its thread down without stalling the region
// (a static split would wait for the slowest share). Results do not depend on which thread ran an item:
// every op computes each output element in an order fixed by the shapes alone, which makes them bitwise
// identical for any thread count.
//
// One region runs at a time. A second caller (another session) waits for the running region to end and
// then runs its own: the machine's cores are busy either way, and nothing oversubscribes them. A region
// started from inside a region (an op calling an op) runs on the calling thread alone.
//
// Waking: a worker that finds no region spins for ~2 ms and then sleeps on an event, so an idle process costs
// no CPU beyond that. Decode runs ~40 regions a token with gaps of microseconds to a millisecond between
// them; a worker that sleeps in such a gap gives its core to whatever else is runnable, and the scheduler may
// take milliseconds to give it back, while the caller runs the region's items alone. Measured on the shared
// 2-core VM with low-priority (nice 19) builds running beside: with 50 µs of spinning, other processes got
// 10-35% of the cores during our decode (llama.cpp's OpenMP threads, which spin, left them ~5%). A region
// of 2 empty items costs ~2 µs with the worker spinning, ~30 µs from sleep, against 5-10 µs for Parallel.For.
using System.Diagnostics;

namespace VteKernels.Backends.Cpu;

/// <summary>The process-wide worker threads behind every parallel CPU op.</summary>
internal static class CpuWorkers
{
    /// <summary>How long an idle worker spins before it sleeps.</summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 500;   // 2 ms

    private static readonly object RegionLock = new();
    private static readonly object StartLock = new();
    private static readonly ManualResetEventSlim Wake = new(false);
    private static Region? _current;
    private static int _started;

    [ThreadStatic] private static bool _inRegion;

    /// <summary>One parallel region. Workers that join count themselves in Active before taking an item.</summary>
    private sealed class Region(Action<int, int> body, int items, int participants)
    {
        public readonly Action<int, int> Body = body;
        public readonly int Items = items, Participants = participants;
        public int Next, Joined = 1, Active;   // the caller is participant 0
        public Exception? Failure;

        public void Work(int worker)
        {
            while (true)
            {
                int i = Interlocked.Increment(ref Next) - 1;
                if (i >= Items) return;
                try
                {
                    Body(i, worker);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref Failure, e, null);
                    Volatile.Write(ref Next, Items);   // skip what is left
                }
            }
        }
    }

    /// <summary>Logical cores of the machine: the most threads a region uses.</summary>
    public static int Cores { get; } = Math.Max(1, Environment.ProcessorCount);

    /// <summary>The thread count to use for a request of <paramref name="threads"/> (0: all cores; capped at the cores).</summary>
    public static int Resolve(int threads) => threads <= 0 ? Cores : Math.Min(threads, Cores);

    /// <summary>
    /// Runs <paramref name="body"/>(item, worker) for every item in [0, <paramref name="items"/>) on up to
    /// <paramref name="threads"/> threads (the caller among them; 0: all cores); worker is in [0, threads) and
    /// no two threads of one call share one, so it can index per-thread scratch. Returns when every item is
    /// done; rethrows the first exception a body threw (the remaining items are skipped).
    /// </summary>
    public static void For(int items, int threads, Action<int, int> body)
    {
        threads = Math.Min(Resolve(threads), items);
        if (threads <= 1 || _inRegion)
        {
            for (int i = 0; i < items; i++) body(i, 0);
            return;
        }
        EnsureStarted();
        lock (RegionLock)
        {
            var region = new Region(body, items, threads);
            _inRegion = true;
            try
            {
                Volatile.Write(ref _current, region);
                Wake.Set();
                region.Work(0);
                // Every item is taken now; whoever took one counted itself in Active first.
                var spin = new SpinWait();
                while (Volatile.Read(ref region.Active) > 0) spin.SpinOnce(-1);
            }
            finally
            {
                Volatile.Write(ref _current, null);
                Wake.Reset();
                _inRegion = false;
            }
            if (region.Failure is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
        }
    }

    private static void EnsureStarted()
    {
        if (Volatile.Read(ref _started) != 0) return;
        lock (StartLock)
        {
            if (_started != 0) return;
            for (int t = 0; t < Cores - 1; t++)
                new Thread(WorkerLoop) { IsBackground = true, Name = $"vte-cpu-{t + 1}" }.Start();
            Volatile.Write(ref _started, 1);
        }
    }

    private static void WorkerLoop()
    {
        _inRegion = true;   // ops called from a body run serially
        Region? seen = null;
        while (true)
        {
            var region = Volatile.Read(ref _current);
            if (region is null || region == seen)
            {
                long until = Stopwatch.GetTimestamp() + SpinTicks;
                while (((region = Volatile.Read(ref _current)) is null || region == seen) && Stopwatch.GetTimestamp() < until) Thread.SpinWait(20);
                if (region is null || region == seen)
                {
                    Wake.Wait();
                    continue;
                }
            }
            seen = region;
            int slot = Interlocked.Increment(ref region.Joined) - 1;
            if (slot >= region.Participants) continue;
            Interlocked.Increment(ref region.Active);
            region.Work(slot);
            Interlocked.Decrement(ref region.Active);
        }
    }
}
