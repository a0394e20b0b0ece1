// nvrtc.cpp: the NVRTC API (nvrtc.h) for the emulator. "Compiling" a program builds its source as C++17
// with g++ against include/vte_cuda_emu.h (force-included), honouring -D/-U/-I and the target
// architecture (__CUDA_ARCH__), into a shared object; the "cubin" is that shared object behind a small
// header, which cuModuleLoadData of the driver stand-in loads. A compile error comes back as
// NVRTC_ERROR_COMPILATION with g++'s messages as the program log; an option NVRTC does not know is
// NVRTC_ERROR_INVALID_OPTION. Each __global__ function found in the source gets a descriptor (its name,
// its __launch_bounds__, its parameter sizes and a call stub) appended after the source.
//
// Built modules are cached on disk ($VTE_CUDA_EMU_CACHE_DIR, else ~/.cache/vtekernels/cuda-emu) under a
// SHA-256 of the source, the headers, the options, the emulation header and the compiler's identity, so
// every (kernel, dtype, defines) is built once per machine. The reported version, 12.99, is the
// emulator's own: no real NVRTC has it, so the backend's kernel cache never mixes emulator modules with
// real ones.
#include "emu.hpp"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <regex>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace emu;

namespace
{
enum : int
{
    NVRTC_SUCCESS = 0,
    NVRTC_ERROR_OUT_OF_MEMORY = 1,
    NVRTC_ERROR_PROGRAM_CREATION_FAILURE = 2,
    NVRTC_ERROR_INVALID_INPUT = 3,
    NVRTC_ERROR_INVALID_PROGRAM = 4,
    NVRTC_ERROR_INVALID_OPTION = 5,
    NVRTC_ERROR_COMPILATION = 6,
    NVRTC_ERROR_INTERNAL_ERROR = 11,
};

const char* const kNames[] = {"NVRTC_SUCCESS", "NVRTC_ERROR_OUT_OF_MEMORY", "NVRTC_ERROR_PROGRAM_CREATION_FAILURE", "NVRTC_ERROR_INVALID_INPUT",
                              "NVRTC_ERROR_INVALID_PROGRAM", "NVRTC_ERROR_INVALID_OPTION", "NVRTC_ERROR_COMPILATION",
                              "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE", "NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION",
                              "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION", "NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID", "NVRTC_ERROR_INTERNAL_ERROR"};

const int kArchs[] = {75, 80, 86, 89, 90};

struct Program
{
    std::string name, source;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string log, ptx, image;
    bool compiled = false, cubin = false;
};

std::mutex g_programs_mu;
std::set<Program*> g_programs;

bool live(Program* p)
{
    std::lock_guard<std::mutex> lock(g_programs_mu);
    return p != nullptr && g_programs.count(p) != 0;
}

std::string compiler()
{
    const char* c = std::getenv("VTE_CUDA_EMU_CXX");
    return c != nullptr && *c ? c : "g++";
}

// Runs argv in `dir`, stdout and stderr into `output`; returns the exit status (-1 if it did not start).
int run(const std::vector<std::string>& argv, const std::string& dir, std::string* output)
{
    std::string logPath = dir + "/__vte_emu_output.txt";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (!dir.empty()) posix_spawn_file_actions_addchdir_np(&fa, dir.c_str());
    posix_spawn_file_actions_addopen(&fa, 1, logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid;
    int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
    {
        *output = format("cannot start %s: %s", args[0], std::strerror(rc));
        return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    read_file(logPath, output);
    unlink(logPath.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

const std::string& compiler_identity()
{
    static const std::string id = [] {
        char dir[] = "/tmp/vte-cuda-emu-XXXXXX";
        std::string out;
        if (mkdtemp(dir) != nullptr)
        {
            run({compiler(), "--version"}, dir, &out);
            rmdir(dir);
        }
        return compiler() + "\n" + out;
    }();
    return id;
}

std::vector<std::string> machine_flags()
{
    std::vector<std::string> f;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f = {"-mavx2", "-mfma"};
#endif
    return f;
}

// The source without comments (string literals kept), for finding the kernels.
std::string strip_comments(const std::string& s)
{
    std::string r;
    r.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); i++)
    {
        if (s[i] == '"' || s[i] == '\'')
        {
            const char q = s[i];
            r += s[i++];
            while (i < s.size() && s[i] != q)
            {
                if (s[i] == '\\' && i + 1 < s.size()) r += s[i++];
                r += s[i++];
            }
            if (i < s.size()) r += s[i];
        }
        else if (s.compare(i, 2, "//") == 0)
        {
            while (i < s.size() && s[i] != '\n') i++;
            r += '\n';
        }
        else if (s.compare(i, 2, "/*") == 0)
        {
            i += 2;
            while (i + 1 < s.size() && s.compare(i, 2, "*/") != 0) r += s[i++] == '\n' ? "\n" : " ";
            i++;
        }
        else r += s[i];
    }
    return r;
}

// One VTE_EMU_KERNEL(name, max threads, min blocks) line per __global__ function: `extern "C" __global__ void
// __launch_bounds__(N) name(` with the name an identifier or a macro call (VTE_ENTRY(rms_norm)).
std::string kernel_descriptors(const std::string& source)
{
    static const std::regex kernel(R"(__global__\s+void\s+(?:__launch_bounds__\s*\(\s*([^()]*?)\s*\)\s*)?([A-Za-z_]\w*(?:\s*\([^()]*\))?)\s*\()");
    std::string out;
    const std::string text = strip_comments(source);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), kernel); it != std::sregex_iterator(); ++it)
    {
        std::string bound = (*it)[1].matched ? (*it)[1].str() : "0", minBlocks = "0";
        auto comma = bound.find(',');
        if (comma != std::string::npos) // (max threads, min blocks per SM[, max blocks per cluster])
        {
            minBlocks = bound.substr(comma + 1);
            bound = bound.substr(0, comma);
            auto second = minBlocks.find(',');
            if (second != std::string::npos) minBlocks = minBlocks.substr(0, second);
        }
        out += "VTE_EMU_KERNEL(" + (*it)[2].str() + ", " + bound + ", " + minBlocks + ")\n";
    }
    return out;
}

