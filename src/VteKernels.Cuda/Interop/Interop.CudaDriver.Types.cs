// Scalar types and enumerations of the CUDA driver API (cuda.h) that the raw signatures use. Handles are
// plain nint (CUcontext, CUmodule, CUfunction, CUstream, CUevent, CUgraph, CUgraphExec), CUdevice is int,
// CUdeviceptr is ulong. Only the values this backend passes or tests for are listed.
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CudaDriver
    {
        /// <summary>CUresult: 0 is success; names come from cuGetErrorName.</summary>
        internal enum CUresult
        {
            CUDA_SUCCESS = 0,
            CUDA_ERROR_INVALID_VALUE = 1,
            CUDA_ERROR_OUT_OF_MEMORY = 2,
            CUDA_ERROR_NOT_INITIALIZED = 3,
            CUDA_ERROR_DEINITIALIZED = 4,
            CUDA_ERROR_STUB_LIBRARY = 34,
            CUDA_ERROR_INSUFFICIENT_DRIVER = 35,
            CUDA_ERROR_NO_DEVICE = 100,
            CUDA_ERROR_INVALID_DEVICE = 101,
            CUDA_ERROR_INVALID_IMAGE = 200,
            CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
            CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
            CUDA_ERROR_INVALID_HANDLE = 400,
            CUDA_ERROR_NOT_FOUND = 500,
            CUDA_ERROR_ILLEGAL_ADDRESS = 700,
            CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
        }

        /// <summary>CUdevice_attribute values read by CudaDevice.</summary>
        internal enum CUdevice_attribute
        {
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8,
            CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13,
            CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
            CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36,
            CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37,
            CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
        }

        /// <summary>CUmemorytype.</summary>
        internal enum CUmemorytype
        {
            CU_MEMORYTYPE_HOST = 1,
            CU_MEMORYTYPE_DEVICE = 2,
        }

        /// <summary>cuStreamCreate flags.</summary>
        internal const uint CU_STREAM_NON_BLOCKING = 1;

        /// <summary>cuEventCreate flags.</summary>
        internal const uint CU_EVENT_DEFAULT = 0;
        internal const uint CU_EVENT_DISABLE_TIMING = 2;

        /// <summary>CUstreamCaptureMode.</summary>
        internal const int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;

        /// <summary>CUDA_MEMCPY2D (cuda.h, 128 bytes on 64-bit).</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct CUDA_MEMCPY2D
        {
            public nuint srcXInBytes;
            public nuint srcY;
            public CUmemorytype srcMemoryType;
            public nint srcHost;
            public ulong srcDevice;
            public nint srcArray;
            public nuint srcPitch;
            public nuint dstXInBytes;
            public nuint dstY;
            public CUmemorytype dstMemoryType;
            public nint dstHost;
            public ulong dstDevice;
            public nint dstArray;
            public nuint dstPitch;
            public nuint WidthInBytes;
            public nuint Height;
        }
    }
}
