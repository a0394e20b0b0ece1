// Decode attention on the device (kernels/flash_decode.cu): a few query rows against a long KV cache,
// split along the keys (flash_decode_split_T writes a float32 partial per split and row into a pooled
// workspace) and merged (flash_decode_merge_T). Attention routes here when CudaBackendOptions.FusedAttention
// is on, nq <= 8 and nk >= 256; the split count is a pure function of nk, the blocks per split and the SM
// count (FlashDecodeSplits) so that it can be tested without a device.
using VteKernels.Backends;
using VteKernels.Cuda.Kernels;

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

    /// <summary>Split blocks aimed for per SM: about 4 KiB of loads in flight per block, 16 KiB per SM to cover DRAM latency.</summary>
    internal const int FlashDecodeBlocksPerSm = 4;

    /// <summary>
    /// The number of key splits for <paramref name="nk"/> keys when each split launches
    /// <paramref name="blocksPerSplit"/> blocks (kv heads × row groups) on <paramref name="multiprocessors"/> SMs:
    /// enough splits for <see cref="FlashDecodeBlocksPerSm"/> blocks per SM, at most one per
    /// <see cref="FlashDecodeMinKeysPerSplit"/> keys and at most <see cref="FlashDecodeMaxSplits"/>, at least 1.
    /// Every split of ceil(nk / splits) keys is non-empty.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    internal static int FlashDecodeSplits(int nk, int blocksPerSplit, int multiprocessors)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(nk);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocksPerSplit);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(multiprocessors);
        long target = (long)FlashDecodeBlocksPerSm * multiprocessors;
        long wanted = (target + blocksPerSplit - 1) / blocksPerSplit;
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
        int splits = FlashDecodeSplits(nk, blocksPerSplit, Info.MultiprocessorCount);
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

    /// <summary>True when <see cref="Attention"/> should run <see cref="DecodeAttention"/>.</summary>
    private bool RoutesToFlashDecode(Tensor q, Tensor k) =>
        _options.FusedAttention && q.Rows <= MaxDecodeQueries && k.Rows >= FlashDecodeMinKeys;
}
