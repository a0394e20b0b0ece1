// common.cuh: what every kernel shares, with no CUDA header included (NVRTC from Debian ships none, and the
// runtime compiles these sources with nothing but NVRTC):
// * the element type T of the compiled specialisation (-DVTE_DTYPE_BF16, _F16 or _F32) and the entry-name
//   suffix: VTE_ENTRY(rms_norm) is rms_norm_bf16 in the BF16 build;
// * bf16 / f16 storage types (16-bit wrappers) and their float32 conversions: bit operations for bf16 -> f32,
//   PTX cvt (round to nearest even) for f32 -> bf16 on sm_80+ and f16 both ways;
// * 16-byte packs (8 bf16/f16 or 4 f32) for vectorised loads and stores;
// * warp and block reductions (__shfl_xor_sync is an NVRTC builtin);
// * a read-only, no-L1-allocate 16-byte load for streaming weights;
// * the kernels' only inline PTX, behind named ptx_* helpers (cvt, ld.global.nc, mma.sync). Built for the
//   CPU emulator of CUDA (tools/cuda-emu, which defines VTE_CUDA_EMULATOR) each helper calls the
//   emulator's implementation of the same instruction, written from the PTX ISA.
// Arithmetic is float32 throughout; T is storage only.
#pragma once
#include "vte_params.h"

#define VTE_CAT2(a, b) a##_##b
#define VTE_CAT(a, b) VTE_CAT2(a, b)

struct alignas(2) bf16 { unsigned short bits; };
struct alignas(2) f16 { unsigned short bits; };

#if defined(VTE_DTYPE_BF16)
typedef bf16 T;
#define VTE_SUFFIX bf16
#elif defined(VTE_DTYPE_F16)
typedef f16 T;
#define VTE_SUFFIX f16
#elif defined(VTE_DTYPE_F32)
typedef float T;
#define VTE_SUFFIX f32
#else
#error "compile with one of -DVTE_DTYPE_BF16, -DVTE_DTYPE_F16, -DVTE_DTYPE_F32"
#endif

// extern "C" entry name with the dtype suffix: VTE_ENTRY(rms_norm) -> rms_norm_bf16.
#define VTE_ENTRY(name) VTE_CAT(name, VTE_SUFFIX)

// ------------------------------------------------------------------------------------------ PTX helpers

// cvt.f32.f16: exact.
__device__ __forceinline__ float ptx_cvt_f32_f16(unsigned short h)
{
#if defined(VTE_CUDA_EMULATOR)
    return vte_emu::cvt_f32_f16(h);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

// cvt.rn.f16.f32: round to nearest even.
__device__ __forceinline__ unsigned short ptx_cvt_rn_f16_f32(float f)
{
#if defined(VTE_CUDA_EMULATOR)
    return vte_emu::cvt_rn_f16_f32(f);
#else
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#endif
}

// cvt.rn.bf16.f32 (sm_80+): round to nearest even.
__device__ __forceinline__ unsigned short ptx_cvt_rn_bf16_f32(float f)
{
#if defined(VTE_CUDA_EMULATOR)
    return vte_emu::cvt_rn_bf16_f32(f);
#else
    unsigned short b;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
    return b;
#endif
}

struct alignas(16) Pack16 { unsigned int w[4]; };

// ld.global.nc.L1::no_allocate.v4.u32: a read-only 16-byte load (p 16-byte aligned) that does not
// allocate in L1.
__device__ __forceinline__ Pack16 ptx_ld_global_nc_v4(const void* p)
{
    Pack16 v;
#if defined(VTE_CUDA_EMULATOR)
    vte_emu::ld_global_nc_v4(v.w, p);
#else
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.w[0]), "=r"(v.w[1]), "=r"(v.w[2]), "=r"(v.w[3])
                 : "l"(p));
