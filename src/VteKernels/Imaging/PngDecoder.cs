// PNG decoder (ISO/IEC 15948): every colour type and bit depth (gray 1/2/4/8/16, RGB 8/16, palette 1/2/4/8,
// gray+alpha 8/16, RGBA 8/16), Adam7 interlacing, the five row filters, IDAT split across any number of
// chunks. Every chunk's CRC is checked; unknown critical chunks are rejected, unknown ancillary ones skipped.
// The zlib stream is inflated row by row (two rows of memory plus the output) and must yield exactly the
// bytes the header implies: a shortfall or an excess is an error, so a small file cannot inflate without bound.
// Before the image is allocated, the IDAT bytes must be able to hold the image: deflate expands at most
// 1032:1 (a 258-byte match in 2 bits), so a 69-byte file declaring 10000x10000 is rejected at once instead of
// allocating 300 MB and then finding the data missing. Memory is thus at most a small multiple of
// min(MaxPixels x 3, 1032 x the file size); time is linear in the decompressed bytes.
// Output follows PIL 9.4's Image.open(...).convert("RGB"), established by experiment with Debian's python3-pil:
//   - alpha (colour types 4 and 6, tRNS) is dropped, not composited;
//   - 16-bit RGB/RGBA/gray+alpha keep the high byte of each sample;
//   - 16-bit gray opens as PIL mode "I" (values 0..65535) whose conversion to RGB clamps: min(v, 255);
//   - 1/2/4-bit gray scale by 255, 85 and 17; palette indices past the PLTE entries read PIL's default
//     grayscale ramp (index i -> (i, i, i)).
using System.Buffers.Binary;
using System.IO.Compression;

namespace VteKernels.Imaging;

internal static class PngDecoder
{
    public static ReadOnlySpan<byte> Signature => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    private const string Fmt = "PNG";

    /// <summary>The most bytes one byte of deflate data can expand to (RFC 1951: a 258-byte match coded in 2 bits).</summary>
    internal const long MaxDeflateRatio = 1032;

    // Adam7 passes: x0, y0, dx, dy.
    private static ReadOnlySpan<byte> Adam7 => [0, 0, 8, 8, 4, 0, 8, 8, 0, 4, 4, 8, 2, 0, 4, 4, 0, 2, 2, 4, 1, 0, 2, 2, 0, 1, 1, 2];

    private sealed class Header
    {
        public int Width, Height, BitDepth, ColorType;
        public bool Interlaced;
        public int Channels => ColorType switch { 0 => 1, 2 => 3, 3 => 1, 4 => 2, _ => 4 };
        public int BitsPerPixel => Channels * BitDepth;
        public long RowBytes(int pixels) => ((long)pixels * BitsPerPixel + 7) / 8;
    }

