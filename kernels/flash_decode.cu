// flash_decode.cu: decode attention (a few query rows, nq <= 8, against a long KV cache) split along the
// keys and merged (flash-decoding). Semantics are CpuOps.Attention's: query head h reads kv head
// h / (q_heads / kv_heads), the causal mask lets query i of nq see keys j <= nk - nq + i, softmax in
// float32, output = sum_j p_j v_j.
//
// Decode attention is a stream over the cache: bytes read = nk * kv_dim * 2 * sizeof(T) (K and V once),
// against a few KiB of queries and outputs, so the bar is copy bandwidth (80% of measured device-to-device
// copy at long nk). One block per (query, head) as in attention_reference leaves the GPU empty at batch 1
// (32 heads on 132 SMs) and reads K/V once per query head; here:
//
// * flash_decode_split: grid (splits, kv_heads * row groups). A block owns one kv head and up to
//   FLASH_DECODE_ROWS of the (query, grouped head) rows that read it (group * nq rows in all; decode with
//   GQA up to 8 needs one row group, so each K/V element is read once per kv head). It walks its chunk of
//   keys: each warp splits into sub-groups of lanes_per_key lanes (head_dim / kPack packs rounded up to a
//   power of two, at most 32), each sub-group a "slot" that takes every slots-th key, loads its K and V
//   rows with 16-byte streaming loads (ld.global.nc.L1::no_allocate; scalar loads when the sizes or
//   pointers do not allow 16 bytes), forms every row's score with a sub-group shuffle reduction and keeps a
//   running max / sum / accumulator per row (online softmax, float32). The slots are merged through shared
//   memory and the block writes one partial (max, sum, acc[head_dim]) per row to a float32 workspace.
// * flash_decode_merge: one block per (query, head) rescales the splits' partials by exp(max_s - max) and
//   sums them: out = sum_s acc_s w_s / sum_s sum_s w_s.
//
// The split count is chosen on the host (CudaBackend.FlashDecodeSplits) from nk, the SM count and the split
// kernel's occupancy so that long caches fill one full wave of blocks; the workspace traffic (rows * splits *
// (head_dim + 2) floats, written once and read once) stays a few percent of the K/V bytes because a split
// holds at least 128 keys.
// Shared memory: 8 * 1024 floats of slot accumulators (q, 8 x 256 floats, shares that space) and the
// slots' max/sum, 40 KiB in all.
//
// Registers and loads in flight (desk review of NVRTC 11.8's sm_90 cubin with ptxas -v and nvdisasm, not a
// measurement): with a 128-thread bound alone the split kernel took 137 registers (bf16; f16 136, f32 143),
// 3 blocks per SM. It now declares FLASH_DECODE_MIN_BLOCKS = 4 blocks per SM in its launch bounds (at most
// 128 registers: bf16 128, f16 127, f32 128, no spills on sm_80 or sm_90) and the host sizes the splits by
// the driver's occupancy answer (CudaBackend.FlashDecodeSplits). Each step takes FLASH_DECODE_KEYS keys per
// slot and issues all their K and V loads (raw 16-byte packs, 8 registers a key) before the first FMA: in the
// bf16 SASS the four LDG.E.NA.128 of a step come before its first FFMA, 64 bytes in flight per thread, 32 KiB
// per SM at 4 blocks (one key, 16 KiB at 3 blocks, before). f32 keeps one key per step: two keys spill 24 bytes
// at the 128-register cap. None of this has run on a GPU yet: tile and split choices are starting points to
// be measured (bench `kernels`).
#include "common.cuh"

