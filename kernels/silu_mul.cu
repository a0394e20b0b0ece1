// silu_mul.cu: SwiGLU's y = silu(gate) * up = gate * sigmoid(gate) * up, in the CPU op's order
// (sigmoid(gate) * gate, then * up). Rows have their own strides, so gate and up may be the two halves of
// one fused [rows, 2 * cols] gate|up GEMM output (gate_stride = up_stride = 2 * cols, up = gate + cols) as
// well as separate tensors. y may be gate or up (same element, same thread). Grid: x over column packs,
// y over rows (grid-stride in both).
#include "common.cuh"

constexpr int SILU_MUL_THREADS = 256;

__device__ __forceinline__ float silu_mul(float g, float u) { return (1.0f / (1.0f + expf(-g))) * g * u; }

extern "C" __global__ void __launch_bounds__(SILU_MUL_THREADS) VTE_ENTRY(silu_mul)(const SiluMulParams p)
{
    const bool vec = p.cols % kPack == 0 && p.gate_stride % kPack == 0 && p.up_stride % kPack == 0 && p.y_stride % kPack == 0 &&
                     aligned16(p.gate) && aligned16(p.up) && aligned16(p.y);
    for (int r = blockIdx.y; r < p.rows; r += gridDim.y)
    {
        const T* g = static_cast<const T*>(p.gate) + (long long)r * p.gate_stride;
        const T* u = static_cast<const T*>(p.up) + (long long)r * p.up_stride;
        T* y = static_cast<T*>(p.y) + (long long)r * p.y_stride;
        if (vec)
        {
            for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.cols / kPack; i += gridDim.x * blockDim.x)
            {
                float gv[kPack], uv[kPack];
                unpack(load_pack(g + i * kPack), gv);
                unpack(load_pack(u + i * kPack), uv);
#pragma unroll
                for (int e = 0; e < kPack; e++) gv[e] = silu_mul(gv[e], uv[e]);
                store_pack(y + i * kPack, pack(gv));
            }
        }
        else
        {
            for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < p.cols; c += gridDim.x * blockDim.x)
                y[c] = from_float<T>(silu_mul(to_float(g[c]), to_float(u[c])));
        }
    }
}
