// The 8x8 inverse DCT of libjpeg's "ISLOW" method (jidctint.c, jpeg_idct_islow): the Loeffler-Ligtenberg-
// Moschytz algorithm in 32-bit fixed point, CONST_BITS 13, PASS1_BITS 2, columns first, then rows, with the
// same rounding at the same places and the same range-limit table, so its output is bit-identical to
// libjpeg-turbo's (whose SIMD ISLOW kernels are themselves bit-exact with the C code) for valid input.
// The range-limit table is libjpeg's: an index is taken modulo 1024, so out-of-range coefficients from a
// corrupt file wrap exactly as they do there instead of failing.
namespace VteKernels.Imaging;

internal static class JpegIdct
{
    private const int ConstBits = 13, Pass1Bits = 2;
    private const int Fix_0_298631336 = 2446, Fix_0_390180644 = 3196, Fix_0_541196100 = 4433, Fix_0_765366865 = 6270,
        Fix_0_899976223 = 7373, Fix_1_175875602 = 9633, Fix_1_501321110 = 12299, Fix_1_847759065 = 15137,
        Fix_1_961570560 = 16069, Fix_2_053119869 = 16819, Fix_2_562915447 = 20995, Fix_3_072711026 = 25172;

    // libjpeg's post-IDCT range limit (prepare_range_limit_table, offset by CENTERJSAMPLE): x & 1023 ->
    // clamp(x + 128) for x in [-512, 511].
    private static readonly byte[] RangeLimit = BuildRangeLimit();

    private static byte[] BuildRangeLimit()
    {
        var t = new byte[1024];
        for (int v = 0; v < 1024; v++) t[v] = (byte)(v < 128 ? v + 128 : v < 512 ? 255 : v < 896 ? 0 : v - 896);
        return t;
    }

    /// <summary>Dequantizes one block (natural order) and writes its 8x8 samples at <paramref name="output"/> with row pitch <paramref name="stride"/>.</summary>
    public static void Islow(ReadOnlySpan<short> coef, ReadOnlySpan<short> quant, Span<byte> output, int stride)
    {
        Span<int> ws = stackalloc int[64];
        var range = RangeLimit;

        // Pass 1: columns from input into the work array, scaled up by 2^PASS1_BITS.
        for (int c = 0; c < 8; c++)
        {
            if (coef[8 + c] == 0 && coef[16 + c] == 0 && coef[24 + c] == 0 && coef[32 + c] == 0 &&
                coef[40 + c] == 0 && coef[48 + c] == 0 && coef[56 + c] == 0)
            {
                int dc = (coef[c] * quant[c]) << Pass1Bits;
                for (int r = 0; r < 8; r++) ws[8 * r + c] = dc;
                continue;
            }
            long z2 = coef[16 + c] * quant[16 + c], z3 = coef[48 + c] * quant[48 + c];
            long z1 = (z2 + z3) * Fix_0_541196100;
            long tmp2 = z1 + z3 * -Fix_1_847759065;
            long tmp3 = z1 + z2 * Fix_0_765366865;
            z2 = coef[c] * quant[c];
            z3 = coef[32 + c] * quant[32 + c];
            long tmp0 = (z2 + z3) << ConstBits;
            long tmp1 = (z2 - z3) << ConstBits;
            long tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;

            tmp0 = coef[56 + c] * quant[56 + c];
            tmp1 = coef[40 + c] * quant[40 + c];
            tmp2 = coef[24 + c] * quant[24 + c];
            tmp3 = coef[8 + c] * quant[8 + c];
            Odd(ref tmp0, ref tmp1, ref tmp2, ref tmp3);

            const int s = ConstBits - Pass1Bits;
            ws[c] = (int)Descale(tmp10 + tmp3, s);
            ws[56 + c] = (int)Descale(tmp10 - tmp3, s);
            ws[8 + c] = (int)Descale(tmp11 + tmp2, s);
            ws[48 + c] = (int)Descale(tmp11 - tmp2, s);
            ws[16 + c] = (int)Descale(tmp12 + tmp1, s);
            ws[40 + c] = (int)Descale(tmp12 - tmp1, s);
            ws[24 + c] = (int)Descale(tmp13 + tmp0, s);
            ws[32 + c] = (int)Descale(tmp13 - tmp0, s);
        }

        // Pass 2: rows from the work array to the output, descaled by 2^(CONST_BITS+PASS1_BITS+3).
        for (int r = 0; r < 8; r++)
        {
            var w = ws.Slice(8 * r, 8);
            var o = output.Slice(r * stride, 8);
            if (w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0)
            {
                byte v = range[(int)Descale(w[0], Pass1Bits + 3) & 1023];
                o.Fill(v);
                continue;
            }
            long z2 = w[2], z3 = w[6];
            long z1 = (z2 + z3) * Fix_0_541196100;
            long tmp2 = z1 + z3 * -Fix_1_847759065;
            long tmp3 = z1 + z2 * Fix_0_765366865;
            long tmp0 = ((long)w[0] + w[4]) << ConstBits;
            long tmp1 = ((long)w[0] - w[4]) << ConstBits;
            long tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;

            tmp0 = w[7];
            tmp1 = w[5];
            tmp2 = w[3];
            tmp3 = w[1];
            Odd(ref tmp0, ref tmp1, ref tmp2, ref tmp3);

            const int s = ConstBits + Pass1Bits + 3;
            o[0] = range[(int)Descale(tmp10 + tmp3, s) & 1023];
            o[7] = range[(int)Descale(tmp10 - tmp3, s) & 1023];
            o[1] = range[(int)Descale(tmp11 + tmp2, s) & 1023];
            o[6] = range[(int)Descale(tmp11 - tmp2, s) & 1023];
            o[2] = range[(int)Descale(tmp12 + tmp1, s) & 1023];
            o[5] = range[(int)Descale(tmp12 - tmp1, s) & 1023];
            o[3] = range[(int)Descale(tmp13 + tmp0, s) & 1023];
            o[4] = range[(int)Descale(tmp13 - tmp0, s) & 1023];
        }
    }

    // The odd part (figure 8 of the LL&M paper): inputs y7, y5, y3, y1; outputs tmp0..tmp3.
    private static void Odd(ref long tmp0, ref long tmp1, ref long tmp2, ref long tmp3)
    {
        long z1 = tmp0 + tmp3, z2 = tmp1 + tmp2, z3 = tmp0 + tmp2, z4 = tmp1 + tmp3;
        long z5 = (z3 + z4) * Fix_1_175875602;
        tmp0 *= Fix_0_298631336;
        tmp1 *= Fix_2_053119869;
        tmp2 *= Fix_3_072711026;
        tmp3 *= Fix_1_501321110;
        z1 *= -Fix_0_899976223;
        z2 *= -Fix_2_562915447;
        z3 *= -Fix_1_961570560;
        z4 *= -Fix_0_390180644;
        z3 += z5;
        z4 += z5;
        tmp0 += z1 + z3;
        tmp1 += z2 + z4;
        tmp2 += z2 + z3;
        tmp3 += z1 + z4;
    }

    private static long Descale(long x, int n) => (x + (1L << (n - 1))) >> n;
}
