// driver.cpp: the CUDA driver API surface the CUDA backend uses (cuda.h names and signatures), on one
// emulated device, "VteKernels CPU emulator (sm_90 semantics)". Work runs when it is queued, so streams
// are in order and an event's time is the host time of its record; a stream capture records the work
// instead and a graph launch replays it. Misuse gets the CUresult the real driver documents: bad or
// destroyed handles (CUDA_ERROR_INVALID_HANDLE / _INVALID_CONTEXT), block shapes beyond the device
// limits (CUDA_ERROR_INVALID_VALUE) or the kernel's __launch_bounds__ (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES),
// too much shared memory (CUDA_ERROR_INVALID_VALUE), copies that leave a live allocation, including freed
// ones (CUDA_ERROR_INVALID_VALUE), pageable copies and allocations inside a capture
// (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, which invalidates it), and after a failed launch the context's
// sticky error from every later call. Occupancy (cuOccupancyMaxActiveBlocksPerMultiprocessor) answers from
// an sm_90 SM's limits, the kernel's static shared memory and a register count modelled from its
// __launch_bounds__ (modelled_registers).
#include "emu.hpp"

#include <chrono>
#include <cstring>
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace emu;

namespace
{
bool g_initialized = false;
Context* g_primary = nullptr;
std::set<Context*> g_contexts;
thread_local Context* t_current = nullptr;
std::uint64_t g_next_module = 1;

constexpr const char* kDeviceName = "VteKernels CPU emulator (sm_90 semantics)";
constexpr int kDriverVersion = 12080;
constexpr int kSharedDefault = 48 * 1024;
constexpr int kSharedOptin = 227 * 1024;

unsigned long this_thread() { return (unsigned long)syscall(SYS_gettid); }

double now_ms()
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Code
{
    CUresult code;
    const char* name;
    const char* text;
};

const Code kCodes[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {34, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
    {35, "CUDA_ERROR_INSUFFICIENT_DRIVER", "CUDA driver version is insufficient for CUDA runtime version"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {209, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {401, "CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {709, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {715, "CUDA_ERROR_ILLEGAL_INSTRUCTION", "an illegal instruction was encountered"},
    {716, "CUDA_ERROR_MISALIGNED_ADDRESS", "misaligned address"},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "operation not permitted when stream is capturing"},
    {901, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", "operation failed due to a previous error during capture"},
    {903, "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED", "capture was not initiated in this stream"},
    {907, "CUDA_ERROR_CAPTURED_EVENT", "operation not permitted on an event last recorded in a capturing stream"},
    {908, "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD", "attempt to terminate a thread-local capture sequence from another thread"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

template <typename T> bool valid(const std::set<T*>& set, void* h, std::uint32_t magic)
{
    auto* p = static_cast<T*>(h);
    return h != nullptr && set.count(p) != 0 && p->magic == magic;
}

void destroy_context(Context* c)
{
    for (Module* m : c->modules)
    {
        if (m->dl) dlclose(m->dl);
        m->magic = 0;
        for (auto& [name, f] : m->functions) f->magic = 0;
        delete m;
    }
    for (Stream* s : c->streams) { s->magic = 0; delete s; }
    for (Event* e : c->events) { e->magic = 0; delete e; }
    for (Graph* g : c->graphs) { g->magic = 0; delete g; }
    for (GraphExec* x : c->execs) { x->magic = 0; delete x; }
    memory().release_all(c);
    c->magic = 0;
    g_contexts.erase(c);
    delete c;
}

// The checks every call that needs a context makes: initialised, a current context, no sticky error.
#define NEED_CONTEXT(ctx)                                    \
    std::lock_guard<std::recursive_mutex> lock_(g_mu);       \
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;   \
    Context* ctx = current_context();                        \
    if (ctx == nullptr) return CUDA_ERROR_INVALID_CONTEXT

#define NO_STICKY(ctx) \
    if (ctx->sticky != CUDA_SUCCESS) return ctx->sticky

CUresult check_device_range(std::uintptr_t p, std::size_t bytes)
{
    if (bytes == 0) return CUDA_SUCCESS;
    return memory().find(p, bytes) != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// A queued copy checks its ranges again when it runs: a graph replays it later, when the memory it names
// may have been freed (a fault in the emulator itself would end the process).
bool runnable(std::uintptr_t p, std::size_t bytes, bool host)
{
    return host ? true : memory().find(p, bytes) != nullptr;
}

CUresult replay_fault(Context* ctx, const char* what, std::uintptr_t p, std::size_t bytes)
{
    set_sticky(ctx, CUDA_ERROR_ILLEGAL_ADDRESS, format("%s of %zu bytes at 0x%lx: not inside a live allocation any more (%s)", what, bytes, (unsigned long)p,
                                                      memory().region_of(p) ? "freed" : "never allocated"));
    return CUDA_ERROR_ILLEGAL_ADDRESS;
}

CUresult copy_checked(Context* ctx, void* dst, const void* src, std::size_t bytes, bool dstHost, bool srcHost)
{
    if (!runnable((std::uintptr_t)dst, bytes, dstHost)) return replay_fault(ctx, "a copy to device memory", (std::uintptr_t)dst, bytes);
    if (!runnable((std::uintptr_t)src, bytes, srcHost)) return replay_fault(ctx, "a copy from device memory", (std::uintptr_t)src, bytes);
    if (bytes) std::memmove(dst, src, bytes);
    return CUDA_SUCCESS;
}

} // namespace

namespace emu
{
Context* current_context() { return t_current != nullptr && g_contexts.count(t_current) && t_current->magic == kMagicContext ? t_current : nullptr; }

bool context_alive(Context* c) { return c != nullptr && g_contexts.count(c) != 0; }

Stream* resolve_stream(Context* ctx, void* handle)
{
    const auto h = (std::uintptr_t)handle;
    if (h == 0 || h == 1 || h == 2) return &ctx->default_stream; // NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD
    auto* s = static_cast<Stream*>(handle);
    return ctx->streams.count(s) && s->magic == kMagicStream ? s : nullptr;
}

CUresult enqueue(Stream* s, Op op, bool capturable)
{
    if (s->capture)
    {
        if (s->capture->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        if (!capturable)
        {
            s->capture->invalidated = true;
            return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        }
        s->capture->ops.push_back(std::move(op));
        return CUDA_SUCCESS;
    }
    return op();
}

CUresult capture_guard(Context* ctx)
{
    const unsigned long me = this_thread();
    bool prohibited = false;
    for (Stream* s : ctx->streams)
        if (s->capture && s->capture->mode != 2 && (s->capture->thread == me || s->capture->mode == 0))
        {
            s->capture->invalidated = true;
            prohibited = true;
        }
    return prohibited ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}

const char* result_name(CUresult r)
{
    for (const auto& c : kCodes)
        if (c.code == r) return c.name;
    return nullptr;
}

const char* result_string(CUresult r)
{
    for (const auto& c : kCodes)
        if (c.code == r) return c.text;
    return nullptr;
}
} // namespace emu

#define API extern "C" __attribute__((visibility("default")))

// ------------------------------------------------------------------------------------------ init, errors

API CUresult cuInit(unsigned flags)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    g_initialized = true;
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int* version)
{
    if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *version = kDriverVersion;
    return CUDA_SUCCESS;
}

API CUresult cuGetErrorName(CUresult error, const char** name)
{
    if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *name = result_name(error);
    return *name ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// The description; for the sticky error of a live context, followed by what the emulator saw.
API CUresult cuGetErrorString(CUresult error, const char** text)
{
    if (text == nullptr) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    const char* base = result_string(error);
    *text = base;
    if (base == nullptr) return CUDA_ERROR_INVALID_VALUE;
    static std::map<int, std::string> detailed;
    for (Context* c : g_contexts)
        if (c->sticky == error && !c->sticky_detail.empty())
        {
            detailed[error] = std::string(base) + " (emulator: " + c->sticky_detail + ")";
            *text = detailed[error].c_str();
        }
    return CUDA_SUCCESS;
}

// ------------------------------------------------------------------------------------------ device

API CUresult cuDeviceGetCount(int* count)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(int* device, int ordinal)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int length, int device)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (name == nullptr || length <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::strncpy(name, kDeviceName, (std::size_t)length - 1);
    name[length - 1] = 0;
    return CUDA_SUCCESS;
}

// An H100 SXM's limits where a kernel can depend on them; clocks and bus width are 0 (the emulator has
// none, so no bandwidth or FLOP figure can be derived from it).
API CUresult cuDeviceGetAttribute(int* value, int attribute, int device)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
    static const std::map<int, int> table = {
        {1, 1024}, {2, 1024}, {3, 1024}, {4, 64}, {5, 2147483647}, {6, 65535}, {7, 65535}, {8, kSharedDefault}, {9, 65536}, {10, 32},
        {11, 2147483647}, {12, 65536}, {13, 0}, {14, 512}, {15, 1}, {16, 132}, {17, 0}, {18, 0}, {19, 1}, {20, 0}, {31, 1}, {32, 0},
        {33, 0}, {34, 0}, {35, 0}, {36, 0}, {37, 0}, {38, 50 * 1024 * 1024}, {39, 2048}, {40, 2}, {41, 1}, {75, 9}, {76, 0},
        {81, 228 * 1024}, {82, 65536}, {83, 0}, {97, kSharedOptin},
    };
    auto it = table.find(attribute);
    if (it == table.end()) return CUDA_ERROR_INVALID_VALUE;
    *value = it->second;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(std::size_t* bytes, int device)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *bytes = (std::size_t)settings().memory_bytes;
    return CUDA_SUCCESS;
}

// ------------------------------------------------------------------------------------------ contexts

API CUresult cuDevicePrimaryCtxRetain(void** context, int device)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (g_primary == nullptr)
    {
        g_primary = new Context();
        g_primary->default_stream.ctx = g_primary;
        g_contexts.insert(g_primary);
    }
    g_primary->refs++;
    *context = g_primary;
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(int device)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (g_primary == nullptr || g_primary->refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (--g_primary->refs == 0)
    {
        destroy_context(g_primary); // everything made in it goes, the sticky error too
        g_primary = nullptr;
    }
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(void* context)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (context != nullptr && !context_alive(static_cast<Context*>(context))) return CUDA_ERROR_INVALID_CONTEXT;
    t_current = static_cast<Context*>(context);
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(void** context)
{
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *context = current_context();
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize()
{
    NEED_CONTEXT(ctx);
    if (CUresult r = capture_guard(ctx)) return r;
    return ctx->sticky;
}

// ------------------------------------------------------------------------------------------ memory

API CUresult cuMemAlloc_v2(std::uint64_t* pointer, std::size_t bytes)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    if (pointer == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = capture_guard(ctx)) return r;
    std::uintptr_t p = 0;
    CUresult r = memory().allocate(ctx, bytes, &p);
    if (r == CUDA_SUCCESS) *pointer = p;
    return r;
}

API CUresult cuMemFree_v2(std::uint64_t pointer)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    if (pointer == 0) return CUDA_SUCCESS;
    if (CUresult r = capture_guard(ctx)) return r;
    Alloc* a = memory().find((std::uintptr_t)pointer);
    if (a == nullptr || a->base != pointer) return CUDA_ERROR_INVALID_VALUE; // not an allocation, or freed already
    return memory().free((std::uintptr_t)pointer);
}

API CUresult cuMemGetInfo_v2(std::size_t* free, std::size_t* total)
{
    NEED_CONTEXT(ctx);
    if (free == nullptr || total == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *total = (std::size_t)settings().memory_bytes;
    *free = (std::size_t)std::max(0LL, settings().memory_bytes - memory().used);
    return CUDA_SUCCESS;
}

API CUresult cuMemAllocHost_v2(void** pointer, std::size_t bytes)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    if (pointer == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = capture_guard(ctx)) return r;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    memory().pinned[(std::uintptr_t)p] = bytes;
    *pointer = p;
    return CUDA_SUCCESS;
}

API CUresult cuMemHostAlloc(void** pointer, std::size_t bytes, unsigned flags)
{
    if (flags & ~7u) return CUDA_ERROR_INVALID_VALUE;
    return cuMemAllocHost_v2(pointer, bytes);
}

API CUresult cuMemFreeHost(void* pointer)
{
    NEED_CONTEXT(ctx);
    if (CUresult r = capture_guard(ctx)) return r;
    auto it = memory().pinned.find((std::uintptr_t)pointer);
    if (it == memory().pinned.end()) return CUDA_ERROR_INVALID_VALUE;
    munmap(pointer, it->second);
    memory().pinned.erase(it);
    return CUDA_SUCCESS;
}

namespace
{
CUresult memcpy_async(void* dst, const void* src, std::size_t bytes, void* stream, bool hostSource, bool hostDest)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (bytes == 0) return CUDA_SUCCESS;
    if (dst == nullptr || src == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (!hostDest && check_device_range((std::uintptr_t)dst, bytes)) return CUDA_ERROR_INVALID_VALUE;
    if (!hostSource && check_device_range((std::uintptr_t)src, bytes)) return CUDA_ERROR_INVALID_VALUE;
    // A copy from or to pageable host memory cannot be captured (only pinned memory can).
    const bool capturable = (!hostSource || memory().is_pinned(src, bytes)) && (!hostDest || memory().is_pinned(dst, bytes));
    return enqueue(s, [ctx, dst, src, bytes, hostDest, hostSource] { return copy_checked(ctx, dst, src, bytes, hostDest, hostSource); }, capturable);
}

CUresult sync_after(CUresult r)
{
    if (r != CUDA_SUCCESS) return r;
    Context* ctx = current_context();
    return ctx ? ctx->sticky : CUDA_ERROR_INVALID_CONTEXT;
}
} // namespace

API CUresult cuMemcpyHtoDAsync_v2(std::uint64_t dst, const void* src, std::size_t bytes, void* stream)
{
    return memcpy_async((void*)dst, src, bytes, stream, true, false);
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, std::uint64_t src, std::size_t bytes, void* stream)
{
    return memcpy_async(dst, (const void*)src, bytes, stream, false, true);
}

API CUresult cuMemcpyDtoDAsync_v2(std::uint64_t dst, std::uint64_t src, std::size_t bytes, void* stream)
{
    return memcpy_async((void*)dst, (const void*)src, bytes, stream, false, false);
}

API CUresult cuMemcpyHtoD_v2(std::uint64_t dst, const void* src, std::size_t bytes)
{
    return sync_after(memcpy_async((void*)dst, src, bytes, nullptr, true, false));
}

API CUresult cuMemcpyDtoH_v2(void* dst, std::uint64_t src, std::size_t bytes)
{
    return sync_after(memcpy_async(dst, (const void*)src, bytes, nullptr, false, true));
}

API CUresult cuMemcpyDtoD_v2(std::uint64_t dst, std::uint64_t src, std::size_t bytes)
{
    return sync_after(memcpy_async((void*)dst, (const void*)src, bytes, nullptr, false, false));
}

struct CUDA_MEMCPY2D_st
{
    std::size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void* srcHost;
    std::uint64_t srcDevice;
    void* srcArray;
    std::size_t srcPitch;
    std::size_t dstXInBytes, dstY;
    int dstMemoryType;
    void* dstHost;
    std::uint64_t dstDevice;
    void* dstArray;
    std::size_t dstPitch;
    std::size_t WidthInBytes, Height;
};

API CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D_st* copy, void* stream)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (copy == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const CUDA_MEMCPY2D_st c = *copy;
    if (c.WidthInBytes == 0 || c.Height == 0) return CUDA_SUCCESS;
    // CU_MEMORYTYPE_HOST = 1, _DEVICE = 2, _UNIFIED = 4; arrays (3) are not supported.
    auto side = [&](int type, std::uintptr_t host, std::uint64_t dev, std::size_t x, std::size_t y, std::size_t pitch, std::uintptr_t* first,
                    bool* isHost) -> CUresult {
        if (type != 1 && type != 2 && type != 4) return CUDA_ERROR_INVALID_VALUE;
        if (pitch < c.WidthInBytes + x && c.Height > 1) return CUDA_ERROR_INVALID_VALUE;
        std::uintptr_t base = type == 1 ? host : (std::uintptr_t)dev;
        if (base == 0) return CUDA_ERROR_INVALID_VALUE;
        *first = base + y * pitch + x;
        const std::size_t span = (c.Height - 1) * pitch + c.WidthInBytes;
        *isHost = type == 1 || (type == 4 && memory().find(base) == nullptr);
        if (!*isHost && check_device_range(*first, span)) return CUDA_ERROR_INVALID_VALUE;
        return CUDA_SUCCESS;
    };
    std::uintptr_t src = 0, dst = 0;
    bool srcHost = false, dstHost = false;
    if (CUresult r = side(c.srcMemoryType, (std::uintptr_t)c.srcHost, c.srcDevice, c.srcXInBytes, c.srcY, c.srcPitch, &src, &srcHost)) return r;
    if (CUresult r = side(c.dstMemoryType, (std::uintptr_t)c.dstHost, c.dstDevice, c.dstXInBytes, c.dstY, c.dstPitch, &dst, &dstHost)) return r;
    const std::size_t span = (c.Height - 1) * 0 + c.WidthInBytes;
    const bool capturable = (!srcHost || memory().is_pinned((void*)src, (c.Height - 1) * c.srcPitch + span)) &&
                            (!dstHost || memory().is_pinned((void*)dst, (c.Height - 1) * c.dstPitch + span));
    return enqueue(s, [ctx, c, src, dst, srcHost, dstHost] {
        const std::size_t srcSpan = (c.Height - 1) * c.srcPitch + c.WidthInBytes, dstSpan = (c.Height - 1) * c.dstPitch + c.WidthInBytes;
        if (!runnable(dst, dstSpan, dstHost)) return replay_fault(ctx, "a 2D copy to device memory", dst, dstSpan);
        if (!runnable(src, srcSpan, srcHost)) return replay_fault(ctx, "a 2D copy from device memory", src, srcSpan);
        for (std::size_t row = 0; row < c.Height; row++)
            std::memmove((void*)(dst + row * c.dstPitch), (const void*)(src + row * c.srcPitch), c.WidthInBytes);
        return CUDA_SUCCESS;
    }, capturable);
}

namespace
{
template <typename V> CUresult memset_async(std::uint64_t dst, V value, std::size_t count, void* stream)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (count == 0) return CUDA_SUCCESS;
    if (dst % sizeof(V) != 0) return CUDA_ERROR_INVALID_VALUE; // D16 needs 2-byte, D32 4-byte alignment
    if (check_device_range((std::uintptr_t)dst, count * sizeof(V))) return CUDA_ERROR_INVALID_VALUE;
    return enqueue(s, [ctx, dst, value, count] {
        if (!runnable((std::uintptr_t)dst, count * sizeof(V), false)) return replay_fault(ctx, "a memset", (std::uintptr_t)dst, count * sizeof(V));
        V* p = (V*)dst;
        for (std::size_t i = 0; i < count; i++) p[i] = value;
        return CUDA_SUCCESS;
    });
}
} // namespace

API CUresult cuMemsetD8Async(std::uint64_t dst, unsigned char value, std::size_t count, void* stream) { return memset_async(dst, value, count, stream); }
API CUresult cuMemsetD16Async(std::uint64_t dst, unsigned short value, std::size_t count, void* stream) { return memset_async(dst, value, count, stream); }
API CUresult cuMemsetD32Async(std::uint64_t dst, unsigned value, std::size_t count, void* stream) { return memset_async(dst, value, count, stream); }

// ------------------------------------------------------------------------------------------ modules

namespace
{
// An emulator module image: "VTEEMU01", the ABI version, the size of the shared object, the shared object.
struct ImageHeader
{
    char magic[8];
    std::uint32_t abi;
    std::uint32_t reserved;
    std::uint64_t size;
};

CUresult load_shared_object(Context* ctx, const std::string& so, Module** out)
{
    ElfInfo elf;
    if (!parse_elf(so, &elf)) return CUDA_ERROR_INVALID_IMAGE;
    // A file of its own for every load: the loader recognises objects by path, so a reused name (a
    // /proc/self/fd number, a temporary name) would hand back the module loaded before.
    static std::uint64_t serial = 0;
    const char* tmp = std::getenv("TMPDIR");
    const std::string path = format("%s/vte-cuda-emu-%d-%llu.so", tmp && *tmp ? tmp : "/tmp", (int)getpid(), (unsigned long long)++serial);
    if (!write_file_atomic(path, so)) return CUDA_ERROR_OUT_OF_MEMORY;
    void* dl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    unlink(path.c_str());
    if (dl == nullptr)
    {
        diag("cuModuleLoadData: the module does not load: %s", dlerror());
        return CUDA_ERROR_INVALID_IMAGE;
    }
    auto* abi = (const int*)dlsym(dl, "__vte_emu_abi");
    if (abi == nullptr || *abi != vte_emu::kAbiVersion)
    {
        dlclose(dl);
        return CUDA_ERROR_INVALID_IMAGE;
    }
    auto* m = new Module();
    m->ctx = ctx;
    m->dl = dl;
    m->id = g_next_module++;
    m->tls_size = elf.tls_size;
    m->tls_touch = (void* (*)())dlsym(dl, "__vte_emu_tls_touch");
    m->shared_by_kernel = elf.tls_by_function;
    m->shared_unattributed = elf.tls_unattributed;
    ctx->modules.insert(m);
    *out = m;
    return CUDA_SUCCESS;
}
} // namespace

API CUresult cuModuleLoadData(void** module, const void* image)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    if (module == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const char* text = static_cast<const char*>(image);
    std::string so;
    if (std::memcmp(text, "VTEEMU01", 8) == 0)
    {
        ImageHeader h;
        std::memcpy(&h, image, sizeof h);
        if (h.abi != (std::uint32_t)vte_emu::kAbiVersion || h.size == 0 || h.size > (1ull << 31)) return CUDA_ERROR_INVALID_IMAGE;
        so.assign(text + sizeof h, (std::size_t)h.size);
    }
    else if (const char* tag = std::strstr(text, "vte-cuda-emu-module "); tag != nullptr && std::strlen(text) < 4096)
    {
        // The PTX stand-in NVRTC returns for compute_XX targets names the module in the cache.
        std::string key(tag + 20, 64);
        if (!read_file(cache_directory() + "/" + key + ".so", &so)) return CUDA_ERROR_INVALID_PTX;
    }
    else
    {
        // A real cubin or PTX: nothing the emulator can run.
        return text[0] == 0x7f ? CUDA_ERROR_INVALID_IMAGE : CUDA_ERROR_INVALID_PTX;
    }
    Module* m = nullptr;
    CUresult r = load_shared_object(ctx, so, &m);
    if (r == CUDA_SUCCESS) *module = m;
    return r;
}

API CUresult cuModuleUnload(void* module)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->modules, module, kMagicModule)) return CUDA_ERROR_INVALID_HANDLE;
    auto* m = static_cast<Module*>(module);
    ctx->modules.erase(m);
    dlclose(m->dl);
    m->magic = 0;
    for (auto& [name, f] : m->functions) f->magic = 0;
    delete m;
    return CUDA_SUCCESS;
}

API CUresult cuModuleGetFunction(void** function, void* module, const char* name)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->modules, module, kMagicModule)) return CUDA_ERROR_INVALID_HANDLE;
    if (function == nullptr || name == nullptr) return CUDA_ERROR_INVALID_VALUE;
    auto* m = static_cast<Module*>(module);
    auto it = m->functions.find(name);
    if (it == m->functions.end())
    {
        auto* desc = (const vte_emu::KernelDesc*)dlsym(m->dl, (std::string("__vte_emu_kernel_") + name).c_str());
        if (desc == nullptr || desc->abi != vte_emu::kAbiVersion) return CUDA_ERROR_NOT_FOUND;
        auto f = std::make_unique<Function>();
        f->module = m;
        f->desc = desc;
        f->name = name;
        auto s = m->shared_by_kernel.find(name);
        f->static_shared = (s == m->shared_by_kernel.end() ? 0 : s->second) + m->shared_unattributed;
        f->max_dynamic_shared = std::max(0, kSharedDefault - f->static_shared);
        it = m->functions.emplace(name, std::move(f)).first;
    }
    *function = it->second.get();
    return CUDA_SUCCESS;
}

