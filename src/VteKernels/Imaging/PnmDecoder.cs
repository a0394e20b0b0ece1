// Binary PGM (P5) and PPM (P6) with maxval 255: a text header (magic, width, height, maxval, separated by
// whitespace, '#' comments running to the end of a line), one whitespace byte, then the raw samples.
// Gray is replicated to R, G and B. Other maxvals and the ASCII variants are rejected.
namespace VteKernels.Imaging;

internal static class PnmDecoder
{
    private const string Fmt = "PNM";

    public static DecodedImage Decode(ReadOnlySpan<byte> d, DecodeOptions options)
    {
        int channels = d[1] == '6' ? 3 : 1;
        int pos = 2;
        long width = Field(d, ref pos, "width");
        long height = Field(d, ref pos, "height");
        long maxval = Field(d, ref pos, "maxval");
        if (pos >= d.Length) throw new ImageFormatException(Fmt, "file ends after the header (truncated)", pos);
        if (!IsSpace(d[pos])) throw new ImageFormatException(Fmt, "no whitespace after maxval", pos);
        pos++;
        if (maxval != 255) throw new ImageFormatException(Fmt, $"maxval {maxval} is not supported (only 255)");
        ImageLimits.Check(Fmt, width, height, options, 2);
        long need = width * height * channels;
        if (d.Length - pos < need) throw new ImageFormatException(Fmt, $"pixel data is truncated: {d.Length - pos} of {need} bytes", pos);
        var image = new RgbImage((int)width, (int)height);
        var px = d.Slice(pos, (int)need);
        if (channels == 3) px.CopyTo(image.Pixels);
        else
            for (int i = 0; i < px.Length; i++) image.Pixels[3 * i] = image.Pixels[3 * i + 1] = image.Pixels[3 * i + 2] = px[i];
        return new DecodedImage(image, 1);
    }

    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r' or 0x0B or 0x0C;

    // Skips whitespace and comments, then reads a decimal field of at most 9 digits.
    private static long Field(ReadOnlySpan<byte> d, ref int pos, string name)
    {
        while (pos < d.Length)
        {
            if (IsSpace(d[pos])) pos++;
            else if (d[pos] == '#')
                while (pos < d.Length && d[pos] != '\n' && d[pos] != '\r') pos++;
            else break;
        }
        if (pos >= d.Length) throw new ImageFormatException(Fmt, $"file ends before the {name} field (truncated)", pos);
        int start = pos;
        long v = 0;
        while (pos < d.Length && char.IsAsciiDigit((char)d[pos]))
        {
            if (pos - start >= 9) throw new ImageFormatException(Fmt, $"{name} field is too long", start);
            v = v * 10 + (d[pos] - '0');
            pos++;
        }
        if (pos == start) throw new ImageFormatException(Fmt, $"{name} field is not a number", start);
        return v;
    }
}
