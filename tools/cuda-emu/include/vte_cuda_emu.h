// vte_cuda_emu.h: what a CUDA kernel source needs to compile as C++ for the VteKernels CPU emulator of
// the CUDA driver (tools/cuda-emu). The NVRTC stand-in force-includes this header (g++ -include) before
// the kernel source, so the kernels compile unmodified: only their inline PTX sits behind named helpers in
// kernels/common.cuh, whose emulation branch (VTE_CUDA_EMULATOR) calls the functions at the end of this
// file.
//
// Execution model (the runtime in src/ implements it): every CUDA thread is a fiber with its own 64 KiB
// stack; the stacks are aligned to their size, and the word at offset kLaneSlot of a stack points to the
// fiber's Lane, so threadIdx and friends cost two loads and need no thread-local storage. Barriers, warp
// collectives and mma are calls into the runtime through the Ops table of the Lane (the module links
// against nothing). __shared__ variables are static thread_local: all fibers of a block run on one worker
// thread, one block at a time, so a worker's TLS is its block's shared memory; the runtime poisons it
// with NaN bytes at the start of every block.
//
// This header defines the ABI between kernel modules and the runtime (the runtime includes it with
// VTE_CUDA_EMU_RUNTIME defined and gets only the ABI part). Semantics of the PTX operations come from the
// PTX ISA (cvt rounding and NaN rules, shfl.sync modes, mma.m16n8k16 fragment layouts), never from the
// kernels that use them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <limits>
#include <math.h>
#include <type_traits>
#include <utility>

namespace vte_emu
{
// Bumped whenever the layout below changes: the module loader rejects modules built for another ABI.
constexpr int kAbiVersion = 5;
constexpr std::uintptr_t kStackBytes = std::uintptr_t(1) << 16; // per fiber, aligned to its size
constexpr std::uintptr_t kLaneSlot = kStackBytes - 8;           // the top word (the stack starts below it: one page)

struct u3 { unsigned x, y, z; };

struct Lane;

// Warp collective modes (shfl.sync .mode; vote.sync .mode).
enum ShflMode : int { kShflUp = 0, kShflDown = 1, kShflBfly = 2, kShflIdx = 3 };
enum VoteMode : int { kVoteBallot = 0, kVoteAny = 1, kVoteAll = 2 };
enum MmaKind : int { kMmaBf16 = 0, kMmaF16 = 1 };

// The runtime's entry points, reached through every Lane.
struct Ops
{
    int abi;
    void (*syncthreads)(Lane* self, const char* file, int line);
    // shfl.sync: `b` and `c` are the PTX operands (source lane / offset, clamp and segment mask).
    std::uint64_t (*shfl)(Lane* self, int mode, unsigned mask, std::uint64_t value, int bytes, int b, int c);
    unsigned (*vote)(Lane* self, int mode, unsigned mask, int predicate);
    void (*syncwarp)(Lane* self, unsigned mask);
    // mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32: d = a * b + c for the warp.
    void (*mma_m16n8k16)(Lane* self, int kind, float* d, const unsigned* a, const unsigned* b, const float* c);
    // Ends the launch with an error naming the kernel (never returns).
    void (*trap)(Lane* self, const char* what);
};

struct Lane
{
    u3 threadIdx;
    u3 blockIdx;
    u3 blockDim;
    u3 gridDim;
    unsigned laneid;
    unsigned warpid;
    const Ops* ops;
};

// A kernel's descriptor, exported by the module as __vte_emu_kernel_<name>.
struct KernelDesc
{
    int abi;
    const char* name;
    int max_threads;           // __launch_bounds__ maximum, 0 when the kernel declares none
    int min_blocks;            // __launch_bounds__ minimum blocks per SM, 0 when the kernel declares none
    int param_count;
    const unsigned* param_sizes;
    void (*invoke)(void** params);
};

// ------------------------------------------------------------------------- conversions (PTX cvt)

inline float f32_of_bits(std::uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline std::uint32_t bits_of_f32(float f)
{
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// cvt.rn.bf16.f32: round to nearest, ties to even, subnormals kept, overflow to infinity. A NaN input
// gives a NaN (PTX leaves which one unspecified without .relu/.satfinite): the canonical 0x7fff here.
inline unsigned short cvt_rn_bf16_f32(float f)
{
    std::uint32_t u = bits_of_f32(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    std::uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (unsigned short)(u >> 16);
}

// cvt.rn.f16.f32: IEEE binary16, round to nearest even, subnormals kept, overflow to infinity; NaN gives
// the canonical 0x7fff.
inline unsigned short cvt_rn_f16_f32(float f)
{
    std::uint32_t u = bits_of_f32(f);
    std::uint32_t sign = (u >> 16) & 0x8000u;
    std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7fffu;
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u); // rounds to >= 65520: infinity
    if (a >= 0x38800000u)                                          // normal in binary16 (>= 2^-14)
    {
        std::uint32_t mant = a & 0x7fffffu, exp = (a >> 23) - 127 + 15;
        std::uint32_t h = (exp << 10) | (mant >> 13);
        std::uint32_t rest = mant & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; // may carry into the exponent: correct
        return (unsigned short)(sign | h);
    }
    if (a < 0x33000000u) return (unsigned short)sign; // below half the smallest subnormal (2^-25): zero
    // Subnormal: value = m * 2^-24 with m rounded to nearest even from the full significand.
    std::uint32_t exp = a >> 23, mant = (a & 0x7fffffu) | 0x800000u;
    // mant * 2^(exp - 150) = m * 2^-24, so m = mant >> (126 - exp): 14..24 bits dropped.
    const int shift = 126 - (int)exp;
    std::uint32_t m = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1u))) m++;
    return (unsigned short)(sign | m);
}