namespace
{
Function* function_of(Context* ctx, void* handle)
{
    auto* f = static_cast<Function*>(handle);
    if (handle == nullptr) return nullptr;
    for (Module* m : ctx->modules)
        for (auto& [name, fn] : m->functions)
            if (fn.get() == f && f->magic == kMagicFunction) return f;
    return nullptr;
}

// Registers per thread. The emulator allocates none, so a kernel's count is modelled as the most ptxas may
// give it under its __launch_bounds__(max threads, min blocks): 65536 / (min blocks * max threads rounded
// up to a warp), rounded down to a multiple of 8 and at most 255; 255 without a bound (ptxas's ceiling). A
// real compile uses that many or fewer, so the occupancy below is what a GPU guarantees for the same bounds
// (a lower bound of what it reports): __launch_bounds__(128, 4) answers 128 registers and 4 blocks per SM.
int modelled_registers(const vte_emu::KernelDesc* d)
{
    if (d->max_threads <= 0) return 255;
    const long long threads = ((long long)d->max_threads + 31) / 32 * 32;
    const long long cap = 65536 / (std::max(1, d->min_blocks) * threads);
    return (int)std::min<long long>(255, cap & ~7ll);
}

// cuOccupancyMaxActiveBlocksPerMultiprocessor on the emulated device, with the limits of an sm_90 SM (H100 /
// H200, CUDA occupancy calculator for compute capability 9.0): 64 warps, 32 blocks, 65536 registers
// allocated per warp in units of 256 (registers per thread rounded up to 8), 228 KiB of shared memory with
// 1 KiB reserved per block and allocations rounded up to 128 bytes, at most 227 KiB per block. The
// registers are modelled_registers'; the shared memory is the kernel's static __shared__ bytes plus
// `dynamic`. A block larger than the kernel's bound (or 1024 threads) cannot launch: 0 blocks.
int occupancy_blocks(const Function* f, int block_size, long long dynamic)
{
    const int max_threads = f->desc->max_threads > 0 ? std::min(1024, f->desc->max_threads) : 1024;
    if (block_size <= 0 || block_size > max_threads) return 0;
    const long long smem = (long long)f->static_shared + dynamic;
    if (smem > kSharedOptin) return 0;
    const int warps = (block_size + 31) / 32;
    const int by_warps = 64 / warps;
    const int regs_per_warp = (modelled_registers(f->desc) * 32 + 255) / 256 * 256;
    const int by_registers = 65536 / regs_per_warp / warps;
    const long long by_shared = 228ll * 1024 / ((smem + 127) / 128 * 128 + 1024);
    return (int)std::min<long long>({32, by_warps, by_registers, by_shared});
}
} // namespace

