// Every kernel source compiles with NVRTC (CUDA 11.8's on a machine without a GPU, whatever NVRTC is found
// elsewhere) in every dtype specialisation for sm_80 and sm_90, to PTX that declares every expected entry
// and through ptxas to a cubin, with a clean log (no warning) and no register spills. Also: no kernel
// escapes the catalog, no kernel includes a CUDA header, and failures carry NVRTC's log. Not GPU-gated:
// skipped only where NVRTC cannot be loaded.
using System.Text.RegularExpressions;
using VteKernels.Cuda.Kernels;
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class KernelPtxTests
{
    public static TheoryData<string, DType, int> Builds()
    {
        var data = new TheoryData<string, DType, int>();
        foreach (var spec in KernelCatalog.All)
            foreach (var dtype in KernelCatalog.DTypes)
                foreach (var arch in new[] { 80, 90 })
                    data.Add(spec.File, dtype, arch);
        return data;
    }

    [Theory, MemberData(nameof(Builds))]
    public void KernelCompilesWithEveryEntryAndNoSpills(string file, DType dtype, int arch)
    {
        Gpu.RequireRealNvrtc();
        var spec = KernelCatalog.All.Single(s => s.File == file);
        var options = KernelCatalog.Options(dtype, $"sm_{arch}").Append("--ptxas-options=-v").ToArray();

        var compiled = NvrtcCompiler.Instance.Compile(file, KernelSources.Kernel(file), KernelSources.Headers, options, cubin: true);

        Assert.Contains($".target sm_{arch}", compiled.Ptx);
        var declared = Regex.Matches(compiled.Ptx, @"\.visible \.entry (\w+)\(").Select(m => m.Groups[1].Value).Order().ToArray();
        var expected = spec.Entries.Select(e => KernelSpec.EntryName(e, dtype)).Order().ToArray();
        Assert.Equal(expected, declared);
        Assert.True(compiled.Image.Length > 0, "empty cubin");
        // With -v, ptxas reports each entry's registers and spills; anything else in the log is a warning.
        var lines = compiled.Log.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var warnings = lines.Where(l => !l.StartsWith("ptxas", StringComparison.Ordinal)).ToArray();
        Assert.True(warnings.Length == 0, $"{file} {dtype} sm_{arch}: NVRTC {NvrtcCompiler.Instance.Version} log:\n{compiled.Log}");
        var spills = lines.Where(l => l.Contains("spill stores", StringComparison.Ordinal) && !l.Contains(" 0 bytes spill stores", StringComparison.Ordinal)).ToArray();
        Assert.True(spills.Length == 0, $"{file} {dtype} sm_{arch} spills registers:\n{compiled.Log}");
    }

    [Fact]
    public void EveryKernelSourceIsInTheCatalog()
    {
        var embedded = KernelSources.KernelFiles.Select(Path.GetFileName).Order().ToArray();
        var catalog = KernelCatalog.All.Select(s => s.File).Order().ToArray();
        Assert.Equal(embedded, catalog);
    }

    [Fact]
    public void EmbeddedSourcesAreTheFilesInTheRepository()
    {
        var root = RepositoryRoot();
        foreach (var spec in KernelCatalog.All)
            Assert.Equal(File.ReadAllText(Path.Combine(root, "kernels", spec.File)), KernelSources.Kernel(spec.File));
        foreach (var (name, text) in KernelSources.Headers)
        {
            var path = new[] { Path.Combine(root, "kernels", name), Path.Combine(root, "native", name) }.Single(File.Exists);
            Assert.Equal(File.ReadAllText(path), text);
        }
    }

    [Fact]
    public void LaunchBlockSizesAreTheSourcesThreadConstants()
    {
        foreach (var spec in KernelCatalog.All)
        {
            var source = KernelSources.Kernel(spec.File);
            var constant = Assert.Single(Regex.Matches(source, @"constexpr int (\w+_THREADS) = (\d+);"));
            Assert.True(int.Parse(constant.Groups[2].Value) == spec.Threads, $"{spec.File}: {constant.Value} but the catalog launches {spec.Threads}");
            // __launch_bounds__(THREADS) or (THREADS, MIN_BLOCKS): the first argument is always the constant.
            var all = Regex.Matches(source, @"__launch_bounds__\(").Count;
            var bounds = Regex.Matches(source, @"__launch_bounds__\((\w+)(?:\s*,\s*\w+)?\)").Select(m => m.Groups[1].Value).ToArray();
            Assert.True(bounds.Length == all, $"{spec.File}: a __launch_bounds__ that is not (THREADS) or (THREADS, MIN_BLOCKS)");
            Assert.All(bounds, b => Assert.Equal(constant.Groups[1].Value, b));
        }
    }

    [Fact]
    public void KernelsIncludeNoCudaHeader()
    {
        var allowed = KernelSources.Headers.Select(h => h.Name).ToHashSet();
        foreach (var text in KernelCatalog.All.Select(s => KernelSources.Kernel(s.File)).Concat(KernelSources.Headers.Select(h => h.Text)))
            foreach (Match m in Regex.Matches(text, @"#\s*include\s*[<""]([^>""]+)[>""]"))
                Assert.Contains(m.Groups[1].Value, allowed);
    }

    [Fact]
    public void ABuildWithoutADTypeFailsWithTheReasonInTheLog()
    {
        Gpu.RequireNvrtc();
        var e = Assert.Throws<CudaException>(() =>
            NvrtcCompiler.Instance.Compile("rms_norm.cu", KernelSources.Kernel("rms_norm.cu"), KernelSources.Headers, ["--gpu-architecture=compute_80", "-std=c++17"], cubin: false));
        Assert.Equal("nvrtcCompileProgram", e.Api);
        Assert.Equal("NVRTC_ERROR_COMPILATION", e.CodeName);
        Assert.Contains("VTE_DTYPE_BF16", e.CompileLog);
        Assert.Contains("rms_norm.cu", e.Message);
    }

    [Fact]
    public void TargetIsTheDevicesArchitectureOrTheNewestVirtualOneBelowIt()
    {
        Gpu.RequireNvrtc();
        var nvrtc = NvrtcCompiler.Instance;
        int newest = nvrtc.SupportedArchitectures[^1];
        Assert.Equal(($"sm_{newest}", true), nvrtc.TargetFor(newest));
        Assert.Equal(($"compute_{newest}", false), nvrtc.TargetFor(newest + 100));
        Assert.Throws<CudaUnavailableException>(() => nvrtc.TargetFor(nvrtc.SupportedArchitectures[0] - 1));
    }

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "VteKernels.sln"))) return dir.FullName;
        throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }
}