// cvt.f32.f16: exact widening; subnormals kept; NaN stays NaN with its payload (quiet).
inline float cvt_f32_f16(unsigned short h)
{
    std::uint32_t sign = (std::uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    std::uint32_t u;
    if (exp == 0x1fu) u = sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u);
    else if (exp != 0) u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    else if (mant == 0) u = sign;
    else
    {
        int e = -1;
        do { mant <<= 1; e++; } while ((mant & 0x400u) == 0);
        u = sign | ((std::uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
    return f32_of_bits(u);
}

} // namespace vte_emu

#ifndef VTE_CUDA_EMU_RUNTIME

#define VTE_CUDA_EMULATOR 1
#define __CUDACC__ 1
#define __CUDACC_RTC__ 1

namespace vte_emu
{
inline Lane* self()
{
    std::uintptr_t sp;
#if defined(__x86_64__)
    __asm__("mov %%rsp, %0" : "=r"(sp));
#elif defined(__aarch64__)
    __asm__("mov %0, sp" : "=r"(sp));
#else
#error "the CUDA emulator supports x86-64 and aarch64"
#endif
    return *reinterpret_cast<Lane* const*>((sp & ~(kStackBytes - 1)) + kLaneSlot);
}

template <typename V> inline std::uint64_t bits_of(V v)
{
    static_assert(std::is_trivially_copyable<V>::value && sizeof(V) <= 8, "warp collectives move values of at most 8 bytes");
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(V));
    return b;
}

template <typename V> inline V from_bits(std::uint64_t b)
{
    V v;
    std::memcpy(&v, &b, sizeof(V));
    return v;
}

template <typename V> inline V shfl(int mode, unsigned mask, V v, int b, int c)
{
    Lane* l = self();
    return from_bits<V>(l->ops->shfl(l, mode, mask, bits_of(v), (int)sizeof(V), b, c));
}

// ld.global.nc.L1::no_allocate.v4.u32: a 16-byte load that must be 16-byte aligned (the hardware faults
// with a misaligned address otherwise).
inline void ld_global_nc_v4(unsigned (&out)[4], const void* p)
{
    if (((std::uintptr_t)p & 15u) != 0)
    {
        Lane* l = self();
        l->ops->trap(l, "misaligned address: ld.global.nc.v4.u32 (16 bytes) from an address that is not 16-byte aligned");
    }
    std::memcpy(out, p, 16);
}

inline void mma_m16n8k16(int kind, float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1)
{
    Lane* l = self();
    const unsigned b[2] = {b0, b1};
    float c[4] = {d[0], d[1], d[2], d[3]};
    l->ops->mma_m16n8k16(l, kind, d, a, b, c);
}

} // namespace vte_emu

// ------------------------------------------------------------------------- CUDA C++ surface

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __constant__ static const
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __restrict__ __restrict

#define threadIdx (reinterpret_cast<const ::uint3&>(::vte_emu::self()->threadIdx))
#define blockIdx (reinterpret_cast<const ::uint3&>(::vte_emu::self()->blockIdx))
#define blockDim (reinterpret_cast<const ::dim3&>(::vte_emu::self()->blockDim))
#define gridDim (reinterpret_cast<const ::dim3&>(::vte_emu::self()->gridDim))
constexpr int warpSize = 32;

#define __syncthreads() (::vte_emu::self()->ops->syncthreads(::vte_emu::self(), __FILE__, __LINE__))
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    ::vte_emu::Lane* l = ::vte_emu::self();
    l->ops->syncwarp(l, mask);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __trap()
{
    ::vte_emu::Lane* l = ::vte_emu::self();
    l->ops->trap(l, "__trap() called");
}

// Warp shuffles: the CUDA intrinsics are shfl.sync with c = ((32 - width) << 8) | clamp (CUDA's
// sm_30_intrinsics); the PTX semantics of the four modes live in the runtime.
template <typename V> inline V __shfl_sync(unsigned mask, V v, int src, int width = 32)
{
    return ::vte_emu::shfl(::vte_emu::kShflIdx, mask, v, src, ((32 - width) << 8) | 0x1f);
}
template <typename V> inline V __shfl_up_sync(unsigned mask, V v, unsigned delta, int width = 32)
{
    return ::vte_emu::shfl(::vte_emu::kShflUp, mask, v, (int)delta, (32 - width) << 8);
}
template <typename V> inline V __shfl_down_sync(unsigned mask, V v, unsigned delta, int width = 32)
{
    return ::vte_emu::shfl(::vte_emu::kShflDown, mask, v, (int)delta, ((32 - width) << 8) | 0x1f);
}
template <typename V> inline V __shfl_xor_sync(unsigned mask, V v, int laneMask, int width = 32)
{
    return ::vte_emu::shfl(::vte_emu::kShflBfly, mask, v, laneMask, ((32 - width) << 8) | 0x1f);
}
inline unsigned __ballot_sync(unsigned mask, int p)
{
    ::vte_emu::Lane* l = ::vte_emu::self();
    return l->ops->vote(l, ::vte_emu::kVoteBallot, mask, p);
}
inline int __any_sync(unsigned mask, int p)
{
    ::vte_emu::Lane* l = ::vte_emu::self();
    return (int)l->ops->vote(l, ::vte_emu::kVoteAny, mask, p);
}
inline int __all_sync(unsigned mask, int p)
{
    ::vte_emu::Lane* l = ::vte_emu::self();
    return (int)l->ops->vote(l, ::vte_emu::kVoteAll, mask, p);
}

// Bit casts and integer intrinsics.
inline float __uint_as_float(unsigned u) { return ::vte_emu::f32_of_bits(u); }
inline unsigned __float_as_uint(float f) { return ::vte_emu::bits_of_f32(f); }
inline float __int_as_float(int i) { return ::vte_emu::f32_of_bits((unsigned)i); }
inline int __float_as_int(float f) { return (int)::vte_emu::bits_of_f32(f); }
inline long long __double_as_longlong(double d) { long long v; std::memcpy(&v, &d, 8); return v; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return (unsigned long long)(((unsigned __int128)a * b) >> 64); }
inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}

