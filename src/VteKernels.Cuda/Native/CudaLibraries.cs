// Finding and loading the native CUDA libraries. [LibraryImport] declarations name logical libraries
// (Interop.Libraries); a DllImportResolver registered when this assembly loads maps each to a real file:
//
// * the driver, libcuda.so.1: VTE_CUDA_LIB_DIR, then the system's search (ld.so.cache, LD_LIBRARY_PATH: the
//   installed driver), then the known folders;
// * NVRTC: the newest of libnvrtc.so.13, .12, .11.2 found, VTE_NVRTC_PATH (a file or a folder) and
//   VTE_CUDA_LIB_DIR first; versions newer than the driver can load are skipped once a driver is known
//   (MaxNvrtcMajor), since their output would not load;
// * cuBLASLt: libcublasLt.so.13, .12, .11, VTE_CUDA_LIB_DIR first.
// Known folders: $CUDA_PATH/lib64, $CUDA_HOME/lib64, /usr/local/cuda/lib64, /usr/local/cuda-X.Y/lib64 (newest
// first), /usr/lib/<arch>-linux-gnu, /usr/lib64, and for the driver /usr/lib/wsl/lib. Callers first call
// Require, which throws a CudaUnavailableException saying everything that was tried when nothing loads.
// LibraryProbe takes the environment and the file system as functions so tests can describe any machine.
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

/// <summary>The native libraries of the CUDA backend.</summary>
internal enum CudaLibrary
{
    /// <summary>libcuda.so.1.</summary>
    Driver,
    /// <summary>libnvrtc.so.*.</summary>
    Nvrtc,
    /// <summary>libcublasLt.so.*.</summary>
    CublasLt,
}

/// <summary>What to look for: file names (newest first), an environment variable naming a file or folder, and advice.</summary>
internal sealed record LibrarySpec(CudaLibrary Library, string LogicalName, string Description, IReadOnlyList<string> FileNames,
    string? PathVariable, string Advice)
{
    public static readonly LibrarySpec Driver = new(CudaLibrary.Driver, Interop.Libraries.CudaDriver, "the CUDA driver library",
        ["libcuda.so.1"], null,
        $"install the NVIDIA driver, or set {CudaLibraries.LibDirVariable} to the folder holding libcuda.so.1");

    public static readonly LibrarySpec Nvrtc = new(CudaLibrary.Nvrtc, Interop.Libraries.Nvrtc, "the CUDA runtime compiler NVRTC",
        ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"], CudaLibraries.NvrtcPathVariable,
        $"install NVRTC (CUDA toolkit; on Debian `apt-get install libnvrtc11.2` from non-free), or set {CudaLibraries.NvrtcPathVariable} to libnvrtc.so.*");

    public static readonly LibrarySpec CublasLt = new(CudaLibrary.CublasLt, Interop.Libraries.CublasLt, "cuBLASLt",
        ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"], null,
        $"install cuBLAS from the CUDA toolkit, or set {CudaLibraries.LibDirVariable} to the folder holding libcublasLt.so.*");

    public static LibrarySpec For(CudaLibrary library) => library switch
    {
        CudaLibrary.Driver => Driver,
        CudaLibrary.Nvrtc => Nvrtc,
        CudaLibrary.CublasLt => CublasLt,
        _ => throw new ArgumentOutOfRangeException(nameof(library)),
    };

    /// <summary>The CUDA major version a versioned file name belongs to ("libnvrtc.so.11.2" → 11), or null.</summary>
    public static int? MajorVersion(string fileName)
    {
        int at = fileName.IndexOf(".so.", StringComparison.Ordinal);
        if (at < 0) return null;
        var rest = fileName[(at + 4)..];
        int dot = rest.IndexOf('.');
        return int.TryParse(dot < 0 ? rest : rest[..dot], out int major) ? major : null;
    }
}

/// <summary>One place a library was looked for, and what happened.</summary>
internal sealed record ProbeAttempt(string Candidate, bool Found, string? Error);

/// <summary>The outcome of probing for one library.</summary>
internal sealed record ProbeResult(LibrarySpec Spec, nint Handle, string? LoadedFrom, IReadOnlyList<ProbeAttempt> Attempts, IReadOnlyList<string> Notes)
{
    public bool Loaded => Handle != 0;

