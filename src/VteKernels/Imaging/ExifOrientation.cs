// The EXIF Orientation tag (0x0112 in IFD0 of a TIFF structure) and the flips/rotations that undo it,
// as PIL's ImageOps.exif_transpose applies them: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM,
// 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90 (PIL's rotations are counter-clockwise).
// A malformed EXIF block is not an error: it only means "no orientation" (1), because the pixels are intact.
using System.Buffers.Binary;

namespace VteKernels.Imaging;

internal static class ExifOrientation
{
    /// <summary>Orientation 1..8 from a TIFF-structured EXIF block, or 1 when absent, malformed or out of range.</summary>
    public static int FromTiff(ReadOnlySpan<byte> t)
    {
        if (t.Length < 8) return 1;
        bool little;
        if (t[0] == 'I' && t[1] == 'I') little = true;
        else if (t[0] == 'M' && t[1] == 'M') little = false;
        else return 1;
        if (U16(t, 2, little) != 42) return 1;
        uint ifd = U32(t, 4, little);
        if (ifd > (uint)t.Length - 2 || ifd < 8) return 1;
        int count = U16(t, (int)ifd, little);
        for (int i = 0; i < count; i++)
        {
            long e = ifd + 2 + 12L * i;
            if (e + 12 > t.Length) return 1;
            if (U16(t, (int)e, little) != 0x0112) continue;
            int type = U16(t, (int)e + 2, little);
            uint n = U32(t, (int)e + 4, little);
            if (n < 1) return 1;
            int v = type switch
            {
                3 => U16(t, (int)e + 8, little),
                4 when n == 1 => (int)Math.Min(U32(t, (int)e + 8, little), int.MaxValue),
                _ => 1,
            };
            return v is >= 1 and <= 8 ? v : 1;
        }
        return 1;
    }

    /// <summary>Orientation from a JPEG APP1 payload ("Exif\0\0" then TIFF), or 1.</summary>
    public static int FromApp1(ReadOnlySpan<byte> app1) =>
        app1.Length >= 6 && app1.StartsWith("Exif\0"u8) ? FromTiff(app1[6..]) : 1;

    /// <summary>The image as it should be shown: <paramref name="orientation"/> undone. 1 (or anything outside 2..8) returns the input.</summary>
    public static RgbImage Apply(RgbImage src, int orientation)
    {
        if (orientation is < 2 or > 8) return src;
        int w = src.Width, h = src.Height;
        bool swap = orientation >= 5;
        var dst = swap ? new RgbImage(h, w) : new RgbImage(w, h);
        int ow = dst.Width, oh = dst.Height;
        var s = src.Pixels;
        var d = dst.Pixels;
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
            {
                // Source pixel (sx, sy) shown at (x, y).
                var (sx, sy) = orientation switch
                {
                    2 => (w - 1 - x, y),
                    3 => (w - 1 - x, h - 1 - y),
                    4 => (x, h - 1 - y),
                    5 => (y, x),
                    6 => (y, h - 1 - x),
                    7 => (w - 1 - y, h - 1 - x),
                    _ => (w - 1 - y, x),
                };
                int si = (sy * w + sx) * 3, di = (y * ow + x) * 3;
                d[di] = s[si];
                d[di + 1] = s[si + 1];
                d[di + 2] = s[si + 2];
            }
        return dst;
    }

    private static int U16(ReadOnlySpan<byte> t, int at, bool little) =>
        little ? BinaryPrimitives.ReadUInt16LittleEndian(t[at..]) : BinaryPrimitives.ReadUInt16BigEndian(t[at..]);

    private static uint U32(ReadOnlySpan<byte> t, int at, bool little) =>
        little ? BinaryPrimitives.ReadUInt32LittleEndian(t[at..]) : BinaryPrimitives.ReadUInt32BigEndian(t[at..]);
}
