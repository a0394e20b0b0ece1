// A device's primary context with the one stream the backend issues all work on, events for timing, and
// CUDA graph capture. Every public entry of the backend calls MakeCurrent first, because the current
// context is per thread and an async caller may resume on another thread.
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda;

/// <summary>The primary context of one device and its work stream.</summary>
internal sealed class CudaContext : IDisposable
{
    public CudaDevice Device { get; }
    public CudaContextHandle Handle { get; }
    public CudaStreamHandle Stream { get; }

    /// <summary>The raw stream, for launches and copies.</summary>
    public nint StreamPtr => Stream.DangerousGetHandle();

    public CudaContext(CudaDevice device)
    {
        Device = device;
        Handle = CudaContextHandle.RetainPrimary(device.Ordinal);
        try
        {
            Handle.MakeCurrent();
            Stream = CudaStreamHandle.Create(Handle);
        }
        catch
        {
            Handle.Dispose();
            throw;
        }
    }

    public void MakeCurrent() => Handle.MakeCurrent();

    /// <summary>Waits for all work queued on the stream.</summary>
    public void Synchronize()
    {
        MakeCurrent();
        CudaCheck.Driver(cuStreamSynchronize(StreamPtr), nameof(cuStreamSynchronize));
    }

    /// <summary>Free and total device memory now.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        MakeCurrent();
        CudaCheck.Driver(cuMemGetInfo_v2(out nuint free, out nuint total), nameof(cuMemGetInfo_v2));
        return ((long)free, (long)total);
    }

    public void Dispose()
    {
        if (Handle.IsClosed) return;
        try { Synchronize(); } catch (CudaException) { } // a failed kernel must not keep the context alive
        Stream.Dispose();
        Handle.Dispose();
    }
}

/// <summary>A timing event on a context's stream.</summary>
internal sealed class CudaEvent : IDisposable
{
    private readonly CudaContext _context;
    private readonly CudaEventHandle _event;

    public CudaEvent(CudaContext context)
    {
        _context = context;
        context.MakeCurrent();
        _event = CudaEventHandle.Create(context.Handle);
    }

    /// <summary>Records the event at the current end of the stream.</summary>
    public void Record()
    {
        _context.MakeCurrent();
        CudaCheck.Driver(cuEventRecord(_event.DangerousGetHandle(), _context.StreamPtr), nameof(cuEventRecord));
    }

    /// <summary>Milliseconds between <paramref name="start"/> and <paramref name="end"/> (waits for end).</summary>
    public static float ElapsedMs(CudaEvent start, CudaEvent end)
    {
        CudaCheck.Driver(cuEventSynchronize(end._event.DangerousGetHandle()), nameof(cuEventSynchronize));
        CudaCheck.Driver(cuEventElapsedTime(out float ms, start._event.DangerousGetHandle(), end._event.DangerousGetHandle()), nameof(cuEventElapsedTime));
        return ms;
    }

    public void Dispose() => _event.Dispose();
}

/// <summary>Work captured from the stream once and replayed with one launch (the decode step's future shape).</summary>
internal sealed class CudaGraph : IDisposable
{
    private readonly CudaContext _context;
    private readonly CudaGraphHandle _graph;
    private readonly CudaGraphExecHandle _exec;

    private CudaGraph(CudaContext context, CudaGraphHandle graph, CudaGraphExecHandle exec)
    {
        _context = context;
        _graph = graph;
        _exec = exec;
    }

    /// <summary>
    /// Captures what <paramref name="record"/> queues on the stream (kernels, device-to-device copies; no
    /// host copies, no synchronisation) into a graph. Capture is thread-local.
    /// </summary>
    public static CudaGraph Capture(CudaContext context, Action record)
    {
        context.MakeCurrent();
        CudaCheck.Driver(cuStreamBeginCapture_v2(context.StreamPtr, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), nameof(cuStreamBeginCapture_v2));
        nint raw = 0;
        try
        {
            record();
        }
        finally
        {
            var end = cuStreamEndCapture(context.StreamPtr, out raw);
            if (end != CUresult.CUDA_SUCCESS && raw == 0) CudaCheck.Driver(end, nameof(cuStreamEndCapture));
        }
        var graph = CudaGraphHandle.FromCapture(context.Handle, raw);
        try
        {
            return new CudaGraph(context, graph, CudaGraphExecHandle.Instantiate(context.Handle, graph));
        }
        catch
        {
            graph.Dispose();
            throw;
        }
    }

    /// <summary>Queues one replay on the stream.</summary>
    public void Launch()
    {
        _context.MakeCurrent();
        CudaCheck.Driver(cuGraphLaunch(_exec.DangerousGetHandle(), _context.StreamPtr), nameof(cuGraphLaunch));
    }

    public void Dispose()
    {
        _exec.Dispose();
        _graph.Dispose();
    }
}
