// Decode attention on the device (kernels/flash_decode.cu): a few query rows against a long KV cache,
// split along the keys (flash_decode_split_T writes a float32 partial per split and row into a pooled
// workspace) and merged (flash_decode_merge_T). Attention routes here when CudaBackendOptions.FusedAttention
// is on, nq <= 8 and nk >= 256; the split count is a pure function of nk, the blocks per split, the SM
// count and the split kernel's occupancy (FlashDecodeSplits) so that it can be tested without a device.
//
// Occupancy (a desk review of NVRTC 11.8's sm_90 cubin, not a measurement): with __launch_bounds__(128)
// alone the split kernel took 137 registers (bf16; 136 f16, 143 f32), i.e. 4608 per warp, 14 warps = 3 blocks
// per SM, 396 slots on 132 SMs, while the split count aimed at 4 blocks per SM: at 32 kv heads that was
// 17 splits = 544 blocks, a full wave plus a 148-block tail (~2 waves of time for ~1.4 waves of work) for
// every nk >= 2176. Now the kernel declares __launch_bounds__(128, 4) (128 / 127 / 128 registers, no spills,
// so 4 blocks per SM; 40 KiB of shared memory would allow 5), the host asks the driver how many blocks an
// SM holds (cuOccupancyMaxActiveBlocksPerMultiprocessor, once per backend) and sizes the splits to one
// full wave: 16 splits = 512 blocks for 528 slots at 32 heads.
using VteKernels.Backends;
using VteKernels.Cuda.Kernels;
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>Most query rows <see cref="DecodeAttention"/> takes (decode, or a few speculative rows).</summary>
    public const int MaxDecodeQueries = 8;

    /// <summary>Fewest keys for which <see cref="Attention"/> routes decode to the split kernels (shorter caches gain nothing from splitting).</summary>
    internal const int FlashDecodeMinKeys = 256;

    /// <summary>(query, head) rows per split block: FLASH_DECODE_ROWS in kernels/flash_decode.cu.</summary>
    internal const int FlashDecodeRows = 8;

    /// <summary>Most splits: FLASH_DECODE_MAX_SPLITS in kernels/flash_decode.cu (the merge's shared weights).</summary>
    internal const int FlashDecodeMaxSplits = 1024;

    /// <summary>Fewest keys per split, so that the float32 partials stay a few percent of the K/V bytes.</summary>
    internal const int FlashDecodeMinKeysPerSplit = 128;

    /// <summary>
    /// Split blocks per SM the kernel's register budget guarantees: FLASH_DECODE_MIN_BLOCKS, the second argument of
    /// its __launch_bounds__ (at most 128 registers for 128 threads). At 2 keys of K and V (4 × 16 bytes) in flight
    /// per thread that is 32 KiB of loads in flight per SM, above the ~26 KiB that 4.3 TB/s over 132 SMs needs at
    /// ~800 ns of DRAM latency (Little's law; to be measured).
    /// </summary>
    internal const int FlashDecodeMinBlocksPerSm = 4;

    private int _flashDecodeBlocksPerSm; // 0 until the first decode asks the driver

    /// <summary>
    /// The number of key splits for <paramref name="nk"/> keys when each split launches
    /// <paramref name="blocksPerSplit"/> blocks (kv heads × row groups) on <paramref name="multiprocessors"/> SMs that
    /// hold <paramref name="blocksPerSm"/> split blocks each (the kernel's occupancy): as many splits as fit one
    /// full wave (splits × blocksPerSplit ≤ blocksPerSm × multiprocessors, so no block waits for a second wave),
    /// at most one per <see cref="FlashDecodeMinKeysPerSplit"/> keys and at most <see cref="FlashDecodeMaxSplits"/>,
    /// at least 1. Every split of ceil(nk / splits) keys is non-empty.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    internal static int FlashDecodeSplits(int nk, int blocksPerSplit, int multiprocessors, int blocksPerSm)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(nk);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocksPerSplit);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(multiprocessors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocksPerSm);
        long slots = (long)blocksPerSm * multiprocessors;
        long wanted = slots / blocksPerSplit;
        long byKeys = (nk + FlashDecodeMinKeysPerSplit - 1) / FlashDecodeMinKeysPerSplit;
        int splits = (int)Math.Clamp(Math.Min(wanted, byKeys), 1, FlashDecodeMaxSplits);
        int chunk = (nk + splits - 1) / splits;
        return (nk + chunk - 1) / chunk; // no empty trailing split
    }

    /// <summary>
    /// Decode attention: effectively computes what <see cref="Attention"/> computes (softmax(q·kᵀ/√d)·v, grouped-query
    /// heads, the causal suffix mask) for at most <see cref="MaxDecodeQueries"/> query rows, with the keys split
    /// across the GPU and the splits merged (flash-decoding). Float32 arithmetic, T storage.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree, more than <see cref="MaxDecodeQueries"/> queries, or the output overlaps an input.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Non-positive head counts, headDim above 256, or an unknown mask.</exception>
    public void DecodeAttention(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim, AttentionMask mask, Tensor output)
    {
        var (qs, ks, vs, os) = AttentionArguments(q, qHeads, k, v, kvHeads, headDim, mask, output);
        int nq = qs.Rows, nk = ks.Rows;
        if (nq > MaxDecodeQueries) throw new ArgumentException($"decode attention takes at most {MaxDecodeQueries} query rows, got {nq}", nameof(q));
        if (nq == 0) return;
        _context.MakeCurrent();
        int rowGroups = ((qHeads / kvHeads) * nq + FlashDecodeRows - 1) / FlashDecodeRows;
        int blocksPerSplit = kvHeads * rowGroups;
        int splits = FlashDecodeSplits(nk, blocksPerSplit, Info.MultiprocessorCount, FlashDecodeBlocksPerSm());
        int chunk = (nk + splits - 1) / splits;
        long rows = (long)nq * qHeads;
        long accBytes = rows * splits * headDim * sizeof(float);
        long msBytes = rows * splits * 2 * sizeof(float);
        using var workspace = _pool.Rent(accBytes + msBytes); // stream-ordered: free for reuse once the merge is queued
        ulong partialAcc = workspace.Pointer, partialMs = workspace.Pointer + (ulong)accBytes;
        Launch(KernelCatalog.FlashDecode, "flash_decode_split", (uint)splits, (uint)blocksPerSplit, new FlashDecodeParams
        {
            Q = qs.Pointer, K = ks.Pointer, V = vs.Pointer, PartialAcc = partialAcc, PartialMs = partialMs,
            Nq = nq, Nk = nk, QHeads = qHeads, KvHeads = kvHeads, HeadDim = headDim, QStride = qs.Cols, KvStride = ks.Cols,
            Splits = splits, Chunk = chunk, Causal = mask == AttentionMask.Causal ? 1 : 0, Scale = 1f / MathF.Sqrt(headDim),
        });
        Launch(KernelCatalog.FlashDecode, "flash_decode_merge", (uint)rows, 1, new FlashDecodeMergeParams
        {
            PartialAcc = partialAcc, PartialMs = partialMs, Out = os.Pointer, Rows = (int)rows, QHeads = qHeads, HeadDim = headDim,
            OutStride = os.Cols, Splits = splits,
        });
    }

    /// <summary>
    /// Split blocks one SM holds at once (the driver's occupancy of flash_decode_split in this backend's dtype),
    /// asked once. A driver that answers 0 would leave no launchable block: that is an error, not a split count.
    /// </summary>
    /// <exception cref="CudaException">The driver says no block of the split kernel fits an SM.</exception>
    internal int FlashDecodeBlocksPerSm()
    {
        if (_flashDecodeBlocksPerSm > 0) return _flashDecodeBlocksPerSm;
        const string entry = "flash_decode_split";
        int blocks = KernelLaunch.MaxActiveBlocksPerMultiprocessor(_kernels.Function(KernelCatalog.FlashDecode, DType, entry),
            KernelSpec.EntryName(entry, DType), KernelCatalog.FlashDecode.Threads);
        if (blocks <= 0)
            throw new CudaException("cuOccupancyMaxActiveBlocksPerMultiprocessor", (int)CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                nameof(CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES), $"{KernelSpec.EntryName(entry, DType)}: no block of {KernelCatalog.FlashDecode.Threads} threads fits an SM");
        return _flashDecodeBlocksPerSm = blocks;
    }

    /// <summary>True when <see cref="Attention"/> should run <see cref="DecodeAttention"/>.</summary>
    private bool RoutesToFlashDecode(Tensor q, Tensor k) =>
        _options.FusedAttention && q.Rows <= MaxDecodeQueries && k.Rows >= FlashDecodeMinKeys;
}