// CU_FUNC_ATTRIBUTE_*: 0 max threads per block, 1 static shared bytes, 2 const, 3 local, 4 registers
// (modelled_registers), 5 PTX version, 6 binary version, 8 max dynamic shared bytes.
API CUresult cuFuncGetAttribute(int* value, int attribute, void* function)
{
    NEED_CONTEXT(ctx);
    Function* f = function_of(ctx, function);
    if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
    switch (attribute)
    {
    case 0: *value = f->desc->max_threads > 0 ? std::min(1024, f->desc->max_threads) : 1024; return CUDA_SUCCESS;
    case 1: *value = f->static_shared; return CUDA_SUCCESS;
    case 2: case 3: *value = 0; return CUDA_SUCCESS;
    case 4: *value = modelled_registers(f->desc); return CUDA_SUCCESS;
    case 5: case 6: *value = 90; return CUDA_SUCCESS;
    case 8: *value = f->max_dynamic_shared; return CUDA_SUCCESS;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
}

API CUresult cuFuncSetAttribute(void* function, int attribute, int value)
{
    NEED_CONTEXT(ctx);
    Function* f = function_of(ctx, function);
    if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (attribute != 8 || value < 0 || value + f->static_shared > kSharedOptin) return CUDA_ERROR_INVALID_VALUE;
    f->max_dynamic_shared = value;
    return CUDA_SUCCESS;
}

API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void* function, int block_size, std::size_t dynamic_shared)
{
    NEED_CONTEXT(ctx);
    Function* f = function_of(ctx, function);
    if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (blocks == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *blocks = occupancy_blocks(f, block_size, dynamic_shared > (std::size_t)kSharedOptin ? (long long)kSharedOptin + 1 : (long long)dynamic_shared);
    return CUDA_SUCCESS;
}

// ------------------------------------------------------------------------------------------ launches

API CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared,
                            void* stream, void** params, void** extra)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    Function* f = function_of(ctx, function);
    if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (extra != nullptr) return CUDA_ERROR_INVALID_VALUE; // CU_LAUNCH_PARAM_BUFFER_* is not emulated
    if (f->desc->param_count > 0 && params == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return CUDA_ERROR_INVALID_VALUE;
    if (gx > 2147483647u || gy > 65535u || gz > 65535u) return CUDA_ERROR_INVALID_VALUE;
    const unsigned long long threads = (unsigned long long)bx * by * bz;
    if (bx > 1024 || by > 1024 || bz > 64 || threads > 1024) return CUDA_ERROR_INVALID_VALUE;
    if (f->desc->max_threads > 0 && threads > (unsigned long long)f->desc->max_threads) return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    if ((int)shared > f->max_dynamic_shared || (long long)shared + f->static_shared > kSharedOptin) return CUDA_ERROR_INVALID_VALUE;
    // The arguments are copied now, as the driver does: the caller may reuse them once the call returns.
    std::vector<std::uint8_t> bytes;
    for (int i = 0; i < f->desc->param_count; i++)
    {
        const std::size_t at = bytes.size(), size = f->desc->param_sizes[i];
        if (params[i] == nullptr) return CUDA_ERROR_INVALID_VALUE;
        bytes.resize(at + ((size + 15) & ~std::size_t(15)));
        std::memcpy(bytes.data() + at, params[i], size);
    }
    return enqueue(s, [ctx, f, gx, gy, gz, bx, by, bz, shared, bytes] {
        if (ctx->sticky != CUDA_SUCCESS) return ctx->sticky;
        if (f->magic != kMagicFunction) return CUDA_ERROR_INVALID_HANDLE; // the module was unloaded before a replay
        return execute_launch(ctx, f, gx, gy, gz, bx, by, bz, shared, bytes);
    });
}

