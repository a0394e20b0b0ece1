// The CPU emulator of CUDA (tools/cuda-emu) answers misuse as the driver documents and catches the hazards
// a GPU run would hide: the CUresult of a bad or destroyed handle, a block beyond the device limit or the
// kernel's __launch_bounds__, too much shared memory, a copy into freed memory; a kernel that writes past
// its allocation, reads freed memory, waits at a barrier other threads never reach, or races (outputs that
// differ between the emulator's two schedules) fails with the kernel's name, the context keeps that
// sticky error for every later call, and a fresh context works again; fresh allocations read as NaN.
// These run on the emulator only (a real driver may answer some of this misuse by crashing the process),
// one at a time: a sticky error belongs to the process's one primary context.
using VteKernels.Cuda.Kernels;
using Xunit;
using static VteKernels.Cuda.Interop.CudaDriver;
using static VteKernels.Cuda.Tests.CudaOpTests;

namespace VteKernels.Cuda.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class StickyFaultCollection
{
    public const string Name = "Sticky device faults";
}

[Trait("Category", "Gpu"), Collection(StickyFaultCollection.Name)]
public sealed class CudaEmulatorTests
{
    private static CudaBackend Emulator(DType dtype = DType.F32, IReadOnlyDictionary<string, string>? sources = null)
    {
        Gpu.Require();
        if (!Gpu.Emulated) Assert.Skip("checks the CPU emulator's answers to misuse, which a real driver may give by crashing the process");
        return new CudaBackend(Gpu.Options(dtype) with { KernelSourceOverrides = sources });
    }

    private static CUresult Launch(CudaBackend b, KernelSpec spec, string entry, uint block, uint shared, AddParams args)
    {
        nint f = b.FunctionOf(spec, entry);
        unsafe
        {
            void* p = &args;
            return cuLaunchKernel(f, 1, 1, 1, block, 1, 1, shared, b.Context.StreamPtr, &p, null);
        }
    }

    [Fact]
    public void TheDeviceSaysWhatItIs()
    {
        using var b = Emulator();
        Assert.True(b.Info.IsEmulator);
        Assert.StartsWith(CudaDevice.EmulatorName, b.Device);
        Assert.Equal(132, b.Info.MultiprocessorCount);
        Assert.Equal(0, b.Info.TheoreticalBandwidthGBps); // no clocks: no bandwidth figure can come from it
    }

    [Fact]
    public void BlockShapesBeyondTheLimitsAreRejected()
    {
        using var b = Emulator();
        using var x = (CudaTensor)b.Allocate(4, 64);
        var args = new AddParams { A = x.Pointer, B = x.Pointer, Y = x.Pointer, Count = 256 };
        Assert.Equal(CUresult.CUDA_ERROR_INVALID_VALUE, Launch(b, KernelCatalog.Add, "add", 2048, 0, args));              // > 1024 threads
        Assert.Equal(CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, Launch(b, KernelCatalog.Add, "add", 512, 0, args));    // > __launch_bounds__(256)
        Assert.Equal(CUresult.CUDA_ERROR_INVALID_VALUE, Launch(b, KernelCatalog.Add, "add", 256, 64 << 10, args));      // 64 KiB dynamic shared > 48 KiB
        Assert.Equal(CUresult.CUDA_SUCCESS, Launch(b, KernelCatalog.Add, "add", 256, 0, args));
    }

    [Fact]
    public void DestroyedHandlesAndFreedMemoryAreInvalid()
    {
        using var b = Emulator();
        b.Context.MakeCurrent();
        Assert.Equal(CUresult.CUDA_SUCCESS, cuStreamCreate(out var stream, CU_STREAM_NON_BLOCKING));
        Assert.Equal(CUresult.CUDA_SUCCESS, cuStreamDestroy_v2(stream));
        Assert.Equal(CUresult.CUDA_ERROR_INVALID_HANDLE, cuStreamSynchronize(stream));
        Assert.Equal(CUresult.CUDA_ERROR_INVALID_HANDLE, cuStreamDestroy_v2(stream));
        Assert.Equal(CUresult.CUDA_SUCCESS, cuMemAlloc_v2(out var p, 1024));
        Assert.Equal(CUresult.CUDA_SUCCESS, cuMemFree_v2(p));
        unsafe
        {
            int v = 1;
            Assert.Equal(CUresult.CUDA_ERROR_INVALID_VALUE, cuMemcpyHtoDAsync_v2(p, &v, 4, b.Context.StreamPtr)); // use after free
        }
        Assert.Equal(CUresult.CUDA_ERROR_INVALID_VALUE, cuMemFree_v2(p)); // double free
    }

    [Fact]
    public void FreshAllocationsReadAsNaN()
    {
        using var b = Emulator(DType.BF16);
        using var t = b.Allocate(3, 5); // a new block, never written
        Assert.All(Get(b, t), v => Assert.True(float.IsNaN(v)));
    }

    [Fact]
    public void AKernelWritingPastItsAllocationFailsAndTheContextStaysFaulted()
    {
        using (var b = Emulator())
        {
            using var x = (CudaTensor)b.Allocate(1, 100);
            // add_f32 over 200 elements with y the 100-element tensor: the second half lands past its end.
            var e = Assert.Throws<CudaException>(() => b.LaunchRaw(KernelCatalog.Add, "add", 1, 1, new AddParams { A = x.Pointer, B = x.Pointer, Y = x.Pointer, Count = 4000 }));
            Assert.Equal("CUDA_ERROR_ILLEGAL_ADDRESS", e.CodeName);
            Assert.Contains("add_f32", e.Message);
            Assert.Contains("past the end", e.Message);
            var later = Assert.Throws<CudaException>(() => b.Add(x, x, x)); // a launch after the fault
            Assert.Equal("CUDA_ERROR_ILLEGAL_ADDRESS", later.CodeName);
            Assert.Throws<CudaException>(() => b.Synchronize());
        }
        using var fresh = Emulator(); // the primary context was released and is made anew
        using var y = Put(fresh, [1f, 2f], 1, 2);
        fresh.Add(y, y, y);
        Assert.Equal([2f, 4f], Get(fresh, y));
    }

