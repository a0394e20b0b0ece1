// Device enumeration and properties (cuda.h: Device Management).
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuDeviceGetCount(out int count);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuDeviceGet(out int device, int ordinal);

        [LibraryImport(Libraries.CudaDriver)]
        internal static unsafe partial CUresult cuDeviceGetName(byte* name, int length, int device);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuDeviceGetAttribute(out int value, CUdevice_attribute attribute, int device);

        [LibraryImport(Libraries.CudaDriver)]
        internal static partial CUresult cuDeviceTotalMem_v2(out nuint bytes, int device);
    }
}
