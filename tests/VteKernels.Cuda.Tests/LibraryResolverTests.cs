// The native library probe: candidate order (override variables first, newest NVRTC first across all
// folders, the system's libcuda before toolkit folders, versioned /usr/local/cuda-X.Y newest first), the
// NVRTC version cap a driver imposes, and messages that say what was tried and how to fix it. Each case
// describes a machine with fake environment variables, files and loaders; the last tests probe this one.
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class LibraryResolverTests
{
    private sealed class FakeMachine
    {
        public Dictionary<string, string> Env { get; } = [];
        public HashSet<string> Files { get; } = [];
        public HashSet<string> Dirs { get; } = [];
        public Dictionary<string, string> LoadErrors { get; } = [];
        public List<string> Loaded { get; } = [];

        public LibraryProbe Probe() => new(
            v => Env.GetValueOrDefault(v),
            Files.Contains,
            Dirs.Contains,
            d => d == "/usr/local" ? Dirs.Where(x => Path.GetDirectoryName(x) == "/usr/local") : [],
            path =>
            {
                if (LoadErrors.TryGetValue(path, out var error)) throw new DllNotFoundException(error);
                if (!Files.Contains(path)) throw new DllNotFoundException($"{path}: cannot open shared object file: No such file or directory");
                Loaded.Add(path);
                return 42;
            });
    }

    [Fact]
    public void NvrtcPicksTheNewestVersionWhereverItIs()
    {
        var m = new FakeMachine();
        m.Dirs.Add("/usr/local/cuda-12.4");
        m.Files.Add("/usr/local/cuda-12.4/lib64/libnvrtc.so.12");
        m.Files.Add("/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2");
        var r = m.Probe().Probe(LibrarySpec.Nvrtc);
        Assert.True(r.Loaded);
        Assert.Equal("/usr/local/cuda-12.4/lib64/libnvrtc.so.12", r.LoadedFrom);
    }

    [Fact]
    public void ADriverCapSkipsNewerNvrtc()
    {
        var m = new FakeMachine();
        m.Files.Add("/usr/local/cuda/lib64/libnvrtc.so.13");
        m.Files.Add("/usr/local/cuda/lib64/libnvrtc.so.12");
        var probe = m.Probe();
        probe.MaxNvrtcMajor = 12;
        Assert.DoesNotContain(probe.Candidates(LibrarySpec.Nvrtc), c => c.Candidate.EndsWith(".so.13", StringComparison.Ordinal));
        Assert.Equal("/usr/local/cuda/lib64/libnvrtc.so.12", probe.Probe(LibrarySpec.Nvrtc).LoadedFrom);
    }

    [Fact]
    public void OverrideVariablesComeFirst()
    {
        var m = new FakeMachine();
        m.Env[CudaLibraries.NvrtcPathVariable] = "/opt/nv/libnvrtc.so.11.2";
        m.Env[CudaLibraries.LibDirVariable] = "/opt/cuda";
        m.Files.Add("/opt/nv/libnvrtc.so.11.2");
        m.Dirs.Add("/opt/cuda");
        var c = m.Probe().Candidates(LibrarySpec.Nvrtc);
        Assert.Equal("/opt/nv/libnvrtc.so.11.2", c[0].Candidate);
        Assert.Equal("/opt/cuda/libnvrtc.so.13", c[1].Candidate);
        Assert.Equal("/opt/nv/libnvrtc.so.11.2", m.Probe().Probe(LibrarySpec.Nvrtc).LoadedFrom);
    }

    [Fact]
    public void TheDriverComesFromTheSystemBeforeToolkitFolders()
    {
        var m = new FakeMachine();
        m.Env[CudaLibraries.LibDirVariable] = "/opt/cuda";
        m.Dirs.Add("/opt/cuda");
        var c = m.Probe().Candidates(LibrarySpec.Driver);
        Assert.Equal(("/opt/cuda/libcuda.so.1", false), c[0]);
        Assert.Equal(("libcuda.so.1", true), c[1]);
        Assert.Contains(("/usr/lib/wsl/lib/libcuda.so.1", false), c);
    }

    [Fact]
    public void VersionedCudaFoldersAreSearchedNewestFirst()
    {
        var m = new FakeMachine();
        foreach (var d in new[] { "/usr/local/cuda-11.8", "/usr/local/cuda-12.10", "/usr/local/cuda-12.4", "/usr/local/bin" }) m.Dirs.Add(d);
        m.Env["CUDA_PATH"] = "/opt/toolkit";
        var dirs = m.Probe().KnownDirectories(LibrarySpec.CublasLt);
        Assert.Equal(["/opt/toolkit/lib64", "/usr/local/cuda/lib64", "/usr/local/cuda-12.10/lib64", "/usr/local/cuda-12.4/lib64", "/usr/local/cuda-11.8/lib64"], dirs.Take(5));
    }

    [Fact]
    public void NothingFoundSaysWhatWasTriedAndHowToFix()
    {
        var m = new FakeMachine();
        var r = m.Probe().Probe(LibrarySpec.Driver);
        Assert.False(r.Loaded);
        var message = CudaLibraries.Unavailable(r).Message;
        Assert.StartsWith("CUDA is not available: the CUDA driver library (libcuda.so.1) could not be loaded", message);
        Assert.Contains("not present: libcuda.so.1 (system search)", message);
        Assert.Contains("/usr/local/cuda/lib64/libcuda.so.1", message);
        Assert.Contains(CudaLibraries.LibDirVariable, message);
        Assert.DoesNotContain('\n', message);
    }

    [Fact]
    public void AFileThatDoesNotLoadIsReportedWithTheReason()
    {
        var m = new FakeMachine();
        m.Files.Add("/usr/local/cuda/lib64/libcublasLt.so.12");
        m.LoadErrors["/usr/local/cuda/lib64/libcublasLt.so.12"] = "libcublas.so.12: cannot open shared object file";
        var r = m.Probe().Probe(LibrarySpec.CublasLt);
        Assert.False(r.Loaded);
        Assert.Contains("/usr/local/cuda/lib64/libcublasLt.so.12 did not load (libcublas.so.12: cannot open shared object file)", r.Report());
    }

    [Fact]
    public void ABadOverrideIsNamed()
    {
        var m = new FakeMachine();
        m.Env[CudaLibraries.NvrtcPathVariable] = "/nonexistent/libnvrtc.so";
        var r = m.Probe().Probe(LibrarySpec.Nvrtc);
        Assert.Contains($"{CudaLibraries.NvrtcPathVariable}=/nonexistent/libnvrtc.so is neither a file nor a folder", r.Report());
    }

    [Theory]
    [InlineData("libnvrtc.so.11.2", 11)]
    [InlineData("libnvrtc.so.13", 13)]
    [InlineData("libcublasLt.so.12", 12)]
    [InlineData("libcuda.so", null)]
    public void MajorVersionOfAFileName(string name, int? major) => Assert.Equal(major, LibrarySpec.MajorVersion(name));

    [Fact]
    public void ThisMachineEitherHasADeviceOrSaysWhyNot()
    {
        if (CudaDevice.IsAvailable(out var reason))
        {
            Assert.True(CudaDevice.Count() > 0);
            return;
        }
        Assert.StartsWith("CUDA is not available: ", reason);
        Assert.DoesNotContain('\n', reason);
    }

    [Fact]
    public void ThisMachinesNvrtcIsAVersionedLibrary()
    {
        Gpu.RequireNvrtc();
        var compiler = Kernels.NvrtcCompiler.Instance;
        Assert.Matches(@"libnvrtc\.so\.\d+(\.\d+)?$", compiler.LoadedFrom);
        Assert.True(compiler.Major >= 11, compiler.Version);
        Assert.Contains(80, compiler.SupportedArchitectures);
        Assert.Contains(90, compiler.SupportedArchitectures);
    }
}
