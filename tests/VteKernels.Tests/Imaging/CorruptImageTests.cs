// Hostile and broken inputs: every hand-made corruption below must end in an ImageFormatException whose
// message names the problem (never another exception type, a crash or a hang); truncation at every offset
// of small files and random byte flips must either decode or throw ImageFormatException. Hangs are ruled
// out by the decoders' own work bounds (deflate's expansion limit against the declared size, the JPEG
// bit-per-block bound and its coefficient-visit budget), which the cases below exercise; no test times anything.
using System.Buffers.Binary;
using System.IO.Compression;
using VteKernels.Imaging;
using Xunit;

namespace VteKernels.Tests.Imaging;

public sealed class CorruptImageTests
{
    // ---------------------------------------------------------------- builders

    private static byte[] Chunk(string type, ReadOnlySpan<byte> data)
    {
        var c = new byte[12 + data.Length];
        BinaryPrimitives.WriteUInt32BigEndian(c, (uint)data.Length);
        System.Text.Encoding.ASCII.GetBytes(type).CopyTo(c, 4);
        data.CopyTo(c.AsSpan(8));
        BinaryPrimitives.WriteUInt32BigEndian(c.AsSpan(8 + data.Length), Crc32.Compute(c.AsSpan(4, 4 + data.Length)));
        return c;
    }

