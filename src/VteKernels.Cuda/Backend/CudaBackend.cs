// The CUDA backend: IBackend on one device, so the orchestrator (LlavaModel) runs unchanged. Weights and
// activations live in device memory in one element type (bf16 for bf16 checkpoints, or whatever
// CudaBackendOptions.DType says; weights stored in another type are converted on upload), accumulation is
// float32 everywhere. All work is queued in order on one stream; only copies to the host wait for it.
//
// Ops map to kernels/*.cu one to one (rms_norm_T, layer_norm_T, rope_T, ...), Linear to cuBLASLt (with
// its bias epilogue) or, for a single row (decode), to the hand-written gemv_T. Attention runs the
// placeholder attention_reference_T unless CudaBackendOptions.FusedAttention routes it to the fused kernels:
// flash_attention_T for prefill (CudaBackend.FlashAttention.cs) and flash_decode_T for decode against long
// caches (CudaBackend.FlashDecode.cs). Beyond IBackend: the fused AddRmsNorm, bias+activation, and device-side
// ArgMax/Sample.
//
// Host data the ops need (token ids, positions, key limits, pixels) goes through pinned staging memory
// (HostStaging) with stream-ordered copies, which a CUDA graph can capture (copies from pageable memory it
// cannot); the positions of a step are uploaded once and reused by every layer's two Rope calls, the
// inv_freq table once per (theta, head_dim). Weights and CopyFromHost copy from pageable memory.
// Not thread-safe: one caller at a time (the current context is made current on whichever thread calls).
using System.Buffers;
using System.Runtime.InteropServices;
using VteKernels.Backends;
using VteKernels.Cuda.Kernels;
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda;

/// <summary>Settings of a <see cref="CudaBackend"/>.</summary>
public sealed record CudaBackendOptions
{
    /// <summary>Device ordinal (after CUDA_VISIBLE_DEVICES).</summary>
    public int Device { get; init; }

    /// <summary>Element type of weights and activations on the device; null: the type of the first weight uploaded.</summary>
    public DType? DType { get; init; }

    /// <summary>Let F32 GEMMs use TF32 tensor cores (faster, ~1e-3 relative error); off by default.</summary>
    public bool AllowTf32 { get; init; }

    /// <summary>Single-row Linear goes to the hand-written GEMV (true) or to cuBLASLt (false).</summary>
    public bool UseGemv { get; init; } = true;

    /// <summary>Kernel cache folder; null: the default (see KernelCache), empty: no disk cache.</summary>
    public string? KernelCacheDirectory { get; init; }

    /// <summary>Folder of ahead-of-time fatbins; null: $VTE_KERNEL_FATBIN_DIR (NVRTC when unset).</summary>
    public string? FatbinDirectory { get; init; }

    /// <summary>
    /// Use the fused attention kernels (flash_attention_T for bf16/f16 prefill with head_dim 64, 80, 96 or 128;
    /// flash_decode_T for decode against long caches) instead of the reference kernel.
    /// </summary>
    /// <remarks>Off by default until verified on a GPU; the environment variable VTE_FUSED_ATTENTION=1 turns it on.</remarks>
    public bool FusedAttention { get; init; } = Environment.GetEnvironmentVariable("VTE_FUSED_ATTENTION") == "1";

    /// <summary>Kernel sources to compile instead of the embedded ones, by file name ("rms_norm.cu"); tests only.</summary>
    internal IReadOnlyDictionary<string, string>? KernelSourceOverrides { get; init; }
}

/// <summary>The CUDA implementation of <see cref="IBackend"/>.</summary>
public sealed partial class CudaBackend : IBackend
{
    /// <summary>Output rows per gemv_T block: one per warp (kernels/gemv.cu).</summary>
    private static readonly int GemvRowsPerBlock = KernelCatalog.Gemv.Threads / 32;

    private readonly CudaContext _context;
    private readonly DevicePool _pool;
    private readonly HostStaging _staging;
    private readonly KernelLoader _kernels;
    private readonly CudaBackendOptions _options;

    /// <summary>The options this backend was made with.</summary>
    public CudaBackendOptions Options => _options;
    private readonly Dictionary<(float Theta, int HeadDim), DeviceBuffer> _invFreq = [];
    private CublasLtGemm? _gemm;
    private DType? _dtype;
    private int[]? _positionsHost;
    private DeviceBuffer? _positionsDevice;
    private bool _disposed;

    /// <summary>Starts the backend on a device.</summary>
    /// <exception cref="CudaUnavailableException">No CUDA driver, no device, or a driver too old.</exception>
    public CudaBackend(CudaBackendOptions? options = null)
    {
        _options = options ?? new CudaBackendOptions();
        if (_options.DType is { } t && t is not (VteKernels.DType.BF16 or VteKernels.DType.F16 or VteKernels.DType.F32))
            throw new ArgumentOutOfRangeException(nameof(options), t, "unsupported element type");
        _dtype = _options.DType;
        Info = CudaDevice.Get(_options.Device);
        _context = new CudaContext(Info);
        _pool = new DevicePool(new DriverAllocator(_context));
        _staging = new HostStaging(_context);
        var cacheDir = _options.KernelCacheDirectory ?? KernelCache.DefaultDirectory();
        _kernels = new KernelLoader(_context, cacheDir.Length == 0 ? null : new KernelCache(cacheDir),
            _options.FatbinDirectory ?? Environment.GetEnvironmentVariable(KernelLoader.FatbinDirVariable), _options.KernelSourceOverrides);
    }

