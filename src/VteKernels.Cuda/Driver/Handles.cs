// SafeHandle owners of the CUDA objects the backend creates. The primary context is retained once per
// backend and released last: every object made in it (module, stream, event, graph, graph exec, cuBLASLt
// handle and descriptors) adds a reference to the context handle when it becomes valid and drops it after
// its own release, so a finalizer or an out-of-order Dispose can never free the context under a live
// object. Releases make the context current on the releasing thread first (finalizers run on their own
// thread) and ignore failures: there is nobody to report them to, and the process may be shutting down.
using System.Runtime.InteropServices;
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda;

/// <summary>A retained primary context of one device.</summary>
internal sealed class CudaContextHandle : SafeHandle
{
    /// <summary>The device ordinal whose primary context this is.</summary>
    public int Device { get; }

    private CudaContextHandle(int device) : base(0, ownsHandle: true) => Device = device;

    /// <inheritdoc/>
    public override bool IsInvalid => handle == 0;

    /// <summary>Retains the primary context of <paramref name="device"/>.</summary>
    public static CudaContextHandle RetainPrimary(int device)
    {
        var h = new CudaContextHandle(device);
        CudaCheck.Driver(cuDevicePrimaryCtxRetain(out var ctx, device), nameof(cuDevicePrimaryCtxRetain), $"device {device}");
        h.SetHandle(ctx);
        return h;
    }

    /// <summary>Makes the context current on the calling thread (cheap when this handle made it current last).</summary>
    public void MakeCurrent()
    {
        if (CurrentOnThisThread == _id) return;
        CudaCheck.Driver(cuCtxSetCurrent(DangerousGetHandle()), nameof(cuCtxSetCurrent));
        CurrentOnThisThread = _id;
    }

    /// <summary>Makes the context current without throwing (releases of objects made in it).</summary>
    internal void TryMakeCurrent() =>
        CurrentOnThisThread = cuCtxSetCurrent(DangerousGetHandle()) == CUresult.CUDA_SUCCESS ? _id : 0;

    // Which handle made its context current on this thread last. An id per handle rather than the raw
    // CUcontext, because a primary context released and retained again may come back with the same value.
    [ThreadStatic] private static long CurrentOnThisThread;
    private static long s_nextId;
    private readonly long _id = Interlocked.Increment(ref s_nextId);

    /// <inheritdoc/>
    protected override bool ReleaseHandle()
    {
        if (CurrentOnThisThread == _id) CurrentOnThisThread = 0;
        return cuDevicePrimaryCtxRelease_v2(Device) == CUresult.CUDA_SUCCESS;
    }
}

/// <summary>Base of the handles that live inside a context.</summary>
internal abstract class CudaContextObjectHandle : SafeHandle
{
    private CudaContextHandle? _context;

    protected CudaContextObjectHandle() : base(0, ownsHandle: true) { }

    /// <inheritdoc/>
    public override bool IsInvalid => handle == 0;

    /// <summary>Takes ownership of <paramref name="raw"/>, created in <paramref name="context"/>.</summary>
    protected void Attach(CudaContextHandle context, nint raw)
    {
        bool added = false;
        context.DangerousAddRef(ref added);
        _context = context;
        SetHandle(raw);
    }

    /// <inheritdoc/>
    protected sealed override bool ReleaseHandle()
    {
        var ctx = _context;
        try
        {
            if (ctx is not null && !ctx.IsClosed) ctx.TryMakeCurrent();
            return Free(handle);
        }
        finally
        {
            ctx?.DangerousRelease();
        }
    }

    /// <summary>Frees the raw object; true on success.</summary>
    protected abstract bool Free(nint raw);
}

/// <summary>A loaded module (cuModuleLoadData).</summary>
internal sealed class CudaModuleHandle : CudaContextObjectHandle
{
    public static unsafe CudaModuleHandle Load(CudaContextHandle context, ReadOnlySpan<byte> image, string what)
    {
        var h = new CudaModuleHandle();
        nint raw;
        fixed (byte* p = image) CudaCheck.Driver(cuModuleLoadData(out raw, p), nameof(cuModuleLoadData), what);
        h.Attach(context, raw);
        return h;
    }

    protected override bool Free(nint raw) => cuModuleUnload(raw) == CUresult.CUDA_SUCCESS;
}

/// <summary>A non-blocking stream.</summary>
internal sealed class CudaStreamHandle : CudaContextObjectHandle
{
    public static CudaStreamHandle Create(CudaContextHandle context)
    {
        var h = new CudaStreamHandle();
        CudaCheck.Driver(cuStreamCreate(out var raw, CU_STREAM_NON_BLOCKING), nameof(cuStreamCreate));
        h.Attach(context, raw);
        return h;
    }

