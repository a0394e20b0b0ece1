// Device-side storage of the CUDA backend: activation matrices (CudaTensor, pooled device memory in the
// backend's element type, row views sharing storage), uploaded weights (CudaWeight, exact-size blocks) and
// the per-layer key/value cache (CudaKvCache: one growable buffer pair per layer, capacity doubling from
// 256 tokens, each layer its own length as the orchestrator's visual-token exit needs).
using VteKernels.Backends;

namespace VteKernels.Cuda;

/// <summary>An activation matrix in device memory; element type <see cref="DType"/>, row-major.</summary>
public sealed class CudaTensor : Tensor
{
    private readonly DeviceBuffer? _buffer;
    private readonly ulong _pointer;
    private readonly bool _owner;

    internal CudaTensor(CudaBackend backend, DeviceBuffer? buffer, ulong pointer, int rows, int cols, DType dtype, bool owner) : base(rows, cols)
    {
        Backend = backend;
        _buffer = buffer;
        _pointer = pointer;
        _owner = owner;
        DType = dtype;
    }

    /// <summary>The backend that owns the storage.</summary>
    internal CudaBackend Backend { get; }

    /// <summary>Element type on the device.</summary>
    public DType DType { get; }

    /// <summary>Device address of row 0.</summary>
    /// <exception cref="ObjectDisposedException">The storage was returned (this tensor or the one it views was disposed).</exception>
    public ulong Pointer
    {
        get
        {
            if (_buffer is not null && _buffer.IsDisposed) throw new ObjectDisposedException(nameof(CudaTensor), $"the storage of {this} was returned");
            return _pointer;
        }
    }

    /// <summary>Bytes of one row.</summary>
    public long RowBytes => (long)Cols * DType.Size();

    /// <summary>Bytes of the whole matrix.</summary>
    public long ByteLength => (long)Rows * RowBytes;

    /// <inheritdoc/>
    public override Tensor Slice(int row, int count)
    {
        if (row < 0 || count < 0 || row + count > Rows) throw new ArgumentOutOfRangeException(nameof(row), $"rows [{row}, {row + count}) of a {Rows}-row tensor");
        return new CudaTensor(Backend, _buffer, Pointer + (ulong)(row * RowBytes), count, Cols, DType, owner: false);
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (_owner) _buffer?.Dispose();
    }

    /// <inheritdoc/>
    public override string ToString() => $"[{Rows}, {Cols}] {DType} on cuda";
}

/// <summary>A weight in device memory, converted to the backend's element type.</summary>
public sealed class CudaWeight : DeviceWeight
{
    internal CudaWeight(CudaBackend backend, Weight source, DeviceBuffer buffer, DType dtype)
    {
        Backend = backend;
        Source = source;
        Buffer = buffer;
        DType = dtype;
    }

    /// <inheritdoc/>
    public override Weight Source { get; }

    /// <summary>Element type on the device.</summary>
    public DType DType { get; }

    internal DeviceBuffer Buffer { get; }

    internal CudaBackend Backend { get; }

    /// <summary>Device address.</summary>
    public ulong Pointer => Buffer.Pointer;

    /// <summary>Returns the device copy to the pool; the weight must not be used afterwards.</summary>
    public override void Dispose()
    {
        Buffer.Dispose();
        base.Dispose();
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Source.Name} {DType} [{string.Join(", ", Source.Shape)}] on cuda";
}

/// <summary>Per-layer key/value rows in device memory.</summary>
public sealed class CudaKvCache : KvCache
{
    /// <summary>Tokens a layer's first buffer holds.</summary>
    public const int InitialCapacity = 256;

    private readonly CudaBackend _backend;
    private readonly int _kvDim;
    private readonly DeviceBuffer?[] _k, _v;
    private readonly int[] _length, _capacity;