// ------------------------------------------------------------------------------------------ streams, events

API CUresult cuStreamCreate(void** stream, unsigned flags)
{
    NEED_CONTEXT(ctx);
    if (stream == nullptr || flags > 1) return CUDA_ERROR_INVALID_VALUE;
    auto* s = new Stream();
    s->ctx = ctx;
    s->flags = flags;
    ctx->streams.insert(s);
    *stream = s;
    return CUDA_SUCCESS;
}

API CUresult cuStreamDestroy_v2(void* stream)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->streams, stream, kMagicStream)) return CUDA_ERROR_INVALID_HANDLE;
    auto* s = static_cast<Stream*>(stream);
    ctx->streams.erase(s);
    s->magic = 0;
    delete s;
    return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize(void* stream)
{
    NEED_CONTEXT(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (s->capture)
    {
        s->capture->invalidated = true;
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (CUresult r = capture_guard(ctx)) return r;
    return ctx->sticky;
}

API CUresult cuStreamQuery(void* stream)
{
    NEED_CONTEXT(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    return ctx->sticky;
}

API CUresult cuEventCreate(void** event, unsigned flags)
{
    NEED_CONTEXT(ctx);
    if (event == nullptr || (flags & ~7u)) return CUDA_ERROR_INVALID_VALUE;
    auto* e = new Event();
    e->ctx = ctx;
    e->flags = flags;
    ctx->events.insert(e);
    *event = e;
    return CUDA_SUCCESS;
}

API CUresult cuEventDestroy_v2(void* event)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->events, event, kMagicEvent)) return CUDA_ERROR_INVALID_HANDLE;
    auto* e = static_cast<Event*>(event);
    ctx->events.erase(e);
    e->magic = 0;
    delete e;
    return CUDA_SUCCESS;
}

