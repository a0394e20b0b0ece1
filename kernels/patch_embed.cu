// patch_embed.cu: the im2col half of CLIP's patch embedding (Conv2d, kernel = stride = patch, no bias); the
// other half is a GEMM with the conv weight [d, c * p * p] through cuBLASLt. Each patch becomes one row in
// the conv weight's own flatten order [c, ky, kx], patches numbered row-major over the grid (py, px) as
// CLIP's flatten(2).transpose(1, 2) orders them, exactly like CpuOps.PatchEmbed. Pixels arrive as float32
// (the host's preprocessed image) and are rounded to T here. One thread per column element (writes are
// coalesced; the reads of a patch row are `patch` contiguous floats).
#include "common.cuh"

constexpr int IM2COL_THREADS = 256;

extern "C" __global__ void __launch_bounds__(IM2COL_THREADS) VTE_ENTRY(im2col)(const Im2colParams p)
{
    const int P = p.patch, gridW = p.width / P;
    const int patchLength = p.channels * P * P;
    const long long total = (long long)(p.height / P) * gridW * patchLength;
    T* columns = static_cast<T*>(p.columns);
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (long long)gridDim.x * blockDim.x)
    {
        const int patchIndex = (int)(idx / patchLength), j = (int)(idx - (long long)patchIndex * patchLength);
        const int c = j / (P * P), rem = j - c * P * P, ky = rem / P, kx = rem - ky * P;
        const int py = patchIndex / gridW, px = patchIndex - py * gridW;
        const float v = p.pixels[((long long)c * p.height + py * P + ky) * p.width + px * P + kx];
        columns[idx] = from_float<T>(v);
    }
}
