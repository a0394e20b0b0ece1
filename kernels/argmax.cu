// argmax.cu: greedy decoding on the device, the index of the first maximal logit of each row (ties: the
// lowest index, as Sampler.ArgMax). One block per row; each thread scans a strided slice keeping its
// first strict maximum, then (value, index) pairs are reduced preferring the larger value, then the lower
// index. NaN logits are never chosen (a row with no number at all gives 0); the host op differs only when
// logit 0 itself is NaN, where it returns 0.
#include "common.cuh"

constexpr int ARGMAX_THREADS = 1024;
constexpr int ARGMAX_NONE = 0x7fffffff;

__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi)
{
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
}

extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) VTE_ENTRY(argmax)(const ArgmaxParams p)
{
    __shared__ float values[32];
    __shared__ int indices[32];
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    const T* l = static_cast<const T*>(p.logits) + (long long)r * p.vocab;
    float best = -__uint_as_float(0x7f800000u);
    int at = ARGMAX_NONE;
    for (int c = threadIdx.x; c < p.vocab; c += blockDim.x)
    {
        const float v = to_float(l[c]);
        if (v > best || (at == ARGMAX_NONE && v == best)) { best = v; at = c; } // -inf is a value too
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        argmax_merge(best, at, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, at, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { values[warp] = best; indices[warp] = at; }
    __syncthreads();
    if (warp == 0)
    {
        best = lane < (int)(blockDim.x >> 5) ? values[lane] : -__uint_as_float(0x7f800000u);
        at = lane < (int)(blockDim.x >> 5) ? indices[lane] : ARGMAX_NONE;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            argmax_merge(best, at, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, at, o));
        if (lane == 0) p.out[r] = at == ARGMAX_NONE ? 0 : at;
    }
}
