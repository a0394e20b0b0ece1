// sample.cu: next-token sampling on the device with the host Sampler's rules, in HF's warper order:
// temperature, then top-k, then top-p (nucleus), then one draw. One block of 512 threads per row; no sort.
// (At 1024 threads ptxas 11.8 held the kernel to 32 registers and spilled; at 512 it takes 40 and spills nothing.)
//
// 1. max logit (block reduction);
// 2. top-k: a radix select (4 passes of 8 bits over order-preserving uint keys of the logits) finds the
//    k-th largest key; ties at it are kept in index order until k tokens are kept (the host sorts by logit
//    descending, then id ascending, and keeps the first k: the same set);
// 3. weights w = round(exp((l - max) / temperature) * 2^40) as 64-bit integers into `scratch` (0 for
//    tokens cut by top-k and for NaN). Fixed point keeps every later sum exact and independent of thread
//    order, so a seed always gives the same token. Cost: tokens more than 27.7 temperature-scaled nats
//    below the best (weight < 2^-40 of it) get weight 0 and are never drawn;
// 4. top-p: a second radix select, over mass instead of counts, finds the key v* of the last token of the
//    smallest descending prefix whose mass reaches top_p (as the host keeps token n while the mass before
//    it is < top_p); keys above v* stay, ties at v* stay in index order while the mass before them is
//    under the target, everything else gets weight 0;
// 5. the draw: u from Philox4x32-10 (key = seed, counter = (offset, row, 0)), target = floor(u * total),
//    and the token whose interval of the running sum in index order holds the target. The distribution is
//    the host's; the token for a given u is not (the host walks its sorted order).
// Greedy decoding (temperature 0) is argmax_T, not this kernel.
#include "common.cuh"

constexpr int SAMPLE_THREADS = 512;
constexpr int SAMPLE_WARPS = SAMPLE_THREADS / 32;
constexpr int SAMPLE_BINS = 256;
constexpr float SAMPLE_WEIGHT_ONE = 1099511627776.0f; // 2^40: weight of the most likely token

// ------------------------------------------------------------------------------------------ Philox4x32-10

// Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011): 10 rounds, 9 key bumps.
__device__ __forceinline__ void philox4x32_10(unsigned int (&c)[4], unsigned int k0, unsigned int k1)
{
#pragma unroll
    for (int round = 0; round < 10; round++)
    {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const unsigned int hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        const unsigned int n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// A double in [0, 1) with 53 random bits (27 from word 0, 26 from word 1) for row `row` of draw `offset`.
__device__ __forceinline__ double sample_uniform(unsigned long long seed, unsigned long long offset, int row)
{
    unsigned int c[4] = {(unsigned int)offset, (unsigned int)(offset >> 32), (unsigned int)row, 0u};
    philox4x32_10(c, (unsigned int)seed, (unsigned int)(seed >> 32));
    const unsigned long long a = c[0] >> 5, b = c[1] >> 6;
    return (double)(a * 67108864ull + b) * (1.0 / 9007199254740992.0);
}

// ------------------------------------------------------------------------------------------ block helpers

// Order-preserving key: a larger float has a larger key, -0 and +0 share one; NaN maps to 0, below -inf.
__device__ __forceinline__ unsigned int order_key(float f)
{
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0u;
    if (u == 0x80000000u) u = 0u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Number of threads before this one (in thread order) whose flag is set; `total` gets the block's count.
__device__ __forceinline__ unsigned int block_exclusive_count(bool flag, unsigned int* warp_counts, unsigned int& total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned int mask = __ballot_sync(0xffffffffu, flag);
    __syncthreads(); // the previous use of warp_counts is complete
    if (lane == 0) warp_counts[warp] = __popc(mask);
    __syncthreads();
    unsigned int before = 0, all = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++)
    {
        const unsigned int c = warp_counts[w];
        if (w < warp) before += c;
        all += c;
    }
    total = all;
    return before + __popc(mask & ((1u << lane) - 1u));
}

// Exclusive prefix sum over the block in thread order; `total` gets the block's sum.
__device__ __forceinline__ unsigned long long block_exclusive_sum(unsigned long long v, unsigned long long* warp_sums, unsigned long long& total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long s = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1)
    {
        const unsigned long long t = __shfl_up_sync(0xffffffffu, s, o);
        if (lane >= o) s += t;
    }
    __syncthreads();
    if (lane == 31) warp_sums[warp] = s;
    __syncthreads();
    unsigned long long before = 0, all = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++)
    {
        const unsigned long long c = warp_sums[w];
        if (w < warp) before += c;
        all += c;
    }
    total = all;
    return before + s - v;
}

