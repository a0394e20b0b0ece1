// exec.cpp: running a kernel launch. Blocks are spread over worker threads (one block at a time per
// worker); inside a block every CUDA thread is a fiber with its own stack, switched cooperatively:
// a fiber runs until it reaches __syncthreads, a warp collective (shuffle, vote, __syncwarp, mma) or its
// end. A scheduler per block resumes fibers in the launch's schedule order:
//   schedule 0: blocks ascending, warp 0 first, lanes ascending;
//   schedule 1: blocks descending, the last warp first, lanes descending.
// Between two barriers a warp runs as far as it can before the next warp starts, so the two orders put
// the phases of different warps in opposite order: every launch runs under both and the device memory it
// can reach (the allocations its parameters point into) must come out bitwise identical, which exposes a
// missing barrier or two writers of one element. A barrier or collective that cannot complete (threads
// at different barriers, exited threads, a lane missing from a collective) is an error naming the kernel,
// the block and the threads, never a hang. Faults (SIGSEGV on a guard page, SIGFPE, SIGILL) in a fiber
// end the launch with an error instead of the process.
//
// The PTX semantics implemented here are the PTX ISA's: shfl.sync's four modes with the clamp/segment
// operand, vote.sync, and mma.m16n8k16's fragment layouts (A: a_i in register i/2, row groupID (+8 for
// i in {2,3,6,7}), column 2*threadID_in_group + (i&1) (+8 for i >= 4); B: b_i at row 2*tig + (i&1) (+8 for
// i >= 2), column groupID; C/D: c_i at row groupID (+8 for i >= 2), column 2*tig + (i&1)).
#include "emu.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdarg>
#include <cstring>
#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu
{
namespace
{
// ------------------------------------------------------------------------------------------ fibers

#if defined(__x86_64__)
extern "C" void vte_emu_switch(void** save, void* load);
extern "C" void vte_emu_fiber_start();
// A context switch saves the callee-saved registers on the old stack and restores them from the new one
// (a few nanoseconds; ucontext's swapcontext also saves the signal mask with a system call each time).
asm(R"(
    .text
    .globl vte_emu_switch
    .hidden vte_emu_switch
    .type vte_emu_switch, @function
vte_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size vte_emu_switch, .-vte_emu_switch

    .globl vte_emu_fiber_start
    .hidden vte_emu_fiber_start
    .type vte_emu_fiber_start, @function
vte_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size vte_emu_fiber_start, .-vte_emu_fiber_start
)");
#endif

enum State : int { kReady, kAtBarrier, kAtCollective, kExited };
enum Kind : int { kNone, kShfl, kVote, kSyncWarp, kMma };

struct BlockRT;

struct LaneRT
{
    vte_emu::Lane pub; // first: the fiber's stack slot points here
    void* sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    int state = kReady;
    const char* bfile = nullptr;
    int bline = 0;
    std::uint64_t value = 0, out = 0;
    int b = 0, c = 0, pred = 0;
    unsigned a[4] = {}, bb[2] = {};
    float cc[4] = {}, d[4] = {};
    BlockRT* block = nullptr;
};

struct WarpRT
{
    unsigned existing = 0, arrived = 0, mask = 0;
    unsigned ready = 0; // lanes that can run and are not running
    int kind = kNone, mode = 0, bytes = 0;
};

struct BlockRT
{
    LaneRT* lanes = nullptr;
    WarpRT warps[32];
    int n = 0, nwarps = 0, exited = 0;
    void* sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    LaneRT* running = nullptr;
    bool failed = false;
    CUresult code = CUDA_SUCCESS;
    std::string message;
    const Function* f = nullptr;
    void** params = nullptr;
    bool reverse = false; // schedule 1: the last warp first, lanes descending
    vte_emu::u3 idx{};
    char* stacks = nullptr;
    std::size_t stack_count = 0;
};

thread_local BlockRT* t_block __attribute__((tls_model("initial-exec"))) = nullptr;

// The calling lane stops (its state already says why): control passes straight to the next ready lane of
// its warp in schedule order (lowest index first, or highest in schedule 1), or back to the scheduler
// when none is ready. A lane resumes when some other lane or the scheduler switches to it.
void park(LaneRT* l)
{
    BlockRT* b = l->block;
    WarpRT& w = b->warps[l->pub.warpid];
    if (w.ready != 0)
    {
        const int next = b->reverse ? 31 - __builtin_clz(w.ready) : __builtin_ctz(w.ready);
        w.ready &= ~(1u << next);
        LaneRT* to = b->lanes + l->pub.warpid * 32 + next;
        b->running = to;
#if defined(__x86_64__)
        vte_emu_switch(&l->sp, to->sp);
#else
        swapcontext(&l->uc, &to->uc);
#endif
        return;
    }
    b->running = nullptr;
#if defined(__x86_64__)
    vte_emu_switch(&l->sp, b->sched_sp);
#else
    swapcontext(&l->uc, &b->sched_uc);
#endif
}

// Back to the scheduler at once (a failure: nothing else of the block runs).
[[noreturn]] void abandon(LaneRT* l)
{
    BlockRT* b = l->block;
    b->running = nullptr;
#if defined(__x86_64__)
    void* dead;
    vte_emu_switch(&dead, b->sched_sp);
#else
    ucontext_t dead;
    swapcontext(&dead, &b->sched_uc);
#endif
    __builtin_unreachable();
}

std::string lane_name(const LaneRT* l)
{
    const auto& t = l->pub.threadIdx;
    return format("thread (%u,%u,%u)", t.x, t.y, t.z);
}

std::string where(const BlockRT* b)
{
    return format("kernel %s, block (%u,%u,%u)", b->f->name.c_str(), b->idx.x, b->idx.y, b->idx.z);
}

[[noreturn]] void fail_lane(LaneRT* l, CUresult code, const std::string& what)
{
    BlockRT* b = l->block;
    if (!b->failed)
    {
        b->failed = true;
        b->code = code;
        b->message = format("%s, %s: %s", where(b).c_str(), lane_name(l).c_str(), what.c_str());
    }
    l->state = kExited;
    abandon(l);
}

extern "C" void lane_main(LaneRT* l)
{
    BlockRT* b = l->block;
    b->f->desc->invoke(b->params);
    l->state = kExited;
    b->exited++;
    park(l); // never resumed
    __builtin_unreachable();
}

#if !defined(__x86_64__)
void lane_trampoline(unsigned hi, unsigned lo)
{
    lane_main(reinterpret_cast<LaneRT*>(((std::uintptr_t)hi << 32) | lo));
}
#endif

// ------------------------------------------------------------------------------------------ operations

void op_syncthreads(vte_emu::Lane* pub, const char* file, int line)
{
    auto* l = reinterpret_cast<LaneRT*>(pub);
    l->state = kAtBarrier;
    l->bfile = file;
    l->bline = line;
    park(l);
}

const char* kind_name(int kind, int mode)
{
    switch (kind)
    {
    case kShfl: return mode == vte_emu::kShflUp ? "__shfl_up_sync" : mode == vte_emu::kShflDown ? "__shfl_down_sync" : mode == vte_emu::kShflBfly ? "__shfl_xor_sync" : "__shfl_sync";
    case kVote: return mode == vte_emu::kVoteBallot ? "__ballot_sync" : mode == vte_emu::kVoteAny ? "__any_sync" : "__all_sync";
    case kSyncWarp: return "__syncwarp";
    case kMma: return mode == vte_emu::kMmaBf16 ? "mma.sync.m16n8k16 (bf16)" : "mma.sync.m16n8k16 (f16)";
    default: return "nothing";
    }
}

void complete(BlockRT* b, int warp, LaneRT* caller);

[[noreturn, gnu::cold, gnu::noinline]] void fail_not_in_mask(LaneRT* l, int kind, int mode, unsigned mask)
{
    fail_lane(l, CUDA_ERROR_LAUNCH_FAILED, format("%s with mask 0x%08x, which does not name the calling lane %u", kind_name(kind, mode), mask, l->pub.laneid));
}

[[noreturn, gnu::cold, gnu::noinline]] void fail_divergent(LaneRT* l, int kind, int mode, unsigned mask)
{
    const WarpRT& w = l->block->warps[l->pub.warpid];
    fail_lane(l, CUDA_ERROR_LAUNCH_FAILED,
              format("divergent warp collective in warp %u: this lane reached %s (mask 0x%08x) while lanes 0x%08x wait at %s (mask 0x%08x)",
                     l->pub.warpid, kind_name(kind, mode), mask, w.arrived, kind_name(w.kind, w.mode), w.mask));
}

// Every collective: arrive, then either complete it (the last participant) or wait.
inline void arrive(LaneRT* l, int kind, int mode, unsigned mask, int bytes)
{
    BlockRT* b = l->block;
    const unsigned bit = 1u << l->pub.laneid;
    WarpRT& w = b->warps[l->pub.warpid];
    if (__builtin_expect(!(mask & bit), 0)) fail_not_in_mask(l, kind, mode, mask);
    if (w.arrived == 0)
    {
        w.kind = kind;
        w.mode = mode;
        w.mask = mask;
        w.bytes = bytes;
    }
    else if (__builtin_expect(w.kind != kind || w.mode != mode || w.mask != mask || w.bytes != bytes, 0))
        fail_divergent(l, kind, mode, mask);
    w.arrived |= bit;
    if (w.arrived == (mask & w.existing))
    {
        complete(b, (int)l->pub.warpid, l);
        return;
    }
    l->state = kAtCollective;
    park(l);
}

std::uint64_t op_shfl(vte_emu::Lane* pub, int mode, unsigned mask, std::uint64_t value, int bytes, int bv, int cv)
{
    auto* l = reinterpret_cast<LaneRT*>(pub);
    l->value = value;
    l->b = bv;
    l->c = cv;
    arrive(l, kShfl, mode, mask, bytes);
    return l->out;
}

unsigned op_vote(vte_emu::Lane* pub, int mode, unsigned mask, int pred)
{
    auto* l = reinterpret_cast<LaneRT*>(pub);
    l->pred = pred != 0;
    arrive(l, kVote, mode, mask, 0);
    return (unsigned)l->out;
}

void op_syncwarp(vte_emu::Lane* pub, unsigned mask)
{
    arrive(reinterpret_cast<LaneRT*>(pub), kSyncWarp, 0, mask, 0);
}

void op_mma(vte_emu::Lane* pub, int kind, float* d, const unsigned* a, const unsigned* bb, const float* c)
{
    auto* l = reinterpret_cast<LaneRT*>(pub);
    std::memcpy(l->a, a, sizeof l->a);
    std::memcpy(l->bb, bb, sizeof l->bb);
    std::memcpy(l->cc, c, sizeof l->cc);
    arrive(l, kMma, kind, 0xffffffffu, 0);
    std::memcpy(d, l->d, sizeof l->d);
}

void op_trap(vte_emu::Lane* pub, const char* what)
{
    auto* l = reinterpret_cast<LaneRT*>(pub);
    fail_lane(l, std::strncmp(what, "misaligned", 10) == 0 ? CUDA_ERROR_MISALIGNED_ADDRESS : CUDA_ERROR_LAUNCH_FAILED, what);
}

const vte_emu::Ops g_ops = {vte_emu::kAbiVersion, op_syncthreads, op_shfl, op_vote, op_syncwarp, op_mma, op_trap};

float element(int kind, unsigned reg, int half)
{
    const std::uint16_t bits = (std::uint16_t)(half ? reg >> 16 : reg & 0xffffu);
    return kind == vte_emu::kMmaBf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
}

// The last participant computes the collective's result for every participant.
void complete(BlockRT* b, int warp, LaneRT* caller)
{
    WarpRT& w = b->warps[warp];
    const unsigned participants = w.arrived;
    LaneRT* lanes = b->lanes + warp * 32;
    switch (w.kind)
    {
    case kShfl:
        if (w.mode == vte_emu::kShflBfly && participants == 0xffffffffu)
        {
            // The common case (a butterfly over the full warp): every source lane is in the warp.
            bool simple = true;
            for (unsigned lane = 0; lane < 32 && simple; lane++) simple = (lanes[lane].c & 0x1f1f) == 0x1f;
            if (simple)
            {
                for (unsigned lane = 0; lane < 32; lane++) lanes[lane].out = lanes[lane ^ (unsigned)(lanes[lane].b & 31)].value;
                break;
            }
        }
        for (unsigned lane = 0; lane < 32; lane++)
        {
            if (!(participants >> lane & 1u)) continue;
            LaneRT& l = lanes[lane];
            const int bval = l.b & 31, cval = l.c & 31, seg = (l.c >> 8) & 31;
            const int maxLane = ((int)lane & seg) | (cval & ~seg), minLane = (int)lane & seg;
            int j = (int)lane;
            bool p = false;
            switch (w.mode)
            {
            case vte_emu::kShflUp: j = (int)lane - bval; p = j >= maxLane; break;
            case vte_emu::kShflDown: j = (int)lane + bval; p = j <= maxLane; break;
            case vte_emu::kShflBfly: j = (int)lane ^ bval; p = j <= maxLane; break;
            default: j = minLane | (bval & ~seg); p = j <= maxLane; break;
            }
            if (!p) j = (int)lane;
            if (!(participants >> j & 1u))
                fail_lane(caller, CUDA_ERROR_LAUNCH_FAILED,
                          format("%s: lane %u reads lane %d, which is not in the mask 0x%08x (its value is unpredictable)", kind_name(w.kind, w.mode), lane, j, w.mask));
            l.out = lanes[j].value;
        }
        break;
    case kVote:
    {
        unsigned ballot = 0;
        for (unsigned lane = 0; lane < 32; lane++)
            if ((participants >> lane & 1u) && lanes[lane].pred) ballot |= 1u << lane;
        const std::uint64_t r = w.mode == vte_emu::kVoteBallot ? ballot : w.mode == vte_emu::kVoteAny ? (ballot != 0) : (ballot == participants);
        for (unsigned lane = 0; lane < 32; lane++)
            if (participants >> lane & 1u) lanes[lane].out = r;
        break;
    }
    case kMma:
    {
        if (participants != 0xffffffffu)
            fail_lane(caller, CUDA_ERROR_LAUNCH_FAILED, "mma.sync.aligned needs all 32 lanes of the warp, and this warp is not full");
        float A[16][16], B[16][8], C[16][8];
        for (int lane = 0; lane < 32; lane++)
        {
            const LaneRT& l = lanes[lane];
            const int g = lane >> 2, t = lane & 3;
            for (int i = 0; i < 8; i++)
            {
                const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
                const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
                A[row][col] = element(w.mode, l.a[i / 2], i & 1);
            }
            for (int i = 0; i < 4; i++)
            {
                const int row = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
                B[row][g] = element(w.mode, l.bb[i / 2], i & 1);
            }
            for (int i = 0; i < 4; i++) C[i < 2 ? g : g + 8][t * 2 + (i & 1)] = l.cc[i];
        }
        for (int lane = 0; lane < 32; lane++)
        {
            LaneRT& l = lanes[lane];
            const int g = lane >> 2, t = lane & 3;
            for (int i = 0; i < 4; i++)
            {
                const int row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
                float acc = C[row][col]; // float32 accumulation in k order (each bf16/f16 product is exact in float32)
                for (int k = 0; k < 16; k++) acc = std::fma(A[row][k], B[k][col], acc);
                l.d[i] = acc;
            }
        }
        break;
    }
    default:
        break;
    }
    w.arrived = 0;
    w.kind = kNone;
    const unsigned self = 1u << caller->pub.laneid;
    for (unsigned lane = 0; lane < 32; lane++)
        if ((participants >> lane & 1u) && (1u << lane) != self) lanes[lane].state = kReady;
    w.ready |= participants & ~self; // the caller goes on running
}

// ------------------------------------------------------------------------------------------ faults

struct sigaction g_old[65];
bool g_handlers_installed = false;

std::string describe_address(std::uintptr_t addr)
{
    Alloc* a = memory().region_of(addr);
    if (a == nullptr) return format("address 0x%lx is outside every device allocation", (unsigned long)addr);
    if (!a->live)
        return format("address 0x%lx is in freed device memory (an allocation of %zu bytes at 0x%lx): use after free", (unsigned long)addr, a->size, (unsigned long)a->base);
    if (addr >= a->base + a->rounded)
        return format("address 0x%lx is %lu bytes past the end of the allocation of %zu bytes at 0x%lx", (unsigned long)addr, (unsigned long)(addr - a->base - a->size), a->size, (unsigned long)a->base);
    if (addr < a->base)
        return format("address 0x%lx is %lu bytes before the allocation of %zu bytes at 0x%lx", (unsigned long)addr, (unsigned long)(a->base - addr), a->size, (unsigned long)a->base);
    return format("address 0x%lx in the allocation of %zu bytes at 0x%lx", (unsigned long)addr, a->size, (unsigned long)a->base);
}

void on_signal(int sig, siginfo_t* si, void* uc)
{
    BlockRT* b = t_block;
    if (b != nullptr && b->running != nullptr)
    {
        LaneRT* l = b->running;
        const std::uintptr_t addr = (std::uintptr_t)si->si_addr;
        std::string what;
        CUresult code = CUDA_ERROR_ILLEGAL_ADDRESS;
        if (sig == SIGSEGV && si->si_code == SI_KERNEL)
        {
            what = "misaligned or non-canonical address (a vector access through a misaligned pointer?)";
            code = CUDA_ERROR_MISALIGNED_ADDRESS;
        }
        else if (sig == SIGSEGV || sig == SIGBUS)
        {
            const std::uintptr_t stack = (std::uintptr_t)b->stacks;
            if (addr >= stack && addr < stack + b->stack_count * vte_emu::kStackBytes)
                what = "stack overflow of a CUDA thread (more than 60 KiB of local memory)";
            else
                what = "illegal memory access: " + describe_address(addr);
        }
        else if (sig == SIGFPE)
        {
            what = "integer division by zero or overflow (undefined behaviour; a GPU returns an unspecified value)";
            code = CUDA_ERROR_LAUNCH_FAILED;
        }
        else
        {
            what = format("illegal instruction (signal %d: __builtin_trap or undefined behaviour)", sig);
            code = CUDA_ERROR_ILLEGAL_INSTRUCTION;
        }
        fail_lane(l, code, what);
    }
    // Not ours: hand it to whoever had the signal before (the .NET runtime turns its own faults into exceptions).
    const struct sigaction& old = g_old[sig];
    if (old.sa_flags & SA_SIGINFO)
    {
        if (old.sa_sigaction != nullptr) old.sa_sigaction(sig, si, uc);
        return;
    }
    if (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN)
    {
        sigaction(sig, &old, nullptr); // the faulting instruction runs again under the old disposition
        return;
    }
    old.sa_handler(sig);
}

void install_handlers()
{
    if (g_handlers_installed) return;
    g_handlers_installed = true;
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP})
    {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_signal;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(sig, &sa, &g_old[sig]);
    }
}

