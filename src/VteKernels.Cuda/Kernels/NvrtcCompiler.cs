// Compiling kernel sources with NVRTC. Headers are handed to NVRTC by name (no file system, no CUDA
// headers); the target is the device's own architecture (sm_XY, giving a cubin the driver loads as is)
// when this NVRTC supports it, else the newest virtual architecture below it (compute_XY, PTX that the
// driver compiles at load time). Warnings stay in the log; tests treat a non-empty log as a failure.
using System.Runtime.InteropServices;
using static VteKernels.Cuda.Interop.Nvrtc;

namespace VteKernels.Cuda.Kernels;

/// <summary>The output of one compilation.</summary>
/// <param name="Image">A cubin, or PTX text with a terminating NUL (what cuModuleLoadData takes).</param>
/// <param name="IsCubin">True for a cubin.</param>
/// <param name="Target">The architecture option used: "sm_90" or "compute_90".</param>
/// <param name="Log">NVRTC's log (warnings, ptxas reports when asked for), empty when clean.</param>
/// <param name="Ptx">The PTX text (NVRTC produces PTX on the way to a cubin too).</param>
internal sealed record CompiledKernel(byte[] Image, bool IsCubin, string Target, string Log, string Ptx);

/// <summary>One loaded NVRTC library.</summary>
internal sealed class NvrtcCompiler
{
    private static readonly Lazy<NvrtcCompiler> Shared = new(() => new NvrtcCompiler(), LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Major version, e.g. 11 for 11.8.</summary>
    public int Major { get; }

    /// <summary>Minor version.</summary>
    public int Minor { get; }

    /// <summary>"11.8".</summary>
    public string Version => $"{Major}.{Minor}";

    /// <summary>
    /// True when this is the CPU emulator's NVRTC (tools/cuda-emu, version 12.99, which no real NVRTC has):
    /// it builds kernels as C++ for the CPU and produces no PTX.
    /// </summary>
    public bool IsEmulator => Major == 12 && Minor == 99;

    /// <summary>The file NVRTC was loaded from.</summary>
    public string LoadedFrom { get; }

    /// <summary>Real architectures this NVRTC can target (80 for sm_80), ascending.</summary>
    public IReadOnlyList<int> SupportedArchitectures { get; }

    private unsafe NvrtcCompiler()
    {
        LoadedFrom = CudaLibraries.Require(CudaLibrary.Nvrtc).LoadedFrom!;
        CudaCheck.Nvrtc(nvrtcVersion(out int major, out int minor), nameof(nvrtcVersion));
        Major = major;
        Minor = minor;
        CudaCheck.Nvrtc(nvrtcGetNumSupportedArchs(out int n), nameof(nvrtcGetNumSupportedArchs));
        var archs = new int[n];
        fixed (int* p = archs) CudaCheck.Nvrtc(nvrtcGetSupportedArchs(p), nameof(nvrtcGetSupportedArchs));
        Array.Sort(archs);
        SupportedArchitectures = archs;
    }

    /// <summary>The process's NVRTC, loaded on first use.</summary>
    /// <exception cref="CudaUnavailableException">No NVRTC library could be loaded.</exception>
    public static NvrtcCompiler Instance => Shared.Value;

    /// <summary>True when NVRTC loads here; otherwise <paramref name="reason"/> says why.</summary>
    public static bool IsAvailable(out string reason)
    {
        try
        {
            _ = Instance;
            reason = "";
            return true;
        }
        catch (CudaUnavailableException e)
        {
            reason = e.Message;
            return false;
        }
    }

    /// <summary>
    /// The target for a device of compute capability <paramref name="architecture"/> (90 for 9.0): the
    /// real architecture and a cubin when supported, else the newest lower virtual architecture and PTX.
    /// </summary>
    /// <exception cref="CudaUnavailableException">This NVRTC supports nothing at or below that architecture.</exception>
    public (string Target, bool Cubin) TargetFor(int architecture)
    {
        if (SupportedArchitectures.Contains(architecture)) return ($"sm_{architecture}", true);
        var below = SupportedArchitectures.Where(a => a < architecture).ToList();
        if (below.Count == 0)
            throw new CudaUnavailableException($"NVRTC {Version} ({LoadedFrom}) cannot compile for sm_{architecture}; it supports {string.Join(", ", SupportedArchitectures.Select(a => $"sm_{a}"))}");
        return ($"compute_{below[^1]}", false);
    }

    /// <summary>Compiles <paramref name="source"/> with <paramref name="options"/> (which name the target).</summary>
    /// <exception cref="CudaException">Compilation failed; <see cref="CudaException.CompileLog"/> holds NVRTC's log.</exception>
    public unsafe CompiledKernel Compile(string name, string source, IReadOnlyList<(string Name, string Text)> headers, IReadOnlyList<string> options, bool cubin)
    {
        var target = options.FirstOrDefault(o => o.StartsWith("--gpu-architecture=", StringComparison.Ordinal))?["--gpu-architecture=".Length..] ?? "";
        var strings = new List<nint>();
        nint Utf8(string s)
        {
            var p = Marshal.StringToCoTaskMemUTF8(s);
            strings.Add(p);
            return p;
        }
        nint program = 0;
        try
        {
            var headerTexts = stackalloc byte*[Math.Max(1, headers.Count)];
            var headerNames = stackalloc byte*[Math.Max(1, headers.Count)];
            for (int i = 0; i < headers.Count; i++)
            {
                headerTexts[i] = (byte*)Utf8(headers[i].Text);
                headerNames[i] = (byte*)Utf8(headers[i].Name);
            }
            CudaCheck.Nvrtc(nvrtcCreateProgram(out program, (byte*)Utf8(source), (byte*)Utf8(name), headers.Count, headerTexts, headerNames),
                nameof(nvrtcCreateProgram), name);
            var opts = stackalloc byte*[Math.Max(1, options.Count)];
            for (int i = 0; i < options.Count; i++) opts[i] = (byte*)Utf8(options[i]);
            var result = nvrtcCompileProgram(program, options.Count, opts);
            string log = ReadLog(program);
            CudaCheck.Nvrtc(result, nameof(nvrtcCompileProgram), $"{name} ({string.Join(' ', options)}), NVRTC {Version}", log);

            CudaCheck.Nvrtc(nvrtcGetPTXSize(program, out nuint ptxSize), nameof(nvrtcGetPTXSize), name);
            var ptx = new byte[(int)ptxSize]; // includes the terminating NUL, as cuModuleLoadData wants it
            fixed (byte* p = ptx) CudaCheck.Nvrtc(nvrtcGetPTX(program, p), nameof(nvrtcGetPTX), name);
            var image = ptx;
            if (cubin)
            {
                CudaCheck.Nvrtc(nvrtcGetCUBINSize(program, out nuint size), nameof(nvrtcGetCUBINSize), name);
                image = new byte[(int)size];
                fixed (byte* p = image) CudaCheck.Nvrtc(nvrtcGetCUBIN(program, p), nameof(nvrtcGetCUBIN), name);
            }
            return new CompiledKernel(image, cubin, target, log, System.Text.Encoding.UTF8.GetString(ptx).TrimEnd('\0'));
        }
        finally
        {
            if (program != 0) nvrtcDestroyProgram(ref program);
            foreach (var p in strings) Marshal.FreeCoTaskMem(p);
        }
    }

    private static unsafe string ReadLog(nint program)
    {
        if (nvrtcGetProgramLogSize(program, out nuint size) != nvrtcResult.NVRTC_SUCCESS || size <= 1) return "";
        var buffer = new byte[(int)size];
        fixed (byte* p = buffer)
            if (nvrtcGetProgramLog(program, p) != nvrtcResult.NVRTC_SUCCESS) return "";
        return System.Text.Encoding.UTF8.GetString(buffer).TrimEnd('\0').Trim();
    }
}