API CUresult cuEventRecord(void* event, void* stream)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    if (!valid(ctx->events, event, kMagicEvent)) return CUDA_ERROR_INVALID_HANDLE;
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    auto* e = static_cast<Event*>(event);
    e->captured = s->capture != nullptr;
    return enqueue(s, [ctx, e] {
        if (!ctx->events.count(e)) return CUDA_ERROR_INVALID_HANDLE;
        e->recorded = true;
        e->captured = false;
        e->ms = now_ms();
        return CUDA_SUCCESS;
    });
}

API CUresult cuEventSynchronize(void* event)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->events, event, kMagicEvent)) return CUDA_ERROR_INVALID_HANDLE;
    if (static_cast<Event*>(event)->captured) return CUDA_ERROR_CAPTURED_EVENT;
    if (CUresult r = capture_guard(ctx)) return r;
    return ctx->sticky;
}

API CUresult cuEventQuery(void* event)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->events, event, kMagicEvent)) return CUDA_ERROR_INVALID_HANDLE;
    if (static_cast<Event*>(event)->captured) return CUDA_ERROR_CAPTURED_EVENT;
    return ctx->sticky;
}

API CUresult cuEventElapsedTime(float* ms, void* start, void* end)
{
    NEED_CONTEXT(ctx);
    if (ms == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (!valid(ctx->events, start, kMagicEvent) || !valid(ctx->events, end, kMagicEvent)) return CUDA_ERROR_INVALID_HANDLE;
    auto* a = static_cast<Event*>(start);
    auto* b = static_cast<Event*>(end);
    if (!a->recorded || !b->recorded || (a->flags & 2u) || (b->flags & 2u)) return CUDA_ERROR_INVALID_HANDLE;
    *ms = (float)(b->ms - a->ms);
    return ctx->sticky;
}

// ------------------------------------------------------------------------------------------ graphs

API CUresult cuStreamBeginCapture_v2(void* stream, int mode)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (s == &ctx->default_stream) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; // the legacy stream cannot be captured
    if (mode < 0 || mode > 2) return CUDA_ERROR_INVALID_VALUE;
    if (s->capture) return CUDA_ERROR_ILLEGAL_STATE;
    s->capture = std::make_unique<Capture>();
    s->capture->mode = mode;
    s->capture->thread = this_thread();
    return CUDA_SUCCESS;
}

