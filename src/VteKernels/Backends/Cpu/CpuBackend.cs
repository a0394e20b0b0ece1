// The CPU backend: float32 activations in pooled managed arrays, weights used in place from the
// memory-mapped files (widened in registers or block by block inside the ops), every op a call into CpuOps
// on the process-wide CpuWorkers threads. It is the reference oracle for the other backends: every op is
// checked against a float64 reference, and results do not depend on the thread count.
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

    /// <summary>The values as memory (for pinning across a parallel region).</summary>
    internal Memory<float> Memory => (_buffer ?? throw new ObjectDisposedException(nameof(CpuTensor))).AsMemory(_offset, Rows * Cols);

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

/// <summary>How a <see cref="CpuBackend"/> runs.</summary>
public sealed record CpuBackendOptions
{
    /// <summary>
    /// Threads every parallel op uses (0, the default: all logical cores; more than the cores counts as all).
    /// The threads come from one pool per process, so two backends (or sessions) running at once share the
    /// cores instead of oversubscribing them. Results are bitwise identical for any thread count.
    /// </summary>
    public int Threads { get; init; }

    /// <summary>
    /// How the KV cache stores keys and values: F32, BF16 or F16; null (the default) picks the model's own
    /// width: bf16 for a bf16 model, f16 for an f16 one, f32 otherwise (the dtype of the first matrix uploaded).
    /// A 16-bit cache halves what decode attention reads; keys and values are rounded once, when stored.
    /// </summary>
    public DType? KvCache { get; init; }

    /// <summary>
    /// Quantizes the language model's matrices (attention and FFN projections, LM head) to Q8_0 or Q4_0 as
    /// they are uploaded (null, the default: keep them as stored). Matrices already quantized on disk
    /// (vte quantize) are used as they are.
    /// </summary>
    public DType? Quantize { get; init; }

    /// <summary>With <see cref="Quantize"/>: also quantize the vision tower's and the projector's matrices.</summary>
    public bool QuantizeVision { get; init; }

    /// <summary>
    /// Prefill (8 rows of x or more) with Q8_0 or Q4_0 matrices: dequantize the weights exactly and keep x in
    /// float32 (true), instead of quantizing x per block of 32 as decode does and taking integer dot products
    /// (false, the default where the CPU has AVX-512BW: q4_0 ~1.9x and q8_0 ~1.2x faster on AMD Zen 4). Decode always
    /// quantizes x.
    /// </summary>
    public bool ExactQuantizedPrefill { get; init; }

    /// <summary>
    /// Copies the language model's matrices into memory backed by transparent huge pages instead of reading
    /// them from the memory-mapped file (default true): decode reads every weight each token, and 4 KiB
    /// pages cap that read far below the memory's bandwidth on this kind of machine. Costs the weights'
    /// size in memory and a copy at load. Quantized matrices always live in such memory.
    /// </summary>
    public bool HugePages { get; init; } = true;
}

/// <summary>The plain C# backend; uses all cores (or <see cref="CpuBackendOptions.Threads"/>) inside the larger ops.</summary>
public sealed class CpuBackend : IBackend
{
    private readonly int _threads;

    /// <summary>A backend on all cores.</summary>
    public CpuBackend() : this(new CpuBackendOptions()) { }

    /// <summary>A backend configured by <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Threads is negative.</exception>
    public CpuBackend(CpuBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Threads < 0) throw new ArgumentOutOfRangeException(nameof(options), options.Threads, "Threads must be 0 (all cores) or positive");
        if (options.KvCache is { } kv && kv is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentOutOfRangeException(nameof(options), kv, "KvCache must be F32, BF16 or F16");
        if (options.Quantize is { } q && !q.IsBlockQuantized())
            throw new ArgumentOutOfRangeException(nameof(options), q, "Quantize must be Q8_0 or Q4_0");
        Options = options;
        _threads = CpuWorkers.Resolve(options.Threads);
    }

    /// <summary>The options this backend was made with.</summary>
    public CpuBackendOptions Options { get; }

    /// <summary>Threads the parallel ops use.</summary>
    public int Threads => _threads;

    /// <inheritdoc/>
    public string Name => "cpu";

    /// <inheritdoc/>
    public string Device => $"CPU ({_threads} of {Environment.ProcessorCount} threads, {CpuInfo.ProcessorName})";

    /// <summary>The dtype of the first matrix uploaded: what a default KV cache follows.</summary>
    private DType? _modelDType;

