// Image resizing exactly as PIL 9.4's Image.resize(size, filter, reducing_gap=None) does on RGB images
// (libImaging/Resample.c), so that preprocessing reproduces HF's PIL-based image processors bit for bit:
//   - separable, horizontal pass first, then vertical; a pass runs only when that dimension changes;
//   - per output sample, a window centred at (i + 0.5) * scale with support = filter support * max(scale, 1)
//     (the antialiasing when shrinking), weights computed in double, normalized to sum 1, then rounded to
//     22-bit fixed point; the sum starts at 1/2 and is clipped to 0..255 after every pass (the intermediate
//     image is 8-bit, as in PIL);
//   - NEAREST is PIL's affine-scale path: source coordinate accumulated in double, truncated.
// Filter codes are PIL's (and HF's "resample" values): 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming.
namespace VteKernels.Imaging;

/// <summary>Resampling filters, numbered as PIL and HF preprocessor configs number them.</summary>
public enum ResampleFilter
{
    /// <summary>Nearest neighbour (PIL.Image.NEAREST = 0).</summary>
    Nearest = 0,
    /// <summary>Lanczos, support 3 (PIL.Image.LANCZOS = 1).</summary>
    Lanczos = 1,
    /// <summary>Triangle, support 1 (PIL.Image.BILINEAR = 2).</summary>
    Bilinear = 2,
    /// <summary>Keys cubic with a = -0.5, support 2 (PIL.Image.BICUBIC = 3).</summary>
    Bicubic = 3,
    /// <summary>Box, support 0.5 (PIL.Image.BOX = 4).</summary>
    Box = 4,
    /// <summary>Hamming-windowed sinc, support 1 (PIL.Image.HAMMING = 5).</summary>
    Hamming = 5,
}