bool safe_relative(const std::string& name)
{
    return !name.empty() && name[0] != '/' && name.find("..") == std::string::npos;
}

void write_tree(const std::string& dir, const std::string& name, const std::string& text)
{
    for (std::size_t i = 0; i < name.size(); i++)
        if (name[i] == '/') mkdir((dir + "/" + name.substr(0, i)).c_str(), 0755);
    write_file_atomic(dir + "/" + name, text);
}

void remove_tree(const std::string& dir)
{
    if (DIR* d = opendir(dir.c_str()))
    {
        while (dirent* e = readdir(d))
        {
            std::string n = e->d_name;
            if (n == "." || n == "..") continue;
            std::string p = dir + "/" + n;
            struct stat st;
            if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
            else unlink(p.c_str());
        }
        closedir(d);
    }
    rmdir(dir.c_str());
}

int compile(Program* p, int count, const char* const* options)
{
    std::vector<std::string> defines, includes, extra;
    std::string std = "-std=c++17", arch;
    for (int i = 0; i < count; i++)
    {
        if (options[i] == nullptr) return NVRTC_ERROR_INVALID_INPUT;
        std::string o = options[i];
        auto value = [&](const std::string& prefix, std::string* v) {
            if (o.rfind(prefix, 0) != 0) return false;
            *v = o.substr(prefix.size());
            return true;
        };
        std::string v;
        if (value("--gpu-architecture=", &v) || value("-arch=", &v)) arch = v;
        else if ((o == "--gpu-architecture" || o == "-arch") && i + 1 < count) arch = options[++i];
        else if (value("-std=", &v) || value("--std=", &v))
        {
            if (v != "c++03" && v != "c++11" && v != "c++14" && v != "c++17" && v != "c++20")
            {
                p->log = "nvrtc: error: invalid value for -std: " + v;
                return NVRTC_ERROR_INVALID_OPTION;
            }
            std = "-std=" + (v == "c++03" ? std::string("c++11") : v);
        }
        else if (value("-D", &v) || value("--define-macro=", &v)) defines.push_back("-D" + v);
        else if (value("-U", &v) || value("--undefine-macro=", &v)) defines.push_back("-U" + v);
        else if (value("-I", &v) || value("--include-path=", &v)) includes.push_back("-I" + v);
        else if (o == "-w" || o == "--disable-warnings") extra.push_back("-w");
        else if (value("--ptxas-options=", &v) || value("-Xptxas=", &v) || value("--fmad=", &v) || value("-fmad=", &v) || value("--use_fast_math", &v) ||
                 value("-use_fast_math", &v) || o == "-lineinfo" || o == "--generate-line-info" || o == "-G" || o == "--device-debug" ||
                 o == "-default-device" || o == "--device-as-default-execution-space" || o == "-restrict" || o == "--restrict" ||
                 value("-rdc=", &v) || value("--relocatable-device-code=", &v) || value("-dopt=", &v) || value("--dopt=", &v) ||
                 value("--extra-device-vectorization", &v) || value("-ewp", &v) || value("--device-int128", &v))
        {
            // Accepted: they steer code generation for a GPU and mean nothing on the CPU.
        }
        else
        {
            p->log = "nvrtc: error: unrecognized option '" + o + "'";
            return NVRTC_ERROR_INVALID_OPTION;
        }
    }
    int archNumber = 52;
    bool cubin = false;
    if (!arch.empty())
    {
        std::smatch m;
        if (!std::regex_match(arch, m, std::regex(R"((sm|compute)_(\d+)a?)")))
        {
            p->log = "nvrtc: error: invalid value for --gpu-architecture (-arch): " + arch;
            return NVRTC_ERROR_INVALID_OPTION;
        }
        archNumber = std::stoi(m[2].str());
        cubin = m[1].str() == "sm";
        if (std::find(std::begin(kArchs), std::end(kArchs), archNumber) == std::end(kArchs))
        {
            p->log = "nvrtc: error: invalid value for --gpu-architecture (-arch): " + arch;
            return NVRTC_ERROR_INVALID_OPTION;
        }
    }
    const std::string header = emulator_directory() + "/../include/vte_cuda_emu.h";
    std::string headerText;
    if (!read_file(header, &headerText))
    {
        p->log = "vte-cuda-emu: the emulation header " + header + " is missing (rebuild with tools/cuda-emu/build.sh)";
        return NVRTC_ERROR_INTERNAL_ERROR;
    }
    const std::string name = safe_relative(p->name) ? p->name.substr(p->name.rfind('/') == std::string::npos ? 0 : p->name.rfind('/') + 1) : "program.cu";
    std::vector<std::string> argv = {compiler(), std, "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-strict-aliasing", "-ffp-contract=off",
                                     "-fno-math-errno"};
    for (auto& f : machine_flags()) argv.push_back(f);
    argv.insert(argv.end(), {"-include", header, format("-D__CUDA_ARCH__=%d", archNumber * 10)});
    argv.insert(argv.end(), defines.begin(), defines.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("-I.");
    argv.insert(argv.end(), includes.begin(), includes.end());
    argv.insert(argv.end(), {"-o", "module.so", "-x", "c++", "__vte_emu_main.cpp"});
    const std::string main = "#include \"" + name + "\"\n"
                             "extern \"C\" __attribute__((visibility(\"default\"))) const int __vte_emu_abi = ::vte_emu::kAbiVersion;\n"
                             "extern \"C\" __attribute__((visibility(\"default\"))) void* __vte_emu_tls_touch()\n"
                             "{ static thread_local char __vte_emu_tls_probe; return &__vte_emu_tls_probe; }\n" +
                             kernel_descriptors(p->source);

    std::string keyText = format("vte-cuda-emu module/%d\n", vte_emu::kAbiVersion) + headerText + "\n" + compiler_identity();
    for (auto& a : argv) keyText += "\narg " + a;
    keyText += "\nname " + name + "\nsource " + std::to_string(p->source.size()) + "\n" + p->source;
    auto headers = p->headers;
    std::sort(headers.begin(), headers.end());
    for (auto& [n, t] : headers) keyText += "\nheader " + n + " " + std::to_string(t.size()) + "\n" + t;
    keyText += "\nmain\n" + main;
    const std::string key = sha256_hex(keyText);
    const std::string cached = cache_directory() + "/" + key + ".so";

    std::string so;
    if (!read_file(cached, &so) || so.size() < 64)
    {
        char dirTemplate[] = "/tmp/vte-cuda-emu-XXXXXX";
        if (mkdtemp(dirTemplate) == nullptr) return NVRTC_ERROR_INTERNAL_ERROR;
        const std::string dir = dirTemplate;
        write_tree(dir, name, p->source);
        for (auto& [n, t] : p->headers)
            if (safe_relative(n)) write_tree(dir, n, t);
        write_tree(dir, "__vte_emu_main.cpp", main);
        std::string output;
        int rc = run(argv, dir, &output);
        if (rc == 0) read_file(dir + "/module.so", &so);
        remove_tree(dir);
        p->log = output;
        if (rc != 0 || so.empty())
        {
            if (p->log.empty()) p->log = format("%s exited with status %d", compiler().c_str(), rc);
            return NVRTC_ERROR_COMPILATION;
        }
        write_file_atomic(cached, so); // best effort: an unwritable cache only costs a rebuild
    }
    struct
    {
        char magic[8];
        std::uint32_t abi, reserved;
        std::uint64_t size;
    } h = {{'V', 'T', 'E', 'E', 'M', 'U', '0', '1'}, (std::uint32_t)vte_emu::kAbiVersion, 0, so.size()};
    p->image.assign((const char*)&h, sizeof h);
    p->image += so;
    p->ptx = "// VteKernels CPU emulator: this program was built as C++ by g++ for the CPU; there is no PTX.\n// vte-cuda-emu-module " + key + "\n";
    p->ptx.push_back('\0');
    p->cubin = cubin;
    p->compiled = true;
    return NVRTC_SUCCESS;
}
} // namespace