    private static byte[] Ihdr(uint w, uint h, byte depth = 8, byte ct = 2, byte interlace = 0)
    {
        var b = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(b, w);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(4), h);
        b[8] = depth;
        b[9] = ct;
        b[12] = interlace;
        return Chunk("IHDR", b);
    }

    private static byte[] Zlib(byte[] raw)
    {
        var ms = new MemoryStream();
        using (var z = new ZLibStream(ms, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
        return ms.ToArray();
    }

    // Filtered scanlines of a w x h RGB8 image: filter byte + 3w bytes per row.
    private static byte[] Rows(int w, int h, byte filter = 0)
    {
        var raw = new byte[h * (1 + 3 * w)];
        for (int y = 0; y < h; y++)
        {
            raw[y * (1 + 3 * w)] = filter;
            for (int i = 1; i <= 3 * w; i++) raw[y * (1 + 3 * w) + i] = (byte)(y * 31 + i * 7);
        }
        return raw;
    }

    private static byte[] Png(params byte[][] chunks) => [.. PngDecoder.Signature, .. chunks.SelectMany(c => c)];

    private static byte[] ValidPng() => Png(Ihdr(4, 3), Chunk("IDAT", Zlib(Rows(4, 3))), Chunk("IEND", []));

    private static byte[] Replace(byte[] src, int at, params byte[] with)
    {
        var b = (byte[])src.Clone();
        with.CopyTo(b, at);
        return b;
    }

    // Offset of the first occurrence of marker 0xFF <m> in a JPEG (outside entropy data for the markers used here).
    private static int Marker(byte[] j, int m)
    {
        for (int i = 0; i + 1 < j.Length; i++)
            if (j[i] == 0xFF && j[i + 1] == m) return i;
        throw new InvalidOperationException($"marker {m:X2} not found");
    }

    private static byte[] Jpeg(string file) => ImageData.Bytes(file);

    // A JPEG with one segment's payload replaced (length recomputed).
    private static byte[] ReplaceSegment(byte[] j, int marker, byte[] payload)
    {
        int at = Marker(j, marker);
        int len = BinaryPrimitives.ReadUInt16BigEndian(j.AsSpan(at + 2));
        var seg = new byte[4 + payload.Length];
        seg[0] = 0xFF;
        seg[1] = (byte)marker;
        BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(2), (ushort)(payload.Length + 2));
        payload.CopyTo(seg, 4);
        return [.. j[..at], .. seg, .. j[(at + 2 + len)..]];
    }

    private static byte[] SegmentPayload(byte[] j, int marker)
    {
        int at = Marker(j, marker);
        int len = BinaryPrimitives.ReadUInt16BigEndian(j.AsSpan(at + 2));
        return j[(at + 4)..(at + 2 + len)];
    }

    // A progressive JPEG with its first single-component AC scan of the whole band 1..63 repeated: each copy
    // decodes exactly as the first did, so only the work budget stops the file.
    private static byte[] RepeatScan(byte[] j, int copies)
    {
        var scans = new List<(int Start, int End, int Ns, int Ss, int Se, int Ah)>();
        int p = 2;
        while (p + 4 <= j.Length)
        {
            int marker = j[p + 1];
            if (marker == 0xD9) break;
            int len = BinaryPrimitives.ReadUInt16BigEndian(j.AsSpan(p + 2));
            int next = p + 2 + len;
            if (marker == 0xDA)
            {
                // The entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or an RSTn.
                int q = next;
                while (!(j[q] == 0xFF && j[q + 1] != 0 && j[q + 1] is not (>= 0xD0 and <= 0xD7))) q++;
                int ns = j[p + 4];
                scans.Add((p, q, ns, j[p + 5 + 2 * ns], j[p + 6 + 2 * ns], j[p + 7 + 2 * ns] >> 4));
                next = q;
            }
            p = next;
        }
        var (start, end, _, _, _, _) = scans.First(s => s.Ns == 1 && s.Ss == 1 && s.Se == 63 && s.Ah == 0);
        var scan = j[start..end];
        return [.. j[..end], .. Enumerable.Repeat(scan, copies).SelectMany(x => x), .. j[end..]];
    }

    private static byte[] Bmp24(int w, int h)
    {
        int stride = (w * 3 + 3) / 4 * 4;
        var b = new byte[54 + stride * h];
        b[0] = (byte)'B';
        b[1] = (byte)'M';
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(2), (uint)b.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(10), 54);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(14), 40);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(18), w);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(22), h);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(26), 1);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(28), 24);
        return b;
    }

    // ---------------------------------------------------------------- cases

    private static readonly Dictionary<string, (Func<byte[]> Make, string Expected)> CasesByName = new()
    {
        // PNG
        ["png bad IHDR CRC"] = (() => { var b = ValidPng(); b[8 + 8 + 13] ^= 1; return b; }, "CRC mismatch in IHDR chunk at byte 8"),
        ["png bad IDAT CRC"] = (() => { var b = ValidPng(); b[8 + 25 + 8] ^= 0x40; return b; }, "CRC mismatch in IDAT chunk at byte 33"),
        ["png zlib preset dictionary (FDICT)"] = (() => { var z = Zlib(Rows(4, 3)); z[1] = 0xBB; return Png(Ihdr(4, 3), Chunk("IDAT", z), Chunk("IEND", [])); }, "zlib data is corrupt"),
        ["png 10000x10000 with 20 bytes of data"] = (() => Png(Ihdr(10_000, 10_000), Chunk("IDAT", Zlib(new byte[64])), Chunk("IEND", [])), "cannot hold the 300010000 bytes a 10000x10000 image needs"),
        ["png bad zlib header"] = (() => Png(Ihdr(4, 3), Chunk("IDAT", [0x78, 0x00, .. Zlib(Rows(4, 3))[2..]]), Chunk("IEND", [])), "zlib data is corrupt"),
        ["png reserved deflate block type"] = (() => { var z = Zlib(Rows(4, 3)); z[2] = 0x07; return Png(Ihdr(4, 3), Chunk("IDAT", z), Chunk("IEND", [])); }, "zlib data is corrupt"),
        ["png zlib too short"] = (() => Png(Ihdr(4, 3), Chunk("IDAT", Zlib(Rows(4, 2))), Chunk("IEND", [])), "zlib data ends early: 26 of 39 bytes"),
        ["png zlib excess"] = (() => Png(Ihdr(4, 3), Chunk("IDAT", Zlib(Rows(4, 4))), Chunk("IEND", [])), "more than the 39 bytes"),
        ["png IDAT length too long"] = (() => { var b = ValidPng(); BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(33), 5000); return b; }, "runs past the end of the file"),
        ["png IDAT length too short"] = (() => { var b = ValidPng(); BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(33), 3); return b; }, "CRC mismatch in IDAT chunk"),
        ["png chunk length over 2^31"] = (() => { var b = ValidPng(); BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(33), 0x90000000); return b; }, "exceeds 2^31-1"),
        ["png zero width"] = (() => Png(Ihdr(0, 3), Chunk("IDAT", Zlib(Rows(4, 3))), Chunk("IEND", [])), "dimensions 0x3 are out of range"),
        ["png huge dimensions"] = (() => Png(Ihdr(100_000, 100_000), Chunk("IDAT", Zlib(Rows(4, 3))), Chunk("IEND", [])), "exceeds the limit of 100000000 pixels"),
        ["png bad depth for RGB"] = (() => Png(Ihdr(4, 3, depth: 4, ct: 2), Chunk("IEND", [])), "invalid colour type 2 with bit depth 4"),
        ["png colour type 5"] = (() => Png(Ihdr(4, 3, depth: 8, ct: 5), Chunk("IEND", [])), "invalid colour type 5"),
        ["png interlace method 2"] = (() => Png(Ihdr(4, 3, interlace: 2), Chunk("IEND", [])), "unknown interlace method 2"),
        ["png unknown critical chunk"] = (() => Png(Ihdr(4, 3), Chunk("ABCD", [1, 2]), Chunk("IDAT", Zlib(Rows(4, 3))), Chunk("IEND", [])), "unknown critical chunk 'ABCD'"),
        ["png chunk type not letters"] = (() => Png(Ihdr(4, 3), Chunk("ab1d", [1]), Chunk("IEND", [])), "is not four letters"),
        ["png first chunk not IHDR"] = (() => Png(Chunk("IDAT", Zlib(Rows(4, 3))), Ihdr(4, 3), Chunk("IEND", [])), "first chunk is IDAT, not IHDR"),
        ["png missing IEND"] = (() => Png(Ihdr(4, 3), Chunk("IDAT", Zlib(Rows(4, 3)))), "file ends before the IEND chunk"),
        ["png missing IDAT"] = (() => Png(Ihdr(4, 3), Chunk("IEND", [])), "no IDAT chunk"),
        ["png IDAT not consecutive"] = (() => { var z = Zlib(Rows(4, 3)); return Png(Ihdr(4, 3), Chunk("IDAT", z[..5]), Chunk("tEXt", [65, 0, 66]), Chunk("IDAT", z[5..]), Chunk("IEND", [])); }, "IDAT chunks are not consecutive"),
        ["png palette without PLTE"] = (() => Png(Ihdr(4, 3, ct: 3), Chunk("IDAT", Zlib(new byte[15])), Chunk("IEND", [])), "palette image without a PLTE chunk"),
        ["png PLTE length 4"] = (() => Png(Ihdr(4, 3, ct: 3), Chunk("PLTE", [1, 2, 3, 4]), Chunk("IEND", [])), "PLTE chunk length 4"),
        ["png filter type 7"] = (() => Png(Ihdr(4, 3), Chunk("IDAT", Zlib(Rows(4, 3, filter: 7))), Chunk("IEND", [])), "invalid filter type 7 in row 0"),
        ["png bad signature"] = (() => { var b = ValidPng(); b[0] = 0x89; b[7] = 0; return b; }, "unrecognized format"),
        ["png truncated signature"] = (() => ValidPng()[..5], "PNG signature is truncated"),

        // JPEG
        ["jpeg missing SOS"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return [.. j[..Marker(j, 0xDA)], 0xFF, 0xD9]; }, "no SOS scan before EOI"),
        ["jpeg missing EOI"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return j[..^2]; }, "file ends before the EOI marker"),
        ["jpeg missing SOF"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); int s = Marker(j, 0xC0); int l = BinaryPrimitives.ReadUInt16BigEndian(j.AsSpan(s + 2)); return [.. j[..s], .. j[(s + 2 + l)..]]; }, "SOS before any SOF frame header"),
        ["jpeg bogus marker length"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); int d = Marker(j, 0xDB); return Replace(j, d + 2, 0, 1); }, "has a bogus length 1"),
        ["jpeg marker length past end"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); int d = Marker(j, 0xE0); return Replace(j, d + 2, 0xFF, 0xF0); }, "runs past the end of the file"),
        ["jpeg wrong segment length"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); int d = Marker(j, 0xDB); return Replace(j, d + 3, (byte)(j[d + 3] + 3)); }, "JPEG:"),
        ["jpeg oversubscribed Huffman table"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); var p = SegmentPayload(j, 0xC4); int k = Array.FindIndex(p, 2, 15, c => c >= 3); p[1] += 3; p[k] -= 3; return ReplaceSegment(j, 0xC4, p); }, "over-subscribed"),
        ["jpeg Huffman table over 256 codes"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); var p = SegmentPayload(j, 0xC4); p[16] = 255; p[15] = 255; return ReplaceSegment(j, 0xC4, p); }, "codes (at most 256)"),
        ["jpeg DC symbol over 15"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); var p = SegmentPayload(j, 0xC4); p[17] = 40; return ReplaceSegment(j, 0xC4, p); }, "symbol 40 (at most 15)"),
        ["jpeg arithmetic coding"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 1, 0xC9); }, "arithmetic-coded JPEG is not supported"),
        ["jpeg 12-bit"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 4, 12); }, "12-bit samples are not supported"),
        ["jpeg lossless"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 1, 0xC3); }, "lossless JPEG"),
        ["jpeg hierarchical"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 1, 0xC5); }, "hierarchical JPEG"),
        ["jpeg zero height (DNL)"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 5, 0, 0); }, "DNL"),
        ["jpeg zero width"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 7, 0, 0); }, "frame width is 0"),
        ["jpeg huge dimensions"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 5, 0xFF, 0xFF, 0xFF, 0xFF); }, "65535x65535 = 4294836225 pixels exceeds the limit"),
        ["jpeg sampling factor 5"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 11, 0x51); }, "sampling factors 5x1"),
        ["jpeg non-integral sampling"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 14, 0x31); }, "not integral ratios"),
        ["jpeg undefined quant table"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 12, 3); }, "quantization table 3, which is not defined"),
        ["jpeg undefined Huffman table"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xDA) + 6, 0x33); }, "Huffman table 3 is not defined"),
        ["jpeg scan names unknown component"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xDA) + 5, 9); }, "scan names component 9"),
        ["jpeg bad progressive parameters"] = (() => { var j = Jpeg("jpg_420_prog_61x37.jpg"); int s = Marker(j, 0xDA); int n = j[s + 4]; return Replace(j, s + 5 + 2 * n, 0, 5); }, "invalid progressive scan parameters"),
        ["jpeg wrong restart marker"] = (() => { var j = Jpeg("jpg_420_rst1_61x37.jpg"); int r = Marker(j, 0xD0); return Replace(j, r + 1, 0xD3); }, "expected restart marker RST0, found marker 0xD3"),
        ["jpeg bad Huffman code"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); int s = Marker(j, 0xDA); int l = BinaryPrimitives.ReadUInt16BigEndian(j.AsSpan(s + 2)); var b = (byte[])j.Clone(); for (int i = 0; i < 40; i += 2) { b[s + 2 + l + i] = 0xFF; b[s + 3 + l + i] = 0x00; } return b; }, "bad Huffman code"),
        ["jpeg entropy data cut by EOI"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); int s = Marker(j, 0xDA); return [.. j[..(s + 40)], 0xFF, 0xD9]; }, "ends before the scan is complete"),
        ["jpeg 10000x10000 frame in a small file"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 5, 0x27, 0x10, 0x27, 0x10); }, "cannot hold the 2343750 blocks of a 10000x10000 frame"),
        ["jpeg one scan repeated 120 times"] = (() => RepeatScan(Jpeg("jpg_420_prog_61x37.jpg"), 120), "visit the frame's coefficients more than 16 times each"),
        ["jpeg 2 components"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return Replace(j, Marker(j, 0xC0) + 9, 2); }, "2 components are not supported"),
        ["jpeg unknown marker"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); int d = Marker(j, 0xDB); return Replace(j, d + 1, 0x50); }, "unknown marker 0x50"),
        ["jpeg second SOI"] = (() => { var j = Jpeg("jpg_420_base_61x37.jpg"); return [0xFF, 0xD8, .. j]; }, "second SOI"),
        ["jpeg garbage after SOI"] = (() => [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x41, 0x42, 0x13, 0x37], "expected a marker, found byte 0x13"),

        // BMP
        ["bmp truncated pixel data"] = (() => Bmp24(5, 4)[..70], "pixel data is truncated: 16 of 64 bytes"),
        ["bmp RLE8"] = (() => { var b = Bmp24(5, 4); b[30] = 1; return b; }, "compression RLE8 is not supported"),
        ["bmp 16-bit"] = (() => { var b = Bmp24(5, 4); b[28] = 16; return b; }, "16-bit pixels are not supported"),
        ["bmp bad info header size"] = (() => { var b = Bmp24(5, 4); b[14] = 33; return b; }, "unsupported info header size 33"),
        ["bmp data offset past end"] = (() => { var b = Bmp24(5, 4); BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(10), 9999); return b; }, "pixel data offset 9999 is outside the file"),
        ["bmp zero width"] = (() => { var b = Bmp24(5, 4); BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(18), 0); return b; }, "dimensions 0x4 are not positive"),
        ["bmp huge"] = (() => { var b = Bmp24(5, 4); BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(18), 1 << 20); BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(22), -(1 << 20)); return b; }, "exceeds the limit"),
        ["bmp header truncated"] = (() => Bmp24(5, 4)[..20], "ends inside the headers"),

        // PNM
        ["pnm maxval 65535"] = (() => "P6\n2 2\n65535\n"u8.ToArray().Concat(new byte[24]).ToArray(), "maxval 65535 is not supported"),
        ["pnm truncated data"] = (() => "P6\n4 4\n255\n"u8.ToArray().Concat(new byte[20]).ToArray(), "pixel data is truncated: 20 of 48 bytes"),
        ["pnm width not a number"] = (() => "P5\nabc 4\n255\n"u8.ToArray(), "width field is not a number"),
        ["pnm header truncated"] = (() => "P5\n4"u8.ToArray(), "file ends before the height field"),
        ["pnm ascii P3"] = (() => "P3\n1 1\n255\n0 0 0\n"u8.ToArray(), "PNM variant P3 is not supported"),
        ["pnm huge"] = (() => "P5\n999999999 999999999\n255\n"u8.ToArray(), "exceeds the limit"),

        // sniffing
        ["empty input"] = (() => [], "empty input"),
        ["gif"] = (() => "GIF89a\x01\x00\x01\x00"u8.ToArray(), "GIF is not supported"),
        ["webp"] = (() => "RIFF\x10\x00\x00\x00WEBPVP8 "u8.ToArray(), "WebP is not supported"),
        ["text"] = (() => "hello, world"u8.ToArray(), "unrecognized format"),
    };

    public static TheoryData<string> Cases()
    {
        var data = new TheoryData<string>();
        foreach (var k in CasesByName.Keys) data.Add(k);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void IsATypedErrorNamingTheProblem(string name)
    {
        var (make, expected) = CasesByName[name];
        var bytes = make();
        var e = Assert.Throws<ImageFormatException>(() => ImageDecoder.Decode(bytes));
        Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"{name}: message '{e.Message}' lacks '{expected}'");
        Assert.DoesNotContain('\n', e.Message);
    }

    // A header declaring far more pixels than the data can hold is rejected before the image is allocated
    // (the 69-byte PNG of 10000x10000 allocated 1.2 GB before finding its data truncated).
    [Theory]
    [InlineData("png 10000x10000 with 20 bytes of data")]
    [InlineData("jpeg 10000x10000 frame in a small file")]
    public void ImplausibleSizesAllocateNothingLarge(string name)
    {
        var bytes = CasesByName[name].Make();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Throws<ImageFormatException>(() => ImageDecoder.Decode(bytes));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 1 << 20, $"{name}: {allocated} bytes allocated");
    }

    // A repeated scan that decodes is still stopped by the budget, with the budget's own message: the copies
    // themselves are valid (fewer copies decode to the very image the original file gives).
    [Fact]
    public void RepeatedScansDecodeUntilTheBudget()
    {
        var original = ImageDecoder.Decode(Jpeg("jpg_420_prog_61x37.jpg"));
        var some = ImageDecoder.Decode(RepeatScan(Jpeg("jpg_420_prog_61x37.jpg"), 10));
        Assert.Equal(original.Pixels, some.Pixels);
    }

    [Fact]
    public void MaxPixelsIsEnforcedBeforeDecoding()
    {
        foreach (var file in (string[])["jpg_420_333x517.jpg", "pre_wide_97x61.png", "bmp_pil_24.bmp", "ppm_pil.ppm"])
        {
            var e = Assert.Throws<ImageFormatException>(() => ImageDecoder.Decode(ImageData.Bytes(file), new DecodeOptions(MaxPixels: 100)));
            Assert.Contains("exceeds the limit of 100 pixels", e.Message);
        }
    }

    [Fact]
    public void LoadNamesTheFile()
    {
        using var dir = new TempDir();
        var path = dir.File("broken.png");
        File.WriteAllBytes(path, ValidPng()[..40]);
        var e = Assert.Throws<ImageFormatException>(() => ImageDecoder.Load(path));
        Assert.StartsWith("broken.png: PNG: ", e.Message);
        Assert.Equal(path, e.FilePath);
        // zlib's own refusals (a preset dictionary, FDICT) were a ZLibException without the file's name.
        var fdict = dir.File("fdict.png");
        File.WriteAllBytes(fdict, CasesByName["png zlib preset dictionary (FDICT)"].Make());
        Assert.StartsWith("fdict.png: PNG: ", Assert.Throws<ImageFormatException>(() => ImageDecoder.Load(fdict)).Message);
        Assert.Throws<FileNotFoundException>(() => ImageDecoder.Load(dir.File("missing.jpg")));
    }

    public static TheoryData<string> TruncationFiles() =>
        new("png_rgb8_7x3_adam7.png", "png_pal2_7x3_adam7.png", "png_gray16_plain.png", "jpg_420_7x3.jpg", "jpg_420_prog_7x3.jpg",
            "jpg_411_rst2_4x9.jpg", "jpg_gray_prog.jpg", "bmp_8_topdown_short_palette.bmp", "pgm_pil.pgm", "png_exif6.png");

    // Every proper prefix of the file is an ImageFormatException (the formats all need their last bytes).
    [Theory, MemberData(nameof(TruncationFiles))]
    public void EveryTruncationIsATypedError(string file)
    {
        var full = ImageData.Bytes(file);
        for (int n = 0; n < full.Length; n++)
        {
            try
            {
                ImageDecoder.Decode(full.AsSpan(0, n));
                Assert.Fail($"{file} truncated to {n} of {full.Length} bytes decoded without error");
            }
            catch (ImageFormatException) { }
        }
    }

    public static TheoryData<string, int> FuzzCases() =>
        new()
        {
            { "png_rgb8_adam7.png", 1 }, { "png_pal4_plain.png", 2 }, { "png_rgba16_plain.png", 3 }, { "jpg_420_base_61x37.jpg", 4 },
            { "jpg_420_prog_61x37.jpg", 5 }, { "jpg_444_rst7_61x37.jpg", 6 }, { "jpg_ycck_61x37.jpg", 7 }, { "jpg_gray_prog.jpg", 8 },
            { "bmp_pil_p8.bmp", 9 }, { "ppm_pil.ppm", 10 },
        };

    // 400 copies with 1-8 random bytes changed: each decodes or throws ImageFormatException.
    [Theory, MemberData(nameof(FuzzCases))]
    public void RandomByteFlipsDecodeOrThrowTyped(string file, int seed)
    {
        var original = ImageData.Bytes(file);
        var rng = new Random(seed);
        int decoded = 0, rejected = 0;
        for (int iter = 0; iter < 400; iter++)
        {
            var b = (byte[])original.Clone();
            int flips = 1 + rng.Next(8);
            for (int k = 0; k < flips; k++)
            {
                int at = rng.Next(b.Length);
                b[at] = rng.Next(3) switch { 0 => (byte)(b[at] ^ (1 << rng.Next(8))), 1 => (byte)rng.Next(256), _ => 0xFF };
            }
            try
            {
                ImageDecoder.Decode(b, new DecodeOptions(MaxPixels: 4_000_000));
                decoded++;
            }
            catch (ImageFormatException)
            {
                rejected++;
            }
            catch (Exception e)
            {
                Assert.Fail($"{file} seed {seed} iteration {iter}: {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
            }
        }
        Assert.Equal(400, decoded + rejected);
    }
}