API CUresult cuStreamEndCapture(void* stream, void** graph)
{
    NEED_CONTEXT(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (graph == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (!s->capture) return CUDA_ERROR_ILLEGAL_STATE;
    if (s->capture->mode != 2 && s->capture->thread != this_thread()) return CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;
    std::unique_ptr<Capture> c = std::move(s->capture);
    if (c->invalidated)
    {
        *graph = nullptr;
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    auto* g = new Graph();
    g->ctx = ctx;
    g->ops = std::move(c->ops);
    ctx->graphs.insert(g);
    *graph = g;
    return CUDA_SUCCESS;
}

API CUresult cuStreamIsCapturing(void* stream, int* status)
{
    NEED_CONTEXT(ctx);
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *status = !s->capture ? 0 : s->capture->invalidated ? 2 : 1;
    return CUDA_SUCCESS;
}

API CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->graphs, graph, kMagicGraph)) return CUDA_ERROR_INVALID_HANDLE;
    if (exec == nullptr || flags > 1) return CUDA_ERROR_INVALID_VALUE;
    auto* x = new GraphExec();
    x->ctx = ctx;
    x->ops = static_cast<Graph*>(graph)->ops;
    ctx->execs.insert(x);
    *exec = x;
    return CUDA_SUCCESS;
}