// Float intrinsics with explicit rounding: the module is built without FMA contraction, so each is one
// IEEE operation in round-to-nearest-even.
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }

// Float to integer (cvt.rni / cvt.rzi): NaN gives 0 for 32-bit destinations and 1 << 63 for 64-bit
// ones, results clamp to the destination's range (PTX ISA, cvt).
template <typename I> inline I vte_emu_f2i(double v, bool nearest)
{
    constexpr bool is64 = sizeof(I) == 8;
    if (std::isnan(v)) return is64 ? (I)((unsigned long long)1 << 63) : (I)0;
    double r = nearest ? std::nearbyint(v) : std::trunc(v);
    const double lo = (double)std::numeric_limits<I>::min(), hi = (double)std::numeric_limits<I>::max();
    if (r <= lo) return std::numeric_limits<I>::min();
    if (r >= hi) return std::numeric_limits<I>::max();
    return (I)r;
}
inline int __float2int_rn(float f) { return vte_emu_f2i<int>(f, true); }
inline int __float2int_rz(float f) { return vte_emu_f2i<int>(f, false); }
inline unsigned __float2uint_rn(float f) { return vte_emu_f2i<unsigned>(f, true); }
inline long long __float2ll_rn(float f) { return vte_emu_f2i<long long>(f, true); }
inline unsigned long long __float2ull_rn(float f) { return vte_emu_f2i<unsigned long long>(f, true); }
inline unsigned long long __double2ull_rn(double d) { return vte_emu_f2i<unsigned long long>(d, true); }
inline int __double2int_rn(double d) { return vte_emu_f2i<int>(d, true); }

