// The kernel sources and headers embedded in this assembly (kernels/*.cu, kernels/*.cuh, native/*.h, under
// those logical names), so that the runtime, the tests and the benchmarks compile the very same text.
using System.Reflection;

namespace VteKernels.Cuda.Kernels;

/// <summary>Embedded kernel sources.</summary>
internal static class KernelSources
{
    private static readonly Assembly Self = typeof(KernelSources).Assembly;

    /// <summary>Logical names of the kernel sources, e.g. "kernels/rms_norm.cu", sorted.</summary>
    public static IReadOnlyList<string> KernelFiles { get; } =
        Self.GetManifestResourceNames().Where(n => n.StartsWith("kernels/", StringComparison.Ordinal) && n.EndsWith(".cu", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal).ToArray();

    /// <summary>Every header a kernel may include, by include name ("common.cuh", "vte_params.h"), sorted by name.</summary>
    public static IReadOnlyList<(string Name, string Text)> Headers { get; } =
        Self.GetManifestResourceNames().Where(n => n.EndsWith(".cuh", StringComparison.Ordinal) || n.EndsWith(".h", StringComparison.Ordinal))
            .Select(n => (Name: n[(n.IndexOf('/') + 1)..], Text: Read(n)))
            .OrderBy(h => h.Name, StringComparer.Ordinal).ToArray();

    /// <summary>The text of kernels/<paramref name="file"/>.</summary>
    /// <exception cref="ArgumentException">No such kernel source is embedded.</exception>
    public static string Kernel(string file) => Read($"kernels/{file}");

    /// <summary>The text of an embedded resource by logical name.</summary>
    public static string Read(string logicalName)
    {
        using var s = Self.GetManifestResourceStream(logicalName) ?? throw new ArgumentException($"no embedded kernel source '{logicalName}'", nameof(logicalName));
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }
}
