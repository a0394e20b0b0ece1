// flash_attention.cu: fused prefill attention, FlashAttention-2 style. Semantics are CpuOps.Attention's
// (and attention_reference.cu's): softmax(q·kᵀ/√d)·v per (query row, query head), query head h reads kv head
// h / (q_heads / kv_heads); the score matrix never exists in memory, softmax statistics and the output
// accumulate in float32.
//
// Tiling. A block of FLASH_ATTENTION_THREADS = 128 threads (4 warps) owns BLOCK_M = 64 query rows of one
// query head (grid: ceil(nq / 64) x q_heads); each warp owns 16 of those rows. The block walks the keys in
// tiles of BLOCK_N (64 for bf16/f16, 16 for f32): the tile's K and V rows are staged in shared memory with
// 16-byte loads (rows padded by 16 bytes so the fragment reads below hit 32 distinct banks), then every warp
// * S = Q·Kᵀ for its 16 rows x BLOCK_N keys with mma.sync m16n8k16 (bf16/f16 in, f32 accumulate); the Q
//   fragments stay in registers for the whole key loop, the K fragments are 32-bit shared loads;
// * online softmax in the log2 domain: new row max m, rescale factor 2^(m_old - m) applied to the running
//   denominator l, to the optional mass numerator and to the output accumulator;
// * O += P·V with P rounded to T in registers (the S accumulator layout is the A-fragment layout, as in
//   FlashAttention-2), V fragments gathered from shared memory as 16-bit pairs (no ldmatrix.trans: simpler,
//   with some bank conflicts; to be measured).
// Single-buffered (no cp.async): a load, a barrier, the math, a barrier. Registers per thread (bf16,
// head_dim 128): Q 32, S 32, O 64, row statistics 6.
// The f32 build uses the same block/tile structure with plain FMA: two threads per query row, each holding
// half of the head dimension of q and of the output, scores completed with one shuffle. Correct, not fast.
//
// Head dims 64, 80, 96, 128 (templates, dispatched on p.head_dim; the host sends others to
// attention_reference). Pointers and row strides must allow 16-byte accesses (the host checks).
//
// Masks, combined by taking the smallest limit: query i sees keys j < limit(i), limit = nk;
// causal: limit = min(limit, nk - nq + i + 1) (the queries are the last nq of the nk positions);
// key_end (optional device array [nq]): limit = min(limit, key_end[i]) (NAAViT's compact queries, chunked
// prefill). A block stops at the largest limit among its rows; masked scores are -inf, and a row whose
// tiles so far are all masked uses 0 as its softmax base so that no -inf - -inf appears. A row with limit
// 0 writes zeros (the host rejects such limits).
//
// Mass side output (optional): mass[i * q_heads + h] = softmax probability on the keys in the mass_ranges
// [range_start, range_end) ranges, accumulated as exp2(s - m) with the same rescaling as the denominator and
// divided by it at the end; that is CpuOps.AttentionMass's value for the same mask.
#include "common.cuh"

constexpr int FLASH_ATTENTION_THREADS = 128;
constexpr int FA_WARPS = FLASH_ATTENTION_THREADS / 32;
constexpr int FA_BLOCK_M = 16 * FA_WARPS;
constexpr int FA_MAX_HEAD_DIM = 128;
constexpr int FA_MAX_RANGES = 8;
static_assert(FA_BLOCK_M == 64, "a warp owns 16 query rows");

constexpr float FA_LOG2E = 1.4426950408889634f;
#define FA_NEG_INF (-__uint_as_float(0x7f800000u))

__device__ __forceinline__ int fa_row_limit(const FlashAttentionParams& p, int i)
{
    int limit = p.nk;
    if (p.causal) limit = min(limit, p.nk - p.nq + i + 1);
    if (p.key_end != nullptr) limit = min(limit, p.key_end[i]);
    return limit;
}

__device__ __forceinline__ bool fa_in_ranges(const FlashAttentionParams& p, int j)
{
    bool in = false;
#pragma unroll
    for (int r = 0; r < FA_MAX_RANGES; r++) in |= r < p.mass_ranges && j >= p.range_start[r] && j < p.range_end[r];
    return in;
}

// Copies rows [n0, n0 + rows) of the head's K or V into shared memory (row stride ld elements), zeros past nk.
template <int D, int ROWS>
__device__ __forceinline__ void fa_stage(T* dst, int ld, const T* src, long long stride, int n0, int nk)
{
    constexpr int packsPerRow = D / kPack;
    for (int idx = threadIdx.x; idx < ROWS * packsPerRow; idx += FLASH_ATTENTION_THREADS)
    {
        const int r = idx / packsPerRow, c = (idx % packsPerRow) * kPack;
        Pack16 v = {{0u, 0u, 0u, 0u}};
        if (n0 + r < nk) v = load_pack(src + (long long)(n0 + r) * stride + c);
        store_pack(dst + r * ld + c, v);
    }
}

