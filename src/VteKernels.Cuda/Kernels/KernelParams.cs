// C# mirrors of the launch-parameter structs in native/vte_params.h, field for field and in the same
// order (PascalCase here, snake_case there: RowStride is row_stride). Device pointers are ulong. A test
// compiles static_asserts generated from these layouts (Marshal.SizeOf / OffsetOf) with NVRTC and compares
// the field lists with the header, so a change on one side only fails the build's tests.
using System.Runtime.InteropServices;

namespace VteKernels.Cuda.Kernels;

#pragma warning disable CS1591 // the fields are documented once, in native/vte_params.h

/// <summary>add_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AddParams { public ulong A, B, Y; public long Count; }

/// <summary>embedding_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct EmbeddingParams { public ulong Table, Ids, Y; public int Rows, Dim, Vocab, Reserved; }

/// <summary>rms_norm_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RmsNormParams { public ulong X, Gamma, Y; public int Rows, Cols; public float Eps; public int Reserved; }

/// <summary>add_rms_norm_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AddRmsNormParams { public ulong Residual, Delta, Gamma, Y; public int Rows, Cols; public float Eps; public int Reserved; }

/// <summary>layer_norm_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct LayerNormParams { public ulong X, Gamma, Beta, Y; public int Rows, Cols; public float Eps; public int Reserved; }

/// <summary>rope_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RopeParams { public ulong X, Positions, InvFreq; public int Rows, Heads, HeadDim, RowStride; }

/// <summary>quick_gelu_T, gelu_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BiasActParams { public ulong X, Bias; public int Rows, Cols; }

/// <summary>silu_mul_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SiluMulParams { public ulong Gate, Up, Y; public int Rows, Cols, GateStride, UpStride, YStride, Reserved; }

/// <summary>im2col_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Im2colParams { public ulong Pixels, Columns; public int Channels, Height, Width, Patch; }

/// <summary>gemv_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GemvParams { public ulong X, W, Bias, Y; public int N, K; }

/// <summary>gemm_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GemmParams { public ulong X, W, Bias, Y; public int M, N, K, Reserved; }

/// <summary>argmax_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct ArgmaxParams { public ulong Logits, Out; public int Rows, Vocab; }

/// <summary>sample_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SampleParams { public ulong Logits, Scratch, Out, Seed, Offset; public int Rows, Vocab, TopK; public float Temperature, TopP; public int Reserved; }

/// <summary>sample_uniforms_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct UniformsParams { public ulong Out, Seed, Offset; public int Count, Reserved; }

/// <summary>attention_reference_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AttentionParams
{
    public ulong Q, K, V, Out;
    public int Nq, Nk, QHeads, KvHeads, HeadDim, QStride, KvStride, OutStride, Causal;
    public float Scale;
}

/// <summary>flash_decode_split_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FlashDecodeParams
{
    public ulong Q, K, V, PartialAcc, PartialMs;
    public int Nq, Nk, QHeads, KvHeads, HeadDim, QStride, KvStride, Splits, Chunk, Causal;
    public float Scale;
    public int Reserved;
}

/// <summary>flash_decode_merge_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FlashDecodeMergeParams { public ulong PartialAcc, PartialMs, Out; public int Rows, QHeads, HeadDim, OutStride, Splits, Reserved; }

/// <summary>flash_attention_T.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FlashAttentionParams
{
    public ulong Q, K, V, Out, KeyEnd, Mass;
    public int Nq, Nk, QHeads, KvHeads, HeadDim, QStride, KvStride, OutStride, Causal, MassRanges;
    public fixed int RangeStart[8];
    public fixed int RangeEnd[8];
    public float Scale;
}

#pragma warning restore CS1591

/// <summary>The parameter structs, for the layout test.</summary>
internal static class KernelParams
{
    public static IReadOnlyList<Type> All { get; } =
    [
        typeof(AddParams), typeof(EmbeddingParams), typeof(RmsNormParams), typeof(AddRmsNormParams), typeof(LayerNormParams),
        typeof(RopeParams), typeof(BiasActParams), typeof(SiluMulParams), typeof(Im2colParams), typeof(GemvParams), typeof(GemmParams),
        typeof(ArgmaxParams), typeof(SampleParams), typeof(UniformsParams), typeof(AttentionParams), typeof(FlashAttentionParams),
        typeof(FlashDecodeParams), typeof(FlashDecodeMergeParams),
    ];

    /// <summary>The C name of a C# field: RowStride → row_stride, QHeads → q_heads.</summary>
    public static string CName(string field)
    {
        var sb = new System.Text.StringBuilder(field.Length + 4);
        for (int i = 0; i < field.Length; i++)
        {
            char c = field[i];
            if (char.IsUpper(c) && i > 0) sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }
}