struct SampleShared
{
    float reduce[32];
    unsigned int counts[SAMPLE_WARPS];
    unsigned long long sums[SAMPLE_WARPS];
    unsigned int hist[SAMPLE_BINS];
    unsigned long long mass[SAMPLE_BINS];
    unsigned int digit;
    unsigned int remaining;
    unsigned long long above;
};

// The key of the k-th largest logit (k >= 1) and, in `ties`, how many tokens holding exactly that key
// belong to the top k.
__device__ unsigned int select_kth_key(const T* l, int vocab, int k, SampleShared& sh, unsigned int& ties)
{
    unsigned int prefix = 0, mask = 0, remaining = (unsigned int)k;
    for (int shift = 24; shift >= 0; shift -= 8)
    {
        for (int b = threadIdx.x; b < SAMPLE_BINS; b += blockDim.x) sh.hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        {
            const unsigned int key = order_key(to_float(l[i]));
            if ((key & mask) == prefix) atomicAdd(&sh.hist[(key >> shift) & 0xffu], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0)
        {
            unsigned int acc = 0;
            int d = SAMPLE_BINS - 1;
            for (; d > 0; d--)
            {
                if (acc + sh.hist[d] >= remaining) break;
                acc += sh.hist[d];
            }
            sh.digit = (unsigned int)d;
            sh.remaining = remaining - acc;
        }
        __syncthreads();
        prefix |= sh.digit << shift;
        mask |= 0xffu << shift;
        remaining = sh.remaining;
        __syncthreads();
    }
    ties = remaining;
    return prefix;
}

// The key v* of the last token of the smallest descending prefix whose weight reaches `target`, and in
// `above` the weight of all keys greater than v* (always < target).
__device__ unsigned int select_mass_key(const T* l, const unsigned long long* w, int vocab, double target, SampleShared& sh,
                                        unsigned long long& above)
{
    unsigned int prefix = 0, mask = 0;
    unsigned long long acc_above = 0;
    for (int shift = 24; shift >= 0; shift -= 8)
    {
        for (int b = threadIdx.x; b < SAMPLE_BINS; b += blockDim.x) sh.mass[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        {
            const unsigned long long wi = w[i];
            if (wi == 0) continue;
            const unsigned int key = order_key(to_float(l[i]));
            if ((key & mask) == prefix) atomicAdd(&sh.mass[(key >> shift) & 0xffu], wi);
        }
        __syncthreads();
        if (threadIdx.x == 0)
        {
            unsigned long long acc = acc_above;
            int d = SAMPLE_BINS - 1;
            for (; d > 0; d--)
            {
                if ((double)(acc + sh.mass[d]) >= target) break;
                acc += sh.mass[d];
            }
            sh.digit = (unsigned int)d;
            sh.above = acc;
        }
        __syncthreads();
        prefix |= sh.digit << shift;
        mask |= 0xffu << shift;
        acc_above = sh.above;
        __syncthreads();
    }
    above = acc_above;
    return prefix;
}

__device__ __forceinline__ unsigned long long block_total(unsigned long long v, SampleShared& sh)
{
    unsigned long long total;
    block_exclusive_sum(v, sh.sums, total);
    return total;
}

// ------------------------------------------------------------------------------------------ entries

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) VTE_ENTRY(sample)(const SampleParams p)
{
    __shared__ SampleShared sh;
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    const int vocab = p.vocab;
    const T* l = static_cast<const T*>(p.logits) + (long long)r * vocab;
    unsigned long long* w = p.scratch + (long long)r * vocab;

    // 1. The largest logit; NaN never compares greater.
    float m = -__uint_as_float(0x7f800000u);
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, to_float(l[i]));
    m = block_max(m, sh.reduce);
    if (!(m > -__uint_as_float(0x7f800000u)))
    {
        if (threadIdx.x == 0) p.out[r] = 0; // nothing but NaN and -inf: no distribution to draw from
        return;
    }

    // 2. Top-k threshold.
    const bool limitK = p.top_k > 0 && p.top_k < vocab;
    unsigned int kth = 0, tiesK = 0;
    if (limitK) kth = select_kth_key(l, vocab, p.top_k, sh, tiesK);

    // 3. Fixed-point weights, in index order so that ties at the k-th key go to the lowest ids.
    const float invT = 1.0f / p.temperature;
    unsigned int tiesSeen = 0;
    for (int base = 0; base < vocab; base += blockDim.x)
    {
        const int i = base + threadIdx.x;
        const bool in = i < vocab;
        const float v = in ? to_float(l[i]) : 0.0f;
        const unsigned int key = in ? order_key(v) : 0u;
        bool keep = in && key != 0u;
        const bool tie = limitK && keep && key == kth;
        if (limitK) keep = keep && key >= kth;
        unsigned int total;
        const unsigned int rank = block_exclusive_count(tie, sh.counts, total);
        if (tie && tiesSeen + rank >= tiesK) keep = false;
        tiesSeen += total;
        if (in)
        {
            const float e = v == m ? 1.0f : expf((v - m) * invT);
            w[i] = keep ? __float2ull_rn(e * SAMPLE_WEIGHT_ONE) : 0ull;
        }
    }
    __syncthreads();

    // 4. Top-p.
    if (p.top_p < 1.0f)
    {
        unsigned long long mine = 0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) mine += w[i];
        const unsigned long long total = block_total(mine, sh);
        const double target = (double)p.top_p * (double)total;
        unsigned long long above;
        const unsigned int cut = select_mass_key(l, w, vocab, target, sh, above);
        unsigned long long tieMassSeen = 0;
        for (int base = 0; base < vocab; base += blockDim.x)
        {
            const int i = base + threadIdx.x;
            const bool in = i < vocab;
            const unsigned long long wi = in ? w[i] : 0ull;
            const unsigned int key = in && wi != 0 ? order_key(to_float(l[i])) : 0u;
            const bool tie = wi != 0 && key == cut;
            unsigned long long chunk;
            const unsigned long long before = block_exclusive_sum(tie ? wi : 0ull, sh.sums, chunk);
            if (wi != 0)
            {
                const bool keep = key > cut || (tie && (double)(above + tieMassSeen + before) < target);
                if (!keep) w[i] = 0ull;
            }
            tieMassSeen += chunk;
        }
        __syncthreads();
    }

    // 5. The draw.
    unsigned long long mine = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) mine += w[i];
    const unsigned long long total = block_total(mine, sh);
    if (total == 0)
    {
        if (threadIdx.x == 0) p.out[r] = 0; // unreachable: the best token always keeps weight 2^40
        return;
    }
    const double u = sample_uniform(p.seed, p.offset, r);
    unsigned long long target = (unsigned long long)(u * (double)total);
    if (target >= total) target = total - 1;
    unsigned long long seen = 0;
    for (int base = 0; base < vocab; base += blockDim.x)
    {
        const int i = base + threadIdx.x;
        const unsigned long long wi = i < vocab ? w[i] : 0ull;
        unsigned long long chunk;
        const unsigned long long lo = seen + block_exclusive_sum(wi, sh.sums, chunk);
        if (wi != 0 && lo <= target && target < lo + wi) p.out[r] = i; // exactly one token's interval holds the target
        seen += chunk;
        if (seen > target) break; // uniform: every thread holds the same `seen`
    }
}

// The uniforms sample_T draws, out[i] for row i: lets a test check the generator against Philox's
// published known answers and the host mirror (VteKernels.Cuda.Philox).
extern "C" __global__ void VTE_ENTRY(sample_uniforms)(const UniformsParams p)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.count) p.out[i] = sample_uniform(p.seed, p.offset, i);
}
