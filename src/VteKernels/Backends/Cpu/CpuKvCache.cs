// The CPU backend's key/value cache: per layer, growable arrays of keys and values [length, kvDim], stored
// as float32, bf16 or f16. Capacity doubles, so appends are amortised O(1); compaction (RemoveRows,
// RemoveRanges) copies the kept rows into arrays sized for them, so memory is given back.
//
// A 16-bit cache halves the bytes that decode attention reads per step and the memory a long context holds;
// keys and values are rounded once, when appended (bf16: to nearest even, as torch rounds; f16: IEEE), and
// attention reads them where they are (AttentionKv16.cs). Views of a 16-bit layer are CpuKvView tensors,
// which the CPU backend's attention and copies understand.
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

/// <summary>Per-layer growable key/value arrays in float32, bf16 or f16.</summary>
public sealed class CpuKvCache : KvCache
{
    private const int MinRows = 16;
    private readonly int _kvDim;
    private readonly Array[] _k;
    private readonly Array[] _v;
    private readonly int[] _length;
    private readonly bool[] _nonFinite;

    /// <summary>Creates an empty float32 cache.</summary>
    /// <exception cref="ArgumentOutOfRangeException">layers is negative or kvDim not positive.</exception>
    public CpuKvCache(int layers, int kvDim) : this(layers, kvDim, DType.F32) { }

    /// <summary>Creates an empty cache storing keys and values as <paramref name="storage"/> (F32, BF16 or F16).</summary>
    /// <exception cref="ArgumentOutOfRangeException">layers is negative, kvDim not positive, or the storage type is not one of the three.</exception>
    public CpuKvCache(int layers, int kvDim, DType storage)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvDim);
        if (storage is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentOutOfRangeException(nameof(storage), storage, "a KV cache stores F32, BF16 or F16");
        Storage = storage;
        _kvDim = kvDim;
        _k = new Array[layers];
        _v = new Array[layers];
        _length = new int[layers];
        _nonFinite = new bool[layers];
        for (int l = 0; l < layers; l++) { _k[l] = NewStore(0); _v[l] = NewStore(0); }
    }

    /// <summary>The element type keys and values are stored in.</summary>
    public DType Storage { get; }

    /// <inheritdoc/>
    public override int ElementBytes => Storage.Size();

    /// <inheritdoc/>
    public override int Layers => _length.Length;

    /// <inheritdoc/>
    public override int Length(int layer) => _length[layer];

    private Array NewStore(long elements) => Storage == DType.F32 ? new float[elements] : new ushort[elements];

    /// <inheritdoc/>
    public override unsafe void Append(int layer, Tensor keys, Tensor values)
    {
        if (keys.Cols != _kvDim || values.Cols != _kvDim || keys.Rows != values.Rows)
            throw new ArgumentException($"keys {keys} and values {values} do not fit a cache of width {_kvDim}");
        if (keys is not CpuTensor k || values is not CpuTensor v)
            throw new ArgumentException($"keys {keys} and values {values} must be CPU tensors");
        int n = keys.Rows, len = _length[layer];
        long need = (long)(len + n) * _kvDim;
        if (need > _k[layer].Length)
        {
            long cap = Math.Max(need, Math.Max((long)MinRows * _kvDim, _k[layer].Length * 2L));
            _k[layer] = Grow(_k[layer], cap, (long)len * _kvDim);
            _v[layer] = Grow(_v[layer], cap, (long)len * _kvDim);
        }
        long at = (long)len * _kvDim, count = (long)n * _kvDim;
        Store(k.Span, _k[layer], at, layer);
        Store(v.Span, _v[layer], at, layer);
        _length[layer] = len + n;
    }

    private Array Grow(Array old, long capacity, long used)
    {
        var fresh = NewStore(capacity);
        Array.Copy(old, 0, fresh, 0, used);
        return fresh;
    }

    /// <summary>Writes float32 rows into the store at element <paramref name="at"/>, rounding to the storage type.</summary>
    private void Store(ReadOnlySpan<float> src, Array store, long at, int layer)
    {
        switch (store)
        {
            case float[] f:
                src.CopyTo(f.AsSpan((int)at, src.Length));
                break;
            case ushort[] u when Storage == DType.BF16:
                CpuOps.ToBFloat16(src, u.AsSpan((int)at, src.Length));
                break;
            case ushort[] u:
                var dst = System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, Half>(u.AsSpan((int)at, src.Length));
                TensorPrimitives.ConvertToHalf(src, dst);
                // Inf or NaN in an f16 layer (an overflow past 65504, or a NaN in) sends attention to its exact slow path.
                if (!_nonFinite[layer] && ContainsNonFiniteHalf(u.AsSpan((int)at, src.Length))) _nonFinite[layer] = true;
                break;
        }
    }

    private static bool ContainsNonFiniteHalf(ReadOnlySpan<ushort> h)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var exp = Vector512.Create((ushort)0x7C00);
            for (; i + 32 <= h.Length; i += 32)
                if (Vector512.EqualsAny(Vector512.Create(h.Slice(i, 32)) & exp, exp)) return true;
        }
        for (; i < h.Length; i++)
            if ((h[i] & 0x7C00) == 0x7C00) return true;
        return false;
    }

    /// <inheritdoc/>
    /// <remarks>A float32 cache gives <see cref="CpuTensor"/> views, a 16-bit one <see cref="CpuKvView"/>s.</remarks>
    public override (Tensor Keys, Tensor Values) View(int layer)
    {
        int len = _length[layer];
        if (Storage == DType.F32)
            return (new CpuTensor((float[])_k[layer], 0, len, _kvDim, owner: false), new CpuTensor((float[])_v[layer], 0, len, _kvDim, owner: false));
        bool finite = !_nonFinite[layer];
        return (new CpuKvView((ushort[])_k[layer], Storage, 0, len, _kvDim, finite), new CpuKvView((ushort[])_v[layer], Storage, 0, len, _kvDim, finite));
    }

    /// <inheritdoc/>
    public override long BytesHeld
    {
        get
        {
            long b = 0;
            for (int l = 0; l < Layers; l++) b += ((long)_k[l].Length + _v[l].Length) * ElementBytes;
            return b;
        }
    }

    /// <inheritdoc/>
    public override void RemoveRows(int layer, int start, int count)
    {
        int len = _length[layer];
        if (start < 0 || count < 0 || start + count > len)
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) of a layer holding {len}");
        if (count == 0) return;
        Compact(layer, [(0, start), (start + count, len - start - count)], len - count);
    }

    /// <inheritdoc/>
    /// <remarks>One pass: the kept runs are copied once into arrays sized as <see cref="RemoveRows"/> sizes them.</remarks>
    public override void RemoveRanges(int layer, IReadOnlyList<(int Start, int Count)> ranges)
    {
        int removed = CheckRanges(layer, ranges);
        if (removed == 0) return;
        int len = _length[layer];
        Compact(layer, KeptRuns(len, ranges), len - removed);
    }

    /// <summary>
    /// Copies the kept runs of rows into arrays sized as a cache that never held the removed rows would be
    /// (the kept rows, at least the 16-row minimum), so their memory is released; appends grow it by doubling.
    /// </summary>
    private void Compact(int layer, IReadOnlyList<(int Start, int Count)> runs, int keep)
    {
        foreach (var store in new[] { _k, _v })
        {
            var old = store[layer];
            var fresh = NewStore((long)Math.Max(keep, MinRows) * _kvDim);
            long to = 0;
            foreach (var (start, count) in runs)
            {
                Array.Copy(old, (long)start * _kvDim, fresh, to * _kvDim, (long)count * _kvDim);
                to += count;
            }
            store[layer] = fresh;
        }
        _length[layer] = keep;
    }

    /// <inheritdoc/>
    public override void Clear()
    {
        Array.Clear(_length);
        Array.Clear(_nonFinite);
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        for (int l = 0; l < Layers; l++) { _k[l] = NewStore(0); _v[l] = NewStore(0); _length[l] = 0; }
    }
}

