// CudaBackend.FlashAttention: the fused prefill attention (kernels/flash_attention.cu, flash_attention_T):
// softmax(q·kᵀ/√d)·v tiled over keys with an online softmax, tensor-core MMA for bf16/f16, grouped-query
// heads, the causal suffix mask and/or a per-query key limit, and optionally the softmax mass on up to 8 key
// ranges. Attention routes here when CudaBackendOptions.FusedAttention is on (off by default until the
// kernel has been checked on a GPU) and the kernel covers the call; the reference kernel stays the default.
using VteKernels.Backends;
using VteKernels.Cuda.Kernels;

namespace VteKernels.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>Most key ranges <see cref="FlashAttention"/> reports a mass for.</summary>
    public const int FlashAttentionMaxMassRanges = 8;

    /// <summary>True when flash_attention_T handles <paramref name="headDim"/> (64, 80, 96, 128).</summary>
    public static bool FlashAttentionSupportsHeadDim(int headDim) => headDim is 64 or 80 or 96 or 128;

    /// <summary>
    /// Fused attention (flash_attention_T). Effectively computes, for query row i and head h,
    /// output[i, h] = Σ_j softmax_j(q[i, h]·k[j, g]ᵀ/√headDim)·v[j, g] with g = h / (qHeads / kvHeads), over the keys
    /// j &lt; limit(i), where limit(i) = nk, lowered to nk − nq + i + 1 by <see cref="AttentionMask.Causal"/> and
    /// to <paramref name="keyEnd"/>[i] when <paramref name="keyEnd"/> is given (NAAViT's compact queries,
    /// chunked prefill). When <paramref name="massRanges"/> is given, also mass[i · qHeads + h] = the softmax
    /// probability on the keys in those [Start, End) ranges.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A head count or head dimension is out of range, or the mask is unknown.</exception>
    /// <exception cref="ArgumentException">Shapes disagree, a key limit or range is outside the keys, the output
    /// overlaps an input, or a tensor is not 16-byte aligned.</exception>
    public void FlashAttention(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim, AttentionMask mask, Tensor output,
        ReadOnlySpan<int> keyEnd = default, ReadOnlySpan<(int Start, int End)> massRanges = default, Span<float> mass = default)
    {
        var (qs, ks, vs, os) = AttentionArguments(q, qHeads, k, v, kvHeads, headDim, mask, output);
        if (!FlashAttentionSupportsHeadDim(headDim)) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "the fused attention kernel handles head_dim 64, 80, 96 and 128");
        int nq = qs.Rows, nk = ks.Rows;
        if (!Aligned16(qs, ks, vs, os)) throw new ArgumentException("the fused attention kernel needs 16-byte aligned q, k, v and output", nameof(q));
        if (!keyEnd.IsEmpty)
        {
            if (keyEnd.Length != nq) throw new ArgumentException($"keyEnd has {keyEnd.Length} entries for {nq} queries", nameof(keyEnd));
            for (int i = 0; i < nq; i++)
                if (keyEnd[i] < 1 || keyEnd[i] > nk) throw new ArgumentException($"keyEnd[{i}] = {keyEnd[i]} is outside [1, {nk}]", nameof(keyEnd));
        }
        if (massRanges.Length > FlashAttentionMaxMassRanges) throw new ArgumentException($"at most {FlashAttentionMaxMassRanges} mass ranges, got {massRanges.Length}", nameof(massRanges));
        bool wantMass = !massRanges.IsEmpty;
        if (wantMass && mass.Length != (long)nq * qHeads) throw new ArgumentException($"mass has {mass.Length} entries, [{nq}, {qHeads}] expected", nameof(mass));
        if (!wantMass && !mass.IsEmpty) throw new ArgumentException("mass needs massRanges", nameof(mass));
        for (int r = 0; r < massRanges.Length; r++)
        {
            var (start, end) = massRanges[r];
            if (start < 0 || end < start || end > nk) throw new ArgumentException($"mass range [{start}, {end}) is outside {nk} keys", nameof(massRanges));
            for (int s = 0; s < r; s++)
                if (start < massRanges[s].End && massRanges[s].Start < end) throw new ArgumentException($"mass ranges [{massRanges[s].Start}, {massRanges[s].End}) and [{start}, {end}) overlap", nameof(massRanges));
        }
        if (nq == 0) return;

        _context.MakeCurrent();
        using var keyEndDevice = keyEnd.IsEmpty ? null : UploadHost(keyEnd);
        using var massDevice = wantMass ? _pool.Rent((long)nq * qHeads * sizeof(float)) : null;
        var args = new FlashAttentionParams
        {
            Q = qs.Pointer, K = ks.Pointer, V = vs.Pointer, Out = os.Pointer, KeyEnd = keyEndDevice?.Pointer ?? 0, Mass = massDevice?.Pointer ?? 0,
            Nq = nq, Nk = nk, QHeads = qHeads, KvHeads = kvHeads, HeadDim = headDim, QStride = qs.Cols, KvStride = ks.Cols, OutStride = os.Cols,
            Causal = mask == AttentionMask.Causal ? 1 : 0, MassRanges = massRanges.Length, Scale = 1f / MathF.Sqrt(headDim),
        };
        unsafe
        {
            for (int r = 0; r < massRanges.Length; r++)
            {
                args.RangeStart[r] = massRanges[r].Start;
                args.RangeEnd[r] = massRanges[r].End;
            }
        }
        int blockRows = KernelCatalog.FlashAttention.Threads / 32 * 16; // a warp per 16 query rows
        Launch(KernelCatalog.FlashAttention, "flash_attention", (uint)((nq + blockRows - 1) / blockRows), (uint)qHeads, args);
        if (massDevice is not null) DownloadTo(massDevice.Pointer, mass);
    }

    /// <summary>Whether <see cref="Attention"/> hands a call to <see cref="FlashAttention"/>.</summary>
    private bool RoutesToFlashAttention(Tensor q, Tensor k, Tensor v, Tensor output, int headDim) =>
        _options.FusedAttention && DType is VteKernels.DType.BF16 or VteKernels.DType.F16 && FlashAttentionSupportsHeadDim(headDim)
        && Aligned16(Own(q), Own(k), Own(v), Own(output));

    private static bool Aligned16(params ReadOnlySpan<CudaTensor> tensors)
    {
        foreach (var t in tensors)
            if (t.Pointer % 16 != 0 || t.Cols % 8 != 0) return false;
        return true;
    }
}
