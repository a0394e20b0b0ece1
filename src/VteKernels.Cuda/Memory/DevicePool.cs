// Device memory: DeviceBuffer owns one block and gives it back on Dispose; DevicePool caches returned
// blocks in size-class free lists so that steady-state work (a decode step allocates the same activations
// every token) never calls cuMemAlloc, and counts what it does (PoolStats).
//
// Size classes: 512 bytes, then four per power of two (2^k · {1.25, 1.5, 1.75, 2}), so a block wastes at
// most 25% and a request is served by any cached block of its class. Weights do not belong in classes (a
// 7B model would waste up to 3 GB): AllocateExact gives an exact-size block that is freed, not cached, when
// returned. All work runs in order on one stream, so a block returned here may be handed out again at once:
// later kernels on the same stream run after the earlier ones that used it. Blocks are freed only after
// IDeviceAllocator.WaitIdle (Trim, Dispose, and the one retry after an out-of-memory error).
// A CUDA graph replays the addresses its capture saw, so while a capture runs (BeginCapture..EndCapture)
// a pooled block returned goes to the graph's own memory (GraphMemory), not to the free list: were it
// handed out again, a later replay would write into whatever lives there then. The graph gives the blocks
// back when it is disposed (ReleaseGraphMemory). A capture must not need new blocks (cuMemAlloc is not
// allowed inside one): run the work once before capturing, so the free lists hold what it rents.
// The bookkeeping is independent of the driver (IDeviceAllocator) and unit-tested with a fake allocator.
namespace VteKernels.Cuda;

/// <summary>Raw device memory, in bytes.</summary>
internal interface IDeviceAllocator
{
    /// <summary>A new block of at least <paramref name="bytes"/> bytes, 256-byte aligned.</summary>
    /// <exception cref="CudaException">The device is out of memory (<see cref="CudaException.IsOutOfMemory"/>) or the call failed.</exception>
    ulong Allocate(long bytes);

    /// <summary>Frees a block made by <see cref="Allocate"/>.</summary>
    void Free(ulong pointer);

    /// <summary>Waits until no queued work can still use any block (before blocks are freed).</summary>
    void WaitIdle();
}

/// <summary>What a <see cref="DevicePool"/> holds and has done.</summary>
/// <param name="ReservedBytes">Bytes held from the driver (in use, cached, and kept for captured graphs).</param>
/// <param name="InUseBytes">Bytes of blocks handed out and not yet returned.</param>
/// <param name="CachedBytes">Bytes of returned blocks kept for reuse.</param>
/// <param name="PeakReservedBytes">Largest ReservedBytes so far.</param>
/// <param name="DriverAllocations">Blocks allocated from the driver so far.</param>
/// <param name="DriverFrees">Blocks freed to the driver so far.</param>
/// <param name="Rents">Requests served so far (pooled and exact).</param>
/// <param name="Hits">Pooled requests served from the cache without allocating.</param>
/// <param name="Outstanding">Buffers handed out and not yet disposed.</param>
public readonly record struct PoolStats(long ReservedBytes, long InUseBytes, long CachedBytes, long PeakReservedBytes,
    long DriverAllocations, long DriverFrees, long Rents, long Hits, int Outstanding);

/// <summary>One block of device memory; Dispose gives it back to its pool.</summary>
public sealed class DeviceBuffer : IDisposable
{
    private readonly DevicePool _pool;
    private readonly ulong _pointer;
    private bool _released;

    internal DeviceBuffer(DevicePool pool, ulong pointer, long length, long capacity, bool pooled)
    {
        _pool = pool;
        _pointer = pointer;
        Length = length;
        Capacity = capacity;
        Pooled = pooled;
    }

    /// <summary>The device address.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was returned, or its pool disposed.</exception>
    public ulong Pointer => _released ? throw new ObjectDisposedException(nameof(DeviceBuffer)) : _pointer;

    /// <summary>Bytes asked for.</summary>
    public long Length { get; }

    /// <summary>Bytes of the block (the size class for pooled buffers).</summary>
    public long Capacity { get; }

    /// <summary>True for a size-class block that returns to the cache; false for an exact block that is freed.</summary>
    public bool Pooled { get; }

    /// <summary>True once returned (or once the pool was disposed).</summary>
    public bool IsDisposed => _released;

    internal ulong RawPointer => _pointer;

    internal void MarkReleased() => _released = true;

    /// <summary>Gives the block back (idempotent).</summary>
    public void Dispose()
    {
        if (!_released) _pool.Return(this);
    }

