// The Linear kernels (decode rows, packed prefill, the f16 register path and its fallbacks, several parts in
// one region) against a float64 reference, held to the house rule: the error may be at most 2x that of a
// naive float32 loop over the same stored values. Odd sizes: 1, 7 and 4097 input features; 1, 3, 17 and
// 513 rows (decode, small, packed with a partial panel, many panels); outputs not a multiple of the kernels'
// 4 or 12 rows nor of a work item. Outputs are poisoned with NaN first. Results are bitwise the same on 1
// and on all threads, and for a weight run alone or as one part of several.
using System.Runtime.InteropServices;
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public sealed unsafe class LinearKernelTests(ITestOutputHelper output)
{
    public static TheoryData<int, int, int, DType, int, float> Cases()
    {
        var data = new TheoryData<int, int, int, DType, int, float>();
        int seed = 100;
        foreach (var n in new[] { 1, 3, 17, 513 })
            foreach (var k in new[] { 1, 7, 4097 })
                foreach (var dtype in OpsTestData.AllDTypes)
                    data.Add(n, k, n == 513 ? 29 : 101, dtype, seed++, 1f);
        // Weights of scale 1e-4: most f16 values are subnormals (below 2^-14), which the register path must read exactly.
        foreach (var n in new[] { 1, 3, 513 })
            data.Add(n, 4097, 37, DType.F16, seed++, 1e-4f);
        return data;
    }

    /// <summary>The float64 product and a naive float32 loop (one multiply and one add per term, in order).</summary>
    internal static (double[] Reference, float[] Naive) References(float[] x, int n, int k, double[] w, int m, double[]? bias)
    {
        var reference = new double[n * m];
        var naive = new float[n * m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                double s = bias?[j] ?? 0;
                float f = (float)(bias?[j] ?? 0);
                for (int c = 0; c < k; c++)
                {
                    s += x[i * k + c] * w[j * k + c];
                    float p = x[i * k + c] * (float)w[j * k + c];
                    f += p;
                }
                reference[i * m + j] = s;
                naive[i * m + j] = f;
            }
        return (reference, naive);
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesFloat64WithinTwiceNaiveError(int n, int k, int m, DType dtype, int seed, float scale)
    {
        var (w, ws) = OpsTestData.RandomWeight("w", dtype, seed, scale, 0f, m, k);
        var (b, bs) = OpsTestData.RandomWeight("b", DType.F32, seed + 1, 1f, 0f, m);
        var x = OpsTestData.RandomFloats(n * k, seed + 2);
        var y = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, w, b, y);
        var (reference, naive) = References(x, n, k, ws, m, bs);
        Tolerance.AssertWithinNaiveError(y, naive, reference, $"Linear n={n} {k}->{m} {dtype} seed={seed}", floor: 1e-6 * scale, log: output);
    }

    public static TheoryData<int, int, int, DType, int, float> QuantizedCases()
    {
        var data = new TheoryData<int, int, int, DType, int, float>();
        int seed = 500;
        // Quantized rows hold whole 32-element blocks: 1, 7 and 129 blocks.
        foreach (var n in new[] { 1, 3, 17, 513 })
            foreach (var k in new[] { 32, 224, 4128 })
                foreach (var dtype in new[] { DType.Q8_0, DType.Q4_0 })
                    data.Add(n, k, n == 513 ? 29 : 101, dtype, seed++, 1f);
        // Weights of scale 1e-4: every block scale is an f16 subnormal (decode and prefill must read it exactly).
        foreach (var n in new[] { 1, 3, 513 })
            foreach (var dtype in new[] { DType.Q8_0, DType.Q4_0 })
                data.Add(n, 224, 37, dtype, seed++, 1e-4f);
        return data;
    }

    /// <summary>
    /// x row quantized as the int8 decode kernels do (Q8_0's rule, the scale kept in float32): the values d·q
    /// in float64, and per block d and the q.
    /// </summary>
    internal static (double[] Values, float[] D, int[] Q) QuantizeActivations(float[] x)
    {
        var values = new double[x.Length];
        var d = new float[x.Length / 32];
        var q = new int[x.Length];
        for (int b = 0; b < d.Length; b++)
        {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(x[b * 32 + j]));
            d[b] = amax / 127f;
            float id = d[b] != 0 ? 1f / d[b] : 0f;
            for (int j = 0; j < 32; j++)
            {
                q[b * 32 + j] = (int)MathF.Round(x[b * 32 + j] * id, MidpointRounding.AwayFromZero);
                values[b * 32 + j] = (double)d[b] * q[b * 32 + j];
            }
        }
        return (values, d, q);
    }

    [Theory, MemberData(nameof(QuantizedCases))]
    public void QuantizedMatchesFloat64WithinTwiceNaiveError(int n, int k, int m, DType dtype, int seed, float scale)
    {
        var (w, ws) = OpsTestData.RandomWeight("w", dtype, seed, scale, 0f, m, k);
        var x = OpsTestData.RandomFloats(n * k, seed + 2);
        var y = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, w, null, y);
        double[] reference;
        float[] naive;
        if (n >= CpuOps.LinearPackedMinRows && !System.Runtime.Intrinsics.X86.Avx512BW.IsSupported)
        {
            // Prefill without AVX-512BW: the weights dequantized exactly, x in float32.
            (reference, naive) = References(x, n, k, ws, m, null);
        }
        else
        {
            // Decode, and prefill's integer kernel: x quantized per block; each block's dot is exact in
            // integers, scaled by d_w·d_x and summed in float32 (naive: in block order).
            reference = new double[n * m];
            naive = new float[n * m];
            var blockBytes = BlockQuant.BlockBytes(dtype);
            var raw = w.Bytes.ToArray();
            for (int i = 0; i < n; i++)
            {
                var (xv, xd, xq) = QuantizeActivations(x[(i * k)..((i + 1) * k)]);
                for (int j = 0; j < m; j++)
                {
                    double s = 0;
                    float f = 0;
                    for (int b = 0; b < k / 32; b++)
                    {
                        var block = raw.AsSpan((j * (k / 32) + b) * blockBytes, blockBytes);
                        float dw = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(block));
                        long dot = 0;
                        for (int e = 0; e < 32; e++)
                        {
                            s += ws[j * k + b * 32 + e] * xv[b * 32 + e];
                            dot += (long)Math.Round(ws[j * k + b * 32 + e] / dw) * xq[b * 32 + e];
                        }
                        f += dw * xd[b] * dot;
                    }
                    reference[i * m + j] = s;
                    naive[i * m + j] = f;
                }
            }
        }
        Tolerance.AssertWithinNaiveError(y, naive, reference, $"Linear n={n} {k}->{m} {dtype} seed={seed}", floor: 1e-5 * scale, log: output);
        if (!CpuWeights.CanInterleave(w)) return;
        // The same weight with its rows interleaved by sixteens (as the CPU backend uploads Q8_0 and Q4_0): held to the same
        // bound (whole groups take the interleaved kernel, the rows after the last group the plain one); prefill
        // widens the very same values either way, so its outputs are the very same.
        var yi = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, CpuWeights.Interleave(w, inPlace: false, threads: 0), null, yi);
        Tolerance.AssertWithinNaiveError(yi, naive, reference, $"Linear n={n} {k}->{m} {dtype} interleaved seed={seed}", floor: 1e-5 * scale, log: output);
        if (n >= CpuOps.LinearPackedMinRows) AssertBitwise(y, yi, $"prefill n={n} {k}->{m}: interleaved against plain");
    }

    [Theory]
    [InlineData(1, DType.F32)]
    [InlineData(1, DType.BF16)]
    [InlineData(1, DType.F16)]
    [InlineData(3, DType.F16)]
    [InlineData(17, DType.BF16)]
    [InlineData(513, DType.F16)]
    [InlineData(1, DType.Q8_0)]
    [InlineData(1, DType.Q4_0)]
    [InlineData(17, DType.Q4_0)]
    [InlineData(1, DType.Q4_0, true)]
    [InlineData(3, DType.Q4_0, true)]
    [InlineData(1, DType.Q8_0, true)]
    [InlineData(17, DType.Q8_0, true)]
    [InlineData(513, DType.Q4_0, true)]
    public void IsBitwiseTheSameOnAnyThreadCountAndAsOnePartOfSeveral(int n, DType dtype, bool interleaved = false)
    {
        Assert.SkipWhen(interleaved && !CpuOps.Int8DotSupported, "rows are interleaved only where the int8 decode kernels run (AVX2)");
        int k = dtype.IsBlockQuantized() ? 1024 : 1029;
        var (a, _) = OpsTestData.RandomWeight("a", dtype, 1, 1f, 0f, 301, k);
        var (c, _) = OpsTestData.RandomWeight("c", dtype, 2, 1f, 0f, 77, k);
        if (interleaved)
        {
            a = CpuWeights.Interleave(a, inPlace: true, threads: 0);
            c = CpuWeights.Interleave(c, inPlace: false, threads: 1);
        }
        var x = OpsTestData.RandomFloats(n * k, 3);
        var alone1 = OpsTestData.Poisoned(n * 301);
        var alone2 = OpsTestData.Poisoned(n * 301);
        CpuOps.Linear(x, n, a, null, alone1, threads: 1);
        CpuOps.Linear(x, n, a, null, alone2, threads: 0);
        AssertBitwise(alone1, alone2, $"{dtype} n={n}: 1 thread against all");

        var ya = OpsTestData.Poisoned(n * 301);
        var yc = OpsTestData.Poisoned(n * 77);
        var cAlone = OpsTestData.Poisoned(n * 77);
        CpuOps.Linear(x, n, c, null, cAlone);
        fixed (float* px = x)
        fixed (float* pa = ya)
        fixed (float* pc = yc)
            CpuOps.LinearParts(px, n, k, [new CpuOps.LinearPart(a, null, (nint)pa, 301), new CpuOps.LinearPart(c, null, (nint)pc, 77)], 0);
        AssertBitwise(alone1, ya, $"{dtype} n={n}: first of two parts");
        AssertBitwise(cAlone, yc, $"{dtype} n={n}: second of two parts");
    }

    /// <summary>Q8_0 and Q4_0 with 1, 7 and 129 blocks per row; at 7 blocks, weights of scale 1e-4 (subnormal f16 block scales).</summary>
    public static TheoryData<DType, int, float> Int8DecodeCases() => new()
    {
        { DType.Q8_0, 32, 1f }, { DType.Q8_0, 224, 1e-4f }, { DType.Q8_0, 4128, 1f },
        { DType.Q4_0, 32, 1f }, { DType.Q4_0, 224, 1e-4f }, { DType.Q4_0, 4128, 1f },
    };

    /// <summary>
    /// The int8 decode kernels' two forms (AVX-VNNI, whose Q4_0 upper lanes hold 16x their sums, and AVX2 alone)
    /// give bitwise the same outputs, and those of Linear on this machine: whole 8-row groups and a 7-row
    /// tail, 1, 7 and 129 blocks, weights with subnormal block scales.
    /// </summary>
    [Theory, MemberData(nameof(Int8DecodeCases))]
    public void Int8DecodeIsTheSameWithAndWithoutVnni(DType dtype, int k, float scale)
    {
        Assert.SkipUnless(CpuOps.Int8DotSupported, "the int8 decode kernels need AVX2");
        const int n = 3, m = 39;
        var (w, _) = OpsTestData.RandomWeight("w", dtype, 7, scale, 0f, m, k);
        var x = OpsTestData.RandomFloats(n * k, 8);
        var linear = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, w, null, linear);
        var avx2 = Decode<CpuOps.Avx2Dot>(x, n, k, w, m);
        AssertBitwise(linear, avx2, $"{dtype} k={k}: AVX2 form against Linear");
        if (System.Runtime.Intrinsics.X86.AvxVnni.IsSupported)
            AssertBitwise(linear, Decode<CpuOps.VnniDot>(x, n, k, w, m), $"{dtype} k={k}: VNNI form against Linear");
        else output.WriteLine("no AVX-VNNI here: only the AVX2 form ran");

        static float[] Decode<T>(float[] x, int n, int k, Weight w, int m) where T : struct, CpuOps.IByteDot
        {
            var y = OpsTestData.Poisoned(n * m);
            fixed (float* px = x)
            fixed (float* py = y)
            {
                using var xq = new CpuOps.QuantizedX(px, n, k, T.Q4HighScale);
                CpuOps.DecodeQuantized<T>(xq, n, w, 0, m, py, m, null, wide: false);
            }
            return y;
        }
    }

    /// <summary>
    /// The interleaved kernel's two widths (sixteen rows in a 512-bit register, or the two halves of each chunk in
    /// 256-bit ones) give bitwise the same outputs, and those of Linear on this machine: two whole 16-row groups
    /// and a 7-row tail, 1, 7 and 129 blocks, subnormal block scales, and Q8_0 bytes of -128 (outside Q8_0's
    /// range, but a file may hold them: both widths negate them to themselves, as vpsignb does).
    /// </summary>
    [Theory, MemberData(nameof(Int8DecodeCases))]
    public void InterleavedKernelIsTheSameAtBothWidths(DType dtype, int k, float scale)
    {
        Assert.SkipUnless(CpuOps.Int8DotSupported, "the int8 decode kernels need AVX2");
        const int n = 3, m = 39;
        var (plain, _) = OpsTestData.RandomWeight("w", dtype, 11, scale, 0f, m, k);
        if (dtype == DType.Q8_0)
        {
            var bytes = new Span<byte>(plain.Pointer, checked((int)plain.ByteLength));
            for (int at = 5; at < bytes.Length; at += 97)
                if (at % BlockQuant.Q8_0BlockBytes >= 2) bytes[at] = 0x80;
        }
        var w = CpuWeights.Interleave(plain, inPlace: false, threads: 0);
        var x = OpsTestData.RandomFloats(n * k, 12);
        var linear = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, w, null, linear);
        var narrow = Decode(x, n, k, w, m, wide: false);
        AssertBitwise(linear, narrow, $"{dtype} k={k}: 256-bit groups against Linear");
        var plainY = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, plain, null, plainY);
        // The plain kernels round differently (eight partial lanes per row); the same values within float32 sums' error.
        for (int i = 0; i < linear.Length; i++) Assert.True(Math.Abs(linear[i] - plainY[i]) <= 1e-4 * (1 + Math.Abs(plainY[i])), $"{dtype} k={k} [{i}]: {linear[i]} interleaved, {plainY[i]} plain");
        if (CpuOps.WideGroups) AssertBitwise(linear, Decode(x, n, k, w, m, wide: true), $"{dtype} k={k}: 512-bit groups against Linear");
        else output.WriteLine("no AVX-512BW here: only the 256-bit groups ran");

        static float[] Decode(float[] x, int n, int k, Weight w, int m, bool wide)
        {
            var y = OpsTestData.Poisoned(n * m);
            fixed (float* px = x)
            fixed (float* py = y)
            {
                using var xq = new CpuOps.QuantizedX(px, n, k, CpuOps.Q4HighScaleHere);
                if (System.Runtime.Intrinsics.X86.AvxVnni.IsSupported) CpuOps.DecodeQuantized<CpuOps.VnniDot>(xq, n, w, 0, m, py, m, null, wide);
                else CpuOps.DecodeQuantized<CpuOps.Avx2Dot>(xq, n, w, 0, m, py, m, null, wide);
            }
            return y;
        }
    }

    /// <summary>
    /// The two f16 decode forms (exact widening; positioned bits as w · 2^-112 against x · 2^112) give the very sums
    /// Linear gives, whichever of them this CPU picks: small weights make many f16 subnormals, odd k leaves tails.
    /// </summary>
    [Theory]
    [InlineData(1, 32, 1f)]
    [InlineData(1, 4097, 1e-4f)]
    [InlineData(3, 37, 1e-4f)]
    [InlineData(2, 4128, 1f)]
    public void HalfDecodeFormsAreTheSame(int n, int k, float scale)
    {
        const int m = 7;
        var (w, _) = OpsTestData.RandomWeight("w", DType.F16, 9, scale, 0f, m, k);
        var x = OpsTestData.RandomFloats(n * k, 10);
        x[0] = 60000f;
        var linear = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, w, null, linear);
        AssertBitwise(linear, Rows<CpuOps.F16Rows>(x, n, k, w, m), $"f16 k={k}: exact form against Linear");
        AssertBitwise(linear, Rows<CpuOps.F16ScaledRows>(x, n, k, w, m), $"f16 k={k}: scaled form against Linear");
        output.WriteLine($"subnormal inputs are free here: {CpuOps.SubnormalInputsAreFree}");

        static float[] Rows<T>(float[] x, int n, int k, Weight w, int m) where T : struct, CpuOps.IRowFormat
        {
            var y = OpsTestData.Poisoned(n * m);
            fixed (float* px = x)
            fixed (float* py = y)
                CpuOps.RowKernels<T>(px, n, k, w, py);
            return y;
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(20)]
    public void HalfWeightsAreExactForLargeInputs(int n)
    {
        // Large inputs: the register path widens the weights exactly, so |x| = 70000 needs no special case.
        const int k = 100, m = 9;
        var (w, ws) = OpsTestData.RandomWeight("w", DType.F16, 4, 1f, 0f, m, k);
        var x = OpsTestData.RandomFloats(n * k, 5);
        x[3] = 70000f;
        var y = OpsTestData.Poisoned(n * m);
        CpuOps.Linear(x, n, w, null, y);
        var (reference, naive) = References(x, n, k, ws, m, null);
        Tolerance.AssertWithinNaiveError(y, naive, reference, $"f16 Linear with |x| = 70000, n={n}", floor: 1e-3);
    }

    [Fact]
    public void HalfWeightsWithInfinityGiveInfinity()
    {
        // An f16 Inf would read as a finite 2^16 in the register path; the weight is scanned and widened instead.
        const int k = 64, m = 6;
        var values = OpsTestData.RandomFloats(m * k, 6);
        values[2 * k + 5] = float.PositiveInfinity;
        var w = Weight.FromFloats("w", values, DType.F16, m, k);
        var x = OpsTestData.RandomFloats(k, 7, scale: 1f, offset: 2f);   // all positive: the Inf term wins
        var y = OpsTestData.Poisoned(m);
        CpuOps.Linear(x, 1, w, null, y);
        Assert.Equal(float.PositiveInfinity, y[2]);
        for (int j = 0; j < m; j++) if (j != 2) Assert.True(float.IsFinite(y[j]), $"output {j} = {y[j]}");
    }

    [Fact]
    public void BFloat16RoundingMatchesTheScalarRule()
    {
        var rng = new Random(8);
        var values = new float[1000];
        for (int i = 0; i < values.Length; i++) values[i] = BitConverter.Int32BitsToSingle(rng.Next(int.MinValue, int.MaxValue));
        float[] special = [0f, -0f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, float.Epsilon, float.MaxValue, 1.00390625f, 1.01171875f];
        special.CopyTo(values, 0);
        var got = new ushort[values.Length];
        CpuOps.ToBFloat16(values, got);
        for (int i = 0; i < values.Length; i++)
            Assert.True(got[i] == DTypes.ToBFloat16Bits(values[i]), $"[{i}] {values[i]:R}: {got[i]:X4}, want {DTypes.ToBFloat16Bits(values[i]):X4}");
    }

    private static void AssertBitwise(float[] want, float[] got, string what)
    {
        for (int i = 0; i < want.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(want[i]) == BitConverter.SingleToInt32Bits(got[i]), $"{what}: [{i}] {got[i]:R}, want {want[i]:R}");
    }
}
