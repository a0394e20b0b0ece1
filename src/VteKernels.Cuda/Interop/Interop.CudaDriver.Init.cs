// Driver initialisation, version and error names (cuda.h: Initialization, Version Management, Error Handling).
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuInit(uint flags);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuDriverGetVersion(out int driverVersion);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuGetErrorName(CUresult error, out nint name);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuGetErrorString(CUresult error, out nint description);
    }
}
