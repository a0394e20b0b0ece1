// JPEG post-processing as libjpeg-turbo 2.1 does it by default (do_fancy_upsampling on, no merged
// upsampler), then PIL's conversion to RGB:
//   upsampling per component, chosen by its ratio to the largest sampling factors (jdsample.c):
//     1x1 copy; 2x1 "fancy" triangular filter when the component is more than 2 samples wide, else
//     replication; 1x2 fancy triangular filter (always); 2x2 fancy when more than 2 samples wide, else
//     replication; any other integral ratio (4:1:1 and the like) replication; non-integral ratios rejected.
//     Rows above the first and below the last repeat the edge row, as libjpeg's context rows do.
//   colour: YCbCr -> RGB with libjpeg's 16-bit fixed-point tables (jdcolor.c); Adobe RGB copied; gray
//     replicated; CMYK and YCCK (YCCK -> CMYK as libjpeg does) read by PIL as Adobe-inverted "CMYK;I",
//     then PIL's CMYK -> RGB: r = nk - nk*c/255 (rounded as PIL's MULDIV255) with nk = 255 - k.
namespace VteKernels.Imaging;

internal static class JpegColor
{
    private const int ScaleBits = 16;
    private const int OneHalf = 1 << (ScaleBits - 1);
    private static readonly int[] CrR = new int[256], CbB = new int[256], CrG = new int[256], CbG = new int[256];

    static JpegColor()
    {
        static int Fix(double x) => (int)(x * (1 << ScaleBits) + 0.5);
        for (int i = 0, x = -128; i < 256; i++, x++)
        {
            CrR[i] = (Fix(1.40200) * x + OneHalf) >> ScaleBits;
            CbB[i] = (Fix(1.77200) * x + OneHalf) >> ScaleBits;
            CrG[i] = -Fix(0.71414) * x;
            CbG[i] = -Fix(0.34414) * x + OneHalf;
        }
    }

    private static byte Clamp(int v) => (byte)(v < 0 ? 0 : v > 255 ? 255 : v);

    /// <summary>
    /// Upsamples one component plane (<paramref name="dw"/> x <paramref name="dh"/> valid samples, row pitch
    /// <paramref name="stride"/>) by integral factors <paramref name="hx"/>, <paramref name="vx"/> to a
    /// <paramref name="width"/> x <paramref name="height"/> plane.
    /// </summary>
    public static byte[] Upsample(byte[] src, int stride, int dw, int dh, int hx, int vx, int width, int height)
    {
        var dst = new byte[(long)width * height];
        if (hx == 1 && vx == 1)
        {
            for (int y = 0; y < height; y++) Array.Copy(src, (long)y * stride, dst, (long)y * width, width);
            return dst;
        }
        var row = new byte[2 * Math.Max(dw, 1) + 2];
        if (hx == 2 && vx == 1 && dw > 2)
        {
            for (int y = 0; y < height; y++)
            {
                H2V1Fancy(src.AsSpan(y * stride, dw), row);
                Array.Copy(row, 0, dst, (long)y * width, width);
            }
            return dst;
        }
        if (hx == 1 && vx == 2)
        {
            for (int y = 0; y < height; y++)
            {
                int r0 = y >> 1, r1 = Math.Clamp((y & 1) == 0 ? r0 - 1 : r0 + 1, 0, dh - 1);
                int bias = (y & 1) == 0 ? 1 : 2;
                var a = src.AsSpan(r0 * stride, dw);
                var b = src.AsSpan(r1 * stride, dw);
                var o = dst.AsSpan(y * width, width);
                for (int x = 0; x < width; x++) o[x] = (byte)((a[x] * 3 + b[x] + bias) >> 2);
            }
            return dst;
        }
        if (hx == 2 && vx == 2 && dw > 2)
        {
            for (int y = 0; y < height; y++)
            {
                int r0 = y >> 1, r1 = Math.Clamp((y & 1) == 0 ? r0 - 1 : r0 + 1, 0, dh - 1);
                H2V2Fancy(src.AsSpan(r0 * stride, dw), src.AsSpan(r1 * stride, dw), row);
                Array.Copy(row, 0, dst, (long)y * width, width);
            }
            return dst;
        }
        // Replication (libjpeg's h2v1_upsample, h2v2_upsample and int_upsample).
        for (int y = 0; y < height; y++)
        {
            var s = src.AsSpan(y / vx * stride, dw);
            var o = dst.AsSpan(y * width, width);
            for (int x = 0; x < width; x++) o[x] = s[x / hx];
        }
        return dst;
    }

