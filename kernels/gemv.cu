// gemv.cu: the batch-1 GEMM of decode, y[1, n] = x[1, k] W[n, k]^T + bias, bound by reading W once
// (LLaMA-7B: 13 GB of bf16 weights per token). One warp per output row, GEMV_WARPS rows per block; each
// lane streams 16-byte packs of its row (8 bf16) with ld.global.nc.L1::no_allocate, GEMV_UNROLL packs in
// flight per lane, one float32 accumulator per pack in flight; x (k elements, 8 KiB for k = 4096 bf16)
// is read through L1, where every warp of the SM finds it. Rows whose length in bytes is not a multiple
// of 16, or unaligned bases, take the scalar loop. The tile (8 warps, 4 packs in flight) is a starting
// point to be measured on a GPU (bench `kernels`), not a tuned choice.
#include "common.cuh"

constexpr int GEMV_THREADS = 256;
constexpr int GEMV_WARPS = GEMV_THREADS / 32; // output rows per block
constexpr int GEMV_UNROLL = 4;

extern "C" __global__ void __launch_bounds__(GEMV_THREADS) VTE_ENTRY(gemv)(const GemvParams p)
{
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= p.n) return; // uniform per warp: a warp never splits here
    const T* x = static_cast<const T*>(p.x);
    const T* w = static_cast<const T*>(p.w) + (long long)row * p.k;

    float acc[GEMV_UNROLL];
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; u++) acc[u] = 0.0f;

    if (p.k % kPack == 0 && aligned16(p.x) && aligned16(p.w))
    {
        const int packs = p.k / kPack;
        int i = lane;
        for (; i + 32 * (GEMV_UNROLL - 1) < packs; i += 32 * GEMV_UNROLL)
        {
            Pack16 wv[GEMV_UNROLL];
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++) wv[u] = load_pack_stream(w + (long long)(i + 32 * u) * kPack);
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++)
            {
                float a[kPack], b[kPack];
                unpack(load_pack(x + (i + 32 * u) * kPack), a);
                unpack(wv[u], b);
#pragma unroll
                for (int e = 0; e < kPack; e++) acc[u] = fmaf(a[e], b[e], acc[u]);
            }
        }
        for (; i < packs; i += 32)
        {
            float a[kPack], b[kPack];
            unpack(load_pack(x + i * kPack), a);
            unpack(load_pack_stream(w + (long long)i * kPack), b);
#pragma unroll
            for (int e = 0; e < kPack; e++) acc[0] = fmaf(a[e], b[e], acc[0]);
        }
    }
    else
    {
        for (int c = lane; c < p.k; c += 32) acc[0] = fmaf(to_float(x[c]), to_float(w[c]), acc[0]);
    }

    float sum = 0.0f;
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; u++) sum += acc[u];
    sum = warp_sum(sum);
    if (lane == 0)
    {
        if (p.bias != nullptr) sum += to_float(static_cast<const T*>(p.bias)[row]);
        static_cast<T*>(p.y)[row] = from_float<T>(sum);
    }
}
