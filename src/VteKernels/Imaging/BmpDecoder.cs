// BMP decoder for the uncompressed (BI_RGB) layouts: 24-bit BGR, 32-bit BGRX (the fourth byte ignored, as
// PIL reads BI_RGB 32-bit as "BGRX"), and 8-bit palette (BGRX entries after a 40+ byte info header, BGR
// after the 12-byte core header). Rows are padded to 4 bytes; a positive height is stored bottom-up, a
// negative one top-down. Palette indices past the stored entries read PIL's default grayscale ramp.
// RLE, bit fields and 1/4/16-bit layouts are rejected with a clear message.
using System.Buffers.Binary;

namespace VteKernels.Imaging;

internal static class BmpDecoder
{
    private const string Fmt = "BMP";

    public static DecodedImage Decode(ReadOnlySpan<byte> d, DecodeOptions options)
    {
        if (d.Length < 26) throw new ImageFormatException(Fmt, $"file of {d.Length} bytes ends inside the headers (truncated)");
        uint dataOffset = BinaryPrimitives.ReadUInt32LittleEndian(d[10..]);
        uint infoSize = BinaryPrimitives.ReadUInt32LittleEndian(d[14..]);
        long width, height;
        int bpp, compression = 0;
        uint colorsUsed = 0;
        bool core = infoSize == 12;
        if (core)
        {
            width = BinaryPrimitives.ReadUInt16LittleEndian(d[18..]);
            height = BinaryPrimitives.ReadUInt16LittleEndian(d[20..]);
            bpp = BinaryPrimitives.ReadUInt16LittleEndian(d[24..]);
        }
        else if (infoSize is 40 or 52 or 56 or 64 or 108 or 124)
        {
            if (d.Length < 14 + 40) throw new ImageFormatException(Fmt, "file ends inside the info header (truncated)", 14);
            width = BinaryPrimitives.ReadInt32LittleEndian(d[18..]);
            height = BinaryPrimitives.ReadInt32LittleEndian(d[22..]);
            bpp = BinaryPrimitives.ReadUInt16LittleEndian(d[28..]);
            compression = BinaryPrimitives.ReadInt32LittleEndian(d[30..]);
            colorsUsed = BinaryPrimitives.ReadUInt32LittleEndian(d[46..]);
        }
        else throw new ImageFormatException(Fmt, $"unsupported info header size {infoSize}", 14);

        if (compression != 0)
        {
            string what = compression switch { 1 => "RLE8", 2 => "RLE4", 3 => "BI_BITFIELDS", 4 => "embedded JPEG", 5 => "embedded PNG", _ => $"method {compression}" };
            throw new ImageFormatException(Fmt, $"compression {what} is not supported (only uncompressed BI_RGB)", 30);
        }
        if (bpp is not (8 or 24 or 32)) throw new ImageFormatException(Fmt, $"{bpp}-bit pixels are not supported (8, 24 or 32)", core ? 24 : 28);
        bool topDown = height < 0;
        if (height == int.MinValue) throw new ImageFormatException(Fmt, "height is out of range", 22);
        height = Math.Abs(height);
        ImageLimits.Check(Fmt, width, height, options, 18);

        var palette = new byte[256 * 3];
        for (int i = 0; i < 256; i++) palette[3 * i] = palette[3 * i + 1] = palette[3 * i + 2] = (byte)i;
        if (bpp == 8)
        {
            int entry = core ? 3 : 4;
            long count = colorsUsed == 0 || colorsUsed > 256 ? 256 : colorsUsed;
            long at = 14 + infoSize;
            if (at + count * entry > dataOffset || at + count * entry > d.Length)
                throw new ImageFormatException(Fmt, $"palette of {count} entries does not fit before the pixel data", at);
            for (int i = 0; i < count; i++)
            {
                var e = d.Slice((int)(at + i * entry), 3);
                palette[3 * i] = e[2];
                palette[3 * i + 1] = e[1];
                palette[3 * i + 2] = e[0];
            }
        }

        long stride = (width * bpp + 31) / 32 * 4;
        long need = stride * height;
        if (dataOffset < 14 + infoSize || dataOffset > d.Length)
            throw new ImageFormatException(Fmt, $"pixel data offset {dataOffset} is outside the file", 10);
        if (d.Length - dataOffset < need)
            throw new ImageFormatException(Fmt, $"pixel data is truncated: {d.Length - dataOffset} of {need} bytes", dataOffset);

        int w = (int)width, h = (int)height;
        var image = new RgbImage(w, h);
        for (int r = 0; r < h; r++)
        {
            var src = d.Slice((int)(dataOffset + r * stride), (int)stride);
            var dst = image.Row(topDown ? r : h - 1 - r);
            switch (bpp)
            {
                case 8:
                    for (int x = 0; x < w; x++)
                    {
                        int i = src[x] * 3;
                        dst[3 * x] = palette[i];
                        dst[3 * x + 1] = palette[i + 1];
                        dst[3 * x + 2] = palette[i + 2];
                    }
                    break;
                default:
                    int step = bpp / 8;
                    for (int x = 0; x < w; x++)
                    {
                        dst[3 * x] = src[step * x + 2];
                        dst[3 * x + 1] = src[step * x + 1];
                        dst[3 * x + 2] = src[step * x];
                    }
                    break;
            }
        }
        return new DecodedImage(image, 1);
    }
}
