// The options that choose and configure the backend, shared by every command that runs a model:
// --device cpu|cuda, and for the CPU --threads N, --kv-cache, --quantize, --exact-quantized-prefill and --mapped-weights
// (CpuBackendOptions). A CPU-only option given with --device cuda is a usage error, not silently ignored.
using System.CommandLine;
using VteKernels.Backends;
using VteKernels.Backends.Cpu;

namespace VteKernels.Cli;

internal sealed class BackendOptions
{
    private readonly Option<string> _device = new("--device") { Description = "Backend: cpu, or cuda (the first visible GPU; CUDA_VISIBLE_DEVICES picks it)", DefaultValueFactory = _ => "cpu" };
    private readonly Option<int?> _threads = new("--threads") { Description = "CPU threads for every parallel op (default: all cores; more counts as all). Results are the same for any count" };
    private readonly Option<string> _kvCache = new("--kv-cache") { Description = "CPU KV cache storage: auto (the model's own width: bf16 or f16 for a 16-bit model, else f32), f32, bf16 or f16", DefaultValueFactory = _ => "auto" };
    private readonly Option<string> _quantize = new("--quantize") { Description = "CPU: quantize the language model's matrices at load to q8_0 or q4_0 (decode then uses int8 dot products)" };
    private readonly Option<bool> _exactPrefill = new("--exact-quantized-prefill") { Description = "CPU, q8_0/q4_0 matrices: prefill with the weights dequantized exactly and x in float32 instead of x quantized to int8 as in decode (slower)" };
    private readonly Option<bool> _mapped = new("--mapped-weights") { Description = "CPU: read 16-bit matrices from the memory-mapped file instead of copying them into huge pages at load (less memory, slower decode)" };

    public BackendOptions()
    {
        _device.AcceptOnlyFromAmong("cpu", "cuda");
        _kvCache.AcceptOnlyFromAmong("auto", "f32", "bf16", "f16");
        _quantize.AcceptOnlyFromAmong("q8_0", "q4_0");
    }

    public void AddTo(Command cmd)
    {
        cmd.Add(_device);
        cmd.Add(_threads);
        cmd.Add(_kvCache);
        cmd.Add(_quantize);
        cmd.Add(_exactPrefill);
        cmd.Add(_mapped);
    }

    /// <summary>The CPU options the command line asks for.</summary>
    public CpuBackendOptions Cpu(ParseResult p)
    {
        int threads = p.GetValue(_threads) ?? 0;
        if (threads < 0) throw new UsageException($"--threads must be 0 (all cores) or positive, got {threads}");
        return new CpuBackendOptions
        {
            Threads = threads,
            KvCache = p.GetValue(_kvCache) is "auto" or null ? null : DTypes.Parse(p.GetValue(_kvCache)!),
            Quantize = p.GetValue(_quantize) is string q ? DTypes.Parse(q) : null,
            HugePages = !p.GetValue(_mapped),
            ExactQuantizedPrefill = p.GetValue(_exactPrefill),
        };
    }

    /// <summary>The backend the command line asks for.</summary>
    public IBackend Create(ParseResult p)
    {
        var device = p.GetValue(_device)!;
        var cpu = Cpu(p);
        if (device == "cpu") return new CpuBackend(cpu);
        foreach (var (given, name) in new[] { (p.GetValue(_threads) is not null, "--threads"), (cpu.KvCache is not null, "--kv-cache"), (cpu.Quantize is not null, "--quantize"), (p.GetValue(_mapped), "--mapped-weights"), (cpu.ExactQuantizedPrefill, "--exact-quantized-prefill") })
            if (given) throw new UsageException($"{name} applies to --device cpu only");
        // No fallback to the CPU: a machine without a usable GPU gets CudaUnavailableException, one "error:" line.
        return device == "cuda" ? new Cuda.CudaBackend() : throw new UsageException($"unknown device '{device}' (expected cpu or cuda)");
    }
}
