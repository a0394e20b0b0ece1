// The runtime compiler (nvrtc.h). Strings cross as UTF-8 byte pointers: sources, header names and options
// are marshalled by the caller (NvrtcCompiler), which owns their lifetime for the duration of the call.
using System.Runtime.InteropServices;

namespace VteKernels.Cuda;

internal static partial class Interop
{
    internal static partial class Nvrtc
    {
        /// <summary>nvrtcResult: 0 is success; names come from nvrtcGetErrorString.</summary>
        internal enum nvrtcResult
        {
            NVRTC_SUCCESS = 0,
            NVRTC_ERROR_COMPILATION = 6,
        }

        [LibraryImport(Libraries.Nvrtc)]
        internal static partial nvrtcResult nvrtcVersion(out int major, out int minor);

        [LibraryImport(Libraries.Nvrtc)]
        internal static partial nvrtcResult nvrtcGetNumSupportedArchs(out int count);

        [LibraryImport(Libraries.Nvrtc)]
        internal static unsafe partial nvrtcResult nvrtcGetSupportedArchs(int* architectures);

        [LibraryImport(Libraries.Nvrtc)]
        internal static unsafe partial byte* nvrtcGetErrorString(nvrtcResult result);

        [LibraryImport(Libraries.Nvrtc)]
        internal static unsafe partial nvrtcResult nvrtcCreateProgram(out nint program, byte* source, byte* name,
            int numHeaders, byte** headers, byte** includeNames);

        [LibraryImport(Libraries.Nvrtc)]
        internal static partial nvrtcResult nvrtcDestroyProgram(ref nint program);

        [LibraryImport(Libraries.Nvrtc)]
        internal static unsafe partial nvrtcResult nvrtcCompileProgram(nint program, int numOptions, byte** options);

        [LibraryImport(Libraries.Nvrtc)]
        internal static partial nvrtcResult nvrtcGetPTXSize(nint program, out nuint size);

        [LibraryImport(Libraries.Nvrtc)]
        internal static unsafe partial nvrtcResult nvrtcGetPTX(nint program, byte* ptx);

        [LibraryImport(Libraries.Nvrtc)]
        internal static partial nvrtcResult nvrtcGetCUBINSize(nint program, out nuint size);

        [LibraryImport(Libraries.Nvrtc)]
        internal static unsafe partial nvrtcResult nvrtcGetCUBIN(nint program, byte* cubin);

        [LibraryImport(Libraries.Nvrtc)]
        internal static partial nvrtcResult nvrtcGetProgramLogSize(nint program, out nuint size);

        [LibraryImport(Libraries.Nvrtc)]
        internal static unsafe partial nvrtcResult nvrtcGetProgramLog(nint program, byte* log);
    }
}