constexpr int FLASH_DECODE_THREADS = 128;
constexpr int FLASH_DECODE_WARPS = FLASH_DECODE_THREADS / 32;
constexpr int FLASH_DECODE_ROWS = 8;             // (query, head) rows per block; CudaBackend mirrors it
constexpr int FLASH_DECODE_MAX_HEAD_DIM = 256;
constexpr int FLASH_DECODE_MAX_SPLITS = 1024;    // the merge's shared weight array; CudaBackend mirrors it
constexpr int FLASH_DECODE_MAX_SLOTS = FLASH_DECODE_THREADS; // one lane per key when a row is one pack
constexpr int FLASH_DECODE_MIN_BLOCKS = 4;       // split blocks per SM the register budget must allow (<= 128 registers)
constexpr int FLASH_DECODE_KEYS = kPack == 4 ? 1 : 2; // keys per slot per step, all their loads issued before the first use (f32: 1, see above)
// Packs of one K row a lane holds: bf16/f16 d = 256 is 32 packs (1 per lane), f32 d = 256 is 64 (2).
constexpr int FLASH_DECODE_PACKS = (FLASH_DECODE_MAX_HEAD_DIM / kPack + 31) / 32;
// slots * head_dim <= 1024: slots = 128 / lanes_per_key and head_dim <= lanes_per_key * kPack when
// lanes_per_key < 32, or 4 slots * 256 when it is 32.
constexpr int FLASH_DECODE_SLOT_ELEMS = 1024;
static_assert(FLASH_DECODE_THREADS % 32 == 0, "whole warps");
static_assert(FLASH_DECODE_ROWS * FLASH_DECODE_MAX_HEAD_DIM <= FLASH_DECODE_ROWS * FLASH_DECODE_SLOT_ELEMS, "q fits the shared accumulators");
static_assert(FLASH_DECODE_PACKS >= 1 && FLASH_DECODE_PACKS * 32 * kPack >= FLASH_DECODE_MAX_HEAD_DIM, "a warp covers a row");

// One 16-byte pack of a row starting at d0, as stored (kPack elements of T): a streaming load, or scalar loads
// with zeros past head_dim. Raw packs keep a key's K and V in 8 registers until they are used.
__device__ __forceinline__ Pack16 flash_decode_load(const T* row, int d0, int hd, bool vec)
{
    if (vec) return load_pack_stream(row + d0);
    Pack16 v;
    T* e = reinterpret_cast<T*>(v.w);
#pragma unroll
    for (int i = 0; i < kPack; i++) e[i] = d0 + i < hd ? row[d0 + i] : from_float<T>(0.0f);
    return v;
}