    /// <inheritdoc/>
    public string Name => "cuda";

    /// <inheritdoc/>
    public string Device => Info.ToString();

    /// <summary>The device.</summary>
    public CudaDevice Info { get; }

    /// <summary>Element type on the device (decided by the options or the first upload; BF16 if nothing decided it yet).</summary>
    public DType DType => _dtype ??= VteKernels.DType.BF16;

    /// <summary>The device memory pool.</summary>
    public DevicePool Pool => _pool;

    /// <summary>Where the kernel modules came from so far.</summary>
    public KernelLoadStats KernelStats => _kernels.Stats;

    internal CudaContext Context => _context;

    /// <summary>The kernel files this backend has loaded so far (which ops ran, for tests).</summary>
    internal IReadOnlyCollection<string> LoadedKernelFiles => _kernels.LoadedFiles;

    /// <summary>The CUfunction of an entry in this backend's dtype (tests launch it directly).</summary>
    internal nint FunctionOf(KernelSpec spec, string entry) => _kernels.Function(spec, DType, entry);

    /// <summary>Launches an entry with a parameter struct as the ops do (tests).</summary>
    internal void LaunchRaw<TParams>(KernelSpec spec, string entry, uint gridX, uint gridY, TParams args) where TParams : unmanaged =>
        Launch(spec, entry, gridX, gridY, args);

    private CublasLtGemm Gemm => _gemm ??= new CublasLtGemm(_context, _pool, DType, _options.AllowTf32);

    /// <summary>Compiles (or loads) every kernel of this backend's element type now.</summary>
    public void LoadKernels()
    {
        _context.MakeCurrent();
        _kernels.LoadAll(DType);
    }

    /// <summary>Waits for all queued work.</summary>
    public void Synchronize() => _context.Synchronize();

    // ------------------------------------------------------------------------------------------ storage

    /// <inheritdoc/>
    public DeviceWeight Upload(Weight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ThrowIfDisposed();
        _dtype ??= weight.DType;
        var dtype = DType;
        _context.MakeCurrent();
        var buffer = _pool.AllocateExact(weight.ElementCount * dtype.Size());
        try
        {
            CopyWeight(weight, dtype, buffer.Pointer);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
        return new CudaWeight(this, weight, buffer, dtype); // freed with the pool when the backend is disposed
    }

    private unsafe void CopyWeight(Weight weight, DType dtype, ulong dst)
    {
        if (weight.ElementCount == 0) return;
        int rows = weight.Rows, cols = weight.Cols;
        long srcRowBytes = (long)cols * weight.DType.Size(), dstRowBytes = (long)cols * dtype.Size();
        // Chunks of at most 64 MiB of source rows (at least one row): Weight.RowBytes views up to 2 GiB.
        int chunkRows = (int)Math.Clamp((64L << 20) / Math.Max(1, srcRowBytes), 1, rows);
        // Stream-ordered copies from pageable memory return once the bytes are staged, so the conversion
        // buffers can be refilled at once.
        float[]? wide = null;
        byte[]? narrow = null;
        for (int r = 0; r < rows; r += chunkRows)
        {
            int n = Math.Min(chunkRows, rows - r);
            var src = weight.RowBytes(r, n);
            ulong at = dst + (ulong)(r * dstRowBytes);
            if (weight.DType == dtype)
            {
                fixed (byte* p = src) HostToDevice(p, at, src.Length);
                continue;
            }
            int count = n * cols;
            wide ??= new float[chunkRows * cols];
            narrow ??= new byte[chunkRows * dstRowBytes];
            DTypes.ToFloat(src, weight.DType, wide.AsSpan(0, count));
            DTypes.FromFloat(wide.AsSpan(0, count), dtype, narrow.AsSpan(0, count * dtype.Size()));
            fixed (byte* p = narrow) HostToDevice(p, at, count * dtype.Size());
        }
    }

    /// <inheritdoc/>
    public Tensor Allocate(int rows, int cols)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        ThrowIfDisposed();
        var buffer = _pool.Rent((long)rows * cols * DType.Size());
        return new CudaTensor(this, buffer, buffer.Pointer, rows, cols, DType, owner: true);
    }

    /// <inheritdoc/>
    public unsafe void CopyFromHost(ReadOnlySpan<float> src, Tensor dst)
    {
        var d = Own(dst);
        long count = (long)d.Rows * d.Cols;
        if (src.Length != count) throw new ArgumentException($"{src.Length} values for a tensor {dst} of {count}", nameof(src));
        if (count == 0) return;
        _context.MakeCurrent();
        if (DType == VteKernels.DType.F32)
        {
            fixed (float* p = src) HostToDevice(p, d.Pointer, count * sizeof(float));
            return;
        }
        var bytes = ArrayPool<byte>.Shared.Rent(checked((int)(count * DType.Size())));
        try
        {
            DTypes.FromFloat(src, DType, bytes.AsSpan(0, (int)(count * DType.Size())));
            fixed (byte* p = bytes) HostToDevice(p, d.Pointer, count * DType.Size());
        }
        finally { ArrayPool<byte>.Shared.Return(bytes); }
    }

