// Block-quantized weights in ggml's layouts (the same bytes llama.cpp's GGUF files hold), 32 elements a
// block along each row:
//
//   Q8_0, 34 bytes: f16 d, then 32 signed bytes q;         value = d · q
//   Q4_0, 18 bytes: f16 d, then 16 bytes of two nibbles;  value = d · (q − 8), where byte j holds element j
//                   in its low nibble and element j + 16 in its high nibble
//
// Quantization follows ggml's reference functions (quantize_row_q8_0_ref, quantize_row_q4_0_ref) to the
// bit: Q8_0 takes d = max|x| / 127 and q = round(x / d) (half away from zero); Q4_0 takes the element of
// largest magnitude m, d = m / −8 and q = min(15, trunc(x / d + 8.5)). In both the reciprocal is taken of
// the unrounded d, which is then stored as f16 (round to nearest even). A weight quantizes only whole rows
// of whole blocks and only finite values.
using System.Runtime.InteropServices;

namespace VteKernels;

/// <summary>The Q8_0 and Q4_0 block formats: sizes, quantization and dequantization.</summary>
public static class BlockQuant
{
    /// <summary>Elements per block.</summary>
    public const int BlockElements = 32;

    /// <summary>Bytes of one Q8_0 block (f16 scale, 32 int8 values) and of one Q4_0 block (f16 scale, 16 bytes of nibbles).</summary>
    public const int Q8_0BlockBytes = 34, Q4_0BlockBytes = 18;

    /// <summary>Bytes per block of <paramref name="type"/> (34 for Q8_0, 18 for Q4_0).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The type is not block-quantized.</exception>
    public static int BlockBytes(DType type) => type switch
    {
        DType.Q8_0 => Q8_0BlockBytes,
        DType.Q4_0 => Q4_0BlockBytes,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "not a block-quantized type"),
    };

    /// <summary>
    /// Quantizes <paramref name="src"/> (a whole number of 32-element blocks) into <paramref name="dst"/>
    /// (BlockBytes per block), exactly as ggml's reference quantizers do.
    /// </summary>
    /// <exception cref="ArgumentException">The lengths are not whole, matching block counts, a value is not finite,
    /// or a block's scale overflows f16.</exception>
    public static void Quantize(ReadOnlySpan<float> src, DType type, Span<byte> dst)
    {
        int bytes = BlockBytes(type);
        if (src.Length % BlockElements != 0)
            throw new ArgumentException($"{src.Length} values are not a whole number of {BlockElements}-element blocks", nameof(src));
        int blocks = src.Length / BlockElements;
        if (dst.Length != blocks * bytes)
            throw new ArgumentException($"{blocks} {type} blocks take {blocks * bytes} bytes, the destination holds {dst.Length}", nameof(dst));
        for (int b = 0; b < blocks; b++)
        {
            var x = src.Slice(b * BlockElements, BlockElements);
            var y = dst.Slice(b * bytes, bytes);
            foreach (var v in x)
                if (!float.IsFinite(v)) throw new ArgumentException($"value {v} at block {b} cannot be quantized", nameof(src));
            if (type == DType.Q8_0) QuantizeQ8(x, y);
            else QuantizeQ4(x, y);
        }
    }

    private static void QuantizeQ8(ReadOnlySpan<float> x, Span<byte> y)
    {
        float amax = 0;
        foreach (var v in x) amax = Math.Max(amax, Math.Abs(v));
        float d = amax / 127f;
        float id = d != 0 ? 1f / d : 0f;
        WriteScale(y, d);
        for (int j = 0; j < BlockElements; j++) y[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }

    private static void QuantizeQ4(ReadOnlySpan<float> x, Span<byte> y)
    {
        float amax = 0, max = 0;
        foreach (var v in x)
            if (amax < Math.Abs(v)) { amax = Math.Abs(v); max = v; }
        float d = max / -8f;
        float id = d != 0 ? 1f / d : 0f;
        WriteScale(y, d);
        for (int j = 0; j < BlockElements / 2; j++)
        {
            int lo = Math.Min(15, (int)(sbyte)(x[j] * id + 8.5f));
            int hi = Math.Min(15, (int)(sbyte)(x[j + 16] * id + 8.5f));
            y[2 + j] = (byte)(lo | (hi << 4));
        }
    }

    private static void WriteScale(Span<byte> y, float d)
    {
        var h = (Half)d;
        if (Half.IsInfinity(h)) throw new ArgumentException($"block scale {d} overflows f16: the weights are too large to quantize");
        MemoryMarshal.Write(y, BitConverter.HalfToUInt16Bits(h));
    }

    /// <summary>Dequantizes whole blocks of <paramref name="type"/> into float32 (d · q, computed in float32).</summary>
    /// <exception cref="ArgumentException">The lengths are not whole, matching block counts.</exception>
    public static void Dequantize(ReadOnlySpan<byte> src, DType type, Span<float> dst)
    {
        int bytes = BlockBytes(type);
        if (dst.Length % BlockElements != 0 || src.Length != dst.Length / BlockElements * bytes)
            throw new ArgumentException($"{src.Length} bytes of {type} do not fill {dst.Length} values", nameof(src));
        for (int b = 0; b < dst.Length / BlockElements; b++)
        {
            var x = src.Slice(b * bytes, bytes);
            var y = dst.Slice(b * BlockElements, BlockElements);
            float d = Scale(x);
            if (type == DType.Q8_0)
                for (int j = 0; j < BlockElements; j++) y[j] = d * (sbyte)x[2 + j];
            else
                for (int j = 0; j < BlockElements / 2; j++)
                {
                    y[j] = d * ((x[2 + j] & 0xF) - 8);
                    y[j + 16] = d * ((x[2 + j] >> 4) - 8);
                }
        }
    }

    /// <summary>The f16 scale at the start of a block, widened exactly.</summary>
    internal static float Scale(ReadOnlySpan<byte> block) => HalfToSingle(MemoryMarshal.Read<ushort>(block));

    /// <summary>2^-14: the smallest normal f16, and the offset that turns f16 subnormals into normal float32 arithmetic.</summary>
    internal const float SmallestNormalHalf = 6.103515625e-05f;

    /// <summary>
    /// f16 bits to float32 without a table or a call, exact for every finite value. Exponent and mantissa move into
    /// float32 position with the exponent rebiased by 112; a subnormal f16 (exponent 0) is read with exponent 113, as
    /// 2^-14 · (1 + m/1024), and 2^-14 is subtracted, leaving m · 2^-24 exactly. No step makes or reads a float32
    /// subnormal: on x86 each such operand costs a microcode assist (measured: Q8_0 decode of a matrix whose block
    /// scales are f16 subnormals ran 12x slower when this multiplied a subnormal float32 by 2^112).
    /// </summary>
    internal static float HalfToSingle(ushort h)
    {
        uint bits = (uint)(h & 0x7FFF) << 13;
        float magnitude = (h & 0x7C00) == 0
            ? BitConverter.UInt32BitsToSingle(bits + (113u << 23)) - SmallestNormalHalf
            : BitConverter.UInt32BitsToSingle(bits + (112u << 23));
        return (h & 0x8000) != 0 ? -magnitude : magnitude;
    }
}