extern "C" __global__ void __launch_bounds__(FLASH_DECODE_THREADS, FLASH_DECODE_MIN_BLOCKS) VTE_ENTRY(flash_decode_split)(const FlashDecodeParams p)
{
    __shared__ float slotAcc[FLASH_DECODE_ROWS * FLASH_DECODE_SLOT_ELEMS]; // q while walking, then accumulators
    __shared__ float slotMax[FLASH_DECODE_MAX_SLOTS * FLASH_DECODE_ROWS];
    __shared__ float slotSum[FLASH_DECODE_MAX_SLOTS * FLASH_DECODE_ROWS];
    float* qs = slotAcc;

    const int group = p.q_heads / p.kv_heads;
    const int rowGroups = (group * p.nq + FLASH_DECODE_ROWS - 1) / FLASH_DECODE_ROWS;
    const int split = blockIdx.x, g = blockIdx.y / rowGroups;
    const int firstRow = (blockIdx.y % rowGroups) * FLASH_DECODE_ROWS;
    const int rows = min(FLASH_DECODE_ROWS, group * p.nq - firstRow);
    const int start = split * p.chunk, end = min(p.nk, start + p.chunk);
    if (rows <= 0 || start >= end) return; // uniform per block
    const int hd = p.head_dim;
    const int packsPerRow = (hd + kPack - 1) / kPack;
    int lanesPerKey = 1;
    while (lanesPerKey < packsPerRow && lanesPerKey < 32) lanesPerKey <<= 1;
    const int slotsPerWarp = 32 / lanesPerKey;
    const int slots = FLASH_DECODE_WARPS * slotsPerWarp;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane % lanesPerKey, slot = warp * slotsPerWarp + lane / lanesPerKey;
    const int qdim = packsPerRow * kPack; // q row length in shared memory, zero-padded past hd

    for (int x = threadIdx.x; x < rows * qdim; x += FLASH_DECODE_THREADS)
    {
        const int r = x / qdim, d = x % qdim, t = firstRow + r;
        const T* qRow = static_cast<const T*>(p.q) + (long long)(t / group) * p.q_stride + (long long)(g * group + t % group) * hd;
        qs[x] = d < hd ? to_float(qRow[d]) * p.scale : 0.0f;
    }
    __syncthreads();

    const T* kBase = static_cast<const T*>(p.k) + (long long)g * hd;
    const T* vBase = static_cast<const T*>(p.v) + (long long)g * hd;
    const bool vec = hd % kPack == 0 && p.kv_stride % kPack == 0 && aligned16(p.k) && aligned16(p.v);

    float m[FLASH_DECODE_ROWS], s[FLASH_DECODE_ROWS], acc[FLASH_DECODE_ROWS][FLASH_DECODE_PACKS][kPack];
#pragma unroll
    for (int r = 0; r < FLASH_DECODE_ROWS; r++)
    {
        m[r] = -__uint_as_float(0x7f800000u);
        s[r] = 0.0f;
#pragma unroll
        for (int u = 0; u < FLASH_DECODE_PACKS; u++)
#pragma unroll
            for (int e = 0; e < kPack; e++) acc[r][u][e] = 0.0f;
    }

    // A step takes FLASH_DECODE_KEYS keys per slot (base + kk * slots + slot) and issues all their K and V
    // loads before the first use. The loop bound is uniform over the block, so every lane reaches every
    // shuffle.
    for (int base = start; base < end; base += slots * FLASH_DECODE_KEYS)
    {
        Pack16 kr[FLASH_DECODE_KEYS][FLASH_DECODE_PACKS], vr[FLASH_DECODE_KEYS][FLASH_DECODE_PACKS];
#pragma unroll
        for (int kk = 0; kk < FLASH_DECODE_KEYS; kk++)
        {
            const int j = base + kk * slots + slot;
#pragma unroll
            for (int u = 0; u < FLASH_DECODE_PACKS; u++)
            {
                const int pk = sub + u * lanesPerKey;
                if (j < end && pk < packsPerRow)
                {
                    kr[kk][u] = flash_decode_load(kBase + (long long)j * p.kv_stride, pk * kPack, hd, vec);
                    vr[kk][u] = flash_decode_load(vBase + (long long)j * p.kv_stride, pk * kPack, hd, vec);
                }
                else
                {
#pragma unroll
                    for (int w = 0; w < 4; w++) kr[kk][u].w[w] = vr[kk][u].w[w] = 0u; // zeros in every dtype
                }
            }
        }
#pragma unroll
        for (int r = 0; r < FLASH_DECODE_ROWS; r++)
        {
            if (r >= rows) break; // uniform
            float dot[FLASH_DECODE_KEYS];
#pragma unroll
            for (int kk = 0; kk < FLASH_DECODE_KEYS; kk++) dot[kk] = 0.0f;
#pragma unroll
            for (int u = 0; u < FLASH_DECODE_PACKS; u++)
            {
                const int pk = sub + u * lanesPerKey;
                if (pk < packsPerRow)
                {
#pragma unroll
                    for (int kk = 0; kk < FLASH_DECODE_KEYS; kk++)
                    {
                        float kf[kPack];
                        unpack(kr[kk][u], kf);
#pragma unroll
                        for (int e = 0; e < kPack; e++) dot[kk] = fmaf(qs[r * qdim + pk * kPack + e], kf[e], dot[kk]);
                    }
                }
            }
            for (int o = lanesPerKey >> 1; o > 0; o >>= 1)
#pragma unroll
                for (int kk = 0; kk < FLASH_DECODE_KEYS; kk++) dot[kk] += __shfl_xor_sync(0xffffffffu, dot[kk], o);

            // Rows t of this kv head are (query i = t / group, head g * group + t % group); each sees keys < visible.
            const int visible = p.causal ? p.nk - p.nq + (firstRow + r) / group + 1 : p.nk;
            bool ok[FLASH_DECODE_KEYS], any = false;
            float nm = m[r];
#pragma unroll
            for (int kk = 0; kk < FLASH_DECODE_KEYS; kk++)
            {
                const int j = base + kk * slots + slot;
                ok[kk] = j < end && j < visible;
                if (ok[kk]) nm = fmaxf(nm, dot[kk]);
                any = any || ok[kk];
            }
            if (any) // nm is finite: one exp rescales the row once per step
            {
                const float c = expf(m[r] - nm);
                float pj[FLASH_DECODE_KEYS];
                float sum = s[r] * c;
#pragma unroll
                for (int kk = 0; kk < FLASH_DECODE_KEYS; kk++)
                {
                    pj[kk] = ok[kk] ? expf(dot[kk] - nm) : 0.0f;
                    sum += pj[kk];
                }
                s[r] = sum;
                m[r] = nm;
#pragma unroll
                for (int u = 0; u < FLASH_DECODE_PACKS; u++)
                {
#pragma unroll
                    for (int e = 0; e < kPack; e++) acc[r][u][e] *= c;
#pragma unroll
                    for (int kk = 0; kk < FLASH_DECODE_KEYS; kk++)
                    {
                        float vf[kPack];
                        unpack(vr[kk][u], vf);
#pragma unroll
                        for (int e = 0; e < kPack; e++) acc[r][u][e] = fmaf(pj[kk], vf[e], acc[r][u][e]);
                    }
                }
            }
        }
    }

    // Merge the slots: weights exp(m_slot - max) per (slot, row), then the weighted sum of accumulators.
    __syncthreads(); // q is dead; its space takes the accumulators
#pragma unroll
    for (int r = 0; r < FLASH_DECODE_ROWS; r++)
    {
        if (r >= rows) break;
        if (sub == 0)
        {
            slotMax[slot * FLASH_DECODE_ROWS + r] = m[r];
            slotSum[slot * FLASH_DECODE_ROWS + r] = s[r];
        }
#pragma unroll
        for (int u = 0; u < FLASH_DECODE_PACKS; u++)
        {
            const int pk = sub + u * lanesPerKey;
#pragma unroll
            for (int e = 0; e < kPack; e++)
            {
                const int d = pk * kPack + e;
                if (pk < packsPerRow && d < hd) slotAcc[(slot * FLASH_DECODE_ROWS + r) * hd + d] = acc[r][u][e];
            }
        }
    }
    __syncthreads();
    const int row0 = g * group; // partial row of (query i, head h) is i * q_heads + h
    if (threadIdx.x < rows)
    {
        const int r = threadIdx.x, t = firstRow + r;
        float mx = -__uint_as_float(0x7f800000u);
        for (int sl = 0; sl < slots; sl++)
            if (slotSum[sl * FLASH_DECODE_ROWS + r] > 0.0f) mx = fmaxf(mx, slotMax[sl * FLASH_DECODE_ROWS + r]);
        float sum = 0.0f;
        for (int sl = 0; sl < slots; sl++)
        {
            const float sv = slotSum[sl * FLASH_DECODE_ROWS + r];
            const float w = sv > 0.0f ? expf(slotMax[sl * FLASH_DECODE_ROWS + r] - mx) : 0.0f;
            slotMax[sl * FLASH_DECODE_ROWS + r] = w; // now the slot's weight
            sum = fmaf(sv, w, sum);
        }
        const long long prow = (long long)(t / group) * p.q_heads + row0 + t % group;
        p.partial_ms[(prow * p.splits + split) * 2] = mx;
        p.partial_ms[(prow * p.splits + split) * 2 + 1] = sum;
    }
    __syncthreads();
    for (int x = threadIdx.x; x < rows * hd; x += FLASH_DECODE_THREADS)
    {
        const int r = x / hd, d = x % hd, t = firstRow + r;
        float o = 0.0f;
        for (int sl = 0; sl < slots; sl++) o = fmaf(slotAcc[(sl * FLASH_DECODE_ROWS + r) * hd + d], slotMax[sl * FLASH_DECODE_ROWS + r], o);
        const long long prow = (long long)(t / group) * p.q_heads + row0 + t % group;
        p.partial_acc[(prow * p.splits + split) * hd + d] = o;
    }
}