internal static class PilResize
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Most filter weights one resampling pass may need (output size x taps per output): 64 Mi, 256 MiB.
    /// Shrinking an axis of n pixels takes about 2 x support x n of them.</summary>
    public const long MaxTaps = 64L << 20;

    /// <summary>The image resized to <paramref name="width"/> x <paramref name="height"/>; the input itself when the size is unchanged.</summary>
    public static RgbImage Resize(RgbImage src, int width, int height, ResampleFilter filter)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        if (width == src.Width && height == src.Height) return src;
        // The horizontal pass runs first (as in PIL), so its output is width x the input's height.
        long largest = Math.Max((long)width * height, width != src.Width ? (long)width * src.Height : 0);
        if (largest > ClipOptions.MaxResizedPixels)
            throw new InvalidInputException($"resizing {src.Width}x{src.Height} to {width}x{height} needs an image of {largest} pixels, more than the {ClipOptions.MaxResizedPixels} allowed");
        if (filter == ResampleFilter.Nearest) return Nearest(src, width, height);
        var img = src;
        if (width != src.Width)
        {
            var (bounds, kk, ksize) = Coefficients(src.Width, width, filter);
            img = Horizontal(img, width, bounds, kk, ksize);
        }
        if (height != src.Height)
        {
            var (bounds, kk, ksize) = Coefficients(src.Height, height, filter);
            img = Vertical(img, height, bounds, kk, ksize);
        }
        return img;
    }

    private static double Support(ResampleFilter f) => f switch
    {
        ResampleFilter.Box => 0.5,
        ResampleFilter.Bilinear or ResampleFilter.Hamming => 1.0,
        ResampleFilter.Bicubic => 2.0,
        ResampleFilter.Lanczos => 3.0,
        _ => throw new ArgumentOutOfRangeException(nameof(f), f, "unknown resampling filter"),
    };

    private static double Kernel(ResampleFilter f, double x)
    {
        switch (f)
        {
            case ResampleFilter.Box:
                return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
            case ResampleFilter.Bilinear:
                if (x < 0.0) x = -x;
                return x < 1.0 ? 1.0 - x : 0.0;
            case ResampleFilter.Hamming:
                if (x < 0.0) x = -x;
                if (x == 0.0) return 1.0;
                if (x >= 1.0) return 0.0;
                x *= Math.PI;
                return Math.Sin(x) / x * ((double)0.54f + (double)0.46f * Math.Cos(x));
            case ResampleFilter.Bicubic:
                const double a = -0.5;
                if (x < 0.0) x = -x;
                if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
                if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
                return 0.0;
            default: // Lanczos
                return -3.0 <= x && x < 3.0 ? Sinc(x) * Sinc(x / 3) : 0.0;
        }
    }

    private static double Sinc(double x)
    {
        if (x == 0.0) return 1.0;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    // precompute_coeffs + normalize_coeffs_8bpc: per output index a first input index, a count, and ksize
    // fixed-point weights.
    private static (int[] Bounds, int[] Kk, int KSize) Coefficients(int inSize, int outSize, ResampleFilter f)
    {
        double scale = (double)((float)inSize - 0f) / outSize;
        double filterscale = scale < 1.0 ? 1.0 : scale;
        double support = Support(f) * filterscale;
        double taps = (Math.Ceiling(support) * 2 + 1) * outSize;
        if (taps > MaxTaps)
            throw new InvalidInputException($"resampling {inSize} pixels to {outSize} needs {taps:F0} filter weights, more than the {MaxTaps} allowed");
        int ksize = (int)Math.Ceiling(support) * 2 + 1;
        var bounds = new int[outSize * 2];
        var kk = new int[(long)outSize * ksize];
        var k = new double[ksize];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = 0.0 + (xx + 0.5) * scale;
            double ww = 0.0, ss = 1.0 / filterscale;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            for (int x = 0; x < xmax; x++)
            {
                double w = Kernel(f, (x + xmin - center + 0.5) * ss);
                k[x] = w;
                ww += w;
            }
            for (int x = 0; x < ksize; x++)
            {
                double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
                kk[xx * ksize + x] = v < 0 ? (int)(-0.5 + v * (1 << PrecisionBits)) : (int)(0.5 + v * (1 << PrecisionBits));
            }
            bounds[2 * xx] = xmin;
            bounds[2 * xx + 1] = xmax;
        }
        return (bounds, kk, ksize);
    }

    private static byte Clip8(int v) => v >= 1 << PrecisionBits << 8 ? (byte)255 : v <= 0 ? (byte)0 : (byte)(v >> PrecisionBits);

    private static RgbImage Horizontal(RgbImage src, int width, int[] bounds, int[] kk, int ksize)
    {
        var dst = new RgbImage(width, src.Height);
        var s = src.Pixels;
        var d = dst.Pixels;
        int sw = src.Width;
        for (int y = 0; y < src.Height; y++)
        {
            int srow = y * sw * 3, drow = y * width * 3;
            for (int xx = 0; xx < width; xx++)
            {
                int xmin = bounds[2 * xx], n = bounds[2 * xx + 1], kb = xx * ksize;
                int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < n; x++)
                {
                    int w = kk[kb + x], p = srow + (xmin + x) * 3;
                    s0 += s[p] * w;
                    s1 += s[p + 1] * w;
                    s2 += s[p + 2] * w;
                }
                d[drow + 3 * xx] = Clip8(s0);
                d[drow + 3 * xx + 1] = Clip8(s1);
                d[drow + 3 * xx + 2] = Clip8(s2);
            }
        }
        return dst;
    }

    private static RgbImage Vertical(RgbImage src, int height, int[] bounds, int[] kk, int ksize)
    {
        int w3 = src.Width * 3;
        var dst = new RgbImage(src.Width, height);
        var s = src.Pixels;
        var d = dst.Pixels;
        var acc = new int[w3];
        for (int yy = 0; yy < height; yy++)
        {
            int ymin = bounds[2 * yy], n = bounds[2 * yy + 1], kb = yy * ksize;
            Array.Fill(acc, 1 << (PrecisionBits - 1));
            for (int y = 0; y < n; y++)
            {
                int w = kk[kb + y], row = (ymin + y) * w3;
                for (int i = 0; i < w3; i++) acc[i] += s[row + i] * w;
            }
            int drow = yy * w3;
            for (int i = 0; i < w3; i++) d[drow + i] = Clip8(acc[i]);
        }
        return dst;
    }

    // PIL's ImagingScaleAffine (the NEAREST path of Image.resize): x source = trunc(x0 + (i + 0.5) * a),
    // accumulated by repeated addition; positions outside the source are left black.
    private static RgbImage Nearest(RgbImage src, int width, int height)
    {
        double ax = (double)src.Width / width, ay = (double)src.Height / height;
        var xin = new int[width];
        double xo = ax * 0.5;
        for (int x = 0; x < width; x++)
        {
            xin[x] = xo < 0.0 ? -1 : (int)xo;
            xo += ax;
        }
        var dst = new RgbImage(width, height);
        double yo = ay * 0.5;
        for (int y = 0; y < height; y++)
        {
            int yi = yo < 0.0 ? -1 : (int)yo;
            yo += ay;
            if (yi < 0 || yi >= src.Height) continue;
            var srow = src.Row(yi);
            var drow = dst.Row(y);
            for (int x = 0; x < width; x++)
            {
                int xi = xin[x];
                if (xi < 0 || xi >= src.Width) continue;
                drow[3 * x] = srow[3 * xi];
                drow[3 * x + 1] = srow[3 * xi + 1];
                drow[3 * x + 2] = srow[3 * xi + 2];
            }
        }
        return dst;
    }
}
