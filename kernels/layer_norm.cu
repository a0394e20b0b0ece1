// layer_norm.cu: torch.nn.LayerNorm over the last dimension, as the CPU op computes it in float32:
// mean, then the biased variance of the centred values (two passes, not E[x^2] - mean^2, which loses
// precision when the mean is large against the spread), then y = (x - mean) * rstd * gamma + beta.
// One block per row; the row is re-read from L1/L2 by each pass (CLIP: 1024 wide). y may be x.
#include "common.cuh"

constexpr int LAYER_NORM_THREADS = 256;

extern "C" __global__ void __launch_bounds__(LAYER_NORM_THREADS) VTE_ENTRY(layer_norm)(const LayerNormParams p)
{
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    const T* x = static_cast<const T*>(p.x) + (long long)r * p.cols;
    const T* g = static_cast<const T*>(p.gamma);
    const T* b = static_cast<const T*>(p.beta);
    T* y = static_cast<T*>(p.y) + (long long)r * p.cols;

    float sum = 0.0f;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) sum += to_float(x[c]);
    const float mean = block_sum(sum, scratch) / (float)p.cols;

    float sq = 0.0f;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) { float v = to_float(x[c]) - mean; sq += v * v; }
    const float rstd = 1.0f / sqrtf(block_sum(sq, scratch) / (float)p.cols + p.eps);

    for (int c = threadIdx.x; c < p.cols; c += blockDim.x)
        y[c] = from_float<T>(fmaf((to_float(x[c]) - mean) * rstd, to_float(g[c]), to_float(b[c])));
}