    /// <summary>A one-paragraph account of what was tried, for the exception message.</summary>
    public string Report()
    {
        var parts = new List<string>(Notes);
        var missing = Attempts.Where(a => !a.Found).Select(a => a.Candidate).ToList();
        if (missing.Count > 0) parts.Add($"not present: {string.Join(", ", missing)}");
        foreach (var a in Attempts.Where(a => a.Found && a.Error is not null))
            parts.Add($"{a.Candidate} did not load ({OneLine(a.Error!)})");
        return string.Join("; ", parts);
    }

    private static string OneLine(string s) => string.Join(' ', s.Split((char[])['\n', '\r'], StringSplitOptions.RemoveEmptyEntries)).Trim();
}

/// <summary>Looks for one library in a described environment.</summary>
internal sealed class LibraryProbe(
    Func<string, string?> getEnvironment,
    Func<string, bool> fileExists,
    Func<string, bool> directoryExists,
    Func<string, IEnumerable<string>> subdirectories,
    Func<string, nint> load)
{
    /// <summary>The real machine: environment variables, the file system, NativeLibrary.Load.</summary>
    public static LibraryProbe ForThisMachine() => new(
        Environment.GetEnvironmentVariable,
        File.Exists,
        Directory.Exists,
        d => Directory.Exists(d) ? Directory.EnumerateDirectories(d) : [],
        NativeLibrary.Load);

    /// <summary>When set, NVRTC files of a newer CUDA major version are skipped (their output would not load on the driver).</summary>
    public int? MaxNvrtcMajor { get; set; }

    /// <summary>The folders searched after the override variables, in order.</summary>
    public IReadOnlyList<string> KnownDirectories(LibrarySpec spec)
    {
        var dirs = new List<string>();
        foreach (var variable in new[] { "CUDA_PATH", "CUDA_HOME" })
            if (getEnvironment(variable) is { Length: > 0 } root) dirs.Add(Path.Combine(root, "lib64"));
        dirs.Add("/usr/local/cuda/lib64");
        var versioned = subdirectories("/usr/local")
            .Select(d => (Dir: d, Version: ParseCudaFolderVersion(Path.GetFileName(d))))
            .Where(x => x.Version is not null)
            .OrderByDescending(x => x.Version)
            .Select(x => Path.Combine(x.Dir, "lib64"));
        dirs.AddRange(versioned);
        var triplet = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
        dirs.Add($"/usr/lib/{triplet}");
        dirs.Add("/usr/lib64");
        if (spec.Library == CudaLibrary.Driver) dirs.Add("/usr/lib/wsl/lib");
        return dirs.Distinct(StringComparer.Ordinal).ToList();
    }

    private static Version? ParseCudaFolderVersion(string name) =>
        name.StartsWith("cuda-", StringComparison.Ordinal) && Version.TryParse(name[5..], out var v) ? v : null;

    private IEnumerable<string> AllowedNames(LibrarySpec spec) =>
        spec.Library == CudaLibrary.Nvrtc && MaxNvrtcMajor is int max
            ? spec.FileNames.Where(f => LibrarySpec.MajorVersion(f) is not int m || m <= max)
            : spec.FileNames;

    /// <summary>Every candidate in order: (path or bare name, true for a bare name left to the system's search).</summary>
    public IReadOnlyList<(string Candidate, bool Bare)> Candidates(LibrarySpec spec, List<string>? notes = null)
    {
        var list = new List<(string, bool)>();
        var names = AllowedNames(spec).ToList();
        if (spec.PathVariable is { } pathVar && getEnvironment(pathVar) is { Length: > 0 } given)
        {
            if (fileExists(given)) list.Add((given, false));
            else if (directoryExists(given)) list.AddRange(names.Select(n => (Path.Combine(given, n), false)));
            else notes?.Add($"{pathVar}={given} is neither a file nor a folder");
        }
        if (getEnvironment(CudaLibraries.LibDirVariable) is { Length: > 0 } libDir)
        {
            if (directoryExists(libDir)) list.AddRange(names.Select(n => (Path.Combine(libDir, n), false)));
            else notes?.Add($"{CudaLibraries.LibDirVariable}={libDir} is not a folder");
        }
        var dirs = KnownDirectories(spec);
        if (spec.Library == CudaLibrary.Driver)
        {
            // The installed driver is the right libcuda; toolkit folders only hold stubs or compat copies.
            list.AddRange(names.Select(n => (n, true)));
            foreach (var n in names) list.AddRange(dirs.Select(d => (Path.Combine(d, n), false)));
        }
        else
        {
            // Newest version first, wherever it is.
            foreach (var n in names)
            {
                list.AddRange(dirs.Select(d => (Path.Combine(d, n), false)));
                list.Add((n, true));
            }
        }
        return list.Distinct().ToList();
    }

    /// <summary>Tries the candidates in order and returns the first that loads, with the record of every attempt.</summary>
    public ProbeResult Probe(LibrarySpec spec)
    {
        var notes = new List<string>();
        if (!OperatingSystem.IsLinux()) notes.Add($"only Linux is supported (this is {RuntimeInformation.OSDescription})");
        var attempts = new List<ProbeAttempt>();
        foreach (var (candidate, bare) in Candidates(spec, notes))
        {
            if (!bare && !fileExists(candidate))
            {
                attempts.Add(new ProbeAttempt(candidate, false, null));
                continue;
            }
            try
            {
                var handle = load(candidate);
                attempts.Add(new ProbeAttempt(candidate, true, null));
                return new ProbeResult(spec, handle, candidate, attempts, notes);
            }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or ArgumentException)
            {
                // A bare name the system cannot find is "not present" rather than a load failure.
                bool absent = bare && e.Message.Contains("No such file", StringComparison.OrdinalIgnoreCase);
                attempts.Add(new ProbeAttempt(bare ? $"{candidate} (system search)" : candidate, !absent, absent ? null : e.Message));
            }
        }
        return new ProbeResult(spec, 0, null, attempts, notes);
    }
}