    // jdsample.c h2v1_fancy_upsample: 3/4 nearer + 1/4 further sample, alternating rounding 1 and 2.
    private static void H2V1Fancy(ReadOnlySpan<byte> s, Span<byte> o)
    {
        int n = s.Length;
        o[0] = s[0];
        o[1] = (byte)((s[0] * 3 + s[1] + 2) >> 2);
        for (int c = 1; c < n - 1; c++)
        {
            int v = s[c] * 3;
            o[2 * c] = (byte)((v + s[c - 1] + 1) >> 2);
            o[2 * c + 1] = (byte)((v + s[c + 1] + 2) >> 2);
        }
        o[2 * n - 2] = (byte)((s[n - 1] * 3 + s[n - 2] + 1) >> 2);
        o[2 * n - 1] = s[n - 1];
    }

    // jdsample.c h2v2_fancy_upsample for one output row: column sums 3*nearer row + further row, then 3:1
    // horizontally, rounding 8 and 7 alternately.
    private static void H2V2Fancy(ReadOnlySpan<byte> near, ReadOnlySpan<byte> far, Span<byte> o)
    {
        int n = near.Length;
        int last = near[0] * 3 + far[0];
        int cur = last;
        int next = near[1] * 3 + far[1];
        o[0] = (byte)((cur * 4 + 8) >> 4);
        o[1] = (byte)((cur * 3 + next + 7) >> 4);
        last = cur;
        cur = next;
        for (int c = 1; c < n - 1; c++)
        {
            next = near[c + 1] * 3 + far[c + 1];
            o[2 * c] = (byte)((cur * 3 + last + 8) >> 4);
            o[2 * c + 1] = (byte)((cur * 3 + next + 7) >> 4);
            last = cur;
            cur = next;
        }
        o[2 * n - 2] = (byte)((cur * 3 + last + 8) >> 4);
        o[2 * n - 1] = (byte)((cur * 4 + 7) >> 4);
    }

    /// <summary>libjpeg's ycc_rgb_convert on full-resolution planes.</summary>
    public static void YccToRgb(byte[] y, byte[] cb, byte[] cr, Span<byte> rgb)
    {
        for (int i = 0; i < y.Length; i++)
        {
            int yy = y[i], b = cb[i], r = cr[i];
            rgb[3 * i] = Clamp(yy + CrR[r]);
            rgb[3 * i + 1] = Clamp(yy + ((CbG[b] + CrG[r]) >> ScaleBits));
            rgb[3 * i + 2] = Clamp(yy + CbB[b]);
        }
    }

    /// <summary>Planes already in RGB (Adobe transform 0, or component ids 'R','G','B').</summary>
    public static void Interleave(byte[] r, byte[] g, byte[] b, Span<byte> rgb)
    {
        for (int i = 0; i < r.Length; i++)
        {
            rgb[3 * i] = r[i];
            rgb[3 * i + 1] = g[i];
            rgb[3 * i + 2] = b[i];
        }
    }

    /// <summary>Gray replicated to R, G, B (PIL's "L" -> "RGB").</summary>
    public static void Gray(byte[] g, Span<byte> rgb)
    {
        for (int i = 0; i < g.Length; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g[i];
    }

    /// <summary>
    /// Four planes as decoded (CMYK, or YCCK when <paramref name="ycck"/>) to RGB: libjpeg's YCCK -> CMYK,
    /// PIL's "CMYK;I" inversion, then PIL's cmyk2rgb.
    /// </summary>
    public static void CmykToRgb(byte[] p0, byte[] p1, byte[] p2, byte[] k, bool ycck, Span<byte> rgb)
    {
        for (int i = 0; i < p0.Length; i++)
        {
            int c, m, yl;
            if (ycck)
            {
                int yy = p0[i], b = p1[i], r = p2[i];
                c = Clamp(255 - (yy + CrR[r]));
                m = Clamp(255 - (yy + ((CbG[b] + CrG[r]) >> ScaleBits)));
                yl = Clamp(255 - (yy + CbB[b]));
            }
            else (c, m, yl) = (p0[i], p1[i], p2[i]);
            // "CMYK;I": every stored value v means 255 - v.
            c = 255 - c;
            m = 255 - m;
            yl = 255 - yl;
            int nk = k[i]; // 255 - (255 - k)
            rgb[3 * i] = Clamp(nk - MulDiv255(c, nk));
            rgb[3 * i + 1] = Clamp(nk - MulDiv255(m, nk));
            rgb[3 * i + 2] = Clamp(nk - MulDiv255(yl, nk));
        }
    }

    private static int MulDiv255(int a, int b)
    {
        int t = a * b + 128;
        return ((t >> 8) + t) >> 8;
    }
}