// CUDA's min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Atomics. Fibers of a block switch only at barriers and collectives, and blocks run on several worker
// threads at once, so atomics are real (sequentially consistent) atomic operations.
template <typename V> inline V atomicAdd(V* p, V v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline float atomicAdd(float* p, float v)
{
    unsigned* u = reinterpret_cast<unsigned*>(p);
    unsigned seen = __atomic_load_n(u, __ATOMIC_SEQ_CST);
    for (;;)
    {
        const unsigned sum = ::vte_emu::bits_of_f32(::vte_emu::f32_of_bits(seen) + v);
        if (__atomic_compare_exchange_n(u, &seen, sum, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return ::vte_emu::f32_of_bits(seen);
    }
}
template <typename V> inline V atomicSub(V* p, V v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
template <typename V> inline V atomicExch(V* p, V v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
template <typename V> inline V atomicCAS(V* p, V expected, V desired)
{
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
template <typename V> inline V atomicMax(V* p, V v)
{
    V old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
template <typename V> inline V atomicMin(V* p, V v)
{
    V old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
template <typename V> inline V atomicOr(V* p, V v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
template <typename V> inline V atomicAnd(V* p, V v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }

template <typename V> inline V __ldg(const V* p) { return *p; }

// ------------------------------------------------------------------------- kernel descriptors

namespace vte_emu
{
template <typename F, F f> struct Invoker;
template <typename... A, void (*f)(A...)> struct Invoker<void (*)(A...), f>
{
    template <std::size_t... I> static void call(void** params, std::index_sequence<I...>)
    {
        f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
    }
    static void invoke(void** params) { call(params, std::index_sequence_for<A...>{}); }
    static constexpr int count = (int)sizeof...(A);
    static const unsigned* sizes()
    {
        static const unsigned s[sizeof...(A) + 1] = {(unsigned)sizeof(std::remove_cv_t<std::remove_reference_t<A>>)..., 0u};
        return s;
    }
};
} // namespace vte_emu

#define VTE_EMU_STR2(x) #x
#define VTE_EMU_STR(x) VTE_EMU_STR2(x)
#define VTE_EMU_KERNEL2(fn, bound, min_blocks)                                                                           \
    extern "C" __attribute__((visibility("default"))) const ::vte_emu::KernelDesc __vte_emu_kernel_##fn = {               \
        ::vte_emu::kAbiVersion, #fn, (int)(bound), (int)(min_blocks), ::vte_emu::Invoker<decltype(&fn), &fn>::count,     \
        ::vte_emu::Invoker<decltype(&fn), &fn>::sizes(), &::vte_emu::Invoker<decltype(&fn), &fn>::invoke};
// The NVRTC stand-in appends one VTE_EMU_KERNEL(name, max threads, min blocks) line per __global__ function it
// finds (0 for a bound the kernel does not declare).
#define VTE_EMU_KERNEL(fn, bound, min_blocks) VTE_EMU_KERNEL2(fn, bound, min_blocks)

#endif // VTE_CUDA_EMU_RUNTIME
