// embedding.cu: y[r] = table[ids[r]], one block per row, 16-byte copies when the row length in bytes is a
// multiple of 16 and both bases are aligned (LLaMA: 4096 bf16 = 8 KiB a row). The host checks every id
// before launching (InvalidInputException, like the CPU op); an id outside the table that still arrives
// here yields a row of NaN rather than a read out of bounds.
#include "common.cuh"

constexpr int EMBEDDING_THREADS = 256;

extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS) VTE_ENTRY(embedding)(const EmbeddingParams p)
{
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    const int id = p.ids[r];
    T* dst = static_cast<T*>(p.y) + (long long)r * p.dim;
    if ((unsigned)id >= (unsigned)p.vocab)
    {
        for (int c = threadIdx.x; c < p.dim; c += blockDim.x) dst[c] = nan_t();
        return;
    }
    const T* src = static_cast<const T*>(p.table) + (long long)id * p.dim;
    if (p.dim % kPack == 0 && aligned16(p.table) && aligned16(p.y))
    {
        for (int i = threadIdx.x; i < p.dim / kPack; i += blockDim.x)
            store_pack(dst + i * kPack, load_pack(src + i * kPack));
    }
    else
    {
        for (int c = threadIdx.x; c < p.dim; c += blockDim.x) dst[c] = src[c];
    }
}
