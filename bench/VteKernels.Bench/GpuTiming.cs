// Timing on the GPU, shared by the CUDA benchmarks: CUDA events around a run of repetitions, the repetition
// count that makes a sample last about 2 ms, the device-to-device copy bandwidth every memory-bound figure is
// compared with, seeded activation matrices, the command-line flags they share, and the table of bars (targets
// the figures are held against: printed, recorded, never a test).
using VteKernels.Backends;
using VteKernels.Cuda;

namespace VteKernels.Bench;

internal static class GpuTiming
{
    /// <summary>
    /// The bf16 CUDA backend of a GPU benchmark (fused attention unless VTE_FUSED_ATTENTION=0 with <paramref name="fusedFromEnvironment"/>),
    /// or null after one `error:` line when no device can be used.
    /// </summary>
    public static CudaBackend? OpenBackend(bool fusedFromEnvironment)
    {
        try
        {
            return new CudaBackend(fusedFromEnvironment
                ? new CudaBackendOptions { DType = DType.BF16, FusedAttention = Environment.GetEnvironmentVariable("VTE_FUSED_ATTENTION") != "0" }
                : new CudaBackendOptions { DType = DType.BF16 });
        }
        catch (CudaUnavailableException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return null;
        }
    }

    /// <summary>Repetitions per sample so that a sample lasts about 2 ms.</summary>
    public static int Reps(CudaBackend b, Action op)
    {
        using var start = new CudaEvent(b.Context);
        using var end = new CudaEvent(b.Context);
        start.Record();
        op();
        end.Record();
        return (int)Math.Clamp(2.0 / Math.Max(CudaEvent.ElapsedMs(start, end), 1e-4), 1, 1000);
    }

    /// <summary>
    /// Median and minimum milliseconds per repetition over <paramref name="samples"/> samples (after one warm-up
    /// run); <paramref name="run"/> performs <paramref name="reps"/> repetitions.
    /// </summary>
    public static (double Median, double Min) Time(CudaBackend b, Action run, int reps, int samples)
    {
        using var start = new CudaEvent(b.Context);
        using var end = new CudaEvent(b.Context);
        run();
        b.Synchronize();
        var times = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            start.Record();
            run();
            end.Record();
            times[s] = CudaEvent.ElapsedMs(start, end) / reps;
        }
        Array.Sort(times);
        return (times[samples / 2], times[0]);
    }

    /// <summary>Device-to-device copy bandwidth in GB/s, read + write bytes counted (256 MiB with --quick, 4 MiB with --small, else 1 GiB).</summary>
    public static double CopyGBps(CudaBackend b, bool quick, int samples, bool small = false)
    {
        long bytes = small ? 4L << 20 : quick ? 256L << 20 : 1L << 30;
        using var src = b.Pool.Rent(bytes);
        using var dst = b.Pool.Rent(bytes);
        const int reps = 5;
        var (median, _) = Time(b, () => { for (int i = 0; i < reps; i++) b.CopyDeviceToDevice(src.Pointer, dst.Pointer, bytes); }, reps, samples);
        return 2.0 * bytes / (median * 1e-3) / 1e9;
    }

    /// <summary>A [rows, cols] activation of seeded values in [-1, 1).</summary>
    public static Tensor Filled(CudaBackend b, int rows, int cols, int seed = 0)
    {
        var t = b.Allocate(rows, cols);
        var values = new float[(long)rows * cols];
        var rng = new Random(rows ^ cols ^ seed);
        for (long i = 0; i < values.Length; i++) values[i] = rng.NextSingle() * 2 - 1;
        b.CopyFromHost(values, t);
        return t;
    }

    /// <summary>The device as the JSON results record it: name, architecture, memory, SMs, driver, theoretical bandwidth.</summary>
    public static object DeviceJson(CudaBackend b) => new
    {
        name = b.Info.Name, architecture = b.Info.Architecture, memoryGiB = Math.Round(b.Info.TotalMemoryBytes / (double)(1L << 30), 1),
        sms = b.Info.MultiprocessorCount, driverCuda = $"{b.Info.DriverVersion / 1000}.{b.Info.DriverVersion % 1000 / 10}",
        theoreticalGBps = Math.Round(b.Info.TheoreticalBandwidthGBps, 0), emulator = b.Info.IsEmulator,
        driver = NvidiaDriverVersion(),
    };

    /// <summary>The NVIDIA kernel driver's version (/proc/driver/nvidia/version), or null where there is none (the emulator).</summary>
    public static string? NvidiaDriverVersion()
    {
        try
        {
            var line = File.ReadLines("/proc/driver/nvidia/version").FirstOrDefault() ?? "";
            var m = System.Text.RegularExpressions.Regex.Match(line, @"\b(\d{3}\.\d+(\.\d+)?)\b");
            return m.Success ? m.Groups[1].Value : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>One target a figure is held against; <see cref="Met"/> is null when the figure is missing.</summary>
    public sealed record Bar(string Name, string Target, string Measured, bool? Met);

    /// <summary>Prints the bars as a table, each line starting "bar |" (tools/gpu/verify.sh collects them).</summary>
    public static void PrintBars(IEnumerable<Bar> bars, bool emulated)
    {
        Console.WriteLine();
        Console.WriteLine(emulated ? "bars (the CPU emulator: these figures say nothing about speed)" : "bars (benchmark targets, not tests)");
        Console.WriteLine($"bar | {"target",-58} | {"goal",-28} | {"measured",-34} | result");
        foreach (var bar in bars)
            Console.WriteLine($"bar | {bar.Name,-58} | {bar.Target,-28} | {bar.Measured,-34} | {(emulated ? "emulator" : bar.Met switch { true => "met", false => "MISSED", null => "n/a" })}");
    }
}

/// <summary>Flags the CUDA benchmarks share.</summary>
internal sealed record GpuBenchArgs(bool Quick, bool Small, string OutPath, IReadOnlySet<string> Only, bool NoTorch, Dictionary<string, string> Extra)
{
    /// <summary>Parses --quick, --small, --out PATH, --only ID[,ID], --no-torch and the named <paramref name="extra"/> flags
    /// (a flag ending in '=' takes a value); null (after a message) on anything else.</summary>
    public static GpuBenchArgs? Parse(string[] args, string defaultOut, params string[] extra)
    {
        bool quick = false, small = false, noTorch = false;
        string outPath = defaultOut;
        var only = new HashSet<string>(StringComparer.Ordinal);
        var more = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--quick") quick = true;
            else if (a == "--small") small = true;
            else if (a == "--no-torch") noTorch = true;
            else if (a == "--out" && i + 1 < args.Length) outPath = args[++i];
            else if (a == "--only" && i + 1 < args.Length) only.UnionWith(args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries));
            else if (extra.Contains(a)) more[a] = "";
            else if (extra.Contains(a + "=") && i + 1 < args.Length) more[a] = args[++i];
            else
            {
                Console.Error.WriteLine($"unknown argument '{a}'");
                return null;
            }
        }
        return new GpuBenchArgs(quick, small, outPath, only, noTorch, more);
    }
}
