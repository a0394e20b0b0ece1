// emu.hpp: the runtime's internal state, shared by the driver (driver.cpp), the launch engine (exec.cpp),
// the NVRTC stand-in (nvrtc.cpp) and the cuBLASLt stand-in (cublaslt.cpp). One emulated device; every API
// call takes the one recursive lock (g_mu) for its whole duration, and work runs at the moment it is
// queued (streams are trivially in order), except what a stream capture records instead.
#pragma once

#define VTE_CUDA_EMU_RUNTIME 1
#include "../include/vte_cuda_emu.h"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace emu
{
using CUresult = int;

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_INVALID_VALUE = 1;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
constexpr CUresult CUDA_ERROR_NOT_INITIALIZED = 3;
constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
constexpr CUresult CUDA_ERROR_INVALID_DEVICE = 101;
constexpr CUresult CUDA_ERROR_INVALID_IMAGE = 200;
constexpr CUresult CUDA_ERROR_INVALID_CONTEXT = 201;
constexpr CUresult CUDA_ERROR_INVALID_PTX = 218;
constexpr CUresult CUDA_ERROR_INVALID_HANDLE = 400;
constexpr CUresult CUDA_ERROR_ILLEGAL_STATE = 401;
constexpr CUresult CUDA_ERROR_NOT_FOUND = 500;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr CUresult CUDA_ERROR_ILLEGAL_ADDRESS = 700;
constexpr CUresult CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701;
constexpr CUresult CUDA_ERROR_ILLEGAL_INSTRUCTION = 715;
constexpr CUresult CUDA_ERROR_MISALIGNED_ADDRESS = 716;
constexpr CUresult CUDA_ERROR_LAUNCH_FAILED = 719;
constexpr CUresult CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900;
constexpr CUresult CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901;
constexpr CUresult CUDA_ERROR_STREAM_CAPTURE_UNMATCHED = 903;
constexpr CUresult CUDA_ERROR_CAPTURED_EVENT = 907;
constexpr CUresult CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD = 908;

extern std::recursive_mutex g_mu;

// ------------------------------------------------------------------------------------------ settings

struct Settings
{
    int schedules = 2;          // VTE_CUDA_EMU_SCHEDULES: runs per launch, outputs compared bitwise
    int workers = 0;            // VTE_CUDA_EMU_THREADS: worker threads (0: the CPUs this process may use)
    long long memory_bytes = 0; // VTE_CUDA_EMU_MEMORY_MIB: device memory (default 8 GiB)
    bool quiet = false;         // VTE_CUDA_EMU_QUIET=1: no diagnostics on stderr
    bool trace = false;         // VTE_CUDA_EMU_TRACE=1: one line per launch with its wall time (emulator time, not a GPU's)
};
const Settings& settings();

// Prints one diagnostic line ("vte-cuda-emu: ...") on stderr or into $VTE_CUDA_EMU_LOG, unless quiet.
void diag(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// ------------------------------------------------------------------------------------------ memory

constexpr std::uintptr_t kPage = 4096;
constexpr std::uint32_t kFreshPoison = 0x7ff57ff5u; // a quiet NaN as f32, bf16 and f16 (fresh allocations)
constexpr std::uint32_t kGuardCanary = 0x7fda7fdau; // another one, around each allocation

struct Context;

struct Alloc
{
    std::uintptr_t map_base = 0; // the whole mapping: guard page, lead, data, slack, guard page
    std::size_t map_len = 0;
    std::uintptr_t base = 0;     // the device pointer, 256-byte aligned
    std::size_t size = 0;        // bytes asked for
    std::size_t rounded = 0;     // size rounded up to 256
    bool live = true;
    Context* ctx = nullptr;
    std::uint64_t id = 0;
};

// Device allocations (live and recently freed), host pinned ranges.
struct Memory
{
    std::map<std::uintptr_t, Alloc*> live;    // by base
    std::map<std::uintptr_t, Alloc*> regions; // by map_base, live and quarantined
    std::vector<Alloc*> quarantine;           // freed, PROT_NONE, oldest first
    std::size_t quarantine_bytes = 0;
    std::map<std::uintptr_t, std::size_t> pinned; // host memory from cuMemAllocHost: base -> bytes
    long long used = 0;
    std::uint64_t next_id = 1;

    CUresult allocate(Context* ctx, std::size_t bytes, std::uintptr_t* out);
    CUresult free(std::uintptr_t p);
    // The live allocation holding [p, p + bytes), or null.
    Alloc* find(std::uintptr_t p, std::size_t bytes = 1) const;
    // Any allocation (live or freed) whose mapping holds p, for fault reports; null when none.
    Alloc* region_of(std::uintptr_t p) const;
    bool is_pinned(const void* p, std::size_t bytes) const;
    // First byte of a guard zone of `a` that no longer holds the canary, or -1; `where` names the zone.
    long long broken_canary(const Alloc* a, const char** where) const;
    void release_all(Context* ctx);
};
Memory& memory();

// ------------------------------------------------------------------------------------------ objects

constexpr std::uint32_t kMagicContext = 0x43545831, kMagicStream = 0x53545231, kMagicEvent = 0x45564e31, kMagicModule = 0x4d4f4431,
                        kMagicFunction = 0x46554e31, kMagicGraph = 0x47524131, kMagicGraphExec = 0x47455831;

struct Module;
struct Stream;

struct Function
{
    std::uint32_t magic = kMagicFunction;
    Module* module = nullptr;
    const vte_emu::KernelDesc* desc = nullptr;
    std::string name;
    int static_shared = 0;      // bytes of __shared__ variables (the module's TLS symbols of this kernel)
    int max_dynamic_shared = 0; // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
};

struct Module
{
    std::uint32_t magic = kMagicModule;
    Context* ctx = nullptr;
    void* dl = nullptr;
    std::uint64_t id = 0;
    std::size_t tls_size = 0;   // the module's TLS block: every __shared__ variable of its kernels
    void* (*tls_touch)() = nullptr;
    std::map<std::string, int> shared_by_kernel;
    int shared_unattributed = 0;
    std::map<std::string, std::unique_ptr<Function>> functions;
};

// One operation of a stream, run at once or recorded into a graph by a capture.
using Op = std::function<CUresult()>;

struct Capture
{
    int mode = 0;
    unsigned long thread = 0;
    bool invalidated = false;
    std::vector<Op> ops;
};

struct Stream
{
    std::uint32_t magic = kMagicStream;
    Context* ctx = nullptr;
    unsigned flags = 0;
    std::unique_ptr<Capture> capture;
};

struct Event
{
    std::uint32_t magic = kMagicEvent;
    Context* ctx = nullptr;
    unsigned flags = 0;
    bool recorded = false;
    bool captured = false; // last recorded inside a capture
    double ms = 0;
};

struct Graph
{
    std::uint32_t magic = kMagicGraph;
    Context* ctx = nullptr;
    std::vector<Op> ops;
};

struct GraphExec
{
    std::uint32_t magic = kMagicGraphExec;
    Context* ctx = nullptr;
    std::vector<Op> ops;
};

struct Context
{
    std::uint32_t magic = kMagicContext;
    int refs = 0;
    CUresult sticky = CUDA_SUCCESS; // the error of a failed launch: every later call returns it
    std::string sticky_detail;
    Stream default_stream;
    std::set<Stream*> streams;
    std::set<Event*> events;
    std::set<Module*> modules;
    std::set<Graph*> graphs;
    std::set<GraphExec*> execs;
};

// The context current on this thread, validated (null when none or destroyed).
Context* current_context();
bool context_alive(Context* c);

// Resolves a CUstream handle (0 and the legacy/per-thread values mean the default stream) of `ctx`.
Stream* resolve_stream(Context* ctx, void* handle);

// Runs `op` now, or appends it to the stream's capture. `capturable` false means the operation cannot be
// captured (a copy from pageable host memory): during a capture it fails and invalidates the capture.
CUresult enqueue(Stream* s, Op op, bool capturable = true);

// During a capture begun on this thread (not relaxed), "potentially unsafe" calls (cuMemAlloc, cuMemFree,
// synchronisation) fail with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidate the capture.
CUresult capture_guard(Context* ctx);

// ------------------------------------------------------------------------------------------ launches

struct LaunchError
{
    CUresult code = CUDA_SUCCESS;
    std::string message;
};

// Runs one kernel launch (both schedules, the hazard checks); params holds the copied argument bytes.
// A failure becomes the context's sticky error and is printed once.
CUresult execute_launch(Context* ctx, Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, const std::vector<std::uint8_t>& params);

// Marks the context faulted (sticky) with a message naming what failed.
void set_sticky(Context* ctx, CUresult code, const std::string& message);

// Runs fn(lo, hi) over [0, count) split across the worker threads (cuBLASLt's arithmetic).
void parallel_for(long long count, const std::function<void(long long, long long)>& fn);

// The standard name and description of a CUresult (null when unknown).
const char* result_name(CUresult r);
const char* result_string(CUresult r);

// ------------------------------------------------------------------------------------------ utilities

std::string sha256_hex(const std::string& data);
std::string emulator_directory(); // the folder holding this library (its include/ sibling holds the header)
std::string cache_directory();    // where compiled modules are kept
bool read_file(const std::string& path, std::string* out);
bool write_file_atomic(const std::string& path, const std::string& data);

struct ElfInfo
{
    std::size_t tls_size = 0;
    std::map<std::string, int> tls_by_function; // local statics (_ZZ<name>E...) by enclosing function
    int tls_unattributed = 0;
};
bool parse_elf(const std::string& image, ElfInfo* out);

// Bits <-> values of the storage types (exact widening; narrowing rounds to nearest even).
float bf16_to_f32(std::uint16_t b);
float f16_to_f32(std::uint16_t h);
std::uint16_t f32_to_bf16(float f);
std::uint16_t f32_to_f16(float f);

} // namespace emu
