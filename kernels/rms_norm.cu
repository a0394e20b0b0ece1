// rms_norm.cu: LLaMA's RMSNorm per row, as the CPU op and HF's LlamaRMSNorm compute it in float32:
// y = (x * 1/sqrt(mean(x^2) + eps)) * gamma. One block per row; pass 1 sums squares in float32 (block
// reduction), pass 2 re-reads x (from L1/L2: a 4096-wide bf16 row is 8 KiB) and writes y. y may be x: in
// both passes a thread touches the same elements, and pass 1 ends with a barrier.
#include "common.cuh"

constexpr int RMS_NORM_THREADS = 256;

extern "C" __global__ void __launch_bounds__(RMS_NORM_THREADS) VTE_ENTRY(rms_norm)(const RmsNormParams p)
{
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    const T* x = static_cast<const T*>(p.x) + (long long)r * p.cols;
    const T* g = static_cast<const T*>(p.gamma);
    T* y = static_cast<T*>(p.y) + (long long)r * p.cols;
    const bool vec = p.cols % kPack == 0 && aligned16(p.x) && aligned16(p.gamma) && aligned16(p.y);

    float sum = 0.0f;
    if (vec)
    {
        for (int i = threadIdx.x; i < p.cols / kPack; i += blockDim.x)
        {
            float v[kPack];
            unpack(load_pack(x + i * kPack), v);
#pragma unroll
            for (int e = 0; e < kPack; e++) sum += v[e] * v[e];
        }
    }
    else
    {
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) { float v = to_float(x[c]); sum += v * v; }
    }
    const float inv = 1.0f / sqrtf(block_sum(sum, scratch) / (float)p.cols + p.eps);

    if (vec)
    {
        for (int i = threadIdx.x; i < p.cols / kPack; i += blockDim.x)
        {
            float v[kPack], w[kPack];
            unpack(load_pack(x + i * kPack), v);
            unpack(load_pack(g + i * kPack), w);
#pragma unroll
            for (int e = 0; e < kPack; e++) v[e] = (v[e] * inv) * w[e];
            store_pack(y + i * kPack, pack(v));
        }
    }
    else
    {
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) y[c] = from_float<T>((to_float(x[c]) * inv) * to_float(g[c]));
    }
}
