// Occupancy (cuda.h: Occupancy).
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(out int numBlocks, nint function, int blockSize, nuint dynamicSMemSize);
    }
}
