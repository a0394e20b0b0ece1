// The CPU backend: float32 activations in pooled managed arrays, weights used in place from the
// memory-mapped files (widened row block by row block inside the ops), every op a call into CpuOps.
// It is the reference oracle for the other backends, so it stays plain: no fusion, no reordering.
using System.Buffers;
using System.Numerics.Tensors;

namespace VteKernels.Backends.Cpu;

/// <summary>An activation matrix in a managed float array.</summary>
public sealed class CpuTensor : Tensor
{
    private float[]? _buffer;
    private readonly int _offset;
    private readonly bool _owner;

    internal CpuTensor(float[] buffer, int offset, int rows, int cols, bool owner) : base(rows, cols)
    {
        _buffer = buffer;
        _offset = offset;
        _owner = owner;
    }

    /// <summary>The values, row-major.</summary>
    public Span<float> Span => (_buffer ?? throw new ObjectDisposedException(nameof(CpuTensor))).AsSpan(_offset, Rows * Cols);

    /// <summary>Row <paramref name="row"/>.</summary>
    public Span<float> Row(int row) => Span.Slice(row * Cols, Cols);

    /// <inheritdoc/>
    public override Tensor Slice(int row, int count)
    {
        if (row < 0 || count < 0 || row + count > Rows) throw new ArgumentOutOfRangeException(nameof(row), $"rows [{row}, {row + count}) of a {Rows}-row tensor");
        return new CpuTensor(_buffer ?? throw new ObjectDisposedException(nameof(CpuTensor)), _offset + row * Cols, count, Cols, owner: false);
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (_owner && _buffer is not null) ArrayPool<float>.Shared.Return(_buffer);
        _buffer = null;
    }
}

/// <summary>A weight on the CPU: the stored view itself.</summary>
public sealed class CpuWeight(Weight source) : DeviceWeight
{
    /// <inheritdoc/>
    public override Weight Source { get; } = source;
}

/// <summary>The plain C# backend; uses all cores inside the larger ops.</summary>
public sealed class CpuBackend : IBackend
{
    /// <inheritdoc/>
    public string Name => "cpu";

    /// <inheritdoc/>
    public string Device => $"CPU ({Environment.ProcessorCount} threads, {CpuInfo.ProcessorName})";

    /// <inheritdoc/>
    public DeviceWeight Upload(Weight weight) => new CpuWeight(weight);

    /// <inheritdoc/>
    public Tensor Allocate(int rows, int cols)
    {
        int n = checked(rows * cols);
        return new CpuTensor(ArrayPool<float>.Shared.Rent(Math.Max(n, 1)), 0, rows, cols, owner: true);
    }

    private static CpuTensor C(Tensor t) => t as CpuTensor ?? throw new ArgumentException($"tensor {t} does not belong to the CPU backend");

    private static Weight W(DeviceWeight w) => w.Source;

    /// <inheritdoc/>
    public void CopyFromHost(ReadOnlySpan<float> src, Tensor dst) => src.CopyTo(C(dst).Span);

    /// <inheritdoc/>
    public void CopyToHost(Tensor src, Span<float> dst) => C(src).Span.CopyTo(dst);

    /// <inheritdoc/>
    public void CopyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols)
    {
        var s = C(src);
        var d = C(dst);
        if (srcRow < 0 || srcCol < 0 || srcRow + rows > s.Rows || srcCol + cols > s.Cols ||
            dstRow < 0 || dstCol < 0 || dstRow + rows > d.Rows || dstCol + cols > d.Cols)
            throw new ArgumentOutOfRangeException(nameof(rows), $"block {rows}x{cols} from {s}@({srcRow},{srcCol}) to {d}@({dstRow},{dstCol})");
        for (int r = 0; r < rows; r++)
            s.Row(srcRow + r).Slice(srcCol, cols).CopyTo(d.Row(dstRow + r).Slice(dstCol, cols));
    }

    /// <inheritdoc/>
    public void Embedding(DeviceWeight table, ReadOnlySpan<int> ids, Tensor dst) => CpuOps.Embedding(W(table), ids, C(dst).Span);

    /// <inheritdoc/>
    public void PatchEmbed(ReadOnlySpan<float> pixels, int channels, int height, int width, int patch, DeviceWeight conv, Tensor dst) =>
        CpuOps.PatchEmbed(pixels, channels, height, width, patch, W(conv), C(dst).Span);

    /// <inheritdoc/>
    public void Linear(Tensor x, DeviceWeight w, DeviceWeight? bias, Tensor y) =>
        CpuOps.Linear(C(x).Span, x.Rows, W(w), bias is null ? null : W(bias), C(y).Span);

    /// <inheritdoc/>
    public void RmsNorm(Tensor x, DeviceWeight gamma, float eps, Tensor y) => CpuOps.RmsNorm(C(x).Span, x.Rows, W(gamma), eps, C(y).Span);

    /// <inheritdoc/>
    public void LayerNorm(Tensor x, DeviceWeight gamma, DeviceWeight beta, float eps, Tensor y) =>
        CpuOps.LayerNorm(C(x).Span, x.Rows, W(gamma), W(beta), eps, C(y).Span);

    /// <inheritdoc/>
    public void Add(Tensor a, Tensor b, Tensor y) => TensorPrimitives.Add(C(a).Span, C(b).Span, C(y).Span);

    /// <inheritdoc/>
    public void AddWeight(Tensor x, DeviceWeight w)
    {
        var span = C(x).Span;
        if (W(w).ElementCount != span.Length) throw new ArgumentException($"weight {W(w)} does not match tensor {x}", nameof(w));
        var widened = ArrayPool<float>.Shared.Rent(span.Length);
        try
        {
            W(w).RowsToFloat(0, widened.AsSpan(0, span.Length));
            TensorPrimitives.Add(span, widened.AsSpan(0, span.Length), span);
        }
        finally { ArrayPool<float>.Shared.Return(widened); }
    }

    /// <inheritdoc/>
    public void QuickGelu(Tensor x) => CpuOps.QuickGelu(C(x).Span);

    /// <inheritdoc/>
    public void Gelu(Tensor x) => CpuOps.Gelu(C(x).Span);

    /// <inheritdoc/>
    public void SiluMul(Tensor gate, Tensor up, Tensor y) => CpuOps.SiluMul(C(gate).Span, C(up).Span, C(y).Span);

    /// <inheritdoc/>
    public void Rope(Tensor x, int heads, int headDim, ReadOnlySpan<int> positions, float theta) =>
        CpuOps.Rope(C(x).Span, x.Rows, heads, headDim, positions, theta);

    /// <inheritdoc/>
    public void Attention(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim, AttentionMask mask, Tensor output) =>
        CpuOps.Attention(C(q).Span, q.Rows, qHeads, C(k).Span, C(v).Span, k.Rows, kvHeads, headDim, mask, C(output).Span);

    /// <inheritdoc/>
    public KvCache CreateKvCache(int layers, int kvDim) => new CpuKvCache(layers, kvDim);

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>Per-layer growable key/value arrays; capacity doubles so appends are amortised O(1).</summary>
public sealed class CpuKvCache : KvCache
{
    private const int MinRows = 16;
    private readonly int _kvDim;
    private readonly float[][] _k;
    private readonly float[][] _v;
    private readonly int[] _length;

