// Element types of stored weights. Compute on the CPU is always float32: half-precision weights are
// widened as they are read (bf16 -> f32 is a 16-bit shift; f16 -> f32 is exact in hardware). Q8_0 and Q4_0
// are ggml's block-quantized weight formats (BlockQuant.cs): 32 elements share one f16 scale, so their
// sizes are per block, not per element (ByteCount), and a row must hold whole blocks.
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace VteKernels;

/// <summary>Element type of a stored tensor.</summary>
public enum DType
{
    /// <summary>IEEE float32.</summary>
    F32,
    /// <summary>IEEE float16.</summary>
    F16,
    /// <summary>bfloat16: the upper 16 bits of a float32.</summary>
    BF16,
    /// <summary>Blocks of 32 signed 8-bit values and one f16 scale (ggml's Q8_0, 34 bytes a block); weights only.</summary>
    Q8_0,
    /// <summary>Blocks of 32 4-bit values and one f16 scale (ggml's Q4_0, 18 bytes a block); weights only.</summary>
    Q4_0,
}

/// <summary>Sizes, names and conversions of <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    /// <exception cref="InvalidOperationException">The type is block-quantized (see <see cref="ByteCount"/>).</exception>
    public static int Size(this DType t) => t switch
    {
        DType.F32 => 4, DType.F16 => 2, DType.BF16 => 2,
        DType.Q8_0 or DType.Q4_0 => throw new InvalidOperationException($"{t} is block-quantized and has no size per element"),
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>True for Q8_0 and Q4_0, whose elements come in blocks of 32 with a shared scale.</summary>
    public static bool IsBlockQuantized(this DType t) => t is DType.Q8_0 or DType.Q4_0;

    /// <summary>Bytes that <paramref name="elements"/> elements take (for a block type: a whole number of blocks).</summary>
    /// <exception cref="ArgumentException">A block type's element count is not a multiple of 32.</exception>
    public static long ByteCount(this DType t, long elements)
    {
        if (!t.IsBlockQuantized()) return checked(elements * t.Size());
        if (elements % BlockQuant.BlockElements != 0)
            throw new ArgumentException($"{elements} elements are not a whole number of {t} blocks of {BlockQuant.BlockElements}", nameof(elements));
        return checked(elements / BlockQuant.BlockElements * BlockQuant.BlockBytes(t));
    }

    /// <summary>
    /// The safetensors name of the type ("F32", "F16", "BF16"); block-quantized tensors are stored as "U8" rows of
    /// their blocks (see <see cref="Formats.SafetensorsWriter"/>).
    /// </summary>
    public static string SafetensorsName(this DType t) => t switch
    {
        DType.F32 => "F32", DType.F16 => "F16", DType.BF16 => "BF16", DType.Q8_0 or DType.Q4_0 => "U8",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>The type as tables show it: the safetensors name, or "Q8_0" / "Q4_0" for block-quantized tensors (stored as U8).</summary>
    public static string DisplayName(this DType t) => t.IsBlockQuantized() ? t.Name().ToUpperInvariant() : t.SafetensorsName();

    /// <summary>Lower-case name as the CLI and file metadata spell it ("f32", "bf16", "q8_0", ...).</summary>
    public static string Name(this DType t) => t switch
    {
        DType.F32 => "f32", DType.F16 => "f16", DType.BF16 => "bf16", DType.Q8_0 => "q8_0", DType.Q4_0 => "q4_0",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Parses a safetensors dtype name; false for types this runtime does not compute with.</summary>
    public static bool TryParseSafetensors(string name, out DType t)
    {
        switch (name)
        {
            case "F32": t = DType.F32; return true;
            case "F16": t = DType.F16; return true;
            case "BF16": t = DType.BF16; return true;
            default: t = default; return false;
        }
    }

    /// <summary>Parses "f32", "f16", "bf16", "q8_0", "q4_0" (case-insensitive, as the CLI takes them).</summary>
    /// <exception cref="ArgumentException">No such type.</exception>
    public static DType Parse(string name) => name.ToLowerInvariant() switch
    {
        "f32" or "float32" => DType.F32,
        "f16" or "float16" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        "q8_0" => DType.Q8_0,
        "q4_0" => DType.Q4_0,
        _ => throw new ArgumentException($"unknown dtype '{name}' (expected f32, f16, bf16, q8_0 or q4_0)", nameof(name)),
    };

    /// <summary>Widens <paramref name="src"/> (elements of type <paramref name="type"/>) into <paramref name="dst"/>.</summary>
    /// <exception cref="ArgumentException">The lengths disagree.</exception>
    public static void ToFloat(ReadOnlySpan<byte> src, DType type, Span<float> dst)
    {
        if (type.IsBlockQuantized())
        {
            BlockQuant.Dequantize(src, type, dst);
            return;
        }
        if (src.Length != dst.Length * type.Size())
            throw new ArgumentException($"source holds {src.Length} bytes, destination {dst.Length} {type} elements", nameof(src));
        switch (type)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);
                break;
            case DType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst);
                break;
            case DType.BF16:
                var s = MemoryMarshal.Cast<byte, ushort>(src);
                var d = MemoryMarshal.Cast<float, uint>(dst);
                for (int i = 0; i < s.Length; i++) d[i] = (uint)s[i] << 16;
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    /// <summary>Narrows float32 values to <paramref name="type"/>, rounding to nearest even (NaN stays NaN).</summary>
    public static void FromFloat(ReadOnlySpan<float> src, DType type, Span<byte> dst)
    {
        if (type.IsBlockQuantized())
        {
            BlockQuant.Quantize(src, type, dst);
            return;
        }
        if (dst.Length != src.Length * type.Size())
            throw new ArgumentException($"destination holds {dst.Length} bytes, source {src.Length} floats", nameof(dst));
        switch (type)
        {
            case DType.F32:
                MemoryMarshal.AsBytes(src).CopyTo(dst);
                break;
            case DType.F16:
                TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst));
                break;
            case DType.BF16:
                var d = MemoryMarshal.Cast<byte, ushort>(dst);
                for (int i = 0; i < src.Length; i++) d[i] = ToBFloat16Bits(src[i]);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    /// <summary>float32 to bfloat16 bits, round to nearest even, as torch does.</summary>
    public static ushort ToBFloat16Bits(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((u >> 16) | 0x40);
        u += 0x7FFF + ((u >> 16) & 1);
        return (ushort)(u >> 16);
    }

    /// <summary>bfloat16 bits to float32.</summary>
    public static float FromBFloat16Bits(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);
}