#endif
    return v;
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 (sm_80+), accumulating in place:
// d (16x8, f32) += a (16x16, row) * b (16x8, col), fragments in the PTX ISA's layout; every lane of the
// warp must call it.
__device__ __forceinline__ void ptx_mma_m16n8k16_bf16(float (&d)[4], const unsigned int (&a)[4], unsigned int b0, unsigned int b1)
{
#if defined(VTE_CUDA_EMULATOR)
    vte_emu::mma_m16n8k16(vte_emu::kMmaBf16, d, a, b0, b1);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ void ptx_mma_m16n8k16_f16(float (&d)[4], const unsigned int (&a)[4], unsigned int b0, unsigned int b1)
{
#if defined(VTE_CUDA_EMULATOR)
    vte_emu::mma_m16n8k16(vte_emu::kMmaF16, d, a, b0, b1);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// ------------------------------------------------------------------------------------------ conversions

__device__ __forceinline__ float to_float(float v) { return v; }

__device__ __forceinline__ float to_float(bf16 v) { return __uint_as_float(((unsigned int)v.bits) << 16); }

__device__ __forceinline__ float to_float(f16 v) { return ptx_cvt_f32_f16(v.bits); }

// float32 -> bf16, round to nearest even; NaN stays NaN.
__device__ __forceinline__ unsigned short bf16_bits(float f)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    return ptx_cvt_rn_bf16_f32(f);
#else
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
#endif
}

__device__ __forceinline__ unsigned short f16_bits(float f) { return ptx_cvt_rn_f16_f32(f); }

template <typename U> __device__ __forceinline__ U from_float(float f);
template <> __device__ __forceinline__ float from_float<float>(float f) { return f; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float f) { bf16 r; r.bits = bf16_bits(f); return r; }
template <> __device__ __forceinline__ f16 from_float<f16>(float f) { f16 r; r.bits = f16_bits(f); return r; }

// Rounds f to T and back: the value a T store followed by a load would give.
__device__ __forceinline__ float round_to_t(float f) { return to_float(from_float<T>(f)); }

// A quiet NaN of T, for outputs that have no defined value (an id outside the vocabulary).
__device__ __forceinline__ T nan_t() { return from_float<T>(__uint_as_float(0x7fc00000u)); }

// ------------------------------------------------------------------------------------------ 16-byte packs

// Elements of T in one 16-byte pack.
constexpr int kPack = 16 / (int)sizeof(T);

__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

__device__ __forceinline__ Pack16 load_pack(const void* p) { return *reinterpret_cast<const Pack16*>(p); }

__device__ __forceinline__ void store_pack(void* p, const Pack16& v) { *reinterpret_cast<Pack16*>(p) = v; }

// Read-only 16-byte load that does not allocate in L1: for weights read once per call (GEMV), so that the
// reused activation vector keeps L1 to itself.
__device__ __forceinline__ Pack16 load_pack_stream(const void* p) { return ptx_ld_global_nc_v4(p); }

__device__ __forceinline__ void unpack(const Pack16& v, float (&out)[kPack])
{
#if defined(VTE_DTYPE_F32)
#pragma unroll
    for (int i = 0; i < 4; i++) out[i] = __uint_as_float(v.w[i]);
#elif defined(VTE_DTYPE_BF16)
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        out[2 * i] = __uint_as_float(v.w[i] << 16);
        out[2 * i + 1] = __uint_as_float(v.w[i] & 0xffff0000u);
    }
#else
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        f16 lo, hi;
        lo.bits = (unsigned short)(v.w[i] & 0xffffu);
        hi.bits = (unsigned short)(v.w[i] >> 16);
        out[2 * i] = to_float(lo);
        out[2 * i + 1] = to_float(hi);
    }
#endif
}

__device__ __forceinline__ Pack16 pack(const float (&in)[kPack])
{
    Pack16 v;
#if defined(VTE_DTYPE_F32)
#pragma unroll
    for (int i = 0; i < 4; i++) v.w[i] = __float_as_uint(in[i]);
#else
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        unsigned int lo = from_float<T>(in[2 * i]).bits, hi = from_float<T>(in[2 * i + 1]).bits;
        v.w[i] = lo | (hi << 16);
    }
#endif
    return v;
}

// ------------------------------------------------------------------------------------------ reductions

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple of 32 (at most 1024), and
// every thread must call it (it contains barriers). `scratch` is 32 floats of shared memory; the function
// may be called again with the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // the previous use of scratch is complete
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -__uint_as_float(0x7f800000u);
    return warp_max(v);
}