#define API extern "C" __attribute__((visibility("default")))

API int nvrtcVersion(int* major, int* minor)
{
    if (major == nullptr || minor == nullptr) return NVRTC_ERROR_INVALID_INPUT;
    *major = 12;
    *minor = 99;
    return NVRTC_SUCCESS;
}

API int nvrtcGetNumSupportedArchs(int* count)
{
    if (count == nullptr) return NVRTC_ERROR_INVALID_INPUT;
    *count = (int)(sizeof kArchs / sizeof kArchs[0]);
    return NVRTC_SUCCESS;
}

API int nvrtcGetSupportedArchs(int* archs)
{
    if (archs == nullptr) return NVRTC_ERROR_INVALID_INPUT;
    std::copy(std::begin(kArchs), std::end(kArchs), archs);
    return NVRTC_SUCCESS;
}

API const char* nvrtcGetErrorString(int result)
{
    if (result < 0 || result >= (int)(sizeof kNames / sizeof kNames[0])) return "NVRTC_ERROR unknown";
    return kNames[result];
}

API int nvrtcCreateProgram(void** program, const char* source, const char* name, int numHeaders, const char* const* headers, const char* const* includeNames)
{
    if (program == nullptr || source == nullptr || numHeaders < 0) return NVRTC_ERROR_INVALID_INPUT;
    if (numHeaders > 0 && (headers == nullptr || includeNames == nullptr)) return NVRTC_ERROR_INVALID_INPUT;
    auto* p = new Program();
    p->source = source;
    p->name = name != nullptr ? name : "default_program";
    for (int i = 0; i < numHeaders; i++)
    {
        if (headers[i] == nullptr || includeNames[i] == nullptr)
        {
            delete p;
            return NVRTC_ERROR_INVALID_INPUT;
        }
        p->headers.emplace_back(includeNames[i], headers[i]);
    }
    std::lock_guard<std::mutex> lock(g_programs_mu);
    g_programs.insert(p);
    *program = p;
    return NVRTC_SUCCESS;
}

