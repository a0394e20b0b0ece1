// --no-mmap, on every command that loads a model: read the weight files into memory instead of mapping
// them, so that a file truncated or rewritten while the command runs cannot kill it (see LoadOptions).
using System.CommandLine;
using VteKernels.Formats;

namespace VteKernels.Cli;

internal static class NoMmapOption
{
    public static Option<bool> Create() => new("--no-mmap")
    {
        Description = "Read the weights into memory instead of memory-mapping them (immune to the files changing while running; costs their size in RAM)",
    };

    public static LoadOptions Read(ParseResult p, Option<bool> option) => new() { MemoryMap = !p.GetValue(option) };
}
