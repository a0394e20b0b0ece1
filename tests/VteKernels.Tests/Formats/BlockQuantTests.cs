// Q8_0 and Q4_0 blocks: ggml's reference rules on hand-checked values, the round-trip error bound
// (half a step for Q8_0, one step for Q4_0's asymmetric grid), and the safetensors layout: written as U8
// [rows, bytes per row] with the format in "__metadata__", read back as the [rows, columns] weight with the
// very bytes; malformed variants are SafetensorsExceptions.
using System.Text;
using VteKernels.Formats;
using Xunit;

namespace VteKernels.Tests.Formats;

public sealed class BlockQuantTests
{
    [Fact]
    public void Q8FollowsGgmlsRule()
    {
        var x = new float[32];
        for (int i = 0; i < 32; i++) x[i] = (i - 10) * 0.25f;   // max |x| = 5.25 at i = 31
        var b = new byte[34];
        BlockQuant.Quantize(x, DType.Q8_0, b);
        float d = 5.25f / 127f;
        Assert.Equal(BitConverter.HalfToUInt16Bits((Half)d), BitConverter.ToUInt16(b, 0));
        for (int i = 0; i < 32; i++)
            Assert.Equal((sbyte)MathF.Round(x[i] * (1f / d), MidpointRounding.AwayFromZero), (sbyte)b[2 + i]);
        Assert.Equal(127, (sbyte)b[2 + 31]);
    }

    [Fact]
    public void Q4FollowsGgmlsRule()
    {
        var x = new float[32];
        for (int i = 0; i < 32; i++) x[i] = (i % 7 - 3) * 0.5f;
        x[20] = -4f;   // the largest magnitude, negative: d = -4 / -8 = 0.5, q = x / 0.5 + 8
        var b = new byte[18];
        BlockQuant.Quantize(x, DType.Q4_0, b);
        Assert.Equal(BitConverter.HalfToUInt16Bits((Half)0.5f), BitConverter.ToUInt16(b, 0));
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal(Math.Min(15, (int)(x[j] * 2f + 8.5f)), b[2 + j] & 0xF);
            Assert.Equal(Math.Min(15, (int)(x[j + 16] * 2f + 8.5f)), b[2 + j] >> 4);
        }
        var back = new float[32];
        BlockQuant.Dequantize(b, DType.Q4_0, back);
        for (int i = 0; i < 32; i++) Assert.Equal(x[i], back[i]);   // every value is on the grid
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    public void RoundTripStaysWithinAStep(DType type)
    {
        var x = Ops.OpsTestData.RandomFloats(32 * 50, 3, scale: 2f);
        var b = new byte[50 * BlockQuant.BlockBytes(type)];
        BlockQuant.Quantize(x, type, b);
        var back = new float[x.Length];
        BlockQuant.Dequantize(b, type, back);
        for (int blk = 0; blk < 50; blk++)
        {
            float d = Math.Abs((float)BitConverter.ToHalf(b, blk * BlockQuant.BlockBytes(type)));
            // Q8_0 rounds to the nearest step; Q4_0's grid (-8..7 steps) may clip the far end by one step. Both
            // choose q with the unrounded scale and store it as f16 (relative error 2^-11): up to 127 (or 8) steps more.
            double bound = type == DType.Q8_0 ? (0.5 + 127.0 / 2048) * d * 1.01 + 1e-6 : (1 + 8.0 / 2048) * d * 1.01 + 1e-6;
            for (int i = blk * 32; i < blk * 32 + 32; i++)
                Assert.True(Math.Abs(back[i] - x[i]) <= bound, $"{type} [{i}] {x[i]} -> {back[i]}, step {d}");
        }
    }