// Largest key limit among the block's rows (every thread calls it: it has barriers).
__device__ __forceinline__ int fa_block_limit(const FlashAttentionParams& p, int i0, float* scratch)
{
    const int last = min(i0 + FA_BLOCK_M, p.nq) - 1;
    if (p.key_end == nullptr) return p.causal ? min(p.nk, p.nk - p.nq + last + 1) : p.nk;
    const int i = i0 + (int)threadIdx.x;
    const float mine = (threadIdx.x < FA_BLOCK_M && i <= last) ? (float)fa_row_limit(p, i) : 0.0f; // exact below 2^24
    return (int)block_max(mine, scratch);
}

#if !defined(VTE_DTYPE_F32)

constexpr int FA_BLOCK_N = 64;
constexpr int FA_LD = FA_MAX_HEAD_DIM + 8; // +16 bytes per row: fragment reads spread over all banks
static_assert(FA_BLOCK_N % 16 == 0, "P·V takes keys 16 at a time");

__device__ __forceinline__ unsigned int fa_pack2(float lo, float hi)
{
    return (unsigned int)from_float<T>(lo).bits | ((unsigned int)from_float<T>(hi).bits << 16);
}

// D (16x8, f32) += A (16x16, row) · B (16x8, col), T inputs.
__device__ __forceinline__ void fa_mma(float (&d)[4], const unsigned int (&a)[4], unsigned int b0, unsigned int b1)
{
#if defined(VTE_DTYPE_BF16)
    ptx_mma_m16n8k16_bf16(d, a, b0, b1);
#else
    ptx_mma_m16n8k16_f16(d, a, b0, b1);
#endif
}

__device__ __forceinline__ unsigned int fa_ld32(const T* p) { return *reinterpret_cast<const unsigned int*>(p); }

template <int D>
__device__ __forceinline__ void fa_run(const FlashAttentionParams& p, T* ks, T* vs, float* scratch)
{
    static_assert(D % 16 == 0 && D <= FA_MAX_HEAD_DIM, "head_dim: a multiple of 16, at most 128");
    constexpr int KD = D / 16; // k-steps of Q·Kᵀ
    constexpr int ND = D / 8;  // n-blocks of the output
    constexpr int NN = FA_BLOCK_N / 8;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3; // fragment row group, thread in group
    const int h = blockIdx.y, kvh = h / (p.q_heads / p.kv_heads);
    const int i0 = blockIdx.x * FA_BLOCK_M;
    const int rowA = i0 + warp * 16 + g, rowB = rowA + 8; // the two query rows this thread holds
    const bool wantMass = p.mass != nullptr;

    // Q fragments (A layout), zero rows past nq.
    unsigned int qf[KD][4];
    {
        const T* qA = static_cast<const T*>(p.q) + (long long)rowA * p.q_stride + (long long)h * D;
        const T* qB = static_cast<const T*>(p.q) + (long long)rowB * p.q_stride + (long long)h * D;
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
        {
            const int c = kk * 16 + 2 * t;
            qf[kk][0] = rowA < p.nq ? fa_ld32(qA + c) : 0u;
            qf[kk][1] = rowB < p.nq ? fa_ld32(qB + c) : 0u;
            qf[kk][2] = rowA < p.nq ? fa_ld32(qA + c + 8) : 0u;
            qf[kk][3] = rowB < p.nq ? fa_ld32(qB + c + 8) : 0u;
        }
    }
    const int limitA = rowA < p.nq ? fa_row_limit(p, rowA) : 0;
    const int limitB = rowB < p.nq ? fa_row_limit(p, rowB) : 0;
    const int blockLimit = fa_block_limit(p, i0, scratch);

    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float mA = FA_NEG_INF, mB = FA_NEG_INF, lA = 0.0f, lB = 0.0f, wA = 0.0f, wB = 0.0f;
    const float scaleLog2 = p.scale * FA_LOG2E;
    const T* kHead = static_cast<const T*>(p.k) + (long long)kvh * D;
    const T* vHead = static_cast<const T*>(p.v) + (long long)kvh * D;

    for (int n0 = 0; n0 < blockLimit; n0 += FA_BLOCK_N)
    {
        __syncthreads(); // the previous tile is consumed
        fa_stage<D, FA_BLOCK_N>(ks, FA_LD, kHead, p.kv_stride, n0, p.nk);
        fa_stage<D, FA_BLOCK_N>(vs, FA_LD, vHead, p.kv_stride, n0, p.nk);
        __syncthreads();

        // S = Q·Kᵀ: s[n] holds keys n0 + 8n + 2t, +1 for rows A (0, 1) and B (2, 3).
        float s[NN][4];
#pragma unroll
        for (int n = 0; n < NN; n++)
        {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            const T* kRow = ks + (8 * n + g) * FA_LD + 2 * t;
#pragma unroll
            for (int kk = 0; kk < KD; kk++) fa_mma(s[n], qf[kk], fa_ld32(kRow + kk * 16), fa_ld32(kRow + kk * 16 + 8));
        }

        // Online softmax (log2 domain).
        float tileA = FA_NEG_INF, tileB = FA_NEG_INF;
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                const int j = n0 + 8 * n + 2 * t + e;
                s[n][e] = j < limitA ? s[n][e] * scaleLog2 : FA_NEG_INF;
                s[n][2 + e] = j < limitB ? s[n][2 + e] * scaleLog2 : FA_NEG_INF;
                tileA = fmaxf(tileA, s[n][e]);
                tileB = fmaxf(tileB, s[n][2 + e]);
            }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1)
        {
            tileA = fmaxf(tileA, __shfl_xor_sync(0xffffffffu, tileA, off));
            tileB = fmaxf(tileB, __shfl_xor_sync(0xffffffffu, tileB, off));
        }
        const float newA = fmaxf(mA, tileA), newB = fmaxf(mB, tileB);
        const float baseA = newA == FA_NEG_INF ? 0.0f : newA, baseB = newB == FA_NEG_INF ? 0.0f : newB;
        const float alphaA = exp2f(mA - baseA), alphaB = exp2f(mB - baseB);
        mA = newA;
        mB = newB;
        lA *= alphaA;
        lB *= alphaB;
        wA *= alphaA;
        wB *= alphaB;
