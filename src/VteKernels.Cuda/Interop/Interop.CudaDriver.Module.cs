// Modules, functions and launches (cuda.h: Module Management, Execution Control).
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static unsafe partial CUresult cuModuleLoadData(out nint module, void* image);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuModuleUnload(nint module);

        [LibraryImport(Libraries.CudaDriver, StringMarshalling = StringMarshalling.Utf8)]
        internal static partial CUresult cuModuleGetFunction(out nint function, nint module, string name);

        [LibraryImport(Libraries.CudaDriver)]
        internal static unsafe partial CUresult cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ,
            uint blockX, uint blockY, uint blockZ, uint sharedMemBytes, nint stream, void** kernelParams, void** extra);
    }
}