    [Fact]
    public void RejectsPartialBlocksAndNonFiniteValues()
    {
        Assert.Throws<ArgumentException>(() => BlockQuant.Quantize(new float[31], DType.Q8_0, new byte[34]));
        var x = new float[32];
        x[3] = float.NaN;
        Assert.Throws<ArgumentException>(() => BlockQuant.Quantize(x, DType.Q8_0, new byte[34]));
        Assert.Throws<ArgumentException>(() => Weight.FromFloats("w", new float[2 * 40], DType.Q4_0, 2, 40));
        Assert.Throws<InvalidOperationException>(() => DType.Q8_0.Size());
        Assert.Equal(34 * 3, DType.Q8_0.ByteCount(96));
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    public void SafetensorsHoldsBlocksAsU8RowsNamedInTheMetadata(DType type)
    {
        var dir = TestModels.NewTempDir("quant-st");
        var path = Path.Combine(dir, "q.safetensors");
        var w = Weight.FromFloats("m.weight", Ops.OpsTestData.RandomFloats(5 * 64, 4), type, 5, 64);
        var bias = Weight.FromFloats("m.bias", Ops.OpsTestData.RandomFloats(5, 5), DType.F32, 5);
        SafetensorsWriter.Write(path, [new TensorSpec("m.weight", type, [5, 64]), new TensorSpec("m.bias", DType.F32, [5])],
            (spec, s) => s.Write(spec.Name == "m.weight" ? w.Bytes : bias.Bytes), new Dictionary<string, string> { ["format"] = "pt" });
        var header = Encoding.UTF8.GetString(File.ReadAllBytes(path), 8, 300);
        Assert.Contains($"\"dtype\":\"U8\",\"shape\":[5,{2 * BlockQuant.BlockBytes(type)}]", header);
        Assert.Contains($"\"vte.quant.m.weight\":\"{type.Name()}\"", header);
        using var f = SafetensorsFile.Open(path);
        var back = f.GetWeight("m.weight");
        Assert.Equal(type, back.DType);
        Assert.Equal([5, 64], back.Shape);
        Assert.Equal(w.Bytes.ToArray(), back.Bytes.ToArray());
        Assert.Equal(DType.F32, f.GetWeight("m.bias").DType);
        Assert.Equal("pt", f.Metadata["format"]);
    }

    [Theory]
    [InlineData("{\"__metadata__\":{\"vte.quant.w\":\"q3_k\"},\"w\":{\"dtype\":\"U8\",\"shape\":[1,34],\"data_offsets\":[0,34]}}", 34, "unknown quantization")]
    [InlineData("{\"__metadata__\":{\"vte.quant.w\":\"q8_0\"},\"w\":{\"dtype\":\"U8\",\"shape\":[1,33],\"data_offsets\":[0,33]}}", 33, "multiple of 34")]
    [InlineData("{\"__metadata__\":{\"vte.quant.w\":\"q4_0\"},\"w\":{\"dtype\":\"U8\",\"shape\":[36],\"data_offsets\":[0,36]}}", 36, "multiple of 18")]
    [InlineData("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,34],\"data_offsets\":[0,34]}}", 34, "unsupported dtype U8")]
    public void MalformedQuantizedEntriesAreRejected(string header, int dataBytes, string message)
    {
        var path = Path.Combine(TestModels.NewTempDir("quant-bad"), "bad.safetensors");
        var h = Encoding.UTF8.GetBytes(header);
        using (var s = File.Create(path))
        {
            s.Write(BitConverter.GetBytes((ulong)h.Length));
            s.Write(h);
            s.Write(new byte[dataBytes]);
        }
        Assert.Contains(message, Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path)).Message);
    }
    [Fact]
    public void HalfToSingleIsExactForEveryFiniteHalf()
    {
        for (int h = 0; h < 65536; h++)
        {
            if ((h & 0x7C00) == 0x7C00) continue;   // Inf and NaN: block scales are finite
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            float got = BlockQuant.HalfToSingle((ushort)h);
            Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got), $"0x{h:X4}: {got:R}, want {want:R}");
        }
    }

    [Fact]
    public void VectorHalfWideningIsExactForEveryFiniteHalf()
    {
        if (!System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated) Assert.Skip("no 512-bit vectors on this machine: the register path does not run");
        var lanes = new int[16];
        var got = new float[16];
        for (int h0 = 0; h0 < 65536; h0 += 16)
        {
            for (int l = 0; l < 16; l++) lanes[l] = ((short)(h0 + l) << 13) & unchecked((int)0x8FFFE000);
            System.Runtime.Intrinsics.Vector512.CopyTo(VteKernels.Backends.Cpu.CpuOps.HalfPositionedToSingle(System.Runtime.Intrinsics.Vector512.Create(lanes)), got);
            for (int l = 0; l < 16; l++)
            {
                int h = h0 + l;
                if ((h & 0x7C00) == 0x7C00) continue;
                float want = (float)BitConverter.UInt16BitsToHalf((ushort)h);
                Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got[l]), $"0x{h:X4}: {got[l]:R}, want {want:R}");
            }
        }
    }
}
