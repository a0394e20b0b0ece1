// cublaslt.cpp: the cuBLASLt surface the backend uses (cublasLt.h): handles, matmul descriptors with
// transposes, the DEFAULT and BIAS epilogues and the bias pointer, column-major matrix layouts,
// preferences with workspace and minimum-alignment attributes, the algorithm heuristic and the matmul.
//
// D = alpha * op(A) * op(B) + beta * C (C read only when beta != 0), then + bias[row] with the BIAS
// epilogue; A, B, C, D of one type (bf16, f16 or f32), float32 compute and scale; each dot product is
// accumulated in float32 (eight interleaved partial sums, as a tiled kernel would), the result rounded
// once to D's type.
//
// Which problems have an algorithm is modelled on what cuBLASLt documents for its kernels, kept on the
// strict side (the emulator may refuse where a real library would find a slower kernel, never the other
// way round):
// * 16-bit types (tensor-core kernels): every leading dimension a multiple of 16 bytes and every pointer
//   alignment the preference allows (A, B, C, D; 256 bytes when not set) at least 16 bytes; so a bf16
//   GEMM with K = 588 (CLIP's patch embedding, 1176-byte rows) finds none and the caller's fallback runs;
// * f32 (CUBLAS_COMPUTE_32F, or _FAST_TF32): 4-byte alignment;
// * other types, compute types or epilogues: none.
// With no algorithm the heuristic returns CUBLAS_STATUS_NOT_SUPPORTED and no result. Inconsistent
// shapes, leading dimensions below the row count and a missing bias pointer are CUBLAS_STATUS_INVALID_VALUE;
// an algorithm used for another problem too; pointers less aligned than the heuristic was told fault
// (a sticky CUDA_ERROR_MISALIGNED_ADDRESS, CUBLAS_STATUS_EXECUTION_FAILED), as do operands outside live
// device memory (CUDA_ERROR_ILLEGAL_ADDRESS).
#include "emu.hpp"

#include <cstring>

using namespace emu;