extern "C" __global__ void __launch_bounds__(FLASH_DECODE_THREADS) VTE_ENTRY(flash_decode_merge)(const FlashDecodeMergeParams p)
{
    __shared__ float weight[FLASH_DECODE_MAX_SPLITS];
    __shared__ float scratch[32];
    const int row = blockIdx.x; // i * q_heads + h
    if (row >= p.rows) return;
    const float* ms = p.partial_ms + (long long)row * p.splits * 2;
    float mx = -__uint_as_float(0x7f800000u);
    for (int sp = threadIdx.x; sp < p.splits; sp += FLASH_DECODE_THREADS)
        if (ms[2 * sp + 1] > 0.0f) mx = fmaxf(mx, ms[2 * sp]);
    mx = block_max(mx, scratch);
    float sum = 0.0f;
    for (int sp = threadIdx.x; sp < p.splits; sp += FLASH_DECODE_THREADS)
    {
        const float sv = ms[2 * sp + 1];
        const float w = sv > 0.0f ? expf(ms[2 * sp] - mx) : 0.0f;
        weight[sp] = w;
        sum = fmaf(sv, w, sum);
    }
    sum = block_sum(sum, scratch); // its barriers also publish weight[]
    const float inv = 1.0f / sum;
    const float* acc = p.partial_acc + (long long)row * p.splits * p.head_dim;
    T* out = static_cast<T*>(p.out) + (long long)(row / p.q_heads) * p.out_stride + (long long)(row % p.q_heads) * p.head_dim;
    for (int d = threadIdx.x; d < p.head_dim; d += FLASH_DECODE_THREADS)
    {
        float o = 0.0f;
        for (int sp = 0; sp < p.splits; sp++) o = fmaf(acc[(long long)sp * p.head_dim + d], weight[sp], o);
        out[d] = from_float<T>(o * inv);
    }
}