// ------------------------------------------------------------------------------------------ workers

struct Job;

struct Worker
{
    std::thread thread;
    BlockRT block;
    std::vector<LaneRT> lanes;
    std::map<std::uint64_t, void*> tls; // module id -> this thread's TLS block of it
    void* altstack = nullptr;
};

struct Job
{
    const Function* f = nullptr;
    vte_emu::u3 grid{}, blockDim{};
    void** params = nullptr;
    int schedule = 0;
    long long total = 0;
    std::atomic<long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex mu;
    LaneRT* unused = nullptr;
    CUresult code = CUDA_SUCCESS;
    std::string message;
    std::function<void(long long, long long)> range; // a parallel_for job instead of a launch
    long long chunk = 0;
};

struct Pool
{
    std::mutex mu;
    std::condition_variable cv, done_cv;
    std::vector<std::unique_ptr<Worker>> workers;
    Job* job = nullptr;
    std::uint64_t generation = 0;
    int active = 0;
};

Pool& pool()
{
    static Pool* p = new Pool(); // never destroyed: workers outlive static destruction at exit
    return *p;
}

void ensure_stacks(BlockRT& b, std::size_t n)
{
    if (b.stack_count >= n) return;
    if (b.stacks != nullptr) munmap(b.stacks - 0, b.stack_count * vte_emu::kStackBytes);
    const std::size_t bytes = n * vte_emu::kStackBytes;
    // Over-allocate by one stack so the start can be aligned to the stack size.
    char* raw = (char*)mmap(nullptr, bytes + vte_emu::kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
    {
        std::fprintf(stderr, "vte-cuda-emu: cannot map %zu bytes of fiber stacks\n", bytes);
        std::abort();
    }
    char* aligned = (char*)(((std::uintptr_t)raw + vte_emu::kStackBytes - 1) & ~(vte_emu::kStackBytes - 1));
    if (aligned > raw) munmap(raw, aligned - raw);
    char* end = raw + bytes + vte_emu::kStackBytes;
    if (end > aligned + bytes) munmap(aligned + bytes, end - (aligned + bytes));
    for (std::size_t i = 0; i < n; i++) mprotect(aligned + i * vte_emu::kStackBytes, kPage, PROT_NONE); // guard page below each stack
    b.stacks = aligned;
    b.stack_count = n;
}

void* module_tls(Worker& w, const Module* m)
{
    auto it = w.tls.find(m->id);
    if (it != w.tls.end()) return it->second;
    void* base = nullptr;
    if (m->tls_touch != nullptr)
    {
        m->tls_touch(); // makes the loader allocate this thread's block
        if (dlinfo(m->dl, RTLD_DI_TLS_DATA, &base) != 0) base = nullptr;
    }
    w.tls[m->id] = base;
    return base;
}

void fill_poison(void* p, std::size_t bytes, std::uint32_t word)
{
    auto* c = (unsigned char*)p;
    for (std::size_t i = 0; i < bytes; i++)
    {
        const unsigned shift = (unsigned)(((std::uintptr_t)(c + i)) & 3u) * 8;
        c[i] = (unsigned char)(word >> shift);
    }
}

// Runs one block to its end; false (with the block's message) when it fails.
bool run_block(Worker& wk, const Job& job, long long linear)
{
    BlockRT& b = wk.block;
    const unsigned bx = job.blockDim.x, by = job.blockDim.y, bz = job.blockDim.z;
    const int n = (int)(bx * by * bz);
    if ((int)wk.lanes.size() < n) wk.lanes.resize(n);
    ensure_stacks(b, (std::size_t)n);
    b.lanes = wk.lanes.data();
    b.n = n;
    b.nwarps = (n + 31) / 32;
    b.exited = 0;
    b.failed = false;
    b.code = CUDA_SUCCESS;
    b.message.clear();
    b.f = job.f;
    b.params = job.params;
    const unsigned gx = job.grid.x, gy = job.grid.y;
    b.idx = {(unsigned)(linear % gx), (unsigned)(linear / gx % gy), (unsigned)(linear / ((long long)gx * gy))};
    for (int w = 0; w < b.nwarps; w++)
    {
        const int count = std::min(32, n - w * 32);
        b.warps[w] = WarpRT{};
        b.warps[w].existing = count == 32 ? 0xffffffffu : ((1u << count) - 1u);
    }
    for (int t = 0; t < n; t++)
    {
        LaneRT& l = b.lanes[t];
        l.pub.threadIdx = {(unsigned)t % bx, (unsigned)t / bx % by, (unsigned)t / (bx * by)};
        l.pub.blockIdx = b.idx;
        l.pub.blockDim = job.blockDim;
        l.pub.gridDim = job.grid;
        l.pub.laneid = (unsigned)t & 31u;
        l.pub.warpid = (unsigned)t >> 5;
        l.pub.ops = &g_ops;
        l.state = kReady;
        l.block = &b;
        char* base = b.stacks + (std::size_t)t * vte_emu::kStackBytes;
        *reinterpret_cast<LaneRT**>(base + vte_emu::kLaneSlot) = &l;
#if defined(__x86_64__)
        auto* s = reinterpret_cast<std::uintptr_t*>(base + vte_emu::kStackBytes - 64) - 1; // the top 64 bytes hold the lane slot
        *s = (std::uintptr_t)vte_emu_fiber_start; // "returned to" by the first switch
        s -= 6;
        s[0] = 0;                            // r15
        s[1] = 0;                            // r14
        s[2] = (std::uintptr_t)lane_main;    // r13: called by vte_emu_fiber_start
        s[3] = (std::uintptr_t)&l;           // r12: its argument
        s[4] = 0;                            // rbx
        s[5] = 0;                            // rbp
        l.sp = s;
#else
        getcontext(&l.uc);
        l.uc.uc_stack.ss_sp = base + kPage;
        l.uc.uc_stack.ss_size = vte_emu::kStackBytes - kPage - 64; // below the lane slot
        l.uc.uc_link = nullptr;
        const std::uintptr_t lp = (std::uintptr_t)&l;
        makecontext(&l.uc, (void (*)())lane_trampoline, 2, (unsigned)(lp >> 32), (unsigned)lp);
#endif
    }
    // Shared memory is uninitialised at the start of a block: poison it.
    if (void* tls = module_tls(wk, job.f->module)) fill_poison(tls, job.f->module->tls_size, kFreshPoison);

    const bool reverse = job.schedule == 1;
    b.reverse = reverse;
    for (int w = 0; w < b.nwarps; w++) b.warps[w].ready = b.warps[w].existing;
    t_block = &b;
    for (;;)
    {
        for (int wi = 0; wi < b.nwarps; wi++)
        {
            const int w = reverse ? b.nwarps - 1 - wi : wi;
            WarpRT& warp = b.warps[w];
            // The warp runs as far as it can (its lanes hand control to each other) before the next starts.
            while (warp.ready != 0)
            {
                const int next = reverse ? 31 - __builtin_clz(warp.ready) : __builtin_ctz(warp.ready);
                warp.ready &= ~(1u << next);
                LaneRT& l = b.lanes[w * 32 + next];
                b.running = &l;
#if defined(__x86_64__)
                vte_emu_switch(&b.sched_sp, l.sp);
#else
                swapcontext(&b.sched_uc, &l.uc);
#endif
                b.running = nullptr;
                if (b.failed)
                {
                    t_block = nullptr;
                    return false;
                }
            }
        }
        if (b.exited == n) break;
        // Nothing can run: release a barrier every live thread waits at, or report why it cannot be.
        int atBarrier = 0, atCollective = 0;
        const LaneRT* first = nullptr;
        bool sameSite = true;
        for (int t = 0; t < n; t++)
        {
            const LaneRT& l = b.lanes[t];
            if (l.state == kAtBarrier)
            {
                atBarrier++;
                if (first == nullptr) first = &l;
                else if (l.bline != first->bline || (l.bfile != first->bfile && std::strcmp(l.bfile, first->bfile) != 0)) sameSite = false;
            }
            else if (l.state == kAtCollective) atCollective++;
        }
        if (atBarrier == n && sameSite)
        {
            for (int t = 0; t < n; t++) b.lanes[t].state = kReady;
            for (int w = 0; w < b.nwarps; w++) b.warps[w].ready = b.warps[w].existing;
            continue;
        }
        // Describe the deadlock by runs of threads in the same state.
        std::string detail;
        int t = 0;
        while (t < n && detail.size() < 600)
        {
            const LaneRT& l = b.lanes[t];
            int u = t;
            auto same = [&](const LaneRT& o) {
                if (o.state != l.state) return false;
                if (l.state == kAtBarrier) return o.bline == l.bline && std::strcmp(o.bfile, l.bfile) == 0;
                return true;
            };
            while (u + 1 < n && same(b.lanes[u + 1])) u++;
            std::string state;
            if (l.state == kExited) state = "have exited";
            else if (l.state == kAtBarrier) state = format("wait at __syncthreads (%s:%d)", l.bfile, l.bline);
            else
            {
                const WarpRT& w = b.warps[l.pub.warpid];
                state = format("wait at %s (mask 0x%08x)", kind_name(w.kind, w.mode), w.mask);
            }
            detail += format("%sthreads %d-%d %s", detail.empty() ? "" : "; ", t, u, state.c_str());
            t = u + 1;
        }
        b.failed = true;
        b.code = CUDA_ERROR_LAUNCH_FAILED;
        b.message = format("%s: divergent barrier (a hang on a GPU): %s", where(&b).c_str(), detail.c_str());
        (void)atCollective;
        t_block = nullptr;
        return false;
    }
    t_block = nullptr;
    return true;
}

void worker_main(Worker* w)
{
    // An alternate signal stack: a fault in a fiber (or its stack overflow) is handled here.
    stack_t ss;
    ss.ss_size = 1 << 16;
    ss.ss_sp = w->altstack = std::malloc(ss.ss_size);
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
    Pool& p = pool();
    std::uint64_t seen = 0;
    for (;;)
    {
        Job* job;
        {
            std::unique_lock<std::mutex> lock(p.mu);
            p.cv.wait(lock, [&] { return p.generation != seen; });
            seen = p.generation;
            job = p.job;
        }
        if (job->range)
        {
            for (;;)
            {
                const long long lo = job->next.fetch_add(job->chunk);
                if (lo >= job->total) break;
                job->range(lo, std::min(job->total, lo + job->chunk));
            }
        }
        else
        {
            for (;;)
            {
                if (job->failed.load()) break;
                const long long i = job->next.fetch_add(1);
                if (i >= job->total) break;
                const long long linear = job->schedule == 1 ? job->total - 1 - i : i;
                if (!run_block(*w, *job, linear))
                {
                    std::lock_guard<std::mutex> lock(job->mu);
                    if (!job->failed.exchange(true))
                    {
                        job->code = w->block.code;
                        job->message = w->block.message;
                    }
                }
            }
        }
        {
            std::lock_guard<std::mutex> lock(p.mu);
            if (--p.active == 0) p.done_cv.notify_all();
        }
    }
}

int worker_count()
{
    if (settings().workers > 0) return settings().workers;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}

void run_job(Job& job)
{
    Pool& p = pool();
    std::unique_lock<std::mutex> lock(p.mu);
    if (p.workers.empty())
    {
        install_handlers();
        const int n = worker_count();
        for (int i = 0; i < n; i++)
        {
            auto w = std::make_unique<Worker>();
            w->thread = std::thread(worker_main, w.get());
            w->thread.detach();
            p.workers.push_back(std::move(w));
        }
    }
    p.job = &job;
    p.active = (int)p.workers.size();
    p.generation++;
    p.cv.notify_all();
    p.done_cv.wait(lock, [&] { return p.active == 0; });
    p.job = nullptr;
}

LaunchError run_grid(const Function* f, vte_emu::u3 grid, vte_emu::u3 block, void** params, int schedule)
{
    Job job;
    job.f = f;
    job.grid = grid;
    job.blockDim = block;
    job.params = params;
    job.schedule = schedule;
    job.total = (long long)grid.x * grid.y * grid.z;
    run_job(job);
    LaunchError e;
    if (job.failed)
    {
        e.code = job.code;
        e.message = job.message;
    }
    return e;
}

} // namespace