namespace
{
enum : int
{
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};

constexpr int R_32F = 0, R_16F = 2, R_16BF = 14;
constexpr int COMPUTE_32F = 68, COMPUTE_32F_FAST_TF32 = 77;
constexpr int EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4;
constexpr std::uint64_t kAlgoMagic = 0x5654454d4c54414cull; // "VTEMLTAL"

constexpr std::uint32_t kHandle = 0x484e444c, kDesc = 0x4d44534c, kLayout = 0x4c41594c, kPref = 0x5052454c;

struct Handle { std::uint32_t magic = kHandle; };

struct Desc
{
    std::uint32_t magic = kDesc;
    int compute = 0, scale = 0, transa = 0, transb = 0, epilogue = EPILOGUE_DEFAULT, pointerMode = 0, biasType = -1;
    std::uint64_t bias = 0;
};

struct Layout
{
    std::uint32_t magic = kLayout;
    int type = 0;
    std::uint64_t rows = 0, cols = 0;
    std::int64_t ld = 0;
};

struct Pref
{
    std::uint32_t magic = kPref;
    std::uint64_t workspace = 0;
    std::uint32_t align[4] = {256, 256, 256, 256}; // A, B, C, D
};

struct HeuristicResult
{
    std::uint64_t algo[8];
    std::size_t workspaceSize;
    int state;
    float wavesCount;
    int reserved[4];
};
static_assert(sizeof(HeuristicResult) == 96, "cublasLtMatmulHeuristicResult_t is 96 bytes");

std::mutex g_blas_mu;
std::set<void*> g_objects;

template <typename T> T* get(void* p, std::uint32_t magic)
{
    std::lock_guard<std::mutex> lock(g_blas_mu);
    if (p == nullptr || !g_objects.count(p)) return nullptr;
    auto* t = static_cast<T*>(p);
    return t->magic == magic ? t : nullptr;
}

template <typename T> int make(void** out, T* t)
{
    if (out == nullptr)
    {
        delete t;
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    std::lock_guard<std::mutex> lock(g_blas_mu);
    g_objects.insert(t);
    *out = t;
    return CUBLAS_STATUS_SUCCESS;
}

template <typename T> int destroy(void* p, std::uint32_t magic)
{
    if (p == nullptr) return CUBLAS_STATUS_SUCCESS;
    T* t = get<T>(p, magic);
    if (t == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(g_blas_mu);
    g_objects.erase(p);
    t->magic = 0;
    delete t;
    return CUBLAS_STATUS_SUCCESS;
}

int type_size(int t) { return t == R_32F ? 4 : t == R_16F || t == R_16BF ? 2 : 0; }

struct Problem
{
    std::uint64_t m = 0, n = 0, k = 0;
    int type = 0;
    std::uint32_t alignment = 0; // what the algorithm needs from every pointer
};

// Shapes and the algorithm rule; CUBLAS_STATUS_SUCCESS with the problem, or why not.
int analyse(const Desc* d, const Layout* a, const Layout* b, const Layout* c, const Layout* dd, const std::uint32_t align[4], Problem* out)
{
    const std::uint64_t m = d->transa ? a->cols : a->rows, k = d->transa ? a->rows : a->cols;
    const std::uint64_t kb = d->transb ? b->cols : b->rows, n = d->transb ? b->rows : b->cols;
    if (kb != k || c->rows != m || c->cols != n || dd->rows != m || dd->cols != n) return CUBLAS_STATUS_INVALID_VALUE;
    for (const Layout* l : {a, b, c, dd})
        if (l->ld < (std::int64_t)std::max<std::uint64_t>(1, l->rows)) return CUBLAS_STATUS_INVALID_VALUE;
    if (d->transa > 1 || d->transb > 1) return CUBLAS_STATUS_NOT_SUPPORTED; // conjugate transposes
    if (a->type != b->type || a->type != c->type || a->type != dd->type || type_size(a->type) == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->scale != R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->compute != COMPUTE_32F && !(d->compute == COMPUTE_32F_FAST_TF32 && a->type == R_32F)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->epilogue != EPILOGUE_DEFAULT && d->epilogue != EPILOGUE_BIAS) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->epilogue == EPILOGUE_BIAS && d->biasType != -1 && d->biasType != dd->type) return CUBLAS_STATUS_NOT_SUPPORTED;
    const int size = type_size(a->type);
    const std::uint32_t need = size == 2 ? 16u : 4u;
    for (const Layout* l : {a, b, c, dd})
        if (((std::uint64_t)l->ld * (std::uint64_t)size) % need != 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    for (int i = 0; i < 4; i++)
        if (align[i] < need) return CUBLAS_STATUS_NOT_SUPPORTED;
    out->m = m;
    out->n = n;
    out->k = k;
    out->type = a->type;
    out->alignment = need;
    return CUBLAS_STATUS_SUCCESS;
}

std::uint64_t fingerprint(const Desc* d, const Layout* a, const Layout* b, const Layout* c, const Layout* dd)
{
    std::uint64_t h = 1469598103934665603ull;
    auto mix = [&](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    for (const Layout* l : {a, b, c, dd})
    {
        mix((std::uint64_t)l->type);
        mix(l->rows);
        mix(l->cols);
        mix((std::uint64_t)l->ld);
    }
    mix((std::uint64_t)d->compute);
    mix((std::uint64_t)d->transa);
    mix((std::uint64_t)d->transb);
    mix((std::uint64_t)d->epilogue);
    return h;
}

float load(const void* base, std::uint64_t index, int type)
{
    if (type == R_32F) return static_cast<const float*>(base)[index];
    const std::uint16_t bits = static_cast<const std::uint16_t*>(base)[index];
    return type == R_16BF ? bf16_to_f32(bits) : f16_to_f32(bits);
}

void store(void* base, std::uint64_t index, int type, float v)
{
    if (type == R_32F) static_cast<float*>(base)[index] = v;
    else static_cast<std::uint16_t*>(base)[index] = type == R_16BF ? f32_to_bf16(v) : f32_to_f16(v);
}

std::uint32_t alignment_of(std::uint64_t p)
{
    return p == 0 ? 256u : (std::uint32_t)std::min<std::uint64_t>(256, p & (~p + 1));
}

// The bytes a column-major operand spans: ld * (cols - 1) + rows elements.
std::size_t span(const Layout* l, int size)
{
    return (std::size_t)(((std::uint64_t)l->ld * (l->cols == 0 ? 0 : l->cols - 1) + l->rows) * (std::uint64_t)size);
}
} // namespace

#define API extern "C" __attribute__((visibility("default")))

API std::size_t cublasLtGetVersion() { return 120805; }

API int cublasLtCreate(void** handle) { return make(handle, new Handle()); }
API int cublasLtDestroy(void* handle) { return destroy<Handle>(handle, kHandle); }

API int cublasLtMatmulDescCreate(void** desc, int computeType, int scaleType)
{
    auto* d = new Desc();
    d->compute = computeType;
    d->scale = scaleType;
    return make(desc, d);
}

API int cublasLtMatmulDescDestroy(void* desc) { return destroy<Desc>(desc, kDesc); }

// cublasLtMatmulDescAttributes_t: 0 compute type, 1 scale type, 2 pointer mode, 3 transa, 4 transb,
// 7 epilogue, 8 bias pointer, 26 bias data type.
API int cublasLtMatmulDescSetAttribute(void* desc, int attribute, const void* value, std::size_t size)
{
    Desc* d = get<Desc>(desc, kDesc);
    if (d == nullptr || value == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    auto i32 = [&](int* field) {
        if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
        std::memcpy(field, value, 4);
        return CUBLAS_STATUS_SUCCESS;
    };
    switch (attribute)
    {
    case 0: return i32(&d->compute);
    case 1: return i32(&d->scale);
    case 2: return i32(&d->pointerMode);
    case 3: return i32(&d->transa);
    case 4: return i32(&d->transb);
    case 7: return i32(&d->epilogue);
    case 26: return i32(&d->biasType);
    case 8:
        if (size != 8) return CUBLAS_STATUS_INVALID_VALUE;
        std::memcpy(&d->bias, value, 8);
        return CUBLAS_STATUS_SUCCESS;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
}

API int cublasLtMatrixLayoutCreate(void** layout, int type, std::uint64_t rows, std::uint64_t cols, std::int64_t ld)
{
    auto* l = new Layout();
    l->type = type;
    l->rows = rows;
    l->cols = cols;
    l->ld = ld;
    return make(layout, l);
}

API int cublasLtMatrixLayoutDestroy(void* layout) { return destroy<Layout>(layout, kLayout); }

API int cublasLtMatmulPreferenceCreate(void** pref) { return make(pref, new Pref()); }
API int cublasLtMatmulPreferenceDestroy(void* pref) { return destroy<Pref>(pref, kPref); }

// cublasLtMatmulPreferenceAttributes_t: 0 search mode, 1 max workspace bytes, 3 reduction scheme mask,
// 5..8 minimum alignment of A, B, C, D in bytes.
API int cublasLtMatmulPreferenceSetAttribute(void* pref, int attribute, const void* value, std::size_t size)
{
    Pref* p = get<Pref>(pref, kPref);
    if (p == nullptr || value == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (attribute == 1)
    {
        if (size != 8) return CUBLAS_STATUS_INVALID_VALUE;
        std::memcpy(&p->workspace, value, 8);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attribute >= 5 && attribute <= 8)
    {
        if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
        std::memcpy(&p->align[attribute - 5], value, 4);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attribute == 0 || attribute == 3) return size == 4 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_INVALID_VALUE;
}

API int cublasLtMatmulAlgoGetHeuristic(void* handle, void* desc, void* adesc, void* bdesc, void* cdesc, void* ddesc, void* pref, int requested,
                                       HeuristicResult* results, int* returned)
{
    Desc* d = get<Desc>(desc, kDesc);
    Layout *a = get<Layout>(adesc, kLayout), *b = get<Layout>(bdesc, kLayout), *c = get<Layout>(cdesc, kLayout), *dd = get<Layout>(ddesc, kLayout);
    Pref* p = get<Pref>(pref, kPref);
    if (get<Handle>(handle, kHandle) == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!d || !a || !b || !c || !dd || !p || requested <= 0 || results == nullptr || returned == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    *returned = 0;
    Problem problem;
    if (int r = analyse(d, a, b, c, dd, p->align, &problem)) return r;
    std::memset(&results[0], 0, sizeof(HeuristicResult));
    results[0].algo[0] = kAlgoMagic;
    results[0].algo[1] = fingerprint(d, a, b, c, dd);
    results[0].algo[2] = problem.alignment;
    results[0].workspaceSize = 0;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

API int cublasLtMatmul(void* handle, void* desc, const void* alpha, std::uint64_t A, void* adesc, std::uint64_t B, void* bdesc, const void* beta,
                       std::uint64_t C, void* cdesc, std::uint64_t D, void* ddesc, const std::uint64_t* algo, std::uint64_t workspace,
                       std::size_t workspaceBytes, void* stream)
{
    (void)workspace;
    (void)workspaceBytes; // the algorithms here need no workspace
    if (get<Handle>(handle, kHandle) == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    Desc* dp = get<Desc>(desc, kDesc);
    Layout *ap = get<Layout>(adesc, kLayout), *bp = get<Layout>(bdesc, kLayout), *cp = get<Layout>(cdesc, kLayout), *dp2 = get<Layout>(ddesc, kLayout);
    if (!dp || !ap || !bp || !cp || !dp2 || alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    const Desc d = *dp;
    const Layout a = *ap, b = *bp, c = *cp, dd = *dp2;
    Problem problem;
    const std::uint32_t assumed[4] = {256, 256, 256, 256};
    if (int r = analyse(&d, &a, &b, &c, &dd, assumed, &problem)) return r; // the shapes (and an implicit heuristic for a null algo)
    if (algo != nullptr)
    {
        if (algo[0] != kAlgoMagic || algo[1] != fingerprint(&d, &a, &b, &c, &dd)) return CUBLAS_STATUS_INVALID_VALUE;
        problem.alignment = (std::uint32_t)algo[2];
    }
    if (d.epilogue == EPILOGUE_BIAS && d.bias == 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (d.pointerMode != 0) return CUBLAS_STATUS_NOT_SUPPORTED; // device-side alpha/beta
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);

    std::lock_guard<std::recursive_mutex> lock(g_mu);
    Context* ctx = current_context();
    if (ctx == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (ctx->sticky != CUDA_SUCCESS) return CUBLAS_STATUS_EXECUTION_FAILED;
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (problem.m == 0 || problem.n == 0) return CUBLAS_STATUS_SUCCESS;
    const int size = type_size(problem.type);
    CUresult r = enqueue(s, [=]() -> CUresult {
        // The checks a kernel's loads and stores would fault on.
        struct Operand { const char* name; std::uint64_t p; std::size_t bytes; bool used; };
        const Operand ops[] = {{"A", A, span(&a, size), problem.k > 0}, {"B", B, span(&b, size), problem.k > 0}, {"C", C, span(&c, size), be != 0.0f},
                               {"D", D, span(&dd, size), true}, {"bias", d.bias, (std::size_t)problem.m * size, d.epilogue == EPILOGUE_BIAS}};
        for (const Operand& o : ops)
        {
            if (!o.used) continue;
            if (alignment_of(o.p) < problem.alignment || o.p % (std::uint64_t)size != 0)
            {
                set_sticky(ctx, CUDA_ERROR_MISALIGNED_ADDRESS,
                           format("cublasLtMatmul: %s at 0x%lx is less aligned than the algorithm needs (%u bytes)", o.name, (unsigned long)o.p, problem.alignment));
                return CUDA_ERROR_MISALIGNED_ADDRESS;
            }
            if (memory().find((std::uintptr_t)o.p, o.bytes) == nullptr)
            {
                set_sticky(ctx, CUDA_ERROR_ILLEGAL_ADDRESS, format("cublasLtMatmul: %s (%zu bytes at 0x%lx) is not inside a live device allocation", o.name, o.bytes,
                                                                   (unsigned long)o.p));
                return CUDA_ERROR_ILLEGAL_ADDRESS;
            }
        }
        const std::uint64_t m = problem.m, n = problem.n, k = problem.k;
        // op(A) as m rows of k floats, op(B) as n rows of k floats.
        std::vector<float> opA(m * k), opB(n * k);
        parallel_for((long long)m, [&](long long lo, long long hi) {
            for (long long i = lo; i < hi; i++)
                for (std::uint64_t p = 0; p < k; p++)
                    opA[i * k + p] = load((const void*)A, d.transa ? p + (std::uint64_t)i * a.ld : (std::uint64_t)i + p * a.ld, problem.type);
        });
        parallel_for((long long)n, [&](long long lo, long long hi) {
            for (long long j = lo; j < hi; j++)
                for (std::uint64_t p = 0; p < k; p++)
                    opB[j * k + p] = load((const void*)B, d.transb ? (std::uint64_t)j + p * b.ld : p + (std::uint64_t)j * b.ld, problem.type);
        });
        parallel_for((long long)n, [&](long long lo, long long hi) {
            for (long long j = lo; j < hi; j++)
                for (std::uint64_t i = 0; i < m; i++)
                {
                    const float* x = &opA[i * k];
                    const float* y = &opB[j * k];
                    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    std::uint64_t p = 0;
                    for (; p + 8 <= k; p += 8)
                        for (int u = 0; u < 8; u++) acc[u] = std::fma(x[p + u], y[p + u], acc[u]);
                    for (; p < k; p++) acc[p % 8] = std::fma(x[p], y[p], acc[p % 8]);
                    const float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
                    float t = al * sum;
                    if (be != 0.0f) t += be * load((const void*)C, i + (std::uint64_t)j * c.ld, problem.type);
                    if (d.epilogue == EPILOGUE_BIAS) t += load((const void*)d.bias, i, problem.type);
                    store((void*)D, i + (std::uint64_t)j * dd.ld, problem.type, t);
                }
        });
        return CUDA_SUCCESS;
    });
    return r == CUDA_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