    /// <inheritdoc/>
    public override string ToString() => $"device 0x{_pointer:x} ({Length} of {Capacity} bytes{(Pooled ? ", pooled" : "")})";
}

/// <summary>A caching allocator of device memory with size-class free lists. Thread-safe.</summary>
public sealed class DevicePool : IDisposable
{
    /// <summary>Smallest block handed out.</summary>
    public const long MinimumBlock = 512;

    private readonly IDeviceAllocator _allocator;
    private readonly object _gate = new();
    private readonly Dictionary<long, Stack<ulong>> _free = [];
    private readonly HashSet<DeviceBuffer> _outstanding = [];
    private GraphMemory? _capture;
    private readonly List<GraphMemory> _graphs = [];
    private long _reserved, _inUse, _cached, _peak, _allocations, _frees, _rents, _hits;
    private bool _disposed;

    internal DevicePool(IDeviceAllocator allocator) => _allocator = allocator;

    /// <summary>
    /// The block size a request of <paramref name="bytes"/> is served with: <see cref="MinimumBlock"/>, or the
    /// request rounded up to a multiple of a quarter of the power of two below it (1000 → 1024, 1100 → 1280, 5000 → 5120).
    /// </summary>
    public static long SizeClass(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes <= MinimumBlock) return MinimumBlock;
        int log = 63 - (int)long.LeadingZeroCount(bytes - 1); // 2^log < bytes <= 2^(log+1)
        long step = 1L << (log - 2);                      // classes 2^log · {1.25, 1.5, 1.75, 2}
        return (bytes + step - 1) / step * step;
    }

    /// <summary>A block of at least <paramref name="bytes"/> bytes from the cache, or a new one of its size class.</summary>
    /// <exception cref="CudaException">The device is out of memory even after the cache was freed.</exception>
    /// <exception cref="InvalidOperationException">A graph capture is running and no cached block fits.</exception>
    public DeviceBuffer Rent(long bytes)
    {
        long size = SizeClass(bytes);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _rents++;
            ulong p;
            if (_free.TryGetValue(size, out var stack) && stack.Count > 0)
            {
                p = stack.Pop();
                _cached -= size;
                _hits++;
            }
            else
            {
                p = AllocateWithRetry(size);
            }
            return HandOut(p, bytes, size, pooled: true);
        }
    }

    /// <summary>A block of exactly <paramref name="bytes"/> bytes (rounded up to 256) that is freed, not cached, when returned. For weights.</summary>
    /// <exception cref="CudaException">The device is out of memory even after the cache was freed.</exception>
    /// <exception cref="InvalidOperationException">A graph capture is running.</exception>
    public DeviceBuffer AllocateExact(long bytes)
    {
        long size = Math.Max(256, (bytes + 255) / 256 * 256);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _rents++;
            return HandOut(AllocateWithRetry(size), bytes, size, pooled: false);
        }
    }

    /// <summary>Frees every cached block to the driver (after waiting for queued work).</summary>
    public void Trim()
    {
        lock (_gate)
        {
            if (_cached == 0) return;
            _allocator.WaitIdle();
            FreeCached();
        }
    }

    /// <summary>A snapshot of the counters.</summary>
    public PoolStats Stats
    {
        get
        {
            lock (_gate) return new PoolStats(_reserved, _inUse, _cached, _peak, _allocations, _frees, _rents, _hits, _outstanding.Count);
        }
    }

    internal void Return(DeviceBuffer buffer)
    {
        lock (_gate)
        {
            if (buffer.IsDisposed || !_outstanding.Remove(buffer)) return;
            buffer.MarkReleased();
            _inUse -= buffer.Capacity;
            if (_capture is not null)
            {
                _capture.Blocks.Add((buffer.RawPointer, buffer.Capacity)); // the graph being captured may use it on every replay
            }
            else if (buffer.Pooled)
            {
                PushFree(buffer.RawPointer, buffer.Capacity);
            }
            else
            {
                // An exact block (a weight) may still be read by queued kernels.
                _allocator.WaitIdle();
                FreeBlock(buffer.RawPointer, buffer.Capacity);
            }
        }
    }

    /// <summary>
    /// Starts keeping returned blocks for a graph being captured: until <see cref="EndCapture"/>, a pooled
    /// buffer given back is not reused.
    /// </summary>
    /// <exception cref="InvalidOperationException">A capture is already running.</exception>
    internal void BeginCapture()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_capture is not null) throw new InvalidOperationException("a graph capture is already running on this pool");
            _capture = new GraphMemory();
        }
    }

    /// <summary>Ends the capture begun by <see cref="BeginCapture"/>; the blocks returned during it belong to the graph.</summary>
    /// <exception cref="InvalidOperationException">No capture is running.</exception>
    internal GraphMemory EndCapture()
    {
        lock (_gate)
        {
            var memory = _capture ?? throw new InvalidOperationException("no graph capture is running on this pool");
            _capture = null;
            _graphs.Add(memory);
            return memory;
        }
    }

    /// <summary>Gives a graph's blocks back to the free lists (the graph is gone; work it queued runs before any later use).</summary>
    internal void ReleaseGraphMemory(GraphMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        lock (_gate)
        {
            if (_disposed || !_graphs.Remove(memory)) return; // Dispose freed the blocks already, or they went back before
            foreach (var (pointer, size) in memory.Blocks) PushFree(pointer, size);
            memory.Blocks.Clear();
        }
    }

    private void PushFree(ulong pointer, long size)
    {
        if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new Stack<ulong>();
        stack.Push(pointer);
        _cached += size;
    }

    /// <summary>Frees everything, including blocks still handed out (their buffers become unusable).</summary>
    /// <remarks>
    /// After a failed kernel every driver call of the context reports that failure; the blocks then go with
    /// the context, so Dispose ignores those errors instead of leaving the context referenced.
    /// </remarks>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            try { _allocator.WaitIdle(); } catch (CudaException) { }
            foreach (var b in _outstanding)
            {
                b.MarkReleased();
                FreeQuietly(b.RawPointer, b.Capacity);
            }
            _outstanding.Clear();
            _inUse = 0;
            foreach (var (size, stack) in _free)
                while (stack.Count > 0) FreeQuietly(stack.Pop(), size);
            _cached = 0;
            if (_capture is not null) _graphs.Add(_capture);
            _capture = null;
            foreach (var memory in _graphs)
            {
                foreach (var (pointer, size) in memory.Blocks) FreeQuietly(pointer, size);
                memory.Blocks.Clear();
            }
            _graphs.Clear();
        }
    }

    private void FreeQuietly(ulong p, long size)
    {
        try
        {
            FreeBlock(p, size);
        }
        catch (CudaException)
        {
            _reserved -= size; // released with the context
        }
    }

    private DeviceBuffer HandOut(ulong p, long bytes, long size, bool pooled)
    {
        var b = new DeviceBuffer(this, p, bytes, size, pooled);
        _outstanding.Add(b);
        _inUse += size;
        return b;
    }

    private ulong AllocateWithRetry(long size)
    {
        if (_capture is not null)
            throw new InvalidOperationException($"a CUDA graph capture needs a new device block of {size} bytes, and cuMemAlloc cannot run inside a capture; " +
                                                "run the captured work once before capturing so that the pool holds the blocks it rents");
        ulong p;
        try
        {
            p = _allocator.Allocate(size);
        }
        catch (CudaException e) when (e.IsOutOfMemory && _cached > 0)
        {
            _allocator.WaitIdle();
            FreeCached();
            p = _allocator.Allocate(size);
        }
        _allocations++;
        _reserved += size;
        _peak = Math.Max(_peak, _reserved);
        return p;
    }

    private void FreeCached()
    {
        foreach (var (size, stack) in _free)
            while (stack.Count > 0) FreeBlock(stack.Pop(), size);
        _cached = 0;
    }

    private void FreeBlock(ulong p, long size)
    {
        _allocator.Free(p);
        _frees++;
        _reserved -= size;
    }
}

/// <summary>The blocks a captured CUDA graph keeps: returned while it was captured, so its replays may still use them.</summary>
internal sealed class GraphMemory
{
    /// <summary>Block addresses and sizes.</summary>
    public List<(ulong Pointer, long Size)> Blocks { get; } = [];
}

/// <summary>cuMemAlloc/cuMemFree in one context.</summary>
internal sealed class DriverAllocator(CudaContext context) : IDeviceAllocator
{
    public ulong Allocate(long bytes)
    {
        context.MakeCurrent();
        CudaCheck.Driver(Interop.CudaDriver.cuMemAlloc_v2(out var p, (nuint)bytes), nameof(Interop.CudaDriver.cuMemAlloc_v2), $"{bytes} bytes");
        return p;
    }

    public void Free(ulong pointer)
    {
        context.MakeCurrent();
        CudaCheck.Driver(Interop.CudaDriver.cuMemFree_v2(pointer), nameof(Interop.CudaDriver.cuMemFree_v2));
    }

    public void WaitIdle() => context.Synchronize();
}
