// Loading kernels into a context: one module per (source file, dtype), compiled at first use. Images come
// from, in order: a fatbin built ahead of time by CMakeLists.txt with nvcc ($VTE_KERNEL_FATBIN_DIR/<dtype>/
// <name>.fatbin, when that variable is set), the disk cache, or NVRTC (then stored in the cache). A cached
// image the driver rejects is compiled afresh once. Launch passes a parameter struct by value as the
// kernel's single argument.
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda.Kernels;

/// <summary>Where the modules a loader holds came from.</summary>
public readonly record struct KernelLoadStats(int Compiled, int CacheHits, int Fatbins);

/// <summary>The kernel modules of one context.</summary>
internal sealed class KernelLoader : IDisposable
{
    /// <summary>Environment variable: the install folder of the ahead-of-time fatbins (holding bf16/, f16/, f32/).</summary>
    public const string FatbinDirVariable = "VTE_KERNEL_FATBIN_DIR";

    private sealed class LoadedModule(CudaModuleHandle handle)
    {
        private readonly Dictionary<string, nint> _functions = [];

        public CudaModuleHandle Handle { get; } = handle;

        public nint Function(string name)
        {
            if (!_functions.TryGetValue(name, out var f))
            {
                CudaCheck.Driver(cuModuleGetFunction(out f, Handle.DangerousGetHandle(), name), nameof(cuModuleGetFunction), name);
                _functions[name] = f;
            }
            return f;
        }
    }

    private readonly CudaContext _context;
    private readonly KernelCache? _cache;
    private readonly string? _fatbinDir;
    private readonly IReadOnlyDictionary<string, string>? _sources;
    private readonly Dictionary<(string File, DType DType), LoadedModule> _modules = [];
    private int _compiled, _cacheHits, _fatbins;

    public KernelLoader(CudaContext context, KernelCache? cache, string? fatbinDir, IReadOnlyDictionary<string, string>? sourceOverrides = null)
    {
        _sources = sourceOverrides;
        _context = context;
        _cache = cache;
        _fatbinDir = string.IsNullOrEmpty(fatbinDir) ? null : fatbinDir;
    }

    public KernelLoadStats Stats => new(_compiled, _cacheHits, _fatbins);

    /// <summary>The kernel files loaded so far (each in some dtype).</summary>
    public IReadOnlyCollection<string> LoadedFiles => _modules.Keys.Select(k => k.File).ToHashSet();

    /// <summary>The CUfunction of <paramref name="entry"/> (without suffix) of <paramref name="spec"/> in the <paramref name="dtype"/> build.</summary>
    public nint Function(KernelSpec spec, DType dtype, string entry)
    {
        if (!_modules.TryGetValue((spec.File, dtype), out var module))
        {
            _context.MakeCurrent();
            module = Load(spec, dtype);
            _modules[(spec.File, dtype)] = module;
        }
        return module.Function(KernelSpec.EntryName(entry, dtype));
    }

    /// <summary>Loads every kernel of the <paramref name="dtype"/> build now (so no compile happens inside a timed region).</summary>
    public void LoadAll(DType dtype)
    {
        foreach (var spec in KernelCatalog.All)
            foreach (var entry in spec.Entries)
                Function(spec, dtype, entry);
    }

    private LoadedModule Load(KernelSpec spec, DType dtype)
    {
        string what = $"{spec.File} [{KernelCatalog.Suffix(dtype)}]";
        if (_fatbinDir is not null)
        {
            var stem = Path.GetFileNameWithoutExtension(spec.File);
            var dir = Path.Combine(_fatbinDir, KernelCatalog.Suffix(dtype));
            foreach (var path in new[] { Path.Combine(dir, $"{stem}.fatbin"), Path.Combine(dir, $"{spec.File}.fatbin") })
            {
                if (!File.Exists(path)) continue;
                _fatbins++;
                return new LoadedModule(CudaModuleHandle.Load(_context.Handle, File.ReadAllBytes(path), $"{what} from {path}"));
            }
            throw new CudaUnavailableException($"{FatbinDirVariable}={_fatbinDir} holds no {KernelCatalog.Suffix(dtype)}/{stem}.fatbin; build it with CMakeLists.txt or unset the variable");
        }

        var compiler = NvrtcCompiler.Instance;
        var (target, cubin) = compiler.TargetFor(_context.Device.ArchitectureNumber);
        var options = KernelCatalog.Options(dtype, target);
        var source = _sources is not null && _sources.TryGetValue(spec.File, out var replaced) ? replaced : KernelSources.Kernel(spec.File);
        var key = KernelCache.Key(spec.File, source, KernelSources.Headers, options, compiler.Version, cubin);
        if (_cache?.TryRead(key) is { } cached)
        {
            try
            {
                var m = new LoadedModule(CudaModuleHandle.Load(_context.Handle, cached, $"{what} from the kernel cache"));
                _cacheHits++;
                return m;
            }
            catch (CudaException) { } // a stale or foreign image: compile afresh below
        }
        var compiled = compiler.Compile(spec.File, source, KernelSources.Headers, options, cubin);
        _compiled++;
        _cache?.Write(key, compiled.Image);
        return new LoadedModule(CudaModuleHandle.Load(_context.Handle, compiled.Image, $"{what} compiled by NVRTC {compiler.Version} for {target}"));
    }

    public void Dispose()
    {
        foreach (var m in _modules.Values) m.Handle.Dispose();
        _modules.Clear();
    }
}

/// <summary>Kernel launches with one by-value parameter struct.</summary>
internal static class KernelLaunch
{
    /// <summary>
    /// How many blocks of <paramref name="blockSize"/> threads of <paramref name="function"/> one SM holds at once
    /// (cuOccupancyMaxActiveBlocksPerMultiprocessor: from the kernel's registers and shared memory, plus
    /// <paramref name="dynamicSharedBytes"/>); 0 when such a block cannot launch at all.
    /// </summary>
    /// <exception cref="CudaException">The driver call failed.</exception>
    public static int MaxActiveBlocksPerMultiprocessor(nint function, string name, int blockSize, long dynamicSharedBytes = 0)
    {
        CudaCheck.Driver(cuOccupancyMaxActiveBlocksPerMultiprocessor(out int blocks, function, blockSize, (nuint)dynamicSharedBytes),
            nameof(cuOccupancyMaxActiveBlocksPerMultiprocessor), name);
        return blocks;
    }

    /// <summary>Queues <paramref name="function"/> on <paramref name="stream"/> with <paramref name="args"/> as its only parameter.</summary>
    public static unsafe void Launch<TParams>(nint function, string name, uint gridX, uint gridY, uint blockX, nint stream, TParams args)
        where TParams : unmanaged
    {
        if (gridX == 0 || gridY == 0) return; // nothing to do (and a zero grid is an error)
        void* p = &args;
        CudaCheck.Driver(cuLaunchKernel(function, gridX, gridY, 1, blockX, 1, 1, 0, stream, &p, null), nameof(cuLaunchKernel), name);
    }
}
