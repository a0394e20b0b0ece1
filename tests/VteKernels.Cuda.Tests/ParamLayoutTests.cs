// The launch-parameter structs agree between native/vte_params.h and their C# mirrors
// (Kernels/KernelParams.cs): the header declares exactly the C# fields in the same order (parsed), and
// NVRTC compiles static_asserts of every size and offset generated from the C# layouts
// (Marshal.SizeOf / Marshal.OffsetOf): a successful compile proves the C compiler lays the structs out as
// .NET does. Without headers NVRTC has no offsetof (nor __builtin_offsetof), but its front end folds the
// classic address-of-member-of-null-pointer form to a constant, which is what VTE_OFFSETOF spells (the CPU
// emulator's NVRTC, g++, does not fold it and uses __builtin_offsetof). A
// deliberately wrong assert must fail, or the check would prove nothing.
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using VteKernels.Cuda.Kernels;
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class ParamLayoutTests
{
    /// <summary>Struct name → field names in declaration order, from the header text.</summary>
    internal static Dictionary<string, string[]> ParseHeader(string header)
    {
        var text = Regex.Replace(header, @"/\*.*?\*/", " ", RegexOptions.Singleline);
        var result = new Dictionary<string, string[]>();
        foreach (Match m in Regex.Matches(text, @"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", RegexOptions.Singleline))
        {
            Assert.Equal(m.Groups[1].Value, m.Groups[3].Value);
            var fields = m.Groups[2].Value.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(d => Regex.Match(d, @"(\w+)\s*(?:\[\w+\])?\s*$").Groups[1].Value).ToArray();
            result[m.Groups[1].Value] = fields;
        }
        return result;
    }

    private static string[] CSharpFields(Type t) =>
        t.GetFields(System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic)
            .OrderBy(f => Marshal.OffsetOf(t, f.Name).ToInt64()).Select(f => f.Name).ToArray();

    [Fact]
    public void HeaderDeclaresExactlyTheCSharpFields()
    {
        var header = ParseHeader(KernelSources.Read("native/vte_params.h"));
        Assert.Equal(header.Keys.Order(), KernelParams.All.Select(t => t.Name).Order());
        foreach (var t in KernelParams.All)
            Assert.Equal(header[t.Name], CSharpFields(t).Select(KernelParams.CName).ToArray());
    }

    [Theory]
    [InlineData("RowStride", "row_stride")]
    [InlineData("QHeads", "q_heads")]
    [InlineData("InvFreq", "inv_freq")]
    [InlineData("TopK", "top_k")]
    [InlineData("Y", "y")]
    public void FieldNamesMapToSnakeCase(string csharp, string c) => Assert.Equal(c, KernelParams.CName(csharp));

    internal static string StaticAsserts(IEnumerable<Type> types, Func<Type, string, long, long>? tamper = null)
    {
        var sb = new StringBuilder("#include \"vte_params.h\"\n#if defined(VTE_CUDA_EMULATOR)\n#define VTE_OFFSETOF(T, f) __builtin_offsetof(T, f)\n#else\n#define VTE_OFFSETOF(T, f) ((unsigned long long)&(((T*)0)->f))\n#endif\n");
        foreach (var t in types)
        {
            long size = Marshal.SizeOf(t);
            sb.AppendLine($"static_assert(sizeof({t.Name}) == {size}, \"{t.Name}: C# size {size}\");");
            foreach (var f in CSharpFields(t))
            {
                long offset = Marshal.OffsetOf(t, f).ToInt64();
                if (tamper is not null) offset = tamper(t, f, offset);
                sb.AppendLine($"static_assert(VTE_OFFSETOF({t.Name}, {KernelParams.CName(f)}) == {offset}, \"{t.Name}.{f}: C# offset {offset}\");");
            }
        }
        sb.AppendLine("extern \"C\" __global__ void layout_probe() {}");
        return sb.ToString();
    }

    [Fact]
    public void NvrtcAgreesWithTheCSharpLayouts()
    {
        Gpu.RequireNvrtc();
        var compiled = NvrtcCompiler.Instance.Compile("layout_probe.cu", StaticAsserts(KernelParams.All), KernelSources.Headers,
            ["--gpu-architecture=compute_80", "-std=c++17"], cubin: false);
        Assert.Equal("", compiled.Log);
    }

    [Fact]
    public void AWrongLayoutFailsToCompile()
    {
        Gpu.RequireNvrtc();
        var source = StaticAsserts([typeof(RopeParams)], (t, f, offset) => f == nameof(RopeParams.HeadDim) ? offset + 4 : offset);
        var e = Assert.Throws<CudaException>(() =>
            NvrtcCompiler.Instance.Compile("layout_probe.cu", source, KernelSources.Headers, ["--gpu-architecture=compute_80", "-std=c++17"], cubin: false));
        Assert.Contains("RopeParams.HeadDim", e.CompileLog);
    }
}
