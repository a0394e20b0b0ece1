// The CPU backend's key/value cache: per layer, growable arrays of keys and values, [length, kvDim] to its
// users, stored as float32, bf16 or f16. Capacity doubles, so appends are amortised O(1); compaction
// (RemoveRows, RemoveRanges) copies the kept rows into arrays sized for them, so memory is given back.
//
// A 16-bit cache halves the bytes that decode attention reads per step and the memory a long context holds;
// keys and values are rounded once, when appended (bf16: to nearest even, as torch rounds; f16: IEEE), and
// attention reads them where they are (AttentionKv16.cs). Views of a 16-bit layer are CpuKvView tensors,
// which the CPU backend's attention and copies understand.
//
// A 16-bit cache made with the heads' width (the backend makes it so) stores each head's rows together,
// [kvDim / headDim][capacity][headDim]: decode attention then walks one head's keys and values as one
// sequential stream each. Row-major rows put one head's keys kvDim elements apart (8 KiB at LLaVA-7B's width),
// which the hardware prefetchers do not follow and which all fall into the same few L1 sets: one decode step's
// attention over 576 keys took 0.39 ms a layer that way against 0.16 ms head by head on a 2-core AMD Zen 4
// (0.11 with the kernel's prefetch; 2 threads, 8 layers' caches from memory, measured). A float32 cache stays
// row-major (its views are plain CpuTensors).
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

/// <summary>Per-layer growable key/value arrays in float32, bf16 or f16.</summary>
public sealed class CpuKvCache : KvCache
{
    private const int MinRows = 16;
    private readonly int _kvDim, _partWidth;
    private readonly Array[] _k;
    private readonly Array[] _v;
    private readonly int[] _length;
    private readonly int[] _capacity;
    private readonly bool[] _nonFinite;

    /// <summary>Creates an empty float32 cache.</summary>
    /// <exception cref="ArgumentOutOfRangeException">layers is negative or kvDim not positive.</exception>
    public CpuKvCache(int layers, int kvDim) : this(layers, kvDim, DType.F32) { }

    /// <summary>Creates an empty cache storing keys and values as <paramref name="storage"/> (F32, BF16 or F16), row-major.</summary>
    /// <exception cref="ArgumentOutOfRangeException">layers is negative, kvDim not positive, or the storage type is not one of the three.</exception>
    public CpuKvCache(int layers, int kvDim, DType storage) : this(layers, kvDim, storage, kvDim) { }

    /// <summary>
    /// Creates an empty cache storing keys and values as <paramref name="storage"/> (F32, BF16 or F16); a 16-bit one
    /// keeps the rows of each <paramref name="headDim"/>-wide head together (see the file header).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">layers is negative, kvDim not positive, headDim not a positive divisor of kvDim, or the storage type is not one of the three.</exception>
    public CpuKvCache(int layers, int kvDim, DType storage, int headDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvDim);
        if (storage is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentOutOfRangeException(nameof(storage), storage, "a KV cache stores F32, BF16 or F16");
        if (headDim <= 0 || kvDim % headDim != 0)
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, $"a head's width must divide the cache's width {kvDim}");
        Storage = storage;
        _kvDim = kvDim;
        _partWidth = storage == DType.F32 ? kvDim : headDim;
        _k = new Array[layers];
        _v = new Array[layers];
        _length = new int[layers];
        _capacity = new int[layers];
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

    /// <summary>Columns stored together per row: the head width for a 16-bit cache made with one, else kvDim.</summary>
    private int Parts => _kvDim / _partWidth;

    private Array NewStore(long elements) => Storage == DType.F32 ? new float[elements] : new ushort[elements];

    /// <inheritdoc/>
    public override void Append(int layer, Tensor keys, Tensor values)
    {
        if (keys.Cols != _kvDim || values.Cols != _kvDim || keys.Rows != values.Rows)
            throw new ArgumentException($"keys {keys} and values {values} do not fit a cache of width {_kvDim}");
        if (keys is not CpuTensor k || values is not CpuTensor v)
            throw new ArgumentException($"keys {keys} and values {values} must be CPU tensors");
        int n = keys.Rows, len = _length[layer];
        if ((long)len + n > _capacity[layer])
        {
            long cap = Math.Max((long)len + n, Math.Max(MinRows, 2L * _capacity[layer]));
            if (cap * _kvDim > Array.MaxLength) throw new OutOfMemoryException($"a KV cache layer of {cap} rows x {_kvDim} is larger than one array holds");
            Rebuild(layer, [(0, len)], (int)cap);
        }
        Store(k.Span, n, _k[layer], layer);
        Store(v.Span, n, _v[layer], layer);
        _length[layer] = len + n;
    }

