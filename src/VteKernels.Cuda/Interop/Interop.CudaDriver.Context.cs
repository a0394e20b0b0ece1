// Primary contexts and the calling thread's current context (cuda.h: Primary Context Management, Context Management).
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuDevicePrimaryCtxRetain(out nint context, int device);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuDevicePrimaryCtxRelease_v2(int device);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuCtxSetCurrent(nint context);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuCtxGetCurrent(out nint context);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuCtxSynchronize();
    }
}
