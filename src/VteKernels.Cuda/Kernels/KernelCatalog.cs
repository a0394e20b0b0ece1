// Every kernel the backend launches: its source file, its entry points (without the dtype suffix), the
// block size it must be launched with, and the specialisations it is compiled in. One -DVTE_DTYPE_* build
// per element type gives entries named <entry>_<dtype> (rms_norm_bf16). The block size is the file's
// <NAME>_THREADS constant (its __launch_bounds__, and some kernels size shared arrays by it); a test reads
// it back from the source. Tests compile every (file, dtype) and look for every entry; a kernel file
// missing from this list fails a test too.
namespace VteKernels.Cuda.Kernels;

/// <summary>One kernel source and its entry points.</summary>
/// <param name="File">File name under kernels/, e.g. "rms_norm.cu".</param>
/// <param name="Entries">Entry names without the dtype suffix.</param>
/// <param name="Threads">Threads per block, equal to the source's *_THREADS constant.</param>
internal sealed record KernelSpec(string File, IReadOnlyList<string> Entries, int Threads)
{
    /// <summary>The extern "C" name of <paramref name="entry"/> in the <paramref name="dtype"/> build.</summary>
    public static string EntryName(string entry, DType dtype) => $"{entry}_{KernelCatalog.Suffix(dtype)}";

    /// <inheritdoc/>
    public override string ToString() => File;
}

/// <summary>The kernels, by op.</summary>
internal static class KernelCatalog
{
    public static readonly KernelSpec Add = new("add.cu", ["add"], 256);
    public static readonly KernelSpec Embedding = new("embedding.cu", ["embedding"], 256);
    public static readonly KernelSpec RmsNorm = new("rms_norm.cu", ["rms_norm"], 256);
    public static readonly KernelSpec AddRmsNorm = new("add_rms_norm.cu", ["add_rms_norm"], 256);
    public static readonly KernelSpec LayerNorm = new("layer_norm.cu", ["layer_norm"], 256);
    public static readonly KernelSpec Rope = new("rope.cu", ["rope"], 128);
    public static readonly KernelSpec BiasAct = new("bias_act.cu", ["quick_gelu", "gelu"], 256);
    public static readonly KernelSpec SiluMul = new("silu_mul.cu", ["silu_mul"], 256);
    public static readonly KernelSpec PatchEmbed = new("patch_embed.cu", ["im2col"], 256);
    public static readonly KernelSpec Gemv = new("gemv.cu", ["gemv"], 256);
    public static readonly KernelSpec Gemm = new("gemm.cu", ["gemm"], 256);
    public static readonly KernelSpec Argmax = new("argmax.cu", ["argmax"], 1024);
    public static readonly KernelSpec Sample = new("sample.cu", ["sample", "sample_uniforms"], 512);
    public static readonly KernelSpec AttentionReference = new("attention_reference.cu", ["attention_reference"], 128);
    public static readonly KernelSpec FlashDecode = new("flash_decode.cu", ["flash_decode_split", "flash_decode_merge"], 128);
    public static readonly KernelSpec FlashAttention = new("flash_attention.cu", ["flash_attention"], 128);

    /// <summary>All kernels.</summary>
    public static IReadOnlyList<KernelSpec> All { get; } =
        [Add, Embedding, RmsNorm, AddRmsNorm, LayerNorm, Rope, BiasAct, SiluMul, PatchEmbed, Gemv, Gemm, Argmax, Sample, AttentionReference,
         FlashAttention, FlashDecode];

    /// <summary>The element types every kernel is built for.</summary>
    public static IReadOnlyList<DType> DTypes { get; } = [DType.BF16, DType.F16, DType.F32];

    /// <summary>The entry-name suffix of a build: "bf16", "f16", "f32".</summary>
    public static string Suffix(DType dtype) => dtype switch
    {
        DType.BF16 => "bf16",
        DType.F16 => "f16",
        DType.F32 => "f32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>The -D option selecting a build: "-DVTE_DTYPE_BF16".</summary>
    public static string DefineFor(DType dtype) => $"-DVTE_DTYPE_{Suffix(dtype).ToUpperInvariant()}";

    /// <summary>The NVRTC options of a build for <paramref name="target"/> ("sm_90" or "compute_90").</summary>
    public static IReadOnlyList<string> Options(DType dtype, string target) => [$"--gpu-architecture={target}", "-std=c++17", DefineFor(dtype)];
}
