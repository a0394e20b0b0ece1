// add_rms_norm.cu: the residual add fused with the next RMSNorm: residual += delta (stored back in T), then
// y = RmsNorm(residual) from the stored values, so the result equals add_T followed by rms_norm_T exactly
// while reading the residual row once from DRAM instead of three times. One block per row. y must not
// overlap residual or delta (y is the next layer's normalised input, a separate buffer).
#include "common.cuh"

constexpr int ADD_RMS_NORM_THREADS = 256;

extern "C" __global__ void __launch_bounds__(ADD_RMS_NORM_THREADS) VTE_ENTRY(add_rms_norm)(const AddRmsNormParams p)
{
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    T* res = static_cast<T*>(p.residual) + (long long)r * p.cols;
    const T* d = static_cast<const T*>(p.delta) + (long long)r * p.cols;
    const T* g = static_cast<const T*>(p.gamma);
    T* y = static_cast<T*>(p.y) + (long long)r * p.cols;
    const bool vec = p.cols % kPack == 0 && aligned16(p.residual) && aligned16(p.delta) && aligned16(p.gamma) && aligned16(p.y);

    float sum = 0.0f;
    if (vec)
    {
        for (int i = threadIdx.x; i < p.cols / kPack; i += blockDim.x)
        {
            float v[kPack], dv[kPack];
            unpack(load_pack(res + i * kPack), v);
            unpack(load_pack(d + i * kPack), dv);
#pragma unroll
            for (int e = 0; e < kPack; e++) { v[e] = round_to_t(v[e] + dv[e]); sum += v[e] * v[e]; }
            store_pack(res + i * kPack, pack(v));
        }
    }
    else
    {
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x)
        {
            float v = round_to_t(to_float(res[c]) + to_float(d[c]));
            res[c] = from_float<T>(v);
            sum += v * v;
        }
    }
    const float inv = 1.0f / sqrtf(block_sum(sum, scratch) / (float)p.cols + p.eps);

    // Each thread re-reads exactly the residual elements it wrote above.
    if (vec)
    {
        for (int i = threadIdx.x; i < p.cols / kPack; i += blockDim.x)
        {
            float v[kPack], w[kPack];
            unpack(load_pack(res + i * kPack), v);
            unpack(load_pack(g + i * kPack), w);
#pragma unroll
            for (int e = 0; e < kPack; e++) v[e] = (v[e] * inv) * w[e];
            store_pack(y + i * kPack, pack(v));
        }
    }
    else
    {
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) y[c] = from_float<T>((to_float(res[c]) * inv) * to_float(g[c]));
    }
}