    /// <inheritdoc/>
    public unsafe void CopyToHost(Tensor src, Span<float> dst)
    {
        var s = Own(src);
        long count = (long)s.Rows * s.Cols;
        if (dst.Length != count) throw new ArgumentException($"room for {dst.Length} values, tensor {src} holds {count}", nameof(dst));
        if (count == 0) return;
        _context.MakeCurrent();
        if (DType == VteKernels.DType.F32)
        {
            fixed (float* p = dst) DeviceToHost(s.Pointer, p, count * sizeof(float));
            return;
        }
        var bytes = ArrayPool<byte>.Shared.Rent(checked((int)(count * DType.Size())));
        try
        {
            fixed (byte* p = bytes) DeviceToHost(s.Pointer, p, count * DType.Size());
            DTypes.ToFloat(bytes.AsSpan(0, (int)(count * DType.Size())), DType, dst);
        }
        finally { ArrayPool<byte>.Shared.Return(bytes); }
    }

    /// <inheritdoc/>
    public void CopyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols)
    {
        var s = Own(src);
        var d = Own(dst);
        if (rows < 0 || cols < 0 || srcRow < 0 || srcCol < 0 || srcRow + rows > s.Rows || srcCol + cols > s.Cols ||
            dstRow < 0 || dstCol < 0 || dstRow + rows > d.Rows || dstCol + cols > d.Cols)
            throw new ArgumentOutOfRangeException(nameof(rows), $"block {rows}x{cols} from {s}@({srcRow},{srcCol}) to {d}@({dstRow},{dstCol})");
        if (rows == 0 || cols == 0) return;
        _context.MakeCurrent();
        int size = DType.Size();
        var copy = new CUDA_MEMCPY2D
        {
            srcXInBytes = (nuint)(srcCol * size), srcY = (nuint)srcRow, srcMemoryType = CUmemorytype.CU_MEMORYTYPE_DEVICE,
            srcDevice = s.Pointer, srcPitch = (nuint)s.RowBytes,
            dstXInBytes = (nuint)(dstCol * size), dstY = (nuint)dstRow, dstMemoryType = CUmemorytype.CU_MEMORYTYPE_DEVICE,
            dstDevice = d.Pointer, dstPitch = (nuint)d.RowBytes,
            WidthInBytes = (nuint)(cols * size), Height = (nuint)rows,
        };
        CudaCheck.Driver(cuMemcpy2DAsync_v2(copy, _context.StreamPtr), nameof(cuMemcpy2DAsync_v2), $"block {rows}x{cols}");
    }

    // ------------------------------------------------------------------------------------------ ops

    /// <inheritdoc/>
    public void Embedding(DeviceWeight table, ReadOnlySpan<int> ids, Tensor dst)
    {
        var t = OwnWeight(table);
        var d = Own(dst);
        int vocabulary = t.Source.Rows, dim = t.Source.Cols;
        if (d.Rows != ids.Length || d.Cols != dim) throw new ArgumentException($"output {dst} must be [{ids.Length}, {dim}]", nameof(dst));
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)vocabulary)
                throw new InvalidInputException($"token id {ids[i]} at position {i} is outside the vocabulary of {vocabulary} entries ('{t.Source.Name}')");
        if (ids.Length == 0 || dim == 0) return;
        _context.MakeCurrent();
        using var idsDevice = UploadHost(ids);
        Launch(KernelCatalog.Embedding, "embedding", (uint)ids.Length, 1,
            new EmbeddingParams { Table = t.Pointer, Ids = idsDevice.Pointer, Y = d.Pointer, Rows = ids.Length, Dim = dim, Vocab = vocabulary });
    }

    /// <inheritdoc/>
    public void PatchEmbed(ReadOnlySpan<float> pixels, int channels, int height, int width, int patch, DeviceWeight conv, Tensor dst)
    {
        var w = OwnWeight(conv);
        var d = Own(dst);
        if (channels <= 0 || height <= 0 || width <= 0 || patch <= 0) throw new ArgumentOutOfRangeException(nameof(patch), "sizes must be positive");
        if (height % patch != 0) throw new ArgumentException($"height {height} is not a multiple of the patch size {patch}", nameof(height));
        if (width % patch != 0) throw new ArgumentException($"width {width} is not a multiple of the patch size {patch}", nameof(width));
        int patchLength = channels * patch * patch;
        if (w.Source.Cols != patchLength)
            throw new ArgumentException($"'{w.Source.Name}' [{string.Join(", ", w.Source.Shape)}] does not hold {channels}×{patch}×{patch} weights per output channel", nameof(conv));
        if (pixels.Length != (long)channels * height * width) throw new ArgumentException($"expected {(long)channels * height * width} pixels ([{channels}, {height}, {width}]), got {pixels.Length}", nameof(pixels));
        int patches = height / patch * (width / patch);
        if (d.Rows != patches || d.Cols != w.Source.Rows) throw new ArgumentException($"output {dst} must be [{patches}, {w.Source.Rows}]", nameof(dst));
        _context.MakeCurrent();
        using var pixelsDevice = UploadHost(pixels);
        using var columns = (CudaTensor)Allocate(patches, patchLength);
        long total = (long)patches * patchLength;
        Launch(KernelCatalog.PatchEmbed, "im2col", GridFor(total, KernelCatalog.PatchEmbed.Threads), 1,
            new Im2colParams { Pixels = pixelsDevice.Pointer, Columns = columns.Pointer, Channels = channels, Height = height, Width = width, Patch = patch });
        Linear(columns, conv, null, dst);
    }

    /// <inheritdoc/>
    public void Linear(Tensor x, DeviceWeight w, DeviceWeight? bias, Tensor y)
    {
        var xs = Own(x);
        var ws = OwnWeight(w);
        var ys = Own(y);
        var b = bias is null ? null : OwnWeight(bias);
        int n = xs.Rows, inF = ws.Source.Cols, outF = ws.Source.Rows;
        if (xs.Cols != inF) throw new ArgumentException($"input {x} does not have {inF} columns ('{ws.Source.Name}')", nameof(x));
        if (ys.Rows != n || ys.Cols != outF) throw new ArgumentException($"output {y} must be [{n}, {outF}]", nameof(y));
        if (b is not null && b.Source.ElementCount != outF) throw new ArgumentException($"bias '{b.Source.Name}' holds {b.Source.ElementCount} elements, expected {outF}", nameof(bias));
        if (Overlaps(xs, ys)) throw new ArgumentException("output must not overlap the input", nameof(y));
        if (n == 0 || outF == 0) return;
        _context.MakeCurrent();
        if (inF == 0)
        {
            FillRowsWithBias(ys, b);
            return;
        }
        ulong biasPtr = b?.Pointer ?? 0;
        if (n == 1 && _options.UseGemv)
        {
            Launch(KernelCatalog.Gemv, "gemv", (uint)((outF + GemvRowsPerBlock - 1) / GemvRowsPerBlock), 1,
                new GemvParams { X = xs.Pointer, W = ws.Pointer, Bias = biasPtr, Y = ys.Pointer, N = outF, K = inF });
            return;
        }
        if (Gemm.TryRun(xs.Pointer, ws.Pointer, biasPtr, ys.Pointer, n, outF, inF)) return;
        // No cuBLASLt algorithm for this shape or alignment: the tiled kernel.
        Launch(KernelCatalog.Gemm, "gemm", (uint)((outF + GemmTile - 1) / GemmTile), (uint)((n + GemmTile - 1) / GemmTile),
            new GemmParams { X = xs.Pointer, W = ws.Pointer, Bias = biasPtr, Y = ys.Pointer, M = n, N = outF, K = inF });
    }

    /// <summary>Output tile of gemm_T: GEMM_TILE in kernels/gemm.cu.</summary>
    internal const int GemmTile = 64;

    private void FillRowsWithBias(CudaTensor y, CudaWeight? bias)
    {
        var host = new float[y.Rows * y.Cols];
        if (bias is not null)
        {
            var b = bias.Source.ToFloatArray();
            for (int r = 0; r < y.Rows; r++) b.CopyTo(host.AsSpan(r * y.Cols));
        }
        CopyFromHost(host, y);
    }

    /// <inheritdoc/>
    public void RmsNorm(Tensor x, DeviceWeight gamma, float eps, Tensor y)
    {
        var (xs, g, ys) = NormArguments(x, gamma, y);
        if (xs.Rows == 0 || xs.Cols == 0) return;
        _context.MakeCurrent();
        Launch(KernelCatalog.RmsNorm, "rms_norm", (uint)xs.Rows, 1,
            new RmsNormParams { X = xs.Pointer, Gamma = g.Pointer, Y = ys.Pointer, Rows = xs.Rows, Cols = xs.Cols, Eps = eps });
    }

    /// <summary>
    /// residual ← residual + delta (stored in the backend's type), then y = RmsNorm(residual): the two steps
    /// between decoder blocks in one pass. y must not overlap residual or delta.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree, gamma is not 1-D, or y overlaps an input.</exception>
    public void AddRmsNorm(Tensor residual, Tensor delta, DeviceWeight gamma, float eps, Tensor y)
    {
        var (r, g, ys) = NormArguments(residual, gamma, y);
        var d = Own(delta);
        if (d.Rows != r.Rows || d.Cols != r.Cols) throw new ArgumentException($"delta {delta} must match residual {residual}", nameof(delta));
        if (Overlaps(ys, r) || Overlaps(ys, d)) throw new ArgumentException("y must not overlap residual or delta", nameof(y));
        if (r.Rows == 0 || r.Cols == 0) return;
        _context.MakeCurrent();
        Launch(KernelCatalog.AddRmsNorm, "add_rms_norm", (uint)r.Rows, 1,
            new AddRmsNormParams { Residual = r.Pointer, Delta = d.Pointer, Gamma = g.Pointer, Y = ys.Pointer, Rows = r.Rows, Cols = r.Cols, Eps = eps });
    }

    /// <inheritdoc/>
    public void LayerNorm(Tensor x, DeviceWeight gamma, DeviceWeight beta, float eps, Tensor y)
    {
        var (xs, g, ys) = NormArguments(x, gamma, y);
        var b = OwnWeight(beta);
        if (b.Source.ElementCount != xs.Cols) throw new ArgumentException($"'{b.Source.Name}' holds {b.Source.ElementCount} elements, expected {xs.Cols}", nameof(beta));
        if (xs.Rows == 0 || xs.Cols == 0) return;
        _context.MakeCurrent();
        Launch(KernelCatalog.LayerNorm, "layer_norm", (uint)xs.Rows, 1,
            new LayerNormParams { X = xs.Pointer, Gamma = g.Pointer, Beta = b.Pointer, Y = ys.Pointer, Rows = xs.Rows, Cols = xs.Cols, Eps = eps });
    }

    private (CudaTensor X, CudaWeight Gamma, CudaTensor Y) NormArguments(Tensor x, DeviceWeight gamma, Tensor y)
    {
        var xs = Own(x);
        var g = OwnWeight(gamma);
        var ys = Own(y);
        if (g.Source.Shape.Count != 1) throw new ArgumentException($"'{g.Source.Name}' must be 1-D, has shape [{string.Join(", ", g.Source.Shape)}]", nameof(gamma));
        if (xs.Cols != g.Source.Cols) throw new ArgumentException($"input {x} does not have {g.Source.Cols} columns", nameof(x));
        if (ys.Rows != xs.Rows || ys.Cols != xs.Cols) throw new ArgumentException($"output {y} must match input {x}", nameof(y));
        if (Overlaps(xs, ys) && xs.Pointer != ys.Pointer) throw new ArgumentException("output partially overlaps the input: it must be the same memory or disjoint", nameof(y));
        return (xs, g, ys);
    }

    /// <inheritdoc/>
    public void Add(Tensor a, Tensor b, Tensor y)
    {
        var (aa, bb, yy) = (Own(a), Own(b), Own(y));
        long count = (long)aa.Rows * aa.Cols;
        if ((long)bb.Rows * bb.Cols != count || (long)yy.Rows * yy.Cols != count) throw new ArgumentException($"shapes {a}, {b}, {y} disagree");
        AddElements(aa.Pointer, bb.Pointer, yy.Pointer, count);
    }

    /// <inheritdoc/>
    public void AddWeight(Tensor x, DeviceWeight w)
    {
        var xs = Own(x);
        var ws = OwnWeight(w);
        long count = (long)xs.Rows * xs.Cols;
        if (ws.Source.ElementCount != count) throw new ArgumentException($"weight {ws.Source} does not match tensor {x}", nameof(w));
        AddElements(xs.Pointer, ws.Pointer, xs.Pointer, count);
    }

    private void AddElements(ulong a, ulong b, ulong y, long count)
    {
        if (count == 0) return;
        _context.MakeCurrent();
        Launch(KernelCatalog.Add, "add", GridFor(count / 4 + 1, KernelCatalog.Add.Threads), 1, new AddParams { A = a, B = b, Y = y, Count = count });
    }

    /// <inheritdoc/>
    public void QuickGelu(Tensor x) => QuickGelu(x, null);

    /// <inheritdoc/>
    public void Gelu(Tensor x) => Gelu(x, null);

    /// <summary>x ← quick_gelu(x + bias) in place, bias per column (null: none).</summary>
    public void QuickGelu(Tensor x, DeviceWeight? bias) => BiasActivation(x, bias, "quick_gelu");

    /// <summary>x ← gelu(x + bias) in place (exact erf GELU), bias per column (null: none).</summary>
    public void Gelu(Tensor x, DeviceWeight? bias) => BiasActivation(x, bias, "gelu");

    private void BiasActivation(Tensor x, DeviceWeight? bias, string entry)
    {
        var xs = Own(x);
        var b = bias is null ? null : OwnWeight(bias);
        if (b is not null && b.Source.ElementCount != xs.Cols) throw new ArgumentException($"bias '{b.Source.Name}' holds {b.Source.ElementCount} elements, expected {xs.Cols}", nameof(bias));
        long count = (long)xs.Rows * xs.Cols;
        if (count == 0) return;
        _context.MakeCurrent();
        Launch(KernelCatalog.BiasAct, entry, GridFor(count / 4 + 1, KernelCatalog.BiasAct.Threads), 1,
            new BiasActParams { X = xs.Pointer, Bias = b?.Pointer ?? 0, Rows = xs.Rows, Cols = xs.Cols });
    }

    /// <inheritdoc/>
    public void SiluMul(Tensor gate, Tensor up, Tensor y)
    {
        var (g, u, ys) = (Own(gate), Own(up), Own(y));
        if (u.Rows != g.Rows || u.Cols != g.Cols || ys.Rows != g.Rows || ys.Cols != g.Cols) throw new ArgumentException($"shapes {gate}, {up}, {y} disagree");
        if ((Overlaps(g, ys) && g.Pointer != ys.Pointer) || (Overlaps(u, ys) && u.Pointer != ys.Pointer))
            throw new ArgumentException("output partially overlaps an input: it must be the same memory or disjoint", nameof(y));
        if (g.Rows == 0 || g.Cols == 0) return;
        _context.MakeCurrent();
        uint gridX = GridFor((g.Cols + 7) / 8, KernelCatalog.SiluMul.Threads);
        Launch(KernelCatalog.SiluMul, "silu_mul", gridX, (uint)Math.Min(g.Rows, 65535),
            new SiluMulParams { Gate = g.Pointer, Up = u.Pointer, Y = ys.Pointer, Rows = g.Rows, Cols = g.Cols, GateStride = g.Cols, UpStride = u.Cols, YStride = ys.Cols });
    }

    /// <inheritdoc/>
    public void Rope(Tensor x, int heads, int headDim, ReadOnlySpan<int> positions, float theta)
    {
        var xs = Own(x);
        if (heads <= 0) throw new ArgumentOutOfRangeException(nameof(heads), heads, "must be positive");
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentException($"headDim must be positive and even, got {headDim}", nameof(headDim));
        if (headDim > 512) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "the rope kernel handles head_dim up to 512");
        if (!(theta > 0) || float.IsInfinity(theta)) throw new ArgumentOutOfRangeException(nameof(theta), theta, "must be a positive finite number");
        if (xs.Cols != heads * headDim) throw new ArgumentException($"input {x} is not [n, {heads} × {headDim}]", nameof(x));
        if (positions.Length != xs.Rows) throw new ArgumentException($"{positions.Length} positions for {xs.Rows} rows", nameof(positions));
        if (xs.Rows == 0) return;
        _context.MakeCurrent();
        Launch(KernelCatalog.Rope, "rope", (uint)xs.Rows, 1,
            new RopeParams { X = xs.Pointer, Positions = PositionsOnDevice(positions), InvFreq = InvFreq(theta, headDim), Rows = xs.Rows, Heads = heads, HeadDim = headDim, RowStride = xs.Cols });
    }

    /// <summary>The float32 table 1 / theta^(2i/headDim), by the CPU op's own expression, uploaded once.</summary>
    private ulong InvFreq(float theta, int headDim)
    {
        if (!_invFreq.TryGetValue((theta, headDim), out var buffer))
        {
            int half = headDim / 2;
            var table = new float[half];
            for (int i = 0; i < half; i++) table[i] = 1f / MathF.Pow(theta, (2 * i) / (float)headDim);
            buffer = UploadHost<float>(table);
            _invFreq[(theta, headDim)] = buffer;
        }
        return buffer.Pointer;
    }

    /// <summary>The positions on the device; the same positions as the last call reuse the last upload (every layer rotates with the same ones).</summary>
    private ulong PositionsOnDevice(ReadOnlySpan<int> positions)
    {
        if (_positionsDevice is null || _positionsHost is null || !positions.SequenceEqual(_positionsHost))
        {
            _positionsDevice?.Dispose();
            _positionsDevice = UploadHost(positions);
            _positionsHost = positions.ToArray();
        }
        return _positionsDevice.Pointer;
    }

    /// <summary>
    /// Attention softmax(q·kᵀ/√d)·v with grouped-query heads and the causal suffix mask, exactly as the CPU op:
    /// the placeholder attention_reference_T, or with <see cref="CudaBackendOptions.FusedAttention"/> the fused
    /// kernels where they cover the call: <see cref="DecodeAttention"/> for decode (at most <see cref="MaxDecodeQueries"/>
    /// queries, at least 256 keys), <see cref="FlashAttention"/> otherwise.
    /// </summary>
    public void Attention(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim, AttentionMask mask, Tensor output)
    {
        if (RoutesToFlashDecode(q, k))
        {
            DecodeAttention(q, qHeads, k, v, kvHeads, headDim, mask, output);
            return;
        }
        if (RoutesToFlashAttention(q, k, v, output, headDim))
        {
            FlashAttention(q, qHeads, k, v, kvHeads, headDim, mask, output);
            return;
        }
        var (qs, ks, vs, os) = AttentionArguments(q, qHeads, k, v, kvHeads, headDim, mask, output);
        int nq = qs.Rows, nk = ks.Rows;
        if (nq == 0) return;
        _context.MakeCurrent();
        Launch(KernelCatalog.AttentionReference, "attention_reference", (uint)nq, (uint)qHeads, new AttentionParams
        {
            Q = qs.Pointer, K = ks.Pointer, V = vs.Pointer, Out = os.Pointer, Nq = nq, Nk = nk, QHeads = qHeads, KvHeads = kvHeads,
            HeadDim = headDim, QStride = qs.Cols, KvStride = ks.Cols, OutStride = os.Cols, Causal = mask == AttentionMask.Causal ? 1 : 0,
            Scale = 1f / MathF.Sqrt(headDim),
        });
    }

    /// <summary>The checks of every attention entry (the CPU op's), returning the tensors as this backend's.</summary>
    private (CudaTensor Q, CudaTensor K, CudaTensor V, CudaTensor Output) AttentionArguments(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim,
        AttentionMask mask, Tensor output)
    {
        var (qs, ks, vs, os) = (Own(q), Own(k), Own(v), Own(output));
        if (qHeads <= 0 || kvHeads <= 0 || headDim <= 0) throw new ArgumentOutOfRangeException(nameof(headDim), "head counts and headDim must be positive");
        if (qHeads % kvHeads != 0) throw new ArgumentException($"qHeads ({qHeads}) must be a multiple of kvHeads ({kvHeads})", nameof(qHeads));
        if (headDim > 256) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "the attention kernels handle head_dim up to 256");
        if (mask is not (AttentionMask.None or AttentionMask.Causal)) throw new ArgumentOutOfRangeException(nameof(mask));
        int nq = qs.Rows, nk = ks.Rows;
        if (qs.Cols != qHeads * headDim) throw new ArgumentException($"q {q} is not [nq, {qHeads} × {headDim}]", nameof(q));
        if (ks.Cols != kvHeads * headDim || vs.Cols != ks.Cols || vs.Rows != nk) throw new ArgumentException($"k {k} and v {v} are not [nk, {kvHeads} × {headDim}]", nameof(k));
        if (os.Rows != nq || os.Cols != qs.Cols) throw new ArgumentException($"output {output} must match q {q}", nameof(output));
        if (mask == AttentionMask.Causal && nk < nq) throw new ArgumentException($"a causal mask needs at least as many keys as queries (nk = {nk}, nq = {nq})", nameof(k));
        if (nq > 0 && nk == 0) throw new ArgumentException("queries need at least one key", nameof(k));
        if (Overlaps(os, qs) || Overlaps(os, ks) || Overlaps(os, vs)) throw new ArgumentException("output must not overlap q, k or v", nameof(output));
        return (qs, ks, vs, os);
    }

    /// <inheritdoc/>
    public KvCache CreateKvCache(int layers, int kvDim)
    {
        ThrowIfDisposed();
        return new CudaKvCache(this, layers, kvDim);
    }

    // ------------------------------------------------------------------------------------------ sampling

    /// <summary>The index of the first maximal logit of each row (greedy decoding on the device).</summary>
    public int[] ArgMax(Tensor logits)
    {
        var l = Own(logits);
        if (l.Cols == 0) throw new ArgumentException("no logits", nameof(logits));
        var result = new int[l.Rows];
        if (l.Rows == 0) return result;
        _context.MakeCurrent();
        using var output = _pool.Rent(l.Rows * sizeof(int));
        Launch(KernelCatalog.Argmax, "argmax", (uint)l.Rows, 1, new ArgmaxParams { Logits = l.Pointer, Out = output.Pointer, Rows = l.Rows, Vocab = l.Cols });
        DownloadTo(output.Pointer, result.AsSpan());
        return result;
    }

    /// <summary>
    /// One token per row drawn on the device with the host Sampler's rules (temperature, then top-k, then
    /// top-p); the random stream is Philox4x32-10 keyed by <paramref name="seed"/> at counter
    /// <paramref name="step"/> (use a new step per draw). Temperature 0 is <see cref="ArgMax"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A sampling option is out of range.</exception>
    public int[] Sample(Tensor logits, float temperature, int topK, float topP, ulong seed, ulong step)
    {
        if (!(temperature >= 0) || float.IsInfinity(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be a finite number >= 0");
        if (topK < 0) throw new ArgumentOutOfRangeException(nameof(topK), topK, "top-k must be >= 0");
        if (!(topP > 0 && topP <= 1)) throw new ArgumentOutOfRangeException(nameof(topP), topP, "top-p must be in (0, 1]");
        if (temperature == 0) return ArgMax(logits);
        var l = Own(logits);
        if (l.Cols == 0) throw new ArgumentException("no logits", nameof(logits));
        var result = new int[l.Rows];
        if (l.Rows == 0) return result;
        _context.MakeCurrent();
        using var scratch = _pool.Rent((long)l.Rows * l.Cols * sizeof(ulong));
        using var output = _pool.Rent(l.Rows * sizeof(int));
        Launch(KernelCatalog.Sample, "sample", (uint)l.Rows, 1, new SampleParams
        {
            Logits = l.Pointer, Scratch = scratch.Pointer, Out = output.Pointer, Seed = seed, Offset = step,
            Rows = l.Rows, Vocab = l.Cols, TopK = topK, Temperature = temperature, TopP = topP,
        });
        DownloadTo(output.Pointer, result.AsSpan());
        return result;
    }

    /// <summary>The uniforms <see cref="Sample"/> draws for rows 0..count-1 at (seed, step).</summary>
    internal double[] SampleUniforms(int count, ulong seed, ulong step)
    {
        var result = new double[count];
        if (count == 0) return result;
        _context.MakeCurrent();
        using var output = _pool.Rent(count * sizeof(double));
        Launch(KernelCatalog.Sample, "sample_uniforms", (uint)((count + KernelCatalog.Sample.Threads - 1) / KernelCatalog.Sample.Threads), 1,
            new UniformsParams { Out = output.Pointer, Seed = seed, Offset = step, Count = count });
        DownloadTo(output.Pointer, result.AsSpan());
        return result;
    }

    // ------------------------------------------------------------------------------------------ plumbing

    /// <summary>Fills a tensor with one value's bit pattern in the device type (tests poison outputs with NaN).</summary>
    internal void Fill(Tensor t, float value)
    {
        var x = Own(t);
        long count = (long)x.Rows * x.Cols;
        if (count == 0) return;
        _context.MakeCurrent();
        CUresult r = DType switch
        {
            VteKernels.DType.F32 => cuMemsetD32Async(x.Pointer, BitConverter.SingleToUInt32Bits(value), (nuint)count, _context.StreamPtr),
            VteKernels.DType.BF16 => cuMemsetD16Async(x.Pointer, DTypes.ToBFloat16Bits(value), (nuint)count, _context.StreamPtr),
            _ => cuMemsetD16Async(x.Pointer, BitConverter.HalfToUInt16Bits((Half)value), (nuint)count, _context.StreamPtr),
        };
        CudaCheck.Driver(r, "cuMemsetD*Async");
    }

    internal CudaTensor Own(Tensor t)
    {
        ThrowIfDisposed();
        if (t is not CudaTensor c || c.Backend != this) throw new ArgumentException($"tensor {t} does not belong to this CUDA backend");
        return c;
    }

    private CudaWeight OwnWeight(DeviceWeight w)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (w is not CudaWeight c || c.Backend != this) throw new ArgumentException($"weight {w.Source} was not uploaded to this CUDA backend");
        return c;
    }

    private static bool Overlaps(CudaTensor a, CudaTensor b)
    {
        if (a.ByteLength == 0 || b.ByteLength == 0) return false;
        ulong a0 = a.Pointer, a1 = a0 + (ulong)a.ByteLength, b0 = b.Pointer, b1 = b0 + (ulong)b.ByteLength;
        return a0 < b1 && b0 < a1;
    }

    /// <summary>Grid size for <paramref name="work"/> items at <paramref name="threads"/> per block, capped (kernels loop grid-stride).</summary>
    private static uint GridFor(long work, int threads) => (uint)Math.Clamp((work + threads - 1) / threads, 1, 65535 * 16);

    private void Launch<TParams>(KernelSpec spec, string entry, uint gridX, uint gridY, TParams args) where TParams : unmanaged =>
        KernelLaunch.Launch(_kernels.Function(spec, DType, entry), KernelSpec.EntryName(entry, DType), gridX, gridY, (uint)spec.Threads, _context.StreamPtr, args);

    internal void CopyDeviceToDevice(ulong src, ulong dst, long bytes)
    {
        if (bytes == 0) return;
        _context.MakeCurrent();
        CudaCheck.Driver(cuMemcpyDtoDAsync_v2(dst, src, (nuint)bytes, _context.StreamPtr), nameof(cuMemcpyDtoDAsync_v2), $"{bytes} bytes");
    }

    private unsafe void HostToDevice(void* src, ulong dst, long bytes) =>
        CudaCheck.Driver(cuMemcpyHtoDAsync_v2(dst, src, (nuint)bytes, _context.StreamPtr), nameof(cuMemcpyHtoDAsync_v2), $"{bytes} bytes");

    private unsafe void DeviceToHost(ulong src, void* dst, long bytes)
    {
        CudaCheck.Driver(cuMemcpyDtoHAsync_v2(dst, src, (nuint)bytes, _context.StreamPtr), nameof(cuMemcpyDtoHAsync_v2), $"{bytes} bytes");
        CudaCheck.Driver(cuStreamSynchronize(_context.StreamPtr), nameof(cuStreamSynchronize));
    }

    private unsafe void DownloadTo<T>(ulong src, Span<T> dst) where T : unmanaged
    {
        fixed (T* p = dst) DeviceToHost(src, p, (long)dst.Length * sizeof(T));
    }

    /// <summary>A pooled device copy of host values (ids, positions, pixels), through pinned staging; dispose it after the launches that read it.</summary>
    private unsafe DeviceBuffer UploadHost<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var buffer = _pool.Rent((long)values.Length * sizeof(T));
        if (values.Length > 0) HostToDevice((void*)_staging.Stage(values), buffer.Pointer, (long)values.Length * sizeof(T));
        return buffer;
    }

    /// <summary>
    /// Captures the work <paramref name="record"/> queues into a CUDA graph that replays it with one launch; the
    /// device blocks and staging it frees while captured stay the graph's until it is disposed. Run the work
    /// once before capturing it: a capture cannot allocate device or pinned memory.
    /// </summary>
    /// <exception cref="CudaException">The capture failed (an operation that cannot be captured, such as a copy to the host).</exception>
    /// <exception cref="InvalidOperationException">The captured work needed new device or staging memory.</exception>
    internal CudaGraph CaptureGraph(Action record)
    {
        ThrowIfDisposed();
        return CudaGraph.Capture(_context, record, _pool, _staging);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Waits for queued work, then frees every weight, tensor and kernel module and releases the context.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            _context.MakeCurrent();
            _context.Synchronize();
        }
        catch (CudaException) { } // a failed kernel must not keep the memory alive
        _gemm?.Dispose();
        _kernels.Dispose();
        _staging.Dispose();
        _pool.Dispose(); // weights, tensors, tables and cached blocks
        _invFreq.Clear();
        _context.Dispose();
    }
}