    /// <summary>
    /// Writes <paramref name="n"/> float32 rows after the layer's last row, rounding to the storage type: one span for
    /// row-major storage, a head's slice of each row at a time otherwise.
    /// </summary>
    private void Store(ReadOnlySpan<float> src, int n, Array store, int layer)
    {
        int len = _length[layer], cap = _capacity[layer], p = _partWidth;
        if (Parts == 1)
        {
            Store(src, store, (long)len * _kvDim, layer);
            return;
        }
        for (int part = 0; part < Parts; part++)
        {
            long at = ((long)part * cap + len) * p;
            for (int i = 0; i < n; i++, at += p) Store(src.Slice(i * _kvDim + part * p, p), store, at, layer);
        }
    }

    /// <summary>Writes float32 elements into the store at element <paramref name="at"/>, rounding to the storage type.</summary>
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

    /// <summary>
    /// New arrays of <paramref name="capacity"/> rows holding the layer's <paramref name="runs"/> of rows, in order
    /// (growth: the one run of all rows; compaction: the kept runs).
    /// </summary>
    private void Rebuild(int layer, IReadOnlyList<(int Start, int Count)> runs, int capacity)
    {
        int p = _partWidth, oldCap = _capacity[layer];
        foreach (var store in new[] { _k, _v })
        {
            var old = store[layer];
            var fresh = NewStore((long)capacity * _kvDim);
            for (int part = 0; part < Parts; part++)
            {
                long to = (long)part * capacity * p;
                foreach (var (start, count) in runs)
                {
                    Array.Copy(old, ((long)part * oldCap + start) * p, fresh, to, (long)count * p);
                    to += (long)count * p;
                }
            }
            store[layer] = fresh;
        }
        _capacity[layer] = capacity;
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
        int cap = _capacity[layer];
        return (new CpuKvView((ushort[])_k[layer], Storage, 0, len, _kvDim, finite, _partWidth, cap), new CpuKvView((ushort[])_v[layer], Storage, 0, len, _kvDim, finite, _partWidth, cap));
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
        Rebuild(layer, runs, Math.Max(keep, MinRows));
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
        for (int l = 0; l < Layers; l++) { _k[l] = NewStore(0); _v[l] = NewStore(0); _length[l] = 0; _capacity[l] = 0; }
    }
}

/// <summary>
/// A view of the bf16 or f16 keys or values of one layer of a <see cref="CpuKvCache"/>, [rows, kvDim]: what
/// the CPU backend's attention reads in place. Valid until the next append to or compaction of that layer.
/// </summary>
public sealed class CpuKvView : Tensor
{
    internal CpuKvView(ushort[] buffer, DType type, int row, int rows, int cols, bool finite, int partWidth, int capacity) : base(rows, cols)
    {
        Buffer = buffer;
        Type = type;
        FirstRow = row;
        Finite = finite;
        PartWidth = partWidth;
        Capacity = capacity;
    }

    /// <summary>
    /// The layer's store: Cols / <see cref="PartWidth"/> parts of <see cref="Capacity"/> rows of
    /// <see cref="PartWidth"/> elements each (one part, row-major, when the part is a whole row).
    /// </summary>
    internal ushort[] Buffer { get; }

    internal int FirstRow { get; }

    /// <summary>Columns of a row stored together (a head's width, or the whole row).</summary>
    internal int PartWidth { get; }

    /// <summary>Rows each part has room for.</summary>
    internal int Capacity { get; }

    /// <summary>The stored element type (BF16 or F16).</summary>
    public DType Type { get; }

    /// <summary>False when an f16 element is Inf or NaN.</summary>
    internal bool Finite { get; }

    /// <summary>Elements between one part's consecutive rows.</summary>
    internal long RowStride => PartWidth;

    /// <summary>Elements between part c and part c + 1 at the same row.</summary>
    internal long PartStride => (long)Capacity * PartWidth;

    /// <summary>Index in <see cref="Buffer"/> of this view's row 0, column 0.</summary>
    internal long Origin => (long)FirstRow * PartWidth;

    /// <inheritdoc/>
    public override Tensor Slice(int row, int count)
    {
        if (row < 0 || count < 0 || row + count > Rows) throw new ArgumentOutOfRangeException(nameof(row), $"rows [{row}, {row + count}) of a {Rows}-row tensor");
        return new CpuKvView(Buffer, Type, FirstRow + row, count, Cols, Finite, PartWidth, Capacity);
    }

    /// <summary>Widens the view to float32, [rows, kvDim] row-major.</summary>
    public void CopyTo(Span<float> dst)
    {
        if (dst.Length < (long)Rows * Cols) throw new ArgumentException($"{dst.Length} floats cannot hold a {Rows} x {Cols} view", nameof(dst));
        int parts = Cols / PartWidth;
        for (int part = 0; part < parts; part++)
        {
            long from = Origin + part * PartStride;
            for (int r = 0; r < Rows; r++, from += RowStride)
                DTypes.ToFloat(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Buffer.AsSpan((int)from, PartWidth)), Type,
                    dst.Slice(r * Cols + part * PartWidth, PartWidth));
        }
    }

    /// <inheritdoc/>
    public override void Dispose() { }
}