    protected override bool Free(nint raw) => cuStreamDestroy_v2(raw) == CUresult.CUDA_SUCCESS;
}

/// <summary>An event (timing enabled unless asked otherwise).</summary>
internal sealed class CudaEventHandle : CudaContextObjectHandle
{
    public static CudaEventHandle Create(CudaContextHandle context, bool timing = true)
    {
        var h = new CudaEventHandle();
        CudaCheck.Driver(cuEventCreate(out var raw, timing ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING), nameof(cuEventCreate));
        h.Attach(context, raw);
        return h;
    }

    protected override bool Free(nint raw) => cuEventDestroy_v2(raw) == CUresult.CUDA_SUCCESS;
}

/// <summary>A captured graph (cuStreamEndCapture).</summary>
internal sealed class CudaGraphHandle : CudaContextObjectHandle
{
    public static CudaGraphHandle FromCapture(CudaContextHandle context, nint raw)
    {
        var h = new CudaGraphHandle();
        if (raw != 0) h.Attach(context, raw);
        return h;
    }

    protected override bool Free(nint raw) => cuGraphDestroy(raw) == CUresult.CUDA_SUCCESS;
}

/// <summary>An instantiated, launchable graph.</summary>
internal sealed class CudaGraphExecHandle : CudaContextObjectHandle
{
    public static CudaGraphExecHandle Instantiate(CudaContextHandle context, CudaGraphHandle graph)
    {
        var h = new CudaGraphExecHandle();
        CudaCheck.Driver(cuGraphInstantiateWithFlags(out var raw, graph.DangerousGetHandle(), 0), nameof(cuGraphInstantiateWithFlags));
        h.Attach(context, raw);
        return h;
    }

    protected override bool Free(nint raw) => cuGraphExecDestroy(raw) == CUresult.CUDA_SUCCESS;
}

/// <summary>A cuBLASLt handle.</summary>
internal sealed class CublasLtHandle : CudaContextObjectHandle
{
    public static CublasLtHandle Create(CudaContextHandle context)
    {
        var h = new CublasLtHandle();
        CudaCheck.Blas(Interop.CublasLt.cublasLtCreate(out var raw), nameof(Interop.CublasLt.cublasLtCreate));
        h.Attach(context, raw);
        return h;
    }

    protected override bool Free(nint raw) => Interop.CublasLt.cublasLtDestroy(raw) == Interop.CublasLt.cublasStatus_t.CUBLAS_STATUS_SUCCESS;
}

/// <summary>A cuBLASLt matmul descriptor, matrix layout or preference.</summary>
internal sealed class CublasLtDescriptorHandle : CudaContextObjectHandle
{
    private enum Kind { Matmul, Layout, Preference }

    private Kind _kind;

    public static CublasLtDescriptorHandle Matmul(CudaContextHandle context, int computeType, int scaleType)
    {
        var h = new CublasLtDescriptorHandle { _kind = Kind.Matmul };
        CudaCheck.Blas(Interop.CublasLt.cublasLtMatmulDescCreate(out var raw, computeType, scaleType), nameof(Interop.CublasLt.cublasLtMatmulDescCreate));
        h.Attach(context, raw);
        return h;
    }

    public static CublasLtDescriptorHandle Layout(CudaContextHandle context, int type, long rows, long cols, long ld)
    {
        var h = new CublasLtDescriptorHandle { _kind = Kind.Layout };
        CudaCheck.Blas(Interop.CublasLt.cublasLtMatrixLayoutCreate(out var raw, type, (ulong)rows, (ulong)cols, ld),
            nameof(Interop.CublasLt.cublasLtMatrixLayoutCreate), $"{rows} x {cols}, ld {ld}");
        h.Attach(context, raw);
        return h;
    }

    public static CublasLtDescriptorHandle Preference(CudaContextHandle context)
    {
        var h = new CublasLtDescriptorHandle { _kind = Kind.Preference };
        CudaCheck.Blas(Interop.CublasLt.cublasLtMatmulPreferenceCreate(out var raw), nameof(Interop.CublasLt.cublasLtMatmulPreferenceCreate));
        h.Attach(context, raw);
        return h;
    }

    protected override bool Free(nint raw) => (_kind switch
    {
        Kind.Matmul => Interop.CublasLt.cublasLtMatmulDescDestroy(raw),
        Kind.Layout => Interop.CublasLt.cublasLtMatrixLayoutDestroy(raw),
        _ => Interop.CublasLt.cublasLtMatmulPreferenceDestroy(raw),
    }) == Interop.CublasLt.cublasStatus_t.CUBLAS_STATUS_SUCCESS;
}