    public static DecodedImage Decode(ReadOnlySpan<byte> data, DecodeOptions options)
    {
        if (!data.StartsWith(Signature)) throw new ImageFormatException(Fmt, "bad signature");
        Header? hdr = null;
        byte[]? palette = null;
        int paletteEntries = 0;
        var idat = new MemoryStream();
        bool idatDone = false, sawIdat = false, sawEnd = false;
        int orientation = 1;
        int pos = Signature.Length;
        while (!sawEnd)
        {
            if (data.Length - pos < 12)
                throw new ImageFormatException(Fmt, data.Length - pos == 0 ? "file ends before the IEND chunk (truncated)" : "file ends inside a chunk header (truncated)", pos);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data[pos..]);
            var typeBytes = data.Slice(pos + 4, 4);
            foreach (var c in typeBytes)
                if (!char.IsAsciiLetter((char)c)) throw new ImageFormatException(Fmt, $"chunk type {Convert.ToHexString(typeBytes)} is not four letters", pos + 4);
            string type = System.Text.Encoding.ASCII.GetString(typeBytes);
            if (length > int.MaxValue) throw new ImageFormatException(Fmt, $"{type} chunk length {length} exceeds 2^31-1", pos);
            if (data.Length - pos - 12 < length)
                throw new ImageFormatException(Fmt, $"{type} chunk of {length} bytes runs past the end of the file (truncated)", pos);
            var body = data.Slice(pos + 8, (int)length);
            uint stored = BinaryPrimitives.ReadUInt32BigEndian(data[(pos + 8 + (int)length)..]);
            if (Crc32.Compute(data.Slice(pos + 4, 4 + (int)length)) != stored)
                throw new ImageFormatException(Fmt, $"CRC mismatch in {type} chunk", pos);

            if (hdr is null && type != "IHDR") throw new ImageFormatException(Fmt, $"first chunk is {type}, not IHDR", pos);
            if (sawIdat && type != "IDAT") idatDone = true;
            switch (type)
            {
                case "IHDR":
                    if (hdr is not null) throw new ImageFormatException(Fmt, "second IHDR chunk", pos);
                    hdr = ParseHeader(body, pos, options);
                    break;
                case "PLTE":
                    if (sawIdat) throw new ImageFormatException(Fmt, "PLTE chunk after IDAT", pos);
                    if (palette is not null) throw new ImageFormatException(Fmt, "second PLTE chunk", pos);
                    if (length % 3 != 0 || length == 0 || length > 768)
                        throw new ImageFormatException(Fmt, $"PLTE chunk length {length} is not 3 x 1..256 entries", pos);
                    (palette, paletteEntries) = (BuildPalette(body), (int)length / 3);
                    break;
                case "IDAT":
                    if (idatDone) throw new ImageFormatException(Fmt, "IDAT chunks are not consecutive", pos);
                    sawIdat = true;
                    idat.Write(body);
                    break;
                case "IEND":
                    sawEnd = true;
                    break;
                case "eXIf":
                    orientation = ExifOrientation.FromTiff(body);
                    break;
                default:
                    if (char.IsAsciiLetterUpper(type[0])) throw new ImageFormatException(Fmt, $"unknown critical chunk '{type}'", pos);
                    break;
            }
            pos += 12 + (int)length;
        }
        if (!sawIdat) throw new ImageFormatException(Fmt, "no IDAT chunk");
        if (hdr!.ColorType == 3 && palette is null) throw new ImageFormatException(Fmt, "palette image without a PLTE chunk");
        if (hdr.ColorType == 3 && paletteEntries > 1 << hdr.BitDepth)
            throw new ImageFormatException(Fmt, $"PLTE has {paletteEntries} entries, more than bit depth {hdr.BitDepth} can index");

