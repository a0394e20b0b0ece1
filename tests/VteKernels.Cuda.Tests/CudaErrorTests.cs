// Error types: what CudaException and CudaUnavailableException say, and that both are VteExceptions (which
// the CLI reports as one "error:" line with exit code 2).
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class CudaErrorTests
{
    [Fact]
    public void DriverErrorsNameTheApiTheCodeAndWhatWasBeingDone()
    {
        var e = new CudaException("cuMemAlloc_v2", 2, "CUDA_ERROR_OUT_OF_MEMORY", "1073741824 bytes");
        Assert.Equal("cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (2): 1073741824 bytes", e.Message);
        Assert.True(e.IsOutOfMemory);
        Assert.IsAssignableFrom<VteException>(e);
    }

    [Fact]
    public void CompileErrorsCarryTheLog()
    {
        var e = new CudaException("nvrtcCompileProgram", 6, "NVRTC_ERROR_COMPILATION", "rope.cu (-DVTE_DTYPE_BF16)", "rope.cu(3): error: identifier \"x\" is undefined\n");
        Assert.Equal("rope.cu(3): error: identifier \"x\" is undefined\n", e.CompileLog);
        Assert.Equal("nvrtcCompileProgram failed: NVRTC_ERROR_COMPILATION (6): rope.cu (-DVTE_DTYPE_BF16)\nrope.cu(3): error: identifier \"x\" is undefined", e.Message);
        Assert.False(e.IsOutOfMemory);
    }

    [Fact]
    public void BlasStatusesAreNamed()
    {
        var e = Assert.Throws<CudaException>(() => CudaCheck.Blas(Interop.CublasLt.cublasStatus_t.CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul", "y[7, 33]"));
        Assert.Equal("cublasLtMatmul failed: CUBLAS_STATUS_NOT_SUPPORTED (15): y[7, 33]", e.Message);
        var unknown = Assert.Throws<CudaException>(() => CudaCheck.Blas((Interop.CublasLt.cublasStatus_t)999, "cublasLtCreate"));
        Assert.Equal("cublasStatus_t 999", unknown.CodeName);
    }

    [Fact]
    public void DriverCodesHaveNamesEvenWithoutTheDriver()
    {
        // With a driver, cuGetErrorName answers; without one, the managed table does.
        Assert.Equal("CUDA_ERROR_OUT_OF_MEMORY", CudaCheck.DriverErrorName(Interop.CudaDriver.CUresult.CUDA_ERROR_OUT_OF_MEMORY));
        var e = Assert.Throws<CudaException>(() => CudaCheck.Driver(Interop.CudaDriver.CUresult.CUDA_ERROR_NO_DEVICE, "cuInit"));
        Assert.Equal("CUDA_ERROR_NO_DEVICE", e.CodeName);
        Assert.Equal(100, e.Code);
        Assert.DoesNotContain(Interop.CudaDriver.CUresult.CUDA_SUCCESS.ToString(), e.Message);
    }

    [Fact]
    public void UnavailableSaysSo()
    {
        var e = new CudaUnavailableException("no CUDA device is visible");
        Assert.Equal("CUDA is not available: no CUDA device is visible", e.Message);
        Assert.IsAssignableFrom<VteException>(e);
    }
}
