// attention_reference.cu: PLACEHOLDER. A simple, unfused, correct scaled dot-product attention so that the
// CUDA backend is complete; the fused attention kernel replaces it. Semantics are CpuOps.Attention's:
// query head h reads key/value head h / (q_heads / kv_heads) (grouped-query), the causal mask lets query
// i see keys j <= nk - nq + i (the queries are the last nq of nk positions), softmax in float32 with the
// maximum subtracted, output = sum_j p_j v_j.
//
// One block of 4 warps per (query row, query head); the query row sits in shared memory as float32. Warps
// take keys round-robin; a warp computes one score with its lanes spread over head_dim (coalesced key
// reads). Pass 1 keeps a running maximum and sum per warp (online softmax), merged across warps; pass 2
// recomputes each score (bitwise the same) and accumulates p_j v_j with each lane holding head_dim / 32
// output elements. No scratch memory at any sequence length, at the price of computing every score twice
// and reading K twice: fine for a reference, far from the fused kernel's speed.
#include "common.cuh"

constexpr int ATTENTION_THREADS = 128;
constexpr int ATTENTION_WARPS = ATTENTION_THREADS / 32;
constexpr int ATTENTION_MAX_HEAD_DIM = 256;
constexpr int ATTENTION_PER_LANE = ATTENTION_MAX_HEAD_DIM / 32;

__device__ __forceinline__ float attention_score(const float* q, const T* key, int headDim, float scale)
{
    float dot = 0.0f;
    for (int d = threadIdx.x & 31; d < headDim; d += 32) dot = fmaf(q[d], to_float(key[d]), dot);
    return warp_sum(dot) * scale;
}

extern "C" __global__ void __launch_bounds__(ATTENTION_THREADS) VTE_ENTRY(attention_reference)(const AttentionParams p)
{
    __shared__ float q[ATTENTION_MAX_HEAD_DIM];
    __shared__ float partial[ATTENTION_WARPS][ATTENTION_MAX_HEAD_DIM];
    __shared__ float warpMax[ATTENTION_WARPS];
    __shared__ float warpSum[ATTENTION_WARPS];
    const int i = blockIdx.x, h = blockIdx.y;
    if (i >= p.nq || h >= p.q_heads) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int hd = p.head_dim;
    const int g = h / (p.q_heads / p.kv_heads);
    const int visible = p.causal ? p.nk - p.nq + i + 1 : p.nk;
    const T* kBase = static_cast<const T*>(p.k) + (long long)g * hd;
    const T* vBase = static_cast<const T*>(p.v) + (long long)g * hd;

    const T* qRow = static_cast<const T*>(p.q) + (long long)i * p.q_stride + (long long)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) q[d] = to_float(qRow[d]);
    __syncthreads();

    // Pass 1: per-warp running maximum and sum of exp(score - maximum).
    float m = -__uint_as_float(0x7f800000u), s = 0.0f;
    for (int j = warp; j < visible; j += ATTENTION_WARPS)
    {
        const float score = attention_score(q, kBase + (long long)j * p.kv_stride, hd, p.scale);
        const float nm = fmaxf(m, score);
        s = s * expf(m - nm) + expf(score - nm);
        m = nm;
    }
    if (lane == 0) { warpMax[warp] = m; warpSum[warp] = s; }
    __syncthreads();
    float maxAll = warpMax[0];
    for (int w = 1; w < ATTENTION_WARPS; w++) maxAll = fmaxf(maxAll, warpMax[w]);
    float sumAll = 0.0f;
    for (int w = 0; w < ATTENTION_WARPS; w++)
        if (warpSum[w] > 0.0f) sumAll += warpSum[w] * expf(warpMax[w] - maxAll);

    // Pass 2: output = sum_j softmax_j * v_j.
    float acc[ATTENTION_PER_LANE];
#pragma unroll
    for (int e = 0; e < ATTENTION_PER_LANE; e++) acc[e] = 0.0f;
    for (int j = warp; j < visible; j += ATTENTION_WARPS)
    {
        const float pj = expf(attention_score(q, kBase + (long long)j * p.kv_stride, hd, p.scale) - maxAll) / sumAll;
        const T* vRow = vBase + (long long)j * p.kv_stride;
#pragma unroll
        for (int e = 0; e < ATTENTION_PER_LANE; e++)
        {
            const int d = lane + 32 * e;
            if (d < hd) acc[e] = fmaf(pj, to_float(vRow[d]), acc[e]);
        }
    }
#pragma unroll
    for (int e = 0; e < ATTENTION_PER_LANE; e++)
    {
        const int d = lane + 32 * e;
        if (d < hd) partial[warp][d] = acc[e];
    }
    __syncthreads();
    T* outRow = static_cast<T*>(p.out) + (long long)i * p.out_stride + (long long)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
    {
        float o = 0.0f;
        for (int w = 0; w < ATTENTION_WARPS; w++) o += partial[w][d];
        outRow[d] = from_float<T>(o);
    }
}
