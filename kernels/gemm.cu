// gemm.cu: y[m, n] = x[m, k] W[n, k]^T + bias, row-major, float32 accumulation: the fallback for the
// multi-row Linear shapes cuBLASLt has no algorithm for (CublasLtGemm.TryRun: for bf16/f16 its kernels
// need 16-byte aligned rows, so CLIP's patch embedding with K = 3 x 14 x 14 = 588, 1176-byte rows, has
// none). Correct at any size and alignment, not fast: a block of GEMM_THREADS threads computes a
// GEMM_TILE x GEMM_TILE tile of y, each thread 4 x 4 of it, walking k in steps of GEMM_K with both
// operand tiles staged in shared memory as float32 (element loads, zeros past the edges). The sum runs
// over k in order with FMA; the bias is added and the result rounded to T once.
#include "common.cuh"

constexpr int GEMM_THREADS = 256;
constexpr int GEMM_TILE = 64;
constexpr int GEMM_K = 16;
static_assert(GEMM_THREADS == (GEMM_TILE / 4) * (GEMM_TILE / 4), "each thread owns 4 x 4 outputs");

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) VTE_ENTRY(gemm)(const GemmParams p)
{
    __shared__ float xs[GEMM_K][GEMM_TILE + 1]; // xs[kk][r] = x[row0 + r, k0 + kk]
    __shared__ float ws[GEMM_K][GEMM_TILE + 1]; // ws[kk][c] = W[col0 + c, k0 + kk]
    const T* x = static_cast<const T*>(p.x);
    const T* w = static_cast<const T*>(p.w);
    const int row0 = blockIdx.y * GEMM_TILE, col0 = blockIdx.x * GEMM_TILE;
    const int tr = threadIdx.x / (GEMM_TILE / 4), tc = threadIdx.x % (GEMM_TILE / 4);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < p.k; k0 += GEMM_K)
    {
        for (int e = threadIdx.x; e < GEMM_TILE * GEMM_K; e += GEMM_THREADS)
        {
            const int r = e / GEMM_K, kk = e % GEMM_K, gk = k0 + kk; // neighbouring threads read neighbouring k
            xs[kk][r] = row0 + r < p.m && gk < p.k ? to_float(x[(long long)(row0 + r) * p.k + gk]) : 0.0f;
            ws[kk][r] = col0 + r < p.n && gk < p.k ? to_float(w[(long long)(col0 + r) * p.k + gk]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_K; kk++)
        {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
            {
                a[i] = xs[kk][tr * 4 + i];
                b[i] = ws[kk][tc * 4 + i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads(); // the tiles are consumed before the next ones overwrite them
    }

    const T* bias = static_cast<const T*>(p.bias);
    T* y = static_cast<T*>(p.y);
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        const int r = row0 + tr * 4 + i;
        if (r >= p.m) break;
#pragma unroll
        for (int j = 0; j < 4; j++)
        {
            const int c = col0 + tc * 4 + j;
            if (c < p.n) y[(long long)r * p.n + c] = from_float<T>(acc[i][j] + (bias != nullptr ? to_float(bias[c]) : 0.0f));
        }
    }
}
