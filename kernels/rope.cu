// rope.cu: rotary position embedding in place, Hugging Face Llama's rotate_half layout (element i of a head
// pairs with element i + head_dim/2), one block per token, positions per token (gaps allowed: after a
// visual-token exit the text keeps its original positions).
//
// Angles are formed exactly as the CPU op (CpuOps.Rope) forms them, because at positions in the thousands
// the float32 rounding of the angle itself (~2.4e-4 rad at 4000) dwarfs every other error: inv_freq is the
// host's float32 table 1 / theta^(2i/head_dim) (computed once per (theta, head_dim) by the same C#
// expression the CPU op uses), angle = inv_freq[i] * (float)pos as one float32 product, and cos/sin of that
// float angle are evaluated in double and rounded once. The rotation uses explicitly rounded float32
// operations (no FMA contraction), so in the F32 build a rotated element equals the CPU op's bit for bit
// except where double cos/sin differ from the host's by an ulp that survives rounding to float.
#include "common.cuh"

constexpr int ROPE_THREADS = 128;
constexpr int ROPE_MAX_HEAD_DIM = 512;

extern "C" __global__ void __launch_bounds__(ROPE_THREADS) VTE_ENTRY(rope)(const RopeParams p)
{
    __shared__ float cos_t[ROPE_MAX_HEAD_DIM / 2];
    __shared__ float sin_t[ROPE_MAX_HEAD_DIM / 2];
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    const int half = p.head_dim / 2;
    const float pos = (float)p.positions[r];
    for (int i = threadIdx.x; i < half; i += blockDim.x)
    {
        const float angle = __fmul_rn(p.inv_freq[i], pos);
        double s, c;
        sincos((double)angle, &s, &c);
        cos_t[i] = (float)c;
        sin_t[i] = (float)s;
    }
    __syncthreads();

    T* row = static_cast<T*>(p.x) + (long long)r * p.row_stride;
    for (int idx = threadIdx.x; idx < p.heads * half; idx += blockDim.x)
    {
        const int h = idx / half, i = idx - h * half;
        T* head = row + h * p.head_dim;
        const float x1 = to_float(head[i]), x2 = to_float(head[i + half]);
        const float c = cos_t[i], s = sin_t[i];
        head[i] = from_float<T>(__fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
        head[i + half] = from_float<T>(__fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s)));
    }
}