    /// <inheritdoc/>
    public DeviceWeight Upload(Weight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Shape.Count >= 2) _modelDType ??= weight.DType;
        return new CpuWeight(weight);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Language-model matrices (and, with <see cref="CpuBackendOptions.QuantizeVision"/>, the vision side's) are
    /// quantized when <see cref="CpuBackendOptions.Quantize"/> asks and the shape allows (2-D, rows of whole
    /// 32-element blocks); otherwise language-model matrices are copied into huge pages when
    /// <see cref="CpuBackendOptions.HugePages"/> is on. Language-model Q8_0 and Q4_0 matrices (quantized here or read
    /// from a file) get their rows interleaved by sixteens for the decode kernels where the CPU has AVX2.
    /// </remarks>
    /// <exception cref="ArgumentException">A matrix to quantize holds a value that is not finite.</exception>
    public DeviceWeight UploadLinear(Weight weight, LinearRole role)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Shape.Count >= 2) _modelDType ??= weight.DType;
        bool lm = role == LinearRole.LanguageModel;
        if (Options.Quantize is { } q && (lm || Options.QuantizeVision) && CpuWeights.CanQuantize(weight))
        {
            var quantized = CpuWeights.Quantize(weight, q, _threads);
            return new CpuWeight(lm && CpuWeights.CanInterleave(quantized) ? CpuWeights.Interleave(quantized, inPlace: true, _threads) : quantized);
        }
        if (lm && CpuWeights.CanInterleave(weight)) return new CpuWeight(CpuWeights.Interleave(weight, inPlace: false, _threads));
        if (lm && Options.HugePages && weight.ByteLength >= 1 << 21) return new CpuWeight(CpuWeights.CopyToHugePages(weight, _threads));
        return new CpuWeight(weight);
    }

    /// <summary>The storage type a new KV cache gets.</summary>
    public DType KvCacheType => Options.KvCache ?? (_modelDType is DType.BF16 or DType.F16 ? _modelDType.Value : DType.F32);

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
    public void CopyToHost(Tensor src, Span<float> dst)
    {
        if (src is CpuKvView kv) kv.CopyTo(dst);
        else C(src).Span.CopyTo(dst);
    }

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
        CpuOps.PatchEmbed(pixels, channels, height, width, patch, W(conv), C(dst).Span, _threads);

    /// <inheritdoc/>
    public void Linear(Tensor x, DeviceWeight w, DeviceWeight? bias, Tensor y) =>
        CpuOps.Linear(C(x).Span, x.Rows, W(w), bias is null ? null : W(bias), C(y).Span, _threads, Options.ExactQuantizedPrefill);

    /// <inheritdoc/>
    /// <remarks>All targets' rows are the work items of one parallel region over x.</remarks>
    public unsafe void LinearMany(Tensor x, ReadOnlySpan<LinearTarget> targets)
    {
        var cx = C(x);
        var parts = new CpuOps.LinearPart[targets.Length];
        var outputs = new CpuTensor[targets.Length];
        for (int i = 0; i < targets.Length; i++)
        {
            var (w, bias, y) = (W(targets[i].Weight), targets[i].Bias, C(targets[i].Output));
            CheckLinear(cx, w, y);
            outputs[i] = y;
            parts[i] = new CpuOps.LinearPart(w, bias is null ? null : CpuOps.WidenVector(W(bias), w.Rows, nameof(targets)), 0, w.Rows);
        }
        RunParts(cx, parts, outputs);
    }

    /// <inheritdoc/>
    /// <remarks>Gate and up are the work items of one parallel region; silu · up follows on the gate's output.</remarks>
    public unsafe void GatedLinear(Tensor x, DeviceWeight gate, DeviceWeight? gateBias, DeviceWeight up, DeviceWeight? upBias, Tensor y)
    {
        var (cx, cy) = (C(x), C(y));
        CheckLinear(cx, W(gate), cy);
        CheckLinear(cx, W(up), cy);
        using var u = (CpuTensor)Allocate(cy.Rows, cy.Cols);
        RunParts(cx, [
            new CpuOps.LinearPart(W(gate), gateBias is null ? null : CpuOps.WidenVector(W(gateBias), cy.Cols, nameof(gateBias)), 0, cy.Cols),
            new CpuOps.LinearPart(W(up), upBias is null ? null : CpuOps.WidenVector(W(upBias), cy.Cols, nameof(upBias)), 0, cy.Cols),
        ], [cy, u]);
        CpuOps.SiluMul(cy.Span, u.Span, cy.Span, _threads);
    }

    private static void CheckLinear(CpuTensor x, Weight w, CpuTensor y)
    {
        if (w.Cols != x.Cols || y.Rows != x.Rows || y.Cols != w.Rows)
            throw new ArgumentException($"Linear of x {x} with '{w.Name}' [{w.Rows}, {w.Cols}] into y {y}: shapes disagree");
        if (x.Span.Overlaps(y.Span)) throw new ArgumentException($"output {y} overlaps the input {x}");
    }

    /// <summary>Pins x and the outputs and runs the parts (their Y pointers are filled in here).</summary>
    private unsafe void RunParts(CpuTensor x, CpuOps.LinearPart[] parts, CpuTensor[] outputs)
    {
        var handles = new System.Buffers.MemoryHandle[outputs.Length];
        try
        {
            for (int i = 0; i < outputs.Length; i++)
            {
                handles[i] = outputs[i].Memory.Pin();
                parts[i] = parts[i] with { Y = (nint)handles[i].Pointer };
            }
            fixed (float* px = x.Span) CpuOps.LinearParts(px, x.Rows, x.Cols, parts, _threads, Options.ExactQuantizedPrefill);
        }
        finally
        {
            foreach (var h in handles) h.Dispose();
        }
    }

    /// <inheritdoc/>
    public void RmsNorm(Tensor x, DeviceWeight gamma, float eps, Tensor y) => CpuOps.RmsNorm(C(x).Span, x.Rows, W(gamma), eps, C(y).Span, _threads);

    /// <inheritdoc/>
    public void LayerNorm(Tensor x, DeviceWeight gamma, DeviceWeight beta, float eps, Tensor y) =>
        CpuOps.LayerNorm(C(x).Span, x.Rows, W(gamma), W(beta), eps, C(y).Span, _threads);

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
    public void QuickGelu(Tensor x) => CpuOps.QuickGelu(C(x).Span, _threads);

    /// <inheritdoc/>
    public void Gelu(Tensor x) => CpuOps.Gelu(C(x).Span, _threads);

    /// <inheritdoc/>
    public void SiluMul(Tensor gate, Tensor up, Tensor y) => CpuOps.SiluMul(C(gate).Span, C(up).Span, C(y).Span, _threads);

    /// <inheritdoc/>
    public void Rope(Tensor x, int heads, int headDim, ReadOnlySpan<int> positions, float theta) =>
        CpuOps.Rope(C(x).Span, x.Rows, heads, headDim, positions, theta, _threads);

    /// <inheritdoc/>
    /// <remarks>Keys and values may be views of a 16-bit <see cref="CpuKvCache"/>, read in place.</remarks>
    public unsafe void Attention(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim, AttentionMask mask, Tensor output)
    {
        if (k is not CpuKvView kh || v is not CpuKvView vh)
        {
            CpuOps.Attention(C(q).Span, q.Rows, qHeads, C(k).Span, C(v).Span, k.Rows, kvHeads, headDim, mask, C(output).Span, _threads);
            return;
        }
        // A 16-bit cache's views: the float32 checks of CpuOps.Attention, on the shapes.
        var (cq, co) = (C(q), C(output));
        CpuOps.CheckAttentionShapes(cq.Rows, qHeads, kh.Rows, kvHeads, headDim, mask, cq.Span.Length, (long)kh.Rows * kh.Cols, (long)vh.Rows * vh.Cols, co.Span.Length);
        if (vh.Rows != kh.Rows || vh.Type != kh.Type) throw new ArgumentException($"keys {k} and values {v} differ in rows or type");
        if (co.Span.Overlaps(cq.Span)) throw new ArgumentException("output must not overlap q", nameof(output));
        if (cq.Rows == 0) return;
        fixed (float* pq = cq.Span)
        fixed (ushort* pk = kh.Buffer)
        fixed (ushort* pv = vh.Buffer)
        fixed (float* po = co.Span)
            CpuOps.AttentionStored(pq, cq.Rows, qHeads, Rows(kh, pk), Rows(vh, pv), kh.Rows, kvHeads, headDim, mask, po, _threads, kh.Finite && vh.Finite);

        static CpuOps.KvRows Rows(CpuKvView view, ushort* buffer) =>
            new((byte*)(buffer + view.Origin), view.Type, view.RowStride, view.PartStride, view.PartWidth);
    }

    /// <inheritdoc/>
    /// <remarks>Stored as <see cref="KvCacheType"/>, row-major.</remarks>
    public KvCache CreateKvCache(int layers, int kvDim) => new CpuKvCache(layers, kvDim, KvCacheType);

    /// <inheritdoc/>
    /// <remarks>Stored as <see cref="KvCacheType"/>; a 16-bit cache keeps each head's rows together (CpuKvCache.cs).</remarks>
    public KvCache CreateKvCache(int layers, int kvDim, int headDim) => new CpuKvCache(layers, kvDim, KvCacheType, headDim);

    /// <inheritdoc/>
    public void Dispose() { }
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
