// Streams and events (cuda.h: Stream Management, Event Management).
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuStreamCreate(out nint stream, uint flags);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuStreamDestroy_v2(nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuStreamSynchronize(nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuEventCreate(out nint evt, uint flags);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuEventDestroy_v2(nint evt);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuEventRecord(nint evt, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuEventSynchronize(nint evt);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuEventElapsedTime(out float milliseconds, nint start, nint end);
    }
}
