// Element types of stored weights. Compute on the CPU is always float32: half-precision weights are
// widened as they are read (bf16 -> f32 is a 16-bit shift; f16 -> f32 is exact in hardware).
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
}

/// <summary>Sizes, names and conversions of <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType t) => t switch { DType.F32 => 4, DType.F16 => 2, DType.BF16 => 2, _ => throw new ArgumentOutOfRangeException(nameof(t)) };

    /// <summary>The safetensors name of the type ("F32", "F16", "BF16").</summary>
    public static string SafetensorsName(this DType t) => t switch { DType.F32 => "F32", DType.F16 => "F16", DType.BF16 => "BF16", _ => throw new ArgumentOutOfRangeException(nameof(t)) };

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

    /// <summary>Parses "f32", "f16", "bf16" (case-insensitive, as the CLI takes them).</summary>
    public static DType Parse(string name) => name.ToLowerInvariant() switch
    {
        "f32" or "float32" => DType.F32,
        "f16" or "float16" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        _ => throw new ArgumentException($"unknown dtype '{name}' (expected f32, f16 or bf16)", nameof(name)),
    };

    /// <summary>Widens <paramref name="src"/> (elements of type <paramref name="type"/>) into <paramref name="dst"/>.</summary>
    /// <exception cref="ArgumentException">The lengths disagree.</exception>
    public static void ToFloat(ReadOnlySpan<byte> src, DType type, Span<float> dst)
    {
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