/// <summary>The process-wide resolver of the CUDA libraries.</summary>
internal static class CudaLibraries
{
    /// <summary>Environment variable: a folder to search first for every CUDA library.</summary>
    public const string LibDirVariable = "VTE_CUDA_LIB_DIR";

    /// <summary>Environment variable: the NVRTC library file (or its folder) to use.</summary>
    public const string NvrtcPathVariable = "VTE_NVRTC_PATH";

    private static readonly object Gate = new();
    private static readonly Dictionary<CudaLibrary, ProbeResult> Results = [];
    private static readonly LibraryProbe Probe = LibraryProbe.ForThisMachine();

    [ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "Registering this assembly's DllImportResolver is what module initializers are for.")]
    internal static void Register() => NativeLibrary.SetDllImportResolver(typeof(CudaLibraries).Assembly, Resolve);

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        foreach (var spec in new[] { LibrarySpec.Driver, LibrarySpec.Nvrtc, LibrarySpec.CublasLt })
            if (name == spec.LogicalName) return Get(spec.Library).Handle;
        return 0;
    }

    /// <summary>Limits NVRTC to versions the driver can load (call before NVRTC's first use; ignored after it).</summary>
    public static void LimitNvrtcMajor(int driverCudaMajor)
    {
        lock (Gate) Probe.MaxNvrtcMajor = driverCudaMajor;
    }

    /// <summary>The probe result for <paramref name="library"/> (probed once per process).</summary>
    public static ProbeResult Get(CudaLibrary library)
    {
        lock (Gate)
        {
            if (!Results.TryGetValue(library, out var r))
            {
                r = Probe.Probe(LibrarySpec.For(library));
                Results[library] = r;
            }
            return r;
        }
    }

    /// <summary>Loads <paramref name="library"/> or throws saying what was tried.</summary>
    /// <exception cref="CudaUnavailableException">No candidate loaded.</exception>
    public static ProbeResult Require(CudaLibrary library)
    {
        var r = Get(library);
        if (!r.Loaded) throw Unavailable(r);
        return r;
    }

    /// <summary>The exception for a library that did not load.</summary>
    public static CudaUnavailableException Unavailable(ProbeResult r) =>
        new($"{r.Spec.Description} ({string.Join(" / ", r.Spec.FileNames)}) could not be loaded; {r.Report()}. To fix: {r.Spec.Advice}.");
}