    [Fact]
    public void AKernelReadingFreedMemoryFails()
    {
        using var b = Emulator();
        using var y = (CudaTensor)b.Allocate(1, 64);
        var x = (CudaTensor)b.Allocate(1, 64);
        ulong stale = x.Pointer;
        b.Pool.Trim(); // nothing cached yet
        x.Dispose();
        b.Pool.Trim(); // now the block goes back to the driver
        var e = Assert.Throws<CudaException>(() => b.LaunchRaw(KernelCatalog.Add, "add", 1, 1, new AddParams { A = stale, B = stale, Y = y.Pointer, Count = 64 }));
        Assert.Equal("CUDA_ERROR_ILLEGAL_ADDRESS", e.CodeName);
        Assert.Contains("freed", e.Message);
    }

    [Fact]
    public void ABarrierSomeThreadsNeverReachIsAnErrorNamingTheKernel()
    {
        const string divergent = """
            #include "common.cuh"
            extern "C" __global__ void __launch_bounds__(256) VTE_ENTRY(add)(const AddParams p)
            {
                if (threadIdx.x < 32) __syncthreads();
            }
            """;
        using var b = Emulator(DType.F32, new Dictionary<string, string> { ["add.cu"] = divergent });
        using var x = b.Allocate(1, 8);
        var e = Assert.Throws<CudaException>(() => b.Add(x, x, x));
        Assert.Equal("CUDA_ERROR_LAUNCH_FAILED", e.CodeName);
        Assert.Contains("add_f32", e.Message);
        Assert.Contains("divergent barrier", e.Message);
    }

    [Fact]
    public void ARaceIsCaughtByTheTwoSchedules()
    {
        // Every thread of the block writes its index to the same element: the last writer wins, and the two
        // schedules (warp 0 first, last warp first) disagree about who that is.
        const string racy = """
            #include "common.cuh"
            extern "C" __global__ void __launch_bounds__(256) VTE_ENTRY(add)(const AddParams p)
            {
                static_cast<T*>(p.y)[0] = from_float<T>((float)threadIdx.x);
            }
            """;
        using var b = Emulator(DType.F32, new Dictionary<string, string> { ["add.cu"] = racy });
        using var x = b.Allocate(1, 8);
        var e = Assert.Throws<CudaException>(() => b.Add(x, x, x));
        Assert.Equal("CUDA_ERROR_LAUNCH_FAILED", e.CodeName);
        Assert.Contains("results differ between the schedules", e.Message);
    }

    [Fact]
    public void OccupancyAnswersFromTheLaunchBoundsAndSharedMemory()
    {
        // Registers are modelled as the most ptxas may use under the bounds: (256) alone 255 (one block of 8
        // warps per SM), (256, 4) 64, (128, 4) 128; shared memory takes 1 KiB more per block out of 228 KiB.
        const string kernels = """
            #include "common.cuh"
            extern "C" __global__ void __launch_bounds__(256) VTE_ENTRY(add)(const AddParams p) { }
            extern "C" __global__ void __launch_bounds__(256, 4) VTE_ENTRY(occ_min4)(const AddParams p) { }
            extern "C" __global__ void __launch_bounds__(128, 4) VTE_ENTRY(occ_smem40)(const AddParams p)
            {
                __shared__ float s[10240]; // 40 KiB, read back so that it is not optimised away
                s[threadIdx.x] = (float)threadIdx.x;
                __syncthreads();
                if (threadIdx.x == 0) static_cast<T*>(p.y)[0] = from_float<T>(s[127]);
            }
            extern "C" __global__ void VTE_ENTRY(occ_unbounded)(const AddParams p) { }
            """;
        using var b = Emulator(DType.F32, new Dictionary<string, string> { ["add.cu"] = kernels });
        int Blocks(string entry, int threads, long dynamicShared = 0) =>
            KernelLaunch.MaxActiveBlocksPerMultiprocessor(b.FunctionOf(KernelCatalog.Add, entry), entry, threads, dynamicShared);
        Assert.Equal(1, Blocks("add", 256));
        Assert.Equal(0, Blocks("add", 512));              // beyond the bound: no block launches
        Assert.Equal(4, Blocks("occ_min4", 256));
        Assert.Equal(8, Blocks("occ_min4", 128));         // 64 registers x 4 warps: 8 blocks (65536 / 8192)
        Assert.Equal(2, Blocks("occ_min4", 256, 100 << 10)); // 228 KiB / (100 + 1) KiB
        Assert.Equal(0, Blocks("occ_min4", 256, 228 << 10)); // beyond 227 KiB per block
        Assert.Equal(4, Blocks("occ_smem40", 128));       // registers: 4; 40 KiB shared alone would allow 5
        Assert.Equal(3, Blocks("occ_smem40", 128, 20 << 10)); // static and dynamic: 228 / (40 + 20 + 1)
        Assert.Equal(2, Blocks("occ_unbounded", 128));    // 255 registers: 8192 per warp, 8 warps, 2 blocks of 4
        Assert.Equal(0, Blocks("occ_unbounded", 2048));
    }
}
