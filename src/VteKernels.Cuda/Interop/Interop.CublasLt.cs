// cuBLASLt (cublasLt.h, cublas_api.h, library_types.h): the handle, matmul/layout/preference descriptors,
// the algorithm heuristic and the matmul itself. Enumerations list only the values this backend passes;
// they are the same in CUDA 11.x, 12.x and 13.x headers.
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class CublasLt
    {
        /// <summary>cublasStatus_t (0 is success).</summary>
        internal enum cublasStatus_t
        {
            CUBLAS_STATUS_SUCCESS = 0,
            CUBLAS_STATUS_NOT_INITIALIZED = 1,
            CUBLAS_STATUS_ALLOC_FAILED = 3,
            CUBLAS_STATUS_INVALID_VALUE = 7,
            CUBLAS_STATUS_ARCH_MISMATCH = 8,
            CUBLAS_STATUS_MAPPING_ERROR = 11,
            CUBLAS_STATUS_EXECUTION_FAILED = 13,
            CUBLAS_STATUS_INTERNAL_ERROR = 14,
            CUBLAS_STATUS_NOT_SUPPORTED = 15,
            CUBLAS_STATUS_LICENSE_ERROR = 16,
        }

        // cudaDataType_t
        internal const int CUDA_R_32F = 0;
        internal const int CUDA_R_16F = 2;
        internal const int CUDA_R_16BF = 14;

        // cublasComputeType_t
        internal const int CUBLAS_COMPUTE_32F = 68;
        internal const int CUBLAS_COMPUTE_32F_FAST_TF32 = 77;

        // cublasOperation_t
        internal const int CUBLAS_OP_N = 0;
        internal const int CUBLAS_OP_T = 1;

        // cublasLtMatmulDescAttributes_t
        internal const int CUBLASLT_MATMUL_DESC_TRANSA = 3;
        internal const int CUBLASLT_MATMUL_DESC_TRANSB = 4;
        internal const int CUBLASLT_MATMUL_DESC_EPILOGUE = 7;
        internal const int CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8;

        // cublasLtEpilogue_t
        internal const int CUBLASLT_EPILOGUE_DEFAULT = 1;
        internal const int CUBLASLT_EPILOGUE_BIAS = 4;

        // cublasLtMatmulPreferenceAttributes_t
        internal const int CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
        internal const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5;
        internal const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
        internal const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7;
        internal const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;

        /// <summary>cublasLtMatmulHeuristicResult_t: the opaque algorithm (8 × uint64) and what it needs (96 bytes).</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct cublasLtMatmulHeuristicResult_t
        {
            public fixed ulong algo[8];
            public nuint workspaceSize;
            public cublasStatus_t state;
            public float wavesCount;
            public fixed int reserved[4];
        }

        [LibraryImport(Libraries.CublasLt)]
        internal static partial nuint cublasLtGetVersion();

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtCreate(out nint handle);

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtDestroy(nint handle);

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtMatmulDescCreate(out nint desc, int computeType, int scaleType);

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtMatmulDescDestroy(nint desc);

        [LibraryImport(Libraries.CublasLt)]
        internal static unsafe partial cublasStatus_t cublasLtMatmulDescSetAttribute(nint desc, int attribute, void* value, nuint size);

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtMatrixLayoutCreate(out nint layout, int type, ulong rows, ulong cols, long ld);

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtMatrixLayoutDestroy(nint layout);

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtMatmulPreferenceCreate(out nint preference);

        [LibraryImport(Libraries.CublasLt)]
        internal static partial cublasStatus_t cublasLtMatmulPreferenceDestroy(nint preference);

        [LibraryImport(Libraries.CublasLt)]
        internal static unsafe partial cublasStatus_t cublasLtMatmulPreferenceSetAttribute(nint preference, int attribute, void* value, nuint size);

        [LibraryImport(Libraries.CublasLt)]
        internal static unsafe partial cublasStatus_t cublasLtMatmulAlgoGetHeuristic(nint handle, nint operationDesc,
            nint aDesc, nint bDesc, nint cDesc, nint dDesc, nint preference, int requestedAlgoCount,
            cublasLtMatmulHeuristicResult_t* results, out int returnedAlgoCount);

        [LibraryImport(Libraries.CublasLt)]
        internal static unsafe partial cublasStatus_t cublasLtMatmul(nint handle, nint computeDesc, void* alpha,
            ulong a, nint aDesc, ulong b, nint bDesc, void* beta, ulong c, nint cDesc, ulong d, nint dDesc,
            void* algo, ulong workspace, nuint workspaceBytes, nint stream);
    }
}