API CUresult cuGraphLaunch(void* exec, void* stream)
{
    NEED_CONTEXT(ctx);
    NO_STICKY(ctx);
    if (!valid(ctx->execs, exec, kMagicGraphExec)) return CUDA_ERROR_INVALID_HANDLE;
    Stream* s = resolve_stream(ctx, stream);
    if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    auto* x = static_cast<GraphExec*>(exec);
    std::vector<Op> ops = x->ops;
    return enqueue(s, [ops] {
        for (const Op& op : ops)
            if (CUresult r = op()) return r;
        return CUDA_SUCCESS;
    });
}

API CUresult cuGraphDestroy(void* graph)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->graphs, graph, kMagicGraph)) return CUDA_ERROR_INVALID_HANDLE;
    auto* g = static_cast<Graph*>(graph);
    ctx->graphs.erase(g);
    g->magic = 0;
    delete g;
    return CUDA_SUCCESS;
}

API CUresult cuGraphExecDestroy(void* exec)
{
    NEED_CONTEXT(ctx);
    if (!valid(ctx->execs, exec, kMagicGraphExec)) return CUDA_ERROR_INVALID_HANDLE;
    auto* x = static_cast<GraphExec*>(exec);
    ctx->execs.erase(x);
    x->magic = 0;
    delete x;
    return CUDA_SUCCESS;
}
