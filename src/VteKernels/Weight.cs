// A read-only view of one stored tensor: dtype, shape and bytes. The bytes live either in a memory-mapped
// safetensors file (kept alive by its owner) or in a pinned managed array (hand-built weights in tests).
// Nothing is copied or widened here: consumers widen rows to float32 as they read them.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace VteKernels;

/// <summary>A read-only stored tensor in its on-disk dtype. Valid while its owner (a weight store) is open.</summary>
public sealed unsafe class Weight
{
    private readonly byte* _data;
    private readonly byte[]? _pinned; // keeps a managed backing array alive

    /// <summary>The tensor's name as stored.</summary>
    public string Name { get; }

    /// <summary>Element type as stored.</summary>
    public DType DType { get; }

    /// <summary>Shape, outermost first.</summary>
    public IReadOnlyList<int> Shape { get; }

    /// <summary>Number of elements.</summary>
    public long ElementCount { get; }

    /// <summary>Size in bytes.</summary>
    public long ByteLength => DType.ByteCount(ElementCount);

    /// <summary>Rows of a 2-D tensor (shape[0]); the element count of a 1-D tensor is one row.</summary>
    public int Rows => Shape.Count == 1 ? 1 : Shape[0];

    /// <summary>Elements per row: the product of all dimensions but the first (a 1-D tensor is one row).</summary>
    public int Cols => Shape.Count == 1 ? Shape[0] : (int)(ElementCount / Math.Max(1, Shape[0]));

    /// <summary>
    /// Q8_0 or Q4_0 rows stored interleaved by sixteens for the CPU decode kernels (BlockInterleave.cs; the CPU backend makes
    /// such copies at upload). Row reads (<see cref="RowsToFloat"/>, <see cref="ToFloatArray"/>) give the same
    /// values as the plain layout; <see cref="RowBytes"/> is not available.
    /// </summary>
    internal bool Interleaved { get; }

    internal Weight(string name, DType dtype, int[] shape, byte* data, byte[]? pinned = null, bool interleaved = false)
    {
        if (interleaved && (!dtype.IsBlockQuantized() || shape.Length != 2)) throw new ArgumentException($"'{name}': only 2-D Q8_0 and Q4_0 weights can be interleaved", nameof(interleaved));
        Interleaved = interleaved;
        Name = name;
        DType = dtype;
        Shape = shape;
        long n = 1;
        foreach (var d in shape) n *= d;
        ElementCount = n;
        _data = data;
        _pinned = pinned;
    }

    /// <summary>Creates a weight that owns a copy of <paramref name="values"/>, stored as <paramref name="dtype"/> (quantized for Q8_0 and Q4_0).</summary>
    /// <exception cref="ArgumentException">The shape does not match the number of values, or a quantized row is not whole blocks.</exception>
    public static Weight FromFloats(string name, ReadOnlySpan<float> values, DType dtype, params int[] shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape of '{name}'", nameof(shape));
            n *= d;
        }
        if (n != values.Length) throw new ArgumentException($"'{name}': shape [{string.Join(", ", shape)}] holds {n} elements, got {values.Length}", nameof(shape));
        if (dtype.IsBlockQuantized() && (shape.Length == 0 || n / Math.Max(1, shape[0]) % BlockQuant.BlockElements != 0))
            throw new ArgumentException($"'{name}': {dtype} rows must hold whole blocks of {BlockQuant.BlockElements}, shape is [{string.Join(", ", shape)}]", nameof(shape));
        var bytes = GC.AllocateArray<byte>(checked((int)dtype.ByteCount(values.Length)), pinned: true);
        DTypes.FromFloat(values, dtype, bytes);
        return new Weight(name, dtype, shape, (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(bytes)), bytes);
    }

    /// <summary>Bytes per row (for a block-quantized weight: its blocks).</summary>
    public long RowByteLength => DType.ByteCount(Cols);

    /// <summary>The managed array that holds the bytes, if one does.</summary>
    internal byte[]? PinnedArray => _pinned;

    /// <summary>The first stored byte (valid while the owner is open; managed backing arrays are pinned).</summary>
    internal byte* Pointer => _data;

    /// <summary>The raw bytes. Tensors over 2 GiB cannot be viewed as one span.</summary>
    public ReadOnlySpan<byte> Bytes
    {
        get
        {
            if (ByteLength > int.MaxValue) throw new InvalidOperationException($"tensor '{Name}' is {ByteLength} bytes, over the 2 GiB a span can view");
            return new ReadOnlySpan<byte>(_data, (int)ByteLength);
        }
    }

    /// <summary>The raw bytes of rows [row, row + count).</summary>
    /// <exception cref="InvalidOperationException">The rows are stored interleaved (a CPU backend's Q8_0 or Q4_0 copy).</exception>
    public ReadOnlySpan<byte> RowBytes(int row, int count = 1)
    {
        if ((uint)row > (uint)Rows || count < 0 || row + count > Rows) throw new ArgumentOutOfRangeException(nameof(row));
        if (Interleaved && row < BlockInterleave.GroupedRows(Rows))
            throw new InvalidOperationException($"tensor '{Name}' has its rows interleaved by sixteens for the CPU kernels; read them with RowsToFloat");
        long rowBytes = RowByteLength;
        return new ReadOnlySpan<byte>(_data + row * rowBytes, checked((int)(rowBytes * count)));
    }

    /// <summary>Widens rows [row, row + dst.Length / Cols) to float32.</summary>
    public void RowsToFloat(int row, Span<float> dst)
    {
        if (dst.Length % Cols != 0) throw new ArgumentException("destination is not a whole number of rows", nameof(dst));
        if (!Interleaved)
        {
            DTypes.ToFloat(RowBytes(row, dst.Length / Cols), DType, dst);
            return;
        }
        int count = dst.Length / Cols, blocks = Cols / BlockQuant.BlockElements;
        if ((uint)row > (uint)Rows || row + count > Rows) throw new ArgumentOutOfRangeException(nameof(row));
        int blockBytes = BlockQuant.BlockBytes(DType);
        var plain = new byte[blocks * blockBytes];
        fixed (byte* p = plain)
            for (int r = 0; r < count; r++)
            {
                if (row + r < BlockInterleave.GroupedRows(Rows)) BlockInterleave.RowBlocks(_data, row + r, blocks, blockBytes, 0, blocks, p);
                else RowBytes(row + r).CopyTo(plain);
                BlockQuant.Dequantize(plain, DType, dst.Slice(r * Cols, Cols));
            }
    }

    /// <summary>The whole tensor widened to a new float32 array.</summary>
    public float[] ToFloatArray()
    {
        var dst = new float[checked((int)ElementCount)];
        if (Interleaved) RowsToFloat(0, dst);
        else DTypes.ToFloat(Bytes, DType, dst);
        return dst;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {DType} [{string.Join(", ", Shape)}]";
}
