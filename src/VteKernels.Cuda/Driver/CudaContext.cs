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
/// <remarks>
/// A graph replays the addresses its capture saw, so the device blocks returned to the pool and the pinned
/// staging chunks filled while it was captured belong to it until it is disposed (DevicePool.BeginCapture,
/// HostStaging.BeginCapture); buffers that outlive the capture stay their owners' to keep alive.
/// </remarks>
internal sealed class CudaGraph : IDisposable
{
    private readonly CudaContext _context;
    private readonly CudaGraphHandle _graph;
    private readonly CudaGraphExecHandle _exec;
    private Action? _release;

    private CudaGraph(CudaContext context, CudaGraphHandle graph, CudaGraphExecHandle exec, Action? release)
    {
        _context = context;
        _graph = graph;
        _exec = exec;
        _release = release;
    }

    /// <summary>
    /// Captures what <paramref name="record"/> queues on the stream (kernels, device-to-device copies, copies
    /// from pinned memory; no pageable host copies, no synchronisation, no new device memory) into a graph.
    /// Capture is thread-local. When <paramref name="record"/> throws, the capture is ended and its exception
    /// propagates (not the failure of ending a capture it invalidated).
    /// </summary>
    /// <exception cref="CudaException">Beginning, ending or instantiating the capture failed.</exception>
    public static CudaGraph Capture(CudaContext context, Action record, DevicePool? pool = null, HostStaging? staging = null)
    {
        context.MakeCurrent();
        staging?.BeginCapture();
        pool?.BeginCapture();
        GraphMemory? memory = null;
        StagingMemory? staged = null;
        void Release()
        {
            if (memory is not null) pool!.ReleaseGraphMemory(memory);
            if (staged is not null) staging!.Release(staged);
        }
        var begin = cuStreamBeginCapture_v2(context.StreamPtr, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
        if (begin != CUresult.CUDA_SUCCESS)
        {
            memory = pool?.EndCapture();
            staged = staging?.EndCapture();
            Release();
            CudaCheck.Driver(begin, nameof(cuStreamBeginCapture_v2));
        }
        nint raw;
        try
        {
            record();
        }
        catch
        {
            // End the capture so the stream works again; whatever ending it says (the capture may have been
            // invalidated by what went wrong) must not replace the exception that explains it.
            if (cuStreamEndCapture(context.StreamPtr, out var partial) == CUresult.CUDA_SUCCESS && partial != 0) cuGraphDestroy(partial);
            memory = pool?.EndCapture();
            staged = staging?.EndCapture();
            try
            {
                context.Synchronize(); // the work queued before the failure may still use the kept memory
                Release();
            }
            catch (CudaException) { } // a faulted context: its memory is not handed out again anyway
            throw;
        }
        var end = cuStreamEndCapture(context.StreamPtr, out raw);
        memory = pool?.EndCapture();
        staged = staging?.EndCapture();
        if (end != CUresult.CUDA_SUCCESS)
        {
            Release();
            CudaCheck.Driver(end, nameof(cuStreamEndCapture));
        }
        var graph = CudaGraphHandle.FromCapture(context.Handle, raw);
        try
        {
            return new CudaGraph(context, graph, CudaGraphExecHandle.Instantiate(context.Handle, graph), pool is null && staging is null ? null : Release);
        }
        catch
        {
            graph.Dispose();
            Release();
            throw;
        }
    }

    /// <summary>Queues one replay on the stream.</summary>
    public void Launch()
    {
        _context.MakeCurrent();
        CudaCheck.Driver(cuGraphLaunch(_exec.DangerousGetHandle(), _context.StreamPtr), nameof(cuGraphLaunch));
    }

    /// <summary>Destroys the graph and gives its memory back (later work runs after its queued replays).</summary>
    public void Dispose()
    {
        _exec.Dispose();
        _graph.Dispose();
        var release = _release;
        _release = null;
        release?.Invoke();
    }
}
