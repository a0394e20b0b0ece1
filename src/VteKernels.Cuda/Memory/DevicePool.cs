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
/// <param name="ReservedBytes">Bytes held from the driver (in use plus cached).</param>
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
            if (buffer.Pooled)
            {
                if (!_free.TryGetValue(buffer.Capacity, out var stack)) _free[buffer.Capacity] = stack = new Stack<ulong>();
                stack.Push(buffer.RawPointer);
                _cached += buffer.Capacity;
            }
            else
            {
                // An exact block (a weight) may still be read by queued kernels.
                _allocator.WaitIdle();
                FreeBlock(buffer.RawPointer, buffer.Capacity);
            }
        }
    }

    /// <summary>Frees everything, including blocks still handed out (their buffers become unusable).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _allocator.WaitIdle();
            foreach (var b in _outstanding)
            {
                b.MarkReleased();
                FreeBlock(b.RawPointer, b.Capacity);
            }
            _outstanding.Clear();
            _inUse = 0;
            FreeCached();
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