void parallel_for(long long count, const std::function<void(long long, long long)>& fn)
{
    if (count <= 0) return;
    Job job;
    job.range = fn;
    job.total = count;
    job.chunk = std::max(1LL, count / (4LL * worker_count()));
    run_job(job);
}

void set_sticky(Context* ctx, CUresult code, const std::string& message)
{
    if (ctx->sticky == CUDA_SUCCESS)
    {
        ctx->sticky = code;
        ctx->sticky_detail = message;
    }
    diag("%s: %s", result_name(code), message.c_str());
}

CUresult execute_launch(Context* ctx, Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, const std::vector<std::uint8_t>& params)
{
    (void)shared;
    // The argument pointers each fiber's call reads (one copy of the bytes, shared: kernel parameters are const).
    std::vector<void*> ptrs;
    std::size_t offset = 0;
    std::vector<std::uint8_t> bytes = params;
    for (int i = 0; i < f->desc->param_count; i++)
    {
        ptrs.push_back(bytes.data() + offset);
        offset += (f->desc->param_sizes[i] + 15u) & ~15u; // the driver packs arguments 16-byte aligned
    }
    // The allocations the kernel can reach: every 8-byte word of the arguments that points into one.
    std::vector<Alloc*> reach;
    for (std::size_t at = 0; at + 8 <= bytes.size(); at += 8)
    {
        std::uint64_t v;
        std::memcpy(&v, bytes.data() + at, 8);
        if (Alloc* a = memory().find((std::uintptr_t)v))
            if (std::find(reach.begin(), reach.end(), a) == reach.end()) reach.push_back(a);
    }
    const vte_emu::u3 grid{gx, gy, gz}, block{bx, by, bz};
    const auto started = std::chrono::steady_clock::now();
    struct Trace
    {
        const Function* f;
        unsigned gx, gy, gz, bx;
        std::chrono::steady_clock::time_point t0;
        ~Trace()
        {
            if (settings().trace)
                diag("launch %s grid (%u,%u,%u) block %u: %.2f ms of emulator time", f->name.c_str(), gx, gy, gz, bx,
                     std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
    } trace{f, gx, gy, gz, bx, started};
    const int schedules = std::max(1, settings().schedules);
    std::vector<std::vector<std::uint8_t>> before, after;
    if (schedules > 1)
        for (Alloc* a : reach) before.emplace_back((std::uint8_t*)a->base, (std::uint8_t*)a->base + a->size);
    const char* names[] = {"warp 0 first", "last warp first"};
    for (int s = 0; s < schedules; s++)
    {
        if (s > 0)
        {
            if (s == 1)
                for (Alloc* a : reach) after.emplace_back((std::uint8_t*)a->base, (std::uint8_t*)a->base + a->size);
            for (std::size_t i = 0; i < reach.size(); i++) std::memcpy((void*)reach[i]->base, before[i].data(), reach[i]->size);
        }
        LaunchError e = run_grid(f, grid, block, ptrs.data(), s % 2);
        if (e.code != CUDA_SUCCESS)
        {
            set_sticky(ctx, e.code, e.message + (s > 0 ? format(" (schedule %s)", names[s % 2]) : std::string()));
            return e.code;
        }
        for (auto& [base, a] : memory().live)
        {
            const char* zone = nullptr;
            long long at = memory().broken_canary(a, &zone);
            if (at >= 0)
            {
                set_sticky(ctx, CUDA_ERROR_ILLEGAL_ADDRESS,
                           format("kernel %s wrote into the guard zone %s the allocation of %zu bytes at 0x%lx (byte %lld of the zone)", f->name.c_str(), zone,
                                  a->size, (unsigned long)a->base, at));
                return CUDA_ERROR_ILLEGAL_ADDRESS;
            }
        }
        if (s > 0)
            for (std::size_t i = 0; i < reach.size(); i++)
            {
                const auto* now = (const std::uint8_t*)reach[i]->base;
                if (std::memcmp(now, after[i].data(), reach[i]->size) == 0) continue;
                std::size_t at = 0;
                while (now[at] == after[i][at]) at++;
                set_sticky(ctx, CUDA_ERROR_LAUNCH_FAILED,
                           format("kernel %s grid (%u,%u,%u) block (%u,%u,%u): results differ between the schedules '%s' and '%s' in the allocation of %zu "
                                  "bytes at 0x%lx, first at byte %zu (0x%02x against 0x%02x): a race (a missing barrier, or two threads writing one element)",
                                  f->name.c_str(), gx, gy, gz, bx, by, bz, names[0], names[s % 2], reach[i]->size, (unsigned long)reach[i]->base, at,
                                  after[i][at], now[at]));
                return CUDA_ERROR_LAUNCH_FAILED;
            }
    }
    return CUDA_SUCCESS;
}

} // namespace emu