#pragma unroll
        for (int n = 0; n < ND; n++)
        {
            o[n][0] *= alphaA;
            o[n][1] *= alphaA;
            o[n][2] *= alphaB;
            o[n][3] *= alphaB;
        }
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                s[n][e] = exp2f(s[n][e] - baseA);
                s[n][2 + e] = exp2f(s[n][2 + e] - baseB);
                lA += s[n][e];
                lB += s[n][2 + e];
                if (wantMass && fa_in_ranges(p, n0 + 8 * n + 2 * t + e))
                {
                    wA += s[n][e];
                    wB += s[n][2 + e];
                }
            }

        // O += P·V, keys 16 at a time: P's A fragment is two neighbouring S n-blocks.
#pragma unroll
        for (int kk = 0; kk < FA_BLOCK_N / 16; kk++)
        {
            unsigned int pf[4];
            pf[0] = fa_pack2(s[2 * kk][0], s[2 * kk][1]);
            pf[1] = fa_pack2(s[2 * kk][2], s[2 * kk][3]);
            pf[2] = fa_pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pf[3] = fa_pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            const T* v0 = vs + (16 * kk + 2 * t) * FA_LD + g;
#pragma unroll
            for (int n = 0; n < ND; n++)
            {
                const T* vc = v0 + 8 * n;
                const unsigned int b0 = (unsigned int)vc[0].bits | ((unsigned int)vc[FA_LD].bits << 16);
                const unsigned int b1 = (unsigned int)vc[8 * FA_LD].bits | ((unsigned int)vc[9 * FA_LD].bits << 16);
                fa_mma(o[n], pf, b0, b1);
            }
        }
    }

    // Row sums are spread over the 4 threads of a group.
#pragma unroll
    for (int off = 1; off < 4; off <<= 1)
    {
        lA += __shfl_xor_sync(0xffffffffu, lA, off);
        lB += __shfl_xor_sync(0xffffffffu, lB, off);
        wA += __shfl_xor_sync(0xffffffffu, wA, off);
        wB += __shfl_xor_sync(0xffffffffu, wB, off);
    }
    const float invA = lA > 0.0f ? 1.0f / lA : 0.0f, invB = lB > 0.0f ? 1.0f / lB : 0.0f;
    T* outA = static_cast<T*>(p.out) + (long long)rowA * p.out_stride + (long long)h * D + 2 * t;
    T* outB = static_cast<T*>(p.out) + (long long)rowB * p.out_stride + (long long)h * D + 2 * t;
#pragma unroll
    for (int n = 0; n < ND; n++)
    {
        if (rowA < p.nq) *reinterpret_cast<unsigned int*>(outA + 8 * n) = fa_pack2(o[n][0] * invA, o[n][1] * invA);
        if (rowB < p.nq) *reinterpret_cast<unsigned int*>(outB + 8 * n) = fa_pack2(o[n][2] * invB, o[n][3] * invB);
    }
    if (wantMass && t == 0)
    {
        if (rowA < p.nq) p.mass[(long long)rowA * p.q_heads + h] = wA * invA;
        if (rowB < p.nq) p.mass[(long long)rowB * p.q_heads + h] = wB * invB;
    }
}