        long expected = Expected(hdr);
        if (expected > (idat.Length + 1) * MaxDeflateRatio)
            throw new ImageFormatException(Fmt, $"{idat.Length} bytes of zlib data cannot hold the {expected} bytes a {hdr.Width}x{hdr.Height} image needs (image data is truncated)");
        idat.Position = 0;
        var image = new RgbImage(hdr.Width, hdr.Height);
        using (var z = new ZLibStream(idat, CompressionMode.Decompress))
            Inflate(z, hdr, palette, image);
        return new DecodedImage(image, orientation);
    }

    private static Header ParseHeader(ReadOnlySpan<byte> b, int pos, DecodeOptions options)
    {
        if (b.Length != 13) throw new ImageFormatException(Fmt, $"IHDR chunk is {b.Length} bytes, not 13", pos);
        uint w = BinaryPrimitives.ReadUInt32BigEndian(b), h = BinaryPrimitives.ReadUInt32BigEndian(b[4..]);
        if (w == 0 || h == 0 || w > int.MaxValue || h > int.MaxValue)
            throw new ImageFormatException(Fmt, $"image dimensions {w}x{h} are out of range", pos);
        int depth = b[8], ct = b[9];
        bool ok = ct switch
        {
            0 => depth is 1 or 2 or 4 or 8 or 16,
            3 => depth is 1 or 2 or 4 or 8,
            2 or 4 or 6 => depth is 8 or 16,
            _ => false,
        };
        if (!ok) throw new ImageFormatException(Fmt, $"invalid colour type {ct} with bit depth {depth}", pos);
        if (b[10] != 0) throw new ImageFormatException(Fmt, $"unknown compression method {b[10]}", pos);
        if (b[11] != 0) throw new ImageFormatException(Fmt, $"unknown filter method {b[11]}", pos);
        if (b[12] > 1) throw new ImageFormatException(Fmt, $"unknown interlace method {b[12]}", pos);
        ImageLimits.Check(Fmt, w, h, options, pos);
        return new Header { Width = (int)w, Height = (int)h, BitDepth = depth, ColorType = ct, Interlaced = b[12] == 1 };
    }

    // PIL's palette: PLTE entries first, then the default grayscale ramp for indices past them.
    private static byte[] BuildPalette(ReadOnlySpan<byte> plte)
    {
        var p = new byte[256 * 3];
        for (int i = 0; i < 256; i++) p[3 * i] = p[3 * i + 1] = p[3 * i + 2] = (byte)i;
        plte.CopyTo(p);
        return p;
    }

    private static void Inflate(ZLibStream z, Header h, byte[]? palette, RgbImage image)
    {
        int bpp = Math.Max(1, h.BitsPerPixel / 8); // filter unit: bytes per complete pixel, at least 1
        long maxRow = h.RowBytes(h.Width);
        if (maxRow + 1 > Array.MaxLength) throw new ImageFormatException(Fmt, $"row of {maxRow} bytes is too long");
        var cur = new byte[maxRow + 1];
        var prev = new byte[maxRow + 1];
        var rgb = new byte[h.Width * 3];
        long produced = 0;
        int passes = h.Interlaced ? 7 : 1;
        for (int p = 0; p < passes; p++)
        {
            int x0 = 0, y0 = 0, dx = 1, dy = 1;
            if (h.Interlaced) (x0, y0, dx, dy) = (Adam7[4 * p], Adam7[4 * p + 1], Adam7[4 * p + 2], Adam7[4 * p + 3]);
            int pw = (h.Width - x0 + dx - 1) / dx, ph = (h.Height - y0 + dy - 1) / dy;
            if (pw <= 0 || ph <= 0) continue;
            int rowBytes = (int)h.RowBytes(pw);
            Array.Clear(prev, 0, rowBytes + 1);
            for (int r = 0; r < ph; r++)
            {
                var row = cur.AsSpan(0, rowBytes + 1);
                int got = ReadFully(z, row);
                if (got < row.Length)
                    throw new ImageFormatException(Fmt, $"zlib data ends early: {produced + got} of {Expected(h)} bytes (image data is truncated)");
                produced += row.Length;
                Unfilter(row[0], row[1..], prev.AsSpan(1, rowBytes), bpp, r, p);
                ToRgb(row[1..], pw, h, palette, rgb);
                int y = y0 + r * dy;
                var dst = image.Row(y);
                if (dx == 1) rgb.AsSpan(0, pw * 3).CopyTo(dst);
                else
                    for (int i = 0, x = x0; i < pw; i++, x += dx)
                    {
                        dst[3 * x] = rgb[3 * i];
                        dst[3 * x + 1] = rgb[3 * i + 1];
                        dst[3 * x + 2] = rgb[3 * i + 2];
                    }
                (cur, prev) = (prev, cur);
            }
        }
        Span<byte> extra = stackalloc byte[1];
        if (ReadFully(z, extra) != 0) throw new ImageFormatException(Fmt, $"zlib data holds more than the {Expected(h)} bytes the header implies");
    }

    private static long Expected(Header h)
    {
        if (!h.Interlaced) return (long)h.Height * (h.RowBytes(h.Width) + 1);
        long total = 0;
        for (int p = 0; p < 7; p++)
        {
            int x0 = Adam7[4 * p], y0 = Adam7[4 * p + 1], dx = Adam7[4 * p + 2], dy = Adam7[4 * p + 3];
            long pw = (h.Width - x0 + dx - 1) / dx, ph = (h.Height - y0 + dy - 1) / dy;
            if (pw > 0 && ph > 0) total += ph * (h.RowBytes((int)pw) + 1);
        }
        return total;
    }

    private static int ReadFully(Stream s, Span<byte> dst)
    {
        int total = 0;
        try
        {
            while (total < dst.Length)
            {
                int n = s.Read(dst[total..]);
                if (n == 0) break;
                total += n;
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            // ZLibException (an IOException) for what zlib refuses before inflating, e.g. a preset dictionary (FDICT).
            throw new ImageFormatException(Fmt, $"zlib data is corrupt ({e.Message.TrimEnd('.')})", inner: e);
        }
        return total;
    }

    private static void Unfilter(byte filter, Span<byte> row, ReadOnlySpan<byte> prev, int bpp, int rowIndex, int pass)
    {
        switch (filter)
        {
            case 0: break;
            case 1:
                for (int i = bpp; i < row.Length; i++) row[i] += row[i - bpp];
                break;
            case 2:
                for (int i = 0; i < row.Length; i++) row[i] += prev[i];
                break;
            case 3:
                for (int i = 0; i < bpp && i < row.Length; i++) row[i] += (byte)(prev[i] >> 1);
                for (int i = bpp; i < row.Length; i++) row[i] += (byte)((row[i - bpp] + prev[i]) >> 1);
                break;
            case 4:
                for (int i = 0; i < bpp && i < row.Length; i++) row[i] += prev[i];
                for (int i = bpp; i < row.Length; i++)
                {
                    int a = row[i - bpp], b = prev[i], c = prev[i - bpp];
                    int pa = Math.Abs(b - c), pb = Math.Abs(a - c), pc = Math.Abs(a + b - 2 * c);
                    row[i] += (byte)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
                }
                break;
            default:
                throw new ImageFormatException(Fmt, $"invalid filter type {filter} in row {rowIndex}" + (pass > 0 ? $" of pass {pass + 1}" : ""));
        }
    }

    // One unfiltered row of n pixels to packed RGB8, by PIL's conversion rules (file header).
    private static void ToRgb(ReadOnlySpan<byte> s, int n, Header h, byte[]? palette, Span<byte> o)
    {
        int d = h.BitDepth;
        switch (h.ColorType)
        {
            case 0 when d == 16:
                for (int i = 0; i < n; i++) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = (byte)Math.Min(255, (s[2 * i] << 8) | s[2 * i + 1]);
                break;
            case 0 when d == 8:
                for (int i = 0; i < n; i++) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = s[i];
                break;
            case 0:
            {
                int scale = d switch { 1 => 255, 2 => 85, _ => 17 };
                for (int i = 0; i < n; i++) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = (byte)(Sample(s, i, d) * scale);
                break;
            }
            case 2:
            {
                int step = d / 8; // 16-bit: the high byte comes first
                for (int i = 0; i < 3 * n; i++) o[i] = s[i * step];
                break;
            }
            case 3:
                for (int i = 0; i < n; i++)
                {
                    int idx = d == 8 ? s[i] : Sample(s, i, d);
                    o[3 * i] = palette![3 * idx];
                    o[3 * i + 1] = palette[3 * idx + 1];
                    o[3 * i + 2] = palette[3 * idx + 2];
                }
                break;
            case 4:
            {
                int step = 2 * d / 8;
                for (int i = 0; i < n; i++) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = s[i * step];
                break;
            }
            default: // 6
            {
                int step = d / 8;
                for (int i = 0; i < n; i++)
                {
                    o[3 * i] = s[4 * i * step];
                    o[3 * i + 1] = s[(4 * i + 1) * step];
                    o[3 * i + 2] = s[(4 * i + 2) * step];
                }
                break;
            }
        }
    }

    // The i-th sample of a row packed at 1, 2 or 4 bits per sample, most significant bits first.
    private static int Sample(ReadOnlySpan<byte> s, int i, int depth)
    {
        int bit = i * depth;
        return (s[bit >> 3] >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
    }
}

/// <summary>CRC-32 as PNG and zlib's crc32 define it (reflected polynomial 0xEDB88320).</summary>
internal static class Crc32
{
    private static readonly uint[] Table = Build();

    private static uint[] Build()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (var b in data) c = Table[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }
}
