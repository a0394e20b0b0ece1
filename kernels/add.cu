// add.cu: y = a + b elementwise over `count` elements of T (the residual adds; x += w for position
// embeddings). y may be a or b: each element is read and written by the same thread.
// Bandwidth-bound: 16-byte packs when all three pointers are 16-byte aligned, a scalar tail after them.
#include "common.cuh"

constexpr int ADD_THREADS = 256;

extern "C" __global__ void __launch_bounds__(ADD_THREADS) VTE_ENTRY(add)(const AddParams p)
{
    const T* a = static_cast<const T*>(p.a);
    const T* b = static_cast<const T*>(p.b);
    T* y = static_cast<T*>(p.y);
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long done = 0;
    if (aligned16(a) && aligned16(b) && aligned16(y))
    {
        const long long packs = p.count / kPack;
        for (long long i = first; i < packs; i += stride)
        {
            float va[kPack], vb[kPack];
            unpack(load_pack(a + i * kPack), va);
            unpack(load_pack(b + i * kPack), vb);
#pragma unroll
            for (int e = 0; e < kPack; e++) va[e] += vb[e];
            store_pack(y + i * kPack, pack(va));
        }
        done = packs * kPack;
    }
    for (long long i = done + first; i < p.count; i += stride)
        y[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}