#else // f32: plain FMA, two threads per query row

constexpr int FA_BLOCK_N = 16;
constexpr int FA_LD = FA_MAX_HEAD_DIM + 4;

template <int D>
__device__ __forceinline__ void fa_run(const FlashAttentionParams& p, T* ks, T* vs, float* scratch)
{
    static_assert(D % 8 == 0 && D <= FA_MAX_HEAD_DIM, "head_dim: a multiple of 8, at most 128");
    constexpr int HALF = D / 2;
    const int h = blockIdx.y, kvh = h / (p.q_heads / p.kv_heads);
    const int i0 = blockIdx.x * FA_BLOCK_M;
    const int row = i0 + (int)(threadIdx.x >> 1), part = threadIdx.x & 1; // neighbouring lanes share a row
    const bool live = row < p.nq;
    const bool wantMass = p.mass != nullptr;

    float q[HALF], o[HALF];
    const float* qRow = static_cast<const float*>(p.q) + (long long)row * p.q_stride + (long long)h * D + part * HALF;
#pragma unroll
    for (int d = 0; d < HALF; d++)
    {
        q[d] = live ? qRow[d] : 0.0f;
        o[d] = 0.0f;
    }
    const int limit = live ? fa_row_limit(p, row) : 0;
    const int blockLimit = fa_block_limit(p, i0, scratch);
    const float scaleLog2 = p.scale * FA_LOG2E;
    float m = FA_NEG_INF, l = 0.0f, w = 0.0f;
    const T* kHead = static_cast<const T*>(p.k) + (long long)kvh * D;
    const T* vHead = static_cast<const T*>(p.v) + (long long)kvh * D;

    for (int n0 = 0; n0 < blockLimit; n0 += FA_BLOCK_N)
    {
        __syncthreads();
        fa_stage<D, FA_BLOCK_N>(ks, FA_LD, kHead, p.kv_stride, n0, p.nk);
        fa_stage<D, FA_BLOCK_N>(vs, FA_LD, vHead, p.kv_stride, n0, p.nk);
        __syncthreads();

        float s[FA_BLOCK_N];
        float tile = FA_NEG_INF;
#pragma unroll
        for (int j = 0; j < FA_BLOCK_N; j++)
        {
            const float* kRow = ks + j * FA_LD + part * HALF;
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < HALF; d++) dot = fmaf(q[d], kRow[d], dot);
            dot += __shfl_xor_sync(0xffffffffu, dot, 1);
            s[j] = n0 + j < limit ? dot * scaleLog2 : FA_NEG_INF;
            tile = fmaxf(tile, s[j]);
        }
        const float next = fmaxf(m, tile);
        const float base = next == FA_NEG_INF ? 0.0f : next;
        const float alpha = exp2f(m - base);
        m = next;
        l *= alpha;
        w *= alpha;
#pragma unroll
        for (int d = 0; d < HALF; d++) o[d] *= alpha;
#pragma unroll
        for (int j = 0; j < FA_BLOCK_N; j++)
        {
            const float pj = exp2f(s[j] - base);
            l += pj;
            if (wantMass && fa_in_ranges(p, n0 + j)) w += pj;
            const float* vRow = vs + j * FA_LD + part * HALF;
#pragma unroll
            for (int d = 0; d < HALF; d++) o[d] = fmaf(pj, vRow[d], o[d]);
        }
    }

    if (!live) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* outRow = static_cast<float*>(p.out) + (long long)row * p.out_stride + (long long)h * D + part * HALF;
#pragma unroll
    for (int d = 0; d < HALF; d++) outRow[d] = o[d] * inv;
    if (wantMass && part == 0) p.mass[(long long)row * p.q_heads + h] = w * inv;
}

#endif

extern "C" __global__ void __launch_bounds__(FLASH_ATTENTION_THREADS) VTE_ENTRY(flash_attention)(const FlashAttentionParams p)
{
    __shared__ __align__(16) T ks[FA_BLOCK_N * FA_LD];
    __shared__ __align__(16) T vs[FA_BLOCK_N * FA_LD];
    __shared__ float scratch[32];
    if ((int)blockIdx.x * FA_BLOCK_M >= p.nq || (int)blockIdx.y >= p.q_heads) return;
    switch (p.head_dim)
    {
    case 64: fa_run<64>(p, ks, vs, scratch); break;
    case 80: fa_run<80>(p, ks, vs, scratch); break;
    case 96: fa_run<96>(p, ks, vs, scratch); break;
    case 128: fa_run<128>(p, ks, vs, scratch); break;
    default: break; // the host sends other head dims to attention_reference
    }
}