    internal CudaKvCache(CudaBackend backend, int layers, int kvDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvDim);
        _backend = backend;
        _kvDim = kvDim;
        _k = new DeviceBuffer?[layers];
        _v = new DeviceBuffer?[layers];
        _length = new int[layers];
        _capacity = new int[layers];
    }

    private long RowBytes => (long)_kvDim * _backend.DType.Size();

    /// <inheritdoc/>
    public override int Layers => _length.Length;

    /// <inheritdoc/>
    public override int Length(int layer) => _length[layer];

    /// <inheritdoc/>
    public override void Append(int layer, Tensor keys, Tensor values)
    {
        var k = _backend.Own(keys);
        var v = _backend.Own(values);
        if (k.Cols != _kvDim || v.Cols != _kvDim || k.Rows != v.Rows)
            throw new ArgumentException($"keys {keys} and values {values} do not fit a cache of width {_kvDim}");
        int n = k.Rows, len = _length[layer];
        if (n == 0) return;
        if (len + n > _capacity[layer])
        {
            int cap = Math.Max(len + n, Math.Max(InitialCapacity, _capacity[layer] * 2));
            _k[layer] = Grow(_k[layer], len, cap);
            _v[layer] = Grow(_v[layer], len, cap);
            _capacity[layer] = cap;
        }
        ulong offset = (ulong)(len * RowBytes);
        _backend.CopyDeviceToDevice(k.Pointer, _k[layer]!.Pointer + offset, n * RowBytes);
        _backend.CopyDeviceToDevice(v.Pointer, _v[layer]!.Pointer + offset, n * RowBytes);
        _length[layer] = len + n;
    }

    private DeviceBuffer Grow(DeviceBuffer? old, int rows, int capacity)
    {
        var fresh = _backend.Pool.Rent(capacity * RowBytes);
        if (old is not null)
        {
            if (rows > 0) _backend.CopyDeviceToDevice(old.Pointer, fresh.Pointer, rows * RowBytes);
            old.Dispose(); // stream order: the copy above runs before any later reuse of the block
        }
        return fresh;
    }

    /// <inheritdoc/>
    public override (Tensor Keys, Tensor Values) View(int layer)
    {
        int len = _length[layer];
        var k = _k[layer];
        var v = _v[layer];
        return (new CudaTensor(_backend, k, k?.Pointer ?? 0, len, _kvDim, _backend.DType, owner: false),
                new CudaTensor(_backend, v, v?.Pointer ?? 0, len, _kvDim, _backend.DType, owner: false));
    }

    /// <inheritdoc/>
    public override long BytesHeld
    {
        get
        {
            long b = 0;
            for (int l = 0; l < Layers; l++) b += (_k[l]?.Capacity ?? 0) + (_v[l]?.Capacity ?? 0);
            return b;
        }
    }

    /// <inheritdoc/>
    public override int ElementBytes => _backend.DType.Size();

    /// <inheritdoc/>
    /// <remarks>
    /// The kept rows are copied into blocks sized as a cache that never held the removed rows would be (the
    /// kept rows, at least <see cref="InitialCapacity"/>); the old blocks go back to the pool. Two
    /// device-to-device copies per tensor, in stream order before any later use.
    /// </remarks>
    public override void RemoveRows(int layer, int start, int count)
    {
        int len = _length[layer];
        if (start < 0 || count < 0 || start + count > len)
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) of a layer holding {len}");
        if (count == 0) return;
        int keep = len - count, cap = Math.Max(keep, InitialCapacity);
        _k[layer] = Compact(_k[layer]!, start, count, len, cap);
        _v[layer] = Compact(_v[layer]!, start, count, len, cap);
        _capacity[layer] = cap;
        _length[layer] = keep;
    }

    private DeviceBuffer Compact(DeviceBuffer old, int start, int count, int len, int capacity)
    {
        var fresh = _backend.Pool.Rent(capacity * RowBytes);
        if (start > 0) _backend.CopyDeviceToDevice(old.Pointer, fresh.Pointer, start * RowBytes);
        int tail = len - start - count;
        if (tail > 0) _backend.CopyDeviceToDevice(old.Pointer + (ulong)((start + count) * RowBytes), fresh.Pointer + (ulong)(start * RowBytes), tail * RowBytes);
        old.Dispose();
        return fresh;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// One compaction for all ranges: one new block per tensor sized as <see cref="RemoveRows"/> sizes it, one
    /// device-to-device copy per kept run and tensor, the old blocks back to the pool (stream order: the copies
    /// run before any later reuse). Keys keep the rotation of their original positions.
    /// </remarks>
    public override void RemoveRanges(int layer, IReadOnlyList<(int Start, int Count)> ranges)
    {
        int removed = CheckRanges(layer, ranges);
        if (removed == 0) return;
        int len = _length[layer], keep = len - removed, cap = Math.Max(keep, InitialCapacity);
        var runs = KeptRuns(len, ranges);
        _k[layer] = Compact(_k[layer]!, runs, cap);
        _v[layer] = Compact(_v[layer]!, runs, cap);
        _capacity[layer] = cap;
        _length[layer] = keep;
    }

    private DeviceBuffer Compact(DeviceBuffer old, List<(int Start, int Count)> runs, int capacity)
    {
        var fresh = _backend.Pool.Rent(capacity * RowBytes);
        long to = 0;
        foreach (var (start, count) in runs)
        {
            _backend.CopyDeviceToDevice(old.Pointer + (ulong)(start * RowBytes), fresh.Pointer + (ulong)(to * RowBytes), count * RowBytes);
            to += count;
        }
        old.Dispose();
        return fresh;
    }

    /// <inheritdoc/>
    public override void Clear() => Array.Clear(_length);

    /// <inheritdoc/>
    public override void Dispose()
    {
        for (int l = 0; l < Layers; l++)
        {
            _k[l]?.Dispose();
            _v[l]?.Dispose();
            _k[l] = _v[l] = null;
            _length[l] = _capacity[l] = 0;
        }
    }
}
