// What the shared machine is doing while a phase is timed, and how fast it reads memory.
//
// Other processes' CPU time over a phase = (busy time of all CPUs from /proc/stat, steal included) minus
// this process's user + system time from /proc/self/stat. A phase in which others used more than a set
// share of the machine is "contaminated" and can be dropped from the medians.
//
// Read bandwidth: every thread sums 64-byte vectors from 8 sequential streams of its own share of a 1 GiB
// buffer (one stream per thread stays under what the prefetchers can sustain: 12-16 GB/s against ~35 here).
// Measured in anonymous memory with transparent huge pages asked for (madvise), which is the machine's best,
// and in a memory-mapped file (4 KiB pages), which is where a model's weights live unless copied.
using System.Diagnostics;
using System.IO.MemoryMappedFiles;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace VteKernels.Bench;

/// <summary>CPU time of the whole machine and of this process, in seconds since boot.</summary>
internal readonly record struct CpuClock(double MachineBusy, double Self, DateTime At)
{
    private static readonly double Tick = 100.0; // USER_HZ on Linux

    public static CpuClock Now()
    {
        double busy = 0, self = 0;
        try
        {
            var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // cpu user nice system idle iowait irq softirq steal
            busy = (long.Parse(f[1]) + long.Parse(f[2]) + long.Parse(f[3]) + long.Parse(f[6]) + long.Parse(f[7]) + long.Parse(f[8])) / Tick;
            var s = File.ReadAllText("/proc/self/stat");
            var rest = s[(s.LastIndexOf(')') + 2)..].Split(' ');
            self = (long.Parse(rest[11]) + long.Parse(rest[12])) / Tick; // fields 14, 15: utime, stime
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return new CpuClock(busy, self, DateTime.UtcNow);
    }

    /// <summary>CPU seconds other processes (and the hypervisor's steal) used between <paramref name="start"/> and now.</summary>
    public static double OthersSince(CpuClock start)
    {
        var now = Now();
        return Math.Max(0, now.MachineBusy - start.MachineBusy - (now.Self - start.Self));
    }

    public static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "unknown"; }
    }
}

internal static unsafe partial class ReadBandwidth
{
    private const long Bytes = 1L << 30;
    private const int Streams = 8;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(nint addr, nuint length, int advice);

    private const int MadvHugepage = 14;

    /// <summary>Best GB/s over <paramref name="runs"/> reads of a 1 GiB anonymous buffer (huge pages asked for) on <paramref name="threads"/> threads.</summary>
    public static double Anonymous(int threads, int runs = 7)
    {
        byte* buf = (byte*)NativeMemory.AlignedAlloc((nuint)Bytes, 1 << 21);
        try
        {
            _ = madvise((nint)buf, (nuint)Bytes, MadvHugepage);
            new Span<byte>(buf, (int)Math.Min(Bytes, int.MaxValue)).Fill(1);
            return Best(buf, threads, runs);
        }
        finally
        {
            NativeMemory.AlignedFree(buf);
        }
    }

    /// <summary>Best GB/s reading a memory-mapped 1 GiB file (in the page cache) on <paramref name="threads"/> threads.</summary>
    public static double MappedFile(string dir, int threads, int runs = 7)
    {
        var path = Path.Combine(dir, "bandwidth.bin");
        try
        {
            using (var f = new FileStream(path, FileMode.Create))
            {
                var chunk = new byte[1 << 20];
                Array.Fill(chunk, (byte)1);
                for (long i = 0; i < Bytes; i += chunk.Length) f.Write(chunk);
            }
            using var mmf = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            using var view = mmf.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            try
            {
                return Best(p, threads, runs);
            }
            finally
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static double Best(byte* buf, int threads, int runs)
    {
        double best = 0;
        for (int r = 0; r < runs; r++)
        {
            long share = Bytes / threads;
            var sw = Stopwatch.StartNew();
            var ts = Enumerable.Range(0, threads).Select(t => new Thread(() => Read(buf + share * t, share))).ToArray();
            foreach (var th in ts) th.Start();
            foreach (var th in ts) th.Join();
            best = Math.Max(best, Bytes / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Read(byte* p, long n)
    {
        var a0 = Vector512<int>.Zero;
        var a1 = Vector512<int>.Zero;
        long q = n / Streams;
        for (long i = 0; i + 128 <= q; i += 128)
        {
            for (int s = 0; s < Streams; s++)
            {
                byte* r = p + s * q + i;
                a0 += Vector512.Load((int*)r);
                a1 += Vector512.Load((int*)(r + 64));
            }
        }
        if ((a0 + a1)[0] == 42) Console.Write("");
    }
}

internal static class ProcessMemory
{
    /// <summary>GiB of this process's anonymous memory on transparent huge pages (/proc/self/smaps_rollup), or null where unknown.</summary>
    public static double? AnonHugePagesGiB()
    {
        try
        {
            var line = File.ReadLines("/proc/self/smaps_rollup").FirstOrDefault(l => l.StartsWith("AnonHugePages:", StringComparison.Ordinal));
            return line is null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / (1024.0 * 1024.0);
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