API int nvrtcDestroyProgram(void** program)
{
    if (program == nullptr || !live(static_cast<Program*>(*program))) return NVRTC_ERROR_INVALID_PROGRAM;
    auto* p = static_cast<Program*>(*program);
    {
        std::lock_guard<std::mutex> lock(g_programs_mu);
        g_programs.erase(p);
    }
    delete p;
    *program = nullptr;
    return NVRTC_SUCCESS;
}

API int nvrtcCompileProgram(void* program, int numOptions, const char* const* options)
{
    auto* p = static_cast<Program*>(program);
    if (!live(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (numOptions < 0 || (numOptions > 0 && options == nullptr)) return NVRTC_ERROR_INVALID_INPUT;
    p->compiled = false;
    p->log.clear();
    return compile(p, numOptions, options);
}

API int nvrtcGetPTXSize(void* program, std::size_t* size)
{
    auto* p = static_cast<Program*>(program);
    if (!live(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (size == nullptr || !p->compiled) return NVRTC_ERROR_INVALID_INPUT;
    *size = p->ptx.size();
    return NVRTC_SUCCESS;
}

API int nvrtcGetPTX(void* program, char* ptx)
{
    auto* p = static_cast<Program*>(program);
    if (!live(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (ptx == nullptr || !p->compiled) return NVRTC_ERROR_INVALID_INPUT;
    std::memcpy(ptx, p->ptx.data(), p->ptx.size());
    return NVRTC_SUCCESS;
}

API int nvrtcGetCUBINSize(void* program, std::size_t* size)
{
    auto* p = static_cast<Program*>(program);
    if (!live(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (size == nullptr || !p->compiled) return NVRTC_ERROR_INVALID_INPUT;
    *size = p->cubin ? p->image.size() : 0; // a virtual architecture (compute_XX) gives no cubin
    return NVRTC_SUCCESS;
}

API int nvrtcGetCUBIN(void* program, char* cubin)
{
    auto* p = static_cast<Program*>(program);
    if (!live(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (cubin == nullptr || !p->compiled || !p->cubin) return NVRTC_ERROR_INVALID_INPUT;
    std::memcpy(cubin, p->image.data(), p->image.size());
    return NVRTC_SUCCESS;
}

API int nvrtcGetProgramLogSize(void* program, std::size_t* size)
{
    auto* p = static_cast<Program*>(program);
    if (!live(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (size == nullptr) return NVRTC_ERROR_INVALID_INPUT;
    *size = p->log.size() + 1;
    return NVRTC_SUCCESS;
}

API int nvrtcGetProgramLog(void* program, char* log)
{
    auto* p = static_cast<Program*>(program);
    if (!live(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (log == nullptr) return NVRTC_ERROR_INVALID_INPUT;
    std::memcpy(log, p->log.c_str(), p->log.size() + 1);
    return NVRTC_SUCCESS;
}