/// <summary>
/// A view of the bf16 or f16 keys or values of one layer of a <see cref="CpuKvCache"/>, [rows, kvDim]: what
/// the CPU backend's attention reads in place. Valid until the next append to or compaction of that layer.
/// </summary>
public sealed class CpuKvView : Tensor
{
    internal CpuKvView(ushort[] buffer, DType type, int row, int rows, int cols, bool finite) : base(rows, cols)
    {
        Buffer = buffer;
        Type = type;
        FirstRow = row;
        Finite = finite;
    }

    internal ushort[] Buffer { get; }

    internal int FirstRow { get; }

    /// <summary>The stored element type (BF16 or F16).</summary>
    public DType Type { get; }

    /// <summary>False when an f16 element is Inf or NaN.</summary>
    internal bool Finite { get; }

    /// <summary>The stored elements, row-major.</summary>
    public ReadOnlySpan<ushort> Elements => Buffer.AsSpan(FirstRow * Cols, Rows * Cols);

    /// <inheritdoc/>
    public override Tensor Slice(int row, int count)
    {
        if (row < 0 || count < 0 || row + count > Rows) throw new ArgumentOutOfRangeException(nameof(row), $"rows [{row}, {row + count}) of a {Rows}-row tensor");
        return new CpuKvView(Buffer, Type, FirstRow + row, count, Cols, Finite);
    }

    /// <summary>Widens the view to float32.</summary>
    public void CopyTo(Span<float> dst) =>
        DTypes.ToFloat(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Elements), Type, dst);

    /// <inheritdoc/>
    public override void Dispose() { }
}