    /// <summary>Creates an empty cache.</summary>
    public CpuKvCache(int layers, int kvDim)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvDim);
        _kvDim = kvDim;
        _k = new float[layers][];
        _v = new float[layers][];
        _length = new int[layers];
        for (int l = 0; l < layers; l++) { _k[l] = []; _v[l] = []; }
    }

    /// <inheritdoc/>
    public override int Layers => _length.Length;

    /// <inheritdoc/>
    public override int Length(int layer) => _length[layer];

    /// <inheritdoc/>
    public override void Append(int layer, Tensor keys, Tensor values)
    {
        if (keys.Cols != _kvDim || values.Cols != _kvDim || keys.Rows != values.Rows)
            throw new ArgumentException($"keys {keys} and values {values} do not fit a cache of width {_kvDim}");
        int n = keys.Rows, len = _length[layer];
        int need = (len + n) * _kvDim;
        if (need > _k[layer].Length)
        {
            int cap = Math.Max(need, Math.Max(MinRows * _kvDim, _k[layer].Length * 2));
            Array.Resize(ref _k[layer], cap);
            Array.Resize(ref _v[layer], cap);
        }
        ((CpuTensor)keys).Span.CopyTo(_k[layer].AsSpan(len * _kvDim));
        ((CpuTensor)values).Span.CopyTo(_v[layer].AsSpan(len * _kvDim));
        _length[layer] = len + n;
    }

    /// <inheritdoc/>
    public override (Tensor Keys, Tensor Values) View(int layer) =>
        (new CpuTensor(_k[layer], 0, _length[layer], _kvDim, owner: false), new CpuTensor(_v[layer], 0, _length[layer], _kvDim, owner: false));

    /// <inheritdoc/>
    public override long BytesHeld
    {
        get
        {
            long b = 0;
            for (int l = 0; l < Layers; l++) b += (_k[l].LongLength + _v[l].LongLength) * sizeof(float);
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
        // Copy the kept rows into arrays sized as a cache that never held the removed rows would be (the
        // kept rows, at least the 16-row minimum), so their memory is released; appends grow it by doubling.
        int keep = len - count;
        foreach (var store in new[] { _k, _v })
        {
            var old = store[layer];
            var fresh = new float[Math.Max(keep, MinRows) * _kvDim];
            Array.Copy(old, 0, fresh, 0, start * _kvDim);
            Array.Copy(old, (start + count) * _kvDim, fresh, start * _kvDim, (len - start - count) * _kvDim);
            store[layer] = fresh;
        }
        _length[layer] = keep;
    }

    /// <inheritdoc/>
    /// <remarks>One pass: the kept runs are copied once into arrays sized as <see cref="RemoveRows"/> sizes them.</remarks>
    public override void RemoveRanges(int layer, IReadOnlyList<(int Start, int Count)> ranges)
    {
        int removed = CheckRanges(layer, ranges);
        if (removed == 0) return;
        int len = _length[layer], keep = len - removed;
        var runs = KeptRuns(len, ranges);
        foreach (var store in new[] { _k, _v })
        {
            var old = store[layer];
            var fresh = new float[Math.Max(keep, MinRows) * _kvDim];
            int to = 0;
            foreach (var (start, count) in runs)
            {
                Array.Copy(old, start * _kvDim, fresh, to * _kvDim, count * _kvDim);
                to += count;
            }
            store[layer] = fresh;
        }
        _length[layer] = keep;
    }

    /// <inheritdoc/>
    public override void Clear() => Array.Clear(_length);

    /// <inheritdoc/>
    public override void Dispose()
    {
        for (int l = 0; l < Layers; l++) { _k[l] = []; _v[l] = []; _length[l] = 0; }
    }
}

/// <summary>What the processor calls itself, read once from /proc/cpuinfo.</summary>
internal static class CpuInfo
{
    private static readonly Lazy<string> Name = new(() =>
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal))
                    return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
    });

    public static string ProcessorName => Name.Value;
}
