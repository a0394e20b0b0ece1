// gemv.cu: the batch-1 GEMM of decode, y[1, n] = x[1, k] W[n, k]^T + bias, bound by reading W once
// (LLaMA-7B: 13 GB of bf16 weights per token). One warp per output row, GEMV_WARPS rows per block; each
// lane streams 16-byte packs of its row (8 bf16) with ld.global.nc.L1::no_allocate, GEMV_UNROLL packs per
// step, one float32 accumulator per pack; x (k elements, 8 KiB for k = 4096 bf16) is read through L1,
// where every warp of the SM finds it. Rows whose length in bytes is not a multiple of 16, or unaligned
// bases, take the scalar loop.
//
// The W packs are double-buffered in registers: a step issues the next step's 4 W loads (and its own 4 x
// loads) before its first FMA. Desk review of NVRTC 11.8's sm_90 SASS (reasoning, not a measurement): the
// single-buffered loop (4 W loads then the FMAs in the PTX) came out of ptxas as LDG x0, LDG.NA w0, FFMAs on
// w0, then LDG.NA w1: ptxas sank each load to just before its use (36 registers), leaving 1-2 loads of a
// warp in flight. Now the SASS loop issues 4 LDG.E.NA.128 (next step) and 4 LDG.E.128 (x) before its first
// FFMA, so a warp keeps 4 W packs (2 KiB per warp) in flight while it computes. That costs registers:
// 64 under __launch_bounds__(GEMV_THREADS, GEMV_MIN_BLOCKS) (all dtypes, sm_80 and sm_90, no spills),
// 4 blocks = 32 warps per SM, 64 KiB of W in flight per SM, against ~26 KiB that 4.3 TB/s over 132 SMs
// needs at ~800 ns of latency (Little's law).
// 4 blocks of 8 rows per SM are also 4096 rows in one wave of 132 SMs (512 blocks <= 528 slots). The tile
// (8 warps, 4 packs per step) is a starting point to be measured on a GPU (bench `kernels`).
#include "common.cuh"

constexpr int GEMV_THREADS = 256;
constexpr int GEMV_WARPS = GEMV_THREADS / 32; // output rows per block
constexpr int GEMV_UNROLL = 4;
constexpr int GEMV_MIN_BLOCKS = 4; // blocks per SM the register budget must allow (<= 64 registers at 256 threads)

extern "C" __global__ void __launch_bounds__(GEMV_THREADS, GEMV_MIN_BLOCKS) VTE_ENTRY(gemv)(const GemvParams p)
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
        if (i + 32 * (GEMV_UNROLL - 1) < packs)
        {
            // Double-buffered: the next step's W packs are loaded before this step's are used, so the loads of a
            // step are all in flight together (ptxas cannot sink a load below a use that is an iteration away).
            Pack16 wv[GEMV_UNROLL];
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++) wv[u] = load_pack_stream(w + (long long)(i + 32 * u) * kPack);
            for (;;)
            {
                const int next = i + 32 * GEMV_UNROLL;
                const bool more = next + 32 * (GEMV_UNROLL - 1) < packs;
                Pack16 wn[GEMV_UNROLL], xv[GEMV_UNROLL];
                if (more)
                {
#pragma unroll
                    for (int u = 0; u < GEMV_UNROLL; u++) wn[u] = load_pack_stream(w + (long long)(next + 32 * u) * kPack);
                }
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) xv[u] = load_pack(x + (i + 32 * u) * kPack);
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++)
                {
                    float a[kPack], b[kPack];
                    unpack(xv[u], a);
                    unpack(wv[u], b);
#pragma unroll
                    for (int e = 0; e < kPack; e++) acc[u] = fmaf(a[e], b[e], acc[u]);
                }
                i = next;
                if (!more) break;
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) wv[u] = wn[u];
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
