// Stream capture into CUDA graphs and graph launch (cuda.h: Stream Management, Graph Management).
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuStreamBeginCapture_v2(nint stream, int mode);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuStreamEndCapture(nint stream, out nint graph);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuGraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuGraphLaunch(nint graphExec, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuGraphDestroy(nint graph);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuGraphExecDestroy(nint graphExec);
    }
}
