// The native libraries the CUDA backend binds, by logical name. [LibraryImport] declarations name these
// logical names; CudaLibraries (Native/CudaLibraries.cs) resolves each to the versioned file found on this
// machine (libcuda.so.1; the newest of libnvrtc.so.13/.12/.11.2; libcublasLt.so.13/.12/.11).
namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static class Libraries
    {
        /// <summary>The CUDA driver API (libcuda.so.1, installed with the NVIDIA driver).</summary>
        internal const string CudaDriver = "vte-cuda-driver";

        /// <summary>The runtime compiler NVRTC (CUDA toolkit, or Debian's libnvrtc11.2).</summary>
        internal const string Nvrtc = "vte-nvrtc";

        /// <summary>cuBLASLt (CUDA toolkit).</summary>
        internal const string CublasLt = "vte-cublaslt";
    }
}
