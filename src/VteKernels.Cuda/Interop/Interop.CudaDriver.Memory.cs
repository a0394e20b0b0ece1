// Device memory and copies (cuda.h: Memory Management). All copies the backend issues are the stream-ordered
// *Async forms; from pageable host memory they return once the source has been staged.
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemAlloc_v2(out ulong pointer, nuint bytes);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemFree_v2(ulong pointer);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemGetInfo_v2(out nuint free, out nuint total);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemAllocHost_v2(out nint pointer, nuint bytes);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemFreeHost(nint pointer);

        [LibraryImport(Libraries.CudaDriver)]
        internal static unsafe partial CUresult cuMemcpyHtoDAsync_v2(ulong dst, void* src, nuint bytes, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static unsafe partial CUresult cuMemcpyDtoHAsync_v2(void* dst, ulong src, nuint bytes, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemcpyDtoDAsync_v2(ulong dst, ulong src, nuint bytes, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemcpy2DAsync_v2(in CUDA_MEMCPY2D copy, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemsetD16Async(ulong dst, ushort value, nuint count, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuMemsetD32Async(ulong dst, uint value, nuint count, nint stream);
    }
}
