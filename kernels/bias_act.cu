// bias_act.cu: x = act(x + bias) in place over [rows, cols], bias optional (null: the IBackend activations,
// whose Linear already added its bias; non-null: a bias-free GEMM followed by one pass that adds the bias
// and applies the activation, instead of a GEMM epilogue pass plus an activation pass).
// * quick_gelu_T: CLIP's x * sigmoid(1.702 x), with sigmoid(t) = 1 / (1 + exp(-t)) as the CPU op has it.
// * gelu_T: the exact GELU of torch's nn.GELU(), written 0.5 x erfc(-x / sqrt 2): equal to
//   0.5 x (1 + erf(x / sqrt 2)) but without the cancellation of 1 + erf for large negative x (the CPU op
//   does the same in double). erfcf is CUDA's full-precision float erfc (max 4 ulp), not an approximation.
// 16-byte packs when cols is a multiple of the pack and the pointers are aligned; else element by element.
#include "common.cuh"

constexpr int BIAS_ACT_THREADS = 256;

struct QuickGelu
{
    __device__ __forceinline__ float operator()(float x) const
    {
        const float t = 1.702f * x;
        return x * (1.0f / (1.0f + expf(-t)));
    }
};

struct Gelu
{
    __device__ __forceinline__ float operator()(float x) const { return 0.5f * x * erfcf(-x * 0.70710678118654752f); }
};

template <typename Act>
__device__ __forceinline__ void bias_act(const BiasActParams& p, Act act)
{
    T* x = static_cast<T*>(p.x);
    const T* bias = static_cast<const T*>(p.bias);
    const long long count = (long long)p.rows * p.cols;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p.cols % kPack == 0 && aligned16(p.x) && (bias == nullptr || aligned16(p.bias)))
    {
        for (long long i = first; i < count / kPack; i += stride)
        {
            float v[kPack];
            unpack(load_pack(x + i * kPack), v);
            if (bias != nullptr)
            {
                float b[kPack];
                unpack(load_pack(bias + (i * kPack) % p.cols), b);
#pragma unroll
                for (int e = 0; e < kPack; e++) v[e] += b[e];
            }
#pragma unroll
            for (int e = 0; e < kPack; e++) v[e] = act(v[e]);
            store_pack(x + i * kPack, pack(v));
        }
    }
    else
    {
        for (long long i = first; i < count; i += stride)
        {
            float v = to_float(x[i]);
            if (bias != nullptr) v += to_float(bias[i % p.cols]);
            x[i] = from_float<T>(act(v));
        }
    }
}

extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) VTE_ENTRY(quick_gelu)(const BiasActParams p) { bias_act(p, QuickGelu()); }

extern "C" __global__ void __launch_bounds__(BIAS_ACT_THREADS) VTE_ENTRY(gelu)(const BiasActParams p) { bias_act(p, Gelu()); }
