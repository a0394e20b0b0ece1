// How a model's weight files are brought into memory.
//
// Mapped (the default): the safetensors files are memory-mapped read-only; loading is instant and pages are
// read on first use. The hazard, shared with llama.cpp and every mmap-based runtime: if a weight file is
// truncated or rewritten in place while it is mapped, reading the lost pages raises SIGBUS, which .NET
// surfaces as an AccessViolationException that no caller can catch: the process dies. This runtime
// records each file's size, modification time and (on Linux) device and inode when it maps it, and checks
// them when a session is created and before every prefill (WeightStore.CheckUnchanged), so a file changed
// between steps is a WeightFileChangedException. A change during a step cannot be caught this way.
//
// In memory (MemoryMap = false, `--no-mmap`): every file is read into native memory at load (as many bytes
// as the files hold, read once); the files can then be changed, moved or deleted without effect.
namespace VteKernels.Formats;

/// <summary>Options for opening weight files (<see cref="WeightStore.Open"/>, <c>LlavaModel.Load</c>).</summary>
public sealed record LoadOptions
{
    /// <summary>The defaults: memory-mapped.</summary>
    public static LoadOptions Default { get; } = new();

    /// <summary>Map the files (true, the default) or read them into memory (false: immune to the files changing later, costs their size in RAM).</summary>
    public bool MemoryMap { get; init; } = true;
}
