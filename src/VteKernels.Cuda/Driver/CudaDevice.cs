// Driver start-up and device properties. Initialize runs cuInit once per process and turns every way it
// can fail into a CudaUnavailableException with the reason (no libcuda, a stub libcuda, no device, driver
// too old), which the CLI prints as one "error:" line. A CudaDevice holds the properties the backend and
// the benchmarks need, read once.
using System.Runtime.InteropServices;
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda;

/// <summary>One CUDA device and its properties.</summary>
public sealed class CudaDevice
{
    /// <summary>Oldest driver accepted: CUDA 11.4 (graph instantiation with flags, primary context release v2).</summary>
    public const int MinimumDriverVersion = 11040;

    private static readonly Lazy<int> DriverVersionOnce = new(InitializeDriver, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Ordinal as CUDA numbers devices (after CUDA_VISIBLE_DEVICES).</summary>
    public int Ordinal { get; }

    /// <summary>Marketing name, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string Name { get; }

    /// <summary>Compute capability major version.</summary>
    public int ComputeMajor { get; }

    /// <summary>Compute capability minor version.</summary>
    public int ComputeMinor { get; }

    /// <summary>Device memory in bytes.</summary>
    public long TotalMemoryBytes { get; }

    /// <summary>Streaming multiprocessors.</summary>
    public int MultiprocessorCount { get; }

    /// <summary>Memory bus width in bits (0 if the driver does not say).</summary>
    public int MemoryBusWidthBits { get; }

    /// <summary>Peak memory clock in kHz (0 if the driver does not say).</summary>
    public int MemoryClockKHz { get; }

    /// <summary>The driver's CUDA version as an integer, e.g. 13000 for 13.0.</summary>
    public int DriverVersion { get; }

    /// <summary>The name the CPU emulator of CUDA (tools/cuda-emu) gives its device.</summary>
    public const string EmulatorName = "VteKernels CPU emulator (sm_90 semantics)";

    /// <summary>
    /// True on the CPU emulator of CUDA (tools/cuda-emu): its results check correctness against CUDA's and
    /// PTX's semantics; its timings say nothing about a GPU.
    /// </summary>
    public bool IsEmulator => Name == EmulatorName;

    /// <summary>"sm_90" for compute capability 9.0.</summary>
    public string Architecture => $"sm_{ComputeMajor}{ComputeMinor}";

    /// <summary>Compute capability as one number: 90 for 9.0.</summary>
    public int ArchitectureNumber => ComputeMajor * 10 + ComputeMinor;

    /// <summary>Theoretical DRAM bandwidth from bus width and clock (double data rate), GB/s; 0 if unknown.</summary>
    public double TheoreticalBandwidthGBps => 2.0 * MemoryClockKHz * 1e3 * (MemoryBusWidthBits / 8.0) / 1e9;

    private CudaDevice(int ordinal, int driverVersion)
    {
        Ordinal = ordinal;
        DriverVersion = driverVersion;
        CudaCheck.Driver(cuDeviceGet(out int dev, ordinal), nameof(cuDeviceGet), $"device {ordinal}");
        Name = ReadName(dev);
        ComputeMajor = Attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
        ComputeMinor = Attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        MultiprocessorCount = Attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        MemoryBusWidthBits = Attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
        MemoryClockKHz = Attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
        CudaCheck.Driver(cuDeviceTotalMem_v2(out nuint bytes, dev), nameof(cuDeviceTotalMem_v2));
        TotalMemoryBytes = (long)bytes;
    }

    /// <summary>Number of visible devices (0 is reported as an error by <see cref="Get"/>).</summary>
    /// <exception cref="CudaUnavailableException">The driver cannot be loaded or started.</exception>
    public static int Count()
    {
        _ = DriverVersionOnce.Value;
        CudaCheck.Driver(cuDeviceGetCount(out int n), nameof(cuDeviceGetCount));
        return n;
    }

    /// <summary>The device with ordinal <paramref name="ordinal"/>.</summary>
    /// <exception cref="CudaUnavailableException">The driver cannot start, there is no device, or no device with that ordinal.</exception>
    public static CudaDevice Get(int ordinal = 0)
    {
        int version = DriverVersionOnce.Value;
        int n = Count();
        if (n == 0) throw new CudaUnavailableException("the driver reports no CUDA device");
        if ((uint)ordinal >= (uint)n) throw new CudaUnavailableException($"there is no CUDA device {ordinal} (this machine has {n})");
        return new CudaDevice(ordinal, version);
    }

    /// <summary>True when a CUDA device can be used here (the driver loads, starts and reports a device).</summary>
    public static bool IsAvailable(out string reason)
    {
        try
        {
            reason = Count() > 0 ? "" : "the driver reports no CUDA device";
            return reason.Length == 0;
        }
        catch (CudaUnavailableException e)
        {
            reason = e.Message;
            return false;
        }
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Name} ({Architecture}, {TotalMemoryBytes / (double)(1L << 30):F1} GiB, {MultiprocessorCount} SMs, driver CUDA {DriverVersion / 1000}.{DriverVersion % 1000 / 10})";

    private static int Attribute(int dev, CUdevice_attribute a)
    {
        CudaCheck.Driver(cuDeviceGetAttribute(out int v, a, dev), nameof(cuDeviceGetAttribute), a.ToString());
        return v;
    }

    private static unsafe string ReadName(int dev)
    {
        byte* buffer = stackalloc byte[256];
        CudaCheck.Driver(cuDeviceGetName(buffer, 256, dev), nameof(cuDeviceGetName));
        return Marshal.PtrToStringUTF8((nint)buffer) ?? $"CUDA device {dev}";
    }

    /// <summary>Loads libcuda, runs cuInit, checks the driver version; returns the version.</summary>
    private static int InitializeDriver()
    {
        var lib = CudaLibraries.Require(CudaLibrary.Driver);
        var r = cuInit(0);
        switch (r)
        {
            case CUresult.CUDA_SUCCESS:
                break;
            case CUresult.CUDA_ERROR_NO_DEVICE:
                throw new CudaUnavailableException($"no CUDA device is visible (CUDA_VISIBLE_DEVICES={Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") ?? "unset"}; driver {lib.LoadedFrom})");
            case CUresult.CUDA_ERROR_INSUFFICIENT_DRIVER:
                throw new CudaUnavailableException($"the installed NVIDIA kernel driver is older than {lib.LoadedFrom} needs (cuInit: CUDA_ERROR_INSUFFICIENT_DRIVER)");
            case CUresult.CUDA_ERROR_STUB_LIBRARY:
                throw new CudaUnavailableException($"{lib.LoadedFrom} is the CUDA toolkit's stub library, not a driver; install the NVIDIA driver or fix {CudaLibraries.LibDirVariable}/LD_LIBRARY_PATH");
            default:
                throw new CudaUnavailableException($"cuInit failed with {CudaCheck.DriverErrorName(r)} ({(int)r}) (driver {lib.LoadedFrom})");
        }
        CudaCheck.Driver(cuDriverGetVersion(out int version), nameof(cuDriverGetVersion));
        if (version < MinimumDriverVersion)
            throw new CudaUnavailableException($"the driver supports CUDA {version / 1000}.{version % 1000 / 10}, and this backend needs at least " +
                                               $"{MinimumDriverVersion / 1000}.{MinimumDriverVersion % 1000 / 10}; update the NVIDIA driver");
        CudaLibraries.LimitNvrtcMajor(version / 1000);
        return version;
    }
}
