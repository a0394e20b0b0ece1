// Proof that the GPU tests catch what they must: deliberately broken variants of the shipped kernels, each
// one text substitution kept in tests/VteKernels.Cuda.Tests/BrokenKernels/*.variant (never shipped: the
// runtime embeds only kernels/), each paired with one existing GPU test case. For every variant the case
// runs twice on the device: with the shipped kernels it must pass, with the variant swapped in (through
// CudaBackendOptions.KernelSourceOverrides) it must fail, by a wrong result, a NaN, a fault the device
// reports, or outputs that differ between the CPU emulator's two schedules (a race). The substitution's
// "find" text must occur exactly once in the shipped source, so a variant cannot silently stop applying.
// Faults are sticky for the process's primary context, so these run one at a time.
using Xunit;
using Xunit.Sdk;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu"), Collection(StickyFaultCollection.Name)]
public sealed class BrokenKernelTests
{
    /// <summary>The GPU test cases the variants are checked with, by the name the variant files use.</summary>
    private static readonly Dictionary<string, Action> Checks = new()
    {
        ["flash-attention-7x577-hd96-bf16"] = () =>
            new FlashAttentionTests().MatchesFloat64WithinTwiceTheNaiveError(7, 577, 4, 4, 96, FlashAttentionTests.Limits.None, DType.BF16, 118),
        ["flash-attention-577x577-hd64-bf16"] = () =>
            new FlashAttentionTests().MatchesFloat64WithinTwiceTheNaiveError(577, 577, 4, 4, 64, FlashAttentionTests.Limits.None, DType.BF16, 106),
        ["flash-attention-7x7-gqa4-hd128-bf16"] = () =>
            new FlashAttentionTests().MatchesFloat64WithinTwiceTheNaiveError(7, 7, 8, 2, 128, FlashAttentionTests.Limits.Causal, DType.BF16, 103),
        ["attention-7x7-gqa2-f32"] = () =>
            new CudaOpTests().AttentionMatchesCpu(7, 7, 4, 2, 32, VteKernels.Backends.AttentionMask.Causal, DType.F32, false, 6),
        ["linear-33x577x7-bf16-fallback"] = () => new CudaLinearTests().LinearThroughCublasLtOnlyMatchesFloat64(33, 577, 7, false, DType.BF16, 37),
        ["gemv-1x4096x577-bf16"] = () => new CudaLinearTests().LinearMatchesFloat64(1, 4096, 577, false, DType.BF16, 13),
        ["argmax-5x4097-f32"] = () => new CudaSamplingTests().ArgMaxEqualsTheHostsFirstMaximum(DType.F32, 5, 4097),
        ["flash-decode-1x4097-bf16"] = () =>
            new FlashDecodeTests().DecodeAttentionMatchesCpu(1, 4097, 4, 128, VteKernels.Backends.AttentionMask.Causal, DType.BF16, 99),
        ["rope-7x4x32-f32"] = () => new CudaOpTests().RopeMatchesCpuAtLargeAndGappedPositions(7, 4, 32, DType.F32, 5),
    };

    internal sealed record Variant(string Name, string What, string Kernel, string Check, string Find, string Replace)
    {
        /// <summary>The shipped source with the substitution made.</summary>
        public string Apply()
        {
            var source = Kernels.KernelSources.Kernel(Kernel);
            int at = source.IndexOf(Find, StringComparison.Ordinal);
            Assert.True(at >= 0, $"{Name}: its find text no longer occurs in {Kernel}");
            Assert.True(source.IndexOf(Find, at + 1, StringComparison.Ordinal) < 0, $"{Name}: its find text occurs more than once in {Kernel}");
            return source[..at] + Replace + source[(at + Find.Length)..];
        }
    }

    private static string Folder => Path.Combine(KernelPtxTests.RepositoryRoot(), "tests", "VteKernels.Cuda.Tests", "BrokenKernels");

    /// <summary>Parses a .variant file: "what:", "kernel:", "check:" lines, then "--- find", "--- replace", "--- end" blocks.</summary>
    internal static Variant Load(string path)
    {
        var lines = File.ReadAllLines(path);
        string Field(string key) => lines.Single(l => l.StartsWith(key + ":", StringComparison.Ordinal))[(key.Length + 1)..].Trim();
        string Block(string from, string to)
        {
            int a = Array.IndexOf(lines, from), b = Array.IndexOf(lines, to);
            Assert.True(a >= 0 && b > a, $"{path}: no '{from}' block");
            return string.Join('\n', lines[(a + 1)..b]);
        }
        var replace = Block("--- replace", "--- end");
        return new Variant(Path.GetFileNameWithoutExtension(path), Field("what"), Field("kernel"), Field("check"), Block("--- find", "--- replace"),
            replace.Length == 0 ? "" : replace);
    }

    public static TheoryData<string> Variants()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Folder, "*.variant").Order(StringComparer.Ordinal)) data.Add(Path.GetFileName(f));
        return data;
    }

    [Fact]
    public void AtLeastTenVariantsEachWithAKnownCheck()
    {
        var variants = Directory.GetFiles(Folder, "*.variant").Select(Load).ToList();
        Assert.True(variants.Count >= 10, $"{variants.Count} broken variants");
        Assert.All(variants, v => Assert.True(Checks.ContainsKey(v.Check), $"{v.Name}: unknown check '{v.Check}'"));
        Assert.All(variants, v => Assert.Contains(v.Kernel, Kernels.KernelCatalog.All.Select(s => s.File)));
    }

    [Theory, MemberData(nameof(Variants))]
    public void TheVariantFailsItsCheckWhileTheShippedKernelPasses(string file)
    {
        var v = Load(Path.Combine(Folder, file));
        var broken = v.Apply();
        Gpu.Require();
        var check = Checks[v.Check];
        check(); // the shipped kernels pass

        Gpu.Variant = new Dictionary<string, string> { [v.Kernel] = broken };
        Exception? caught;
        try
        {
            caught = Record.Exception(check);
        }
        finally
        {
            Gpu.Variant = null;
        }
        Assert.True(caught is not null, $"{v.Name} ({v.What}) passed '{v.Check}': the test cannot tell the broken kernel from the shipped one");
        Assert.False(caught is SkipException, $"{v.Name}: the check skipped ({caught!.Message})");
        Assert.True(caught is XunitException or CudaException, $"{v.Name}: the check failed with an unexpected {caught!.GetType().Name}: {caught.Message}");
    }
}
