// The typed errors of the CUDA backend and the checks that raise them. Every failing driver, NVRTC or
// cuBLASLt call becomes a CudaException that names the API, the status code and its name (cuGetErrorName
// for the driver, nvrtcGetErrorString for NVRTC, the cublasStatus_t name for cuBLASLt), what was being done,
// and for NVRTC the compiler's log. A machine where CUDA cannot start at all (no library, no device, a
// driver too old) gets a CudaUnavailableException whose message says what was tried.
using System.Runtime.InteropServices;
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda;

/// <summary>CUDA cannot be used on this machine: a library is missing, there is no device, or the driver is too old.</summary>
public sealed class CudaUnavailableException : VteException
{
    /// <summary>Creates the exception; the message starts "CUDA is not available: ".</summary>
    public CudaUnavailableException(string reason, Exception? inner = null) : base($"CUDA is not available: {reason}", inner) { }
}

/// <summary>A CUDA driver, NVRTC or cuBLASLt call failed.</summary>
public sealed class CudaException : VteException
{
    /// <summary>The function that failed, e.g. "cuMemAlloc_v2", "nvrtcCompileProgram", "cublasLtMatmul".</summary>
    public string Api { get; }

    /// <summary>The status code it returned (CUresult, nvrtcResult or cublasStatus_t).</summary>
    public int Code { get; }

    /// <summary>The status code's name, e.g. "CUDA_ERROR_OUT_OF_MEMORY".</summary>
    public string CodeName { get; }

    /// <summary>What was being done (a kernel, a shape, a size), or null.</summary>
    public string? Detail { get; }

    /// <summary>NVRTC's compile log for a failed compilation, else null.</summary>
    public string? CompileLog { get; }

    /// <summary>Creates the exception. The message is "{api} failed: {codeName} ({code})[: {detail}]", then the log if any.</summary>
    public CudaException(string api, int code, string codeName, string? detail = null, string? compileLog = null)
        : base(Format(api, code, codeName, detail, compileLog))
    {
        Api = api;
        Code = code;
        CodeName = codeName;
        Detail = detail;
        CompileLog = compileLog;
    }

    /// <summary>True when the call failed for lack of device memory.</summary>
    public bool IsOutOfMemory => CodeName is "CUDA_ERROR_OUT_OF_MEMORY" or "CUBLAS_STATUS_ALLOC_FAILED";

    private static string Format(string api, int code, string codeName, string? detail, string? log)
    {
        var s = $"{api} failed: {codeName} ({code})";
        if (!string.IsNullOrEmpty(detail)) s += $": {detail}";
        if (!string.IsNullOrWhiteSpace(log)) s += $"\n{log.TrimEnd()}";
        return s;
    }
}

/// <summary>Status checks for the three native APIs.</summary>
internal static class CudaCheck
{
    /// <summary>
    /// Throws a <see cref="CudaException"/> unless <paramref name="result"/> is CUDA_SUCCESS; its detail ends with
    /// the driver's description of the error (for a failed kernel on the CPU emulator, what it found where).
    /// </summary>
    public static void Driver(CUresult result, string api, string? detail = null)
    {
        if (result == CUresult.CUDA_SUCCESS) return;
        var description = DriverErrorDescription(result);
        if (description is not null) detail = string.IsNullOrEmpty(detail) ? description : $"{detail}; {description}";
        throw new CudaException(api, (int)result, DriverErrorName(result), detail);
    }

    /// <summary>The driver's description of a CUresult (cuGetErrorString), or null when there is none.</summary>
    public static string? DriverErrorDescription(CUresult result)
    {
        try
        {
            if (cuGetErrorString(result, out var p) == CUresult.CUDA_SUCCESS && p != 0) return Marshal.PtrToStringUTF8(p);
        }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
        return null;
    }

    /// <summary>The driver's name for a CUresult ("CUDA_ERROR_OUT_OF_MEMORY"), or "CUresult N" if it has none.</summary>
    public static string DriverErrorName(CUresult result)
    {
        try
        {
            if (cuGetErrorName(result, out var p) == CUresult.CUDA_SUCCESS && p != 0) return Marshal.PtrToStringUTF8(p) ?? $"CUresult {(int)result}";
        }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
        return Enum.IsDefined(result) ? result.ToString() : $"CUresult {(int)result}";
    }

    /// <summary>Throws unless <paramref name="result"/> is NVRTC_SUCCESS.</summary>
    public static void Nvrtc(Interop.Nvrtc.nvrtcResult result, string api, string? detail = null, string? log = null)
    {
        if (result != Interop.Nvrtc.nvrtcResult.NVRTC_SUCCESS) throw new CudaException(api, (int)result, NvrtcErrorName(result), detail, log);
    }

    /// <summary>NVRTC's name for a result ("NVRTC_ERROR_COMPILATION").</summary>
    public static unsafe string NvrtcErrorName(Interop.Nvrtc.nvrtcResult result)
    {
        byte* p = Interop.Nvrtc.nvrtcGetErrorString(result);
        return p is null ? $"nvrtcResult {(int)result}" : Marshal.PtrToStringUTF8((nint)p) ?? $"nvrtcResult {(int)result}";
    }

    /// <summary>Throws unless <paramref name="status"/> is CUBLAS_STATUS_SUCCESS.</summary>
    public static void Blas(Interop.CublasLt.cublasStatus_t status, string api, string? detail = null)
    {
        if (status != Interop.CublasLt.cublasStatus_t.CUBLAS_STATUS_SUCCESS)
            throw new CudaException(api, (int)status, Enum.IsDefined(status) ? status.ToString() : $"cublasStatus_t {(int)status}", detail);
    }
}
