// Timing on the GPU, shared by the CUDA benchmarks: CUDA events around a run of repetitions, the repetition
// count that makes a sample last about 2 ms, the device-to-device copy bandwidth every memory-bound figure is
// compared with, and seeded activation matrices.
using VteKernels.Backends;
using VteKernels.Cuda;

namespace VteKernels.Bench;

internal static class GpuTiming
{
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

    /// <summary>Device-to-device copy bandwidth in GB/s, read + write bytes counted (256 MiB with --quick, else 1 GiB).</summary>
    public static double CopyGBps(CudaBackend b, bool quick, int samples)
    {
        long bytes = quick ? 256L << 20 : 1L << 30;
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
}
