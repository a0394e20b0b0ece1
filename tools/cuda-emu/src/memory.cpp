// memory.cpp: device memory and the runtime's small utilities.
//
// Every device allocation is its own mapping: a PROT_NONE guard page, the data placed so that it ends on
// the next page boundary (its start 256-byte aligned, as cuMemAlloc's), and another PROT_NONE guard page.
// A kernel reading or writing past the end faults at once (beyond the < 256 bytes of slack up to the
// page, which hold a canary, as does the lead before the start); the canaries are checked after every
// launch. Fresh allocations are filled with a NaN pattern (0x7ff57ff5: a quiet NaN in f32, bf16 and f16),
// so a kernel that reads what nobody wrote computes with NaN. A freed allocation stays mapped PROT_NONE
// for a while (quarantine), so a kernel or copy that uses it afterwards is reported as a use after free.
#include "emu.hpp"

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace emu
{
std::recursive_mutex g_mu;

namespace
{
long long env_ll(const char* name, long long fallback)
{
    const char* v = std::getenv(name);
    if (v == nullptr || *v == 0) return fallback;
    char* end = nullptr;
    long long r = std::strtoll(v, &end, 10);
    return end != v ? r : fallback;
}

constexpr std::size_t kQuarantineBytes = std::size_t(512) << 20; // address space kept PROT_NONE after frees
constexpr std::size_t kQuarantineCount = 16384;
} // namespace

const Settings& settings()
{
    static const Settings s = [] {
        Settings r;
        r.schedules = (int)env_ll("VTE_CUDA_EMU_SCHEDULES", 2);
        r.workers = (int)env_ll("VTE_CUDA_EMU_THREADS", 0);
        r.memory_bytes = env_ll("VTE_CUDA_EMU_MEMORY_MIB", 8192) << 20;
        const char* q = std::getenv("VTE_CUDA_EMU_QUIET");
        r.quiet = q != nullptr && std::strcmp(q, "1") == 0;
        const char* t = std::getenv("VTE_CUDA_EMU_TRACE");
        r.trace = t != nullptr && std::strcmp(t, "1") == 0;
        return r;
    }();
    return s;
}

std::string format(const char* fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string s(n > 0 ? (std::size_t)n : 0, '\0');
    if (n > 0) std::vsnprintf(s.data(), (std::size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

void diag(const char* fmt, ...)
{
    if (settings().quiet) return;
    va_list ap;
    va_start(ap, fmt);
    std::string line = "vte-cuda-emu: ";
    char buf[4096];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    line += buf;
    line += '\n';
    // VTE_CUDA_EMU_LOG=path: appended there (test runners swallow a test host's stderr), else stderr.
    static const int fd = [] {
        const char* path = std::getenv("VTE_CUDA_EMU_LOG");
        return path != nullptr && *path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : 2;
    }();
    (void)!write(fd < 0 ? 2 : fd, line.data(), line.size());
}

// ------------------------------------------------------------------------------------------ allocations

Memory& memory()
{
    static Memory* m = new Memory();
    return *m;
}

CUresult Memory::allocate(Context* ctx, std::size_t bytes, std::uintptr_t* out)
{
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (bytes > (std::size_t)settings().memory_bytes || used + (long long)bytes > settings().memory_bytes) return CUDA_ERROR_OUT_OF_MEMORY;
    const std::size_t rounded = (bytes + 255) & ~std::size_t(255);
    const std::size_t pages = (rounded + kPage - 1) / kPage;
    const std::size_t len = (pages + 2) * kPage;
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    auto* a = new Alloc();
    a->map_base = (std::uintptr_t)m;
    a->map_len = len;
    a->rounded = rounded;
    a->size = bytes;
    a->base = a->map_base + kPage + pages * kPage - rounded;
    a->ctx = ctx;
    a->id = next_id++;
    mprotect(m, kPage, PROT_NONE);
    mprotect((void*)(a->map_base + kPage + pages * kPage), kPage, PROT_NONE);
    // Lead and slack hold the canary; the data the fresh-memory NaN.
    auto fill = [](std::uintptr_t from, std::uintptr_t to, std::uint32_t word) {
        for (std::uintptr_t p = from; p < to; p++) *(unsigned char*)p = (unsigned char)(word >> ((p & 3u) * 8));
    };
    fill(a->map_base + kPage, a->base, kGuardCanary);
    fill(a->base + a->size, a->base + a->rounded, kGuardCanary);
    std::uint32_t* w = (std::uint32_t*)a->base; // 256-byte aligned
    for (std::size_t i = 0; i < a->size / 4; i++) w[i] = kFreshPoison;
    fill(a->base + a->size / 4 * 4, a->base + a->size, kFreshPoison);
    live[a->base] = a;
    regions[a->map_base] = a;
    used += (long long)rounded;
    *out = a->base;
    return CUDA_SUCCESS;
}

CUresult Memory::free(std::uintptr_t p)
{
    auto it = live.find(p);
    if (it == live.end()) return CUDA_ERROR_INVALID_VALUE;
    Alloc* a = it->second;
    live.erase(it);
    used -= (long long)a->rounded;
    a->live = false;
    // Keep the address range reserved and inaccessible (pages returned to the system).
    mmap((void*)a->map_base, a->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    quarantine.push_back(a);
    quarantine_bytes += a->map_len;
    while (quarantine_bytes > kQuarantineBytes || quarantine.size() > kQuarantineCount)
    {
        Alloc* old = quarantine.front();
        quarantine.erase(quarantine.begin());
        quarantine_bytes -= old->map_len;
        munmap((void*)old->map_base, old->map_len);
        regions.erase(old->map_base);
        delete old;
    }
    return CUDA_SUCCESS;
}

Alloc* Memory::find(std::uintptr_t p, std::size_t bytes) const
{
    auto it = live.upper_bound(p);
    if (it == live.begin()) return nullptr;
    --it;
    Alloc* a = it->second;
    if (p < a->base || p >= a->base + a->size) return nullptr;
    if (bytes > a->base + a->size - p) return nullptr;
    return a;
}

Alloc* Memory::region_of(std::uintptr_t p) const
{
    auto it = regions.upper_bound(p);
    if (it == regions.begin()) return nullptr;
    --it;
    Alloc* a = it->second;
    return p < a->map_base + a->map_len ? a : nullptr;
}

bool Memory::is_pinned(const void* p, std::size_t bytes) const
{
    const auto q = (std::uintptr_t)p;
    auto it = pinned.upper_bound(q);
    if (it == pinned.begin()) return false;
    --it;
    return q >= it->first && q + bytes <= it->first + it->second;
}

long long Memory::broken_canary(const Alloc* a, const char** zone) const
{
    auto check = [](std::uintptr_t from, std::uintptr_t to) -> long long {
        for (std::uintptr_t p = from; p < to; p++)
            if (*(const unsigned char*)p != (unsigned char)(kGuardCanary >> ((p & 3u) * 8))) return (long long)(p - from);
        return -1;
    };
    long long at = check(a->base + a->size, a->base + a->rounded);
    if (at >= 0)
    {
        *zone = "after";
        return at;
    }
    at = check(a->map_base + kPage, a->base);
    if (at >= 0) *zone = "before";
    return at;
}

void Memory::release_all(Context* ctx)
{
    std::vector<std::uintptr_t> mine;
    for (auto& [base, a] : live)
        if (a->ctx == ctx) mine.push_back(base);
    for (auto p : mine) free(p);
}

// ------------------------------------------------------------------------------------------ conversions

float bf16_to_f32(std::uint16_t b) { return vte_emu::f32_of_bits((std::uint32_t)b << 16); }
float f16_to_f32(std::uint16_t h) { return vte_emu::cvt_f32_f16(h); }
std::uint16_t f32_to_bf16(float f) { return vte_emu::cvt_rn_bf16_f32(f); }
std::uint16_t f32_to_f16(float f) { return vte_emu::cvt_rn_f16_f32(f); }

// ------------------------------------------------------------------------------------------ files

std::string emulator_directory()
{
    Dl_info info;
    if (dladdr((void*)&emulator_directory, &info) == 0 || info.dli_fname == nullptr) return ".";
    char resolved[4096];
    std::string path = realpath(info.dli_fname, resolved) ? resolved : info.dli_fname;
    auto slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string cache_directory()
{
    if (const char* d = std::getenv("VTE_CUDA_EMU_CACHE_DIR"); d != nullptr && *d) return d;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x) return std::string(x) + "/vtekernels/cuda-emu";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : "/tmp") + "/.cache/vtekernels/cuda-emu";
}

bool read_file(const std::string& path, std::string* out)
{
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    std::string data;
    char buf[1 << 16];
    for (;;)
    {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        data.append(buf, (std::size_t)n);
    }
    close(fd);
    *out = std::move(data);
    return true;
}

static void make_dirs(const std::string& dir)
{
    for (std::size_t i = 1; i <= dir.size(); i++)
        if (i == dir.size() || dir[i] == '/') mkdir(dir.substr(0, i).c_str(), 0755);
}

bool write_file_atomic(const std::string& path, const std::string& data)
{
    auto slash = path.rfind('/');
    if (slash != std::string::npos) make_dirs(path.substr(0, slash));
    std::string tmp = format("%s.%d.%lx.tmp", path.c_str(), (int)getpid(), (unsigned long)(std::uintptr_t)&data);
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    std::size_t done = 0;
    while (done < data.size())
    {
        ssize_t n = write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
        {
            close(fd);
            unlink(tmp.c_str());
            return false;
        }
        done += (std::size_t)n;
    }
    close(fd);
    if (rename(tmp.c_str(), path.c_str()) != 0)
    {
        unlink(tmp.c_str());
        return false;
    }
    return true;
}

// ------------------------------------------------------------------------------------------ ELF

// The TLS segment's size and the sizes of the TLS symbols (the kernels' __shared__ variables, which are
// function-local statics: _ZZ<length><function>E<length><name>) by the function that declares them.
bool parse_elf(const std::string& image, ElfInfo* out)
{
    if (image.size() < sizeof(Elf64_Ehdr) || std::memcmp(image.data(), ELFMAG, SELFMAG) != 0) return false;
    const auto* eh = (const Elf64_Ehdr*)image.data();
    auto in = [&](std::size_t off, std::size_t len) { return off <= image.size() && len <= image.size() - off; };
    if (!in(eh->e_phoff, (std::size_t)eh->e_phnum * sizeof(Elf64_Phdr)) || !in(eh->e_shoff, (std::size_t)eh->e_shnum * sizeof(Elf64_Shdr))) return false;
    const auto* ph = (const Elf64_Phdr*)(image.data() + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_TLS) out->tls_size = (std::size_t)ph[i].p_memsz;
    const auto* sh = (const Elf64_Shdr*)(image.data() + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++)
    {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
        const Elf64_Shdr& strtab = sh[sh[i].sh_link];
        if (!in(sh[i].sh_offset, sh[i].sh_size) || !in(strtab.sh_offset, strtab.sh_size)) return false;
        const auto* syms = (const Elf64_Sym*)(image.data() + sh[i].sh_offset);
        const std::size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        for (std::size_t s = 0; s < count; s++)
        {
            if (ELF64_ST_TYPE(syms[s].st_info) != STT_TLS || syms[s].st_name >= strtab.sh_size) continue;
            std::string name(image.data() + strtab.sh_offset + syms[s].st_name);
            if (name.find("__vte_emu_tls_probe") != std::string::npos) continue;
            const int size = (int)syms[s].st_size;
            // _ZZ19flash_attention_bf16E2ks: the enclosing function's source name (extern "C" entries are not mangled).
            bool attributed = false;
            if (name.rfind("_ZZ", 0) == 0)
            {
                std::size_t p = 3, len = 0;
                while (p < name.size() && std::isdigit((unsigned char)name[p])) len = len * 10 + (std::size_t)(name[p++] - '0');
                if (len > 0 && p + len < name.size() && name[p + len] == 'E')
                {
                    out->tls_by_function[name.substr(p, len)] += size;
                    attributed = true;
                }
            }
            if (!attributed) out->tls_unattributed += size;
        }
    }
    return true;
}

// ------------------------------------------------------------------------------------------ SHA-256

std::string sha256_hex(const std::string& data)
{
    static const std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
        0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
        0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
        0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
        0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
        0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::string m = data;
    const std::uint64_t bits = (std::uint64_t)data.size() * 8;
    m += (char)0x80;
    while (m.size() % 64 != 56) m += (char)0;
    for (int i = 7; i >= 0; i--) m += (char)(bits >> (i * 8));
    auto rotr = [](std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
    for (std::size_t off = 0; off < m.size(); off += 64)
    {
        std::uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = (std::uint32_t)(unsigned char)m[off + 4 * i] << 24 | (std::uint32_t)(unsigned char)m[off + 4 * i + 1] << 16 |
                   (std::uint32_t)(unsigned char)m[off + 4 * i + 2] << 8 | (std::uint32_t)(unsigned char)m[off + 4 * i + 3];
        for (int i = 16; i < 64; i++)
        {
            std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++)
        {
            std::uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    std::string hex;
    for (auto v : h) hex += format("%08x", v);
    return hex;
}

} // namespace emu
