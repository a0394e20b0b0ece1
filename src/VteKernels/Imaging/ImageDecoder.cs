// Entry point of the image decoders: sniffs the format from the magic bytes (never from a file name) and
// hands the bytes to the PNG, JPEG, BMP or PNM decoder. Every decoder produces RGB8 with the conventions of
// PIL's Image.open(...).convert("RGB") (alpha dropped, not composited; see each decoder's header for the
// details), and optionally applies the EXIF orientation as ImageOps.exif_transpose does.
// Every problem with the bytes is an ImageFormatException; memory is bounded by DecodeOptions.MaxPixels.
namespace VteKernels.Imaging;

/// <summary>Decodes PNG, JPEG (baseline and progressive), BMP and PPM/PGM images to <see cref="RgbImage"/>.</summary>
public static class ImageDecoder
{
    /// <summary>The formats <see cref="Decode"/> reads, for help texts.</summary>
    public const string SupportedFormats = "PNG (all colour types and bit depths, Adam7), JPEG (baseline/progressive Huffman, 8-bit), BMP (8/24/32-bit uncompressed), PPM/PGM (P6/P5, maxval 255)";

    /// <summary>Decodes an image held in memory; the format is sniffed from the first bytes.</summary>
    /// <exception cref="ImageFormatException">The bytes are not an image in a supported format, are corrupt or truncated, or declare more than <see cref="DecodeOptions.MaxPixels"/> pixels.</exception>
    public static RgbImage Decode(ReadOnlySpan<byte> data, DecodeOptions? options = null)
    {
        options ??= DecodeOptions.Default;
        if (options.MaxPixels < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxPixels must be at least 1");
        var decoded = Sniff(data) switch
        {
            ImageKind.Png => PngDecoder.Decode(data, options),
            ImageKind.Jpeg => JpegDecoder.Decode(data, options),
            ImageKind.Bmp => BmpDecoder.Decode(data, options),
            ImageKind.Pnm => PnmDecoder.Decode(data, options),
            _ => throw new ImageFormatException("image", Unrecognized(data)),
        };
        return options.ApplyExifOrientation ? ExifOrientation.Apply(decoded.Image, decoded.Orientation) : decoded.Image;
    }

    /// <summary>Reads and decodes an image file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="ImageFormatException">As for <see cref="Decode"/>; the message names the file.</exception>
    public static RgbImage Load(string path, DecodeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) throw new ImageFormatException("image", "is a directory, not an image file", filePath: path);
        if (!File.Exists(path)) throw new FileNotFoundException($"image file '{path}' does not exist", path);
        var bytes = File.ReadAllBytes(path);
        try
        {
            return Decode(bytes, options);
        }
        catch (ImageFormatException e) when (e.FilePath is null)
        {
            throw e.WithFile(path);
        }
    }

    /// <summary>The container format named by the first bytes, or null when none of the supported ones.</summary>
    public static string? DetectFormat(ReadOnlySpan<byte> data) => Sniff(data) switch
    {
        ImageKind.Png => "PNG",
        ImageKind.Jpeg => "JPEG",
        ImageKind.Bmp => "BMP",
        ImageKind.Pnm => "PNM",
        _ => null,
    };

    private enum ImageKind { Unknown, Png, Jpeg, Bmp, Pnm }

    private static ImageKind Sniff(ReadOnlySpan<byte> d)
    {
        if (d.StartsWith(PngDecoder.Signature)) return ImageKind.Png;
        if (d.Length >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageKind.Jpeg;
        if (d.Length >= 2 && d[0] == 'B' && d[1] == 'M') return ImageKind.Bmp;
        if (d.Length >= 2 && d[0] == 'P' && d[1] is (byte)'5' or (byte)'6') return ImageKind.Pnm;
        return ImageKind.Unknown;
    }

    private static string Unrecognized(ReadOnlySpan<byte> d)
    {
        if (d.IsEmpty) return "empty input";
        if (d.StartsWith("GIF8"u8)) return "GIF is not supported (supported: PNG, JPEG, BMP, PPM/PGM)";
        if (d.Length >= 12 && d.StartsWith("RIFF"u8) && d[8..12].SequenceEqual("WEBP"u8)) return "WebP is not supported (supported: PNG, JPEG, BMP, PPM/PGM)";
        if (d.StartsWith("II*\0"u8) || d.StartsWith("MM\0*"u8)) return "TIFF is not supported (supported: PNG, JPEG, BMP, PPM/PGM)";
        if (d.Length >= 2 && d[0] == 'P' && d[1] is >= (byte)'1' and <= (byte)'7') return $"PNM variant P{(char)d[1]} is not supported (only binary P5/P6)";
        if (d.Length >= 2 && d[0] == 0xFF && d[1] == 0xD8) return "JPEG start marker is not followed by a marker";
        if (d.Length < 8 && PngDecoder.Signature.StartsWith(d)) return "PNG signature is truncated";
        return $"unrecognized format (first bytes {Convert.ToHexString(d[..Math.Min(8, d.Length)])}; supported: PNG, JPEG, BMP, PPM/PGM)";
    }
}

/// <summary>A decoder's result: the pixels as stored and the EXIF orientation (1 when there is none).</summary>
internal readonly record struct DecodedImage(RgbImage Image, int Orientation);

/// <summary>Checks shared by the decoders.</summary>
internal static class ImageLimits
{
    /// <summary>Rejects dimensions that are not positive or exceed the pixel budget, before anything is allocated.</summary>
    public static void Check(string format, long width, long height, DecodeOptions options, long offset)
    {
        if (width < 1 || height < 1) throw new ImageFormatException(format, $"image dimensions {width}x{height} are not positive", offset);
        long pixels = width * height;
        if (pixels > options.MaxPixels)
            throw new ImageFormatException(format, $"image of {width}x{height} = {pixels} pixels exceeds the limit of {options.MaxPixels} pixels", offset);
        if (pixels * 3 > Array.MaxLength)
            throw new ImageFormatException(format, $"image of {width}x{height} does not fit in one RGB buffer", offset);
    }
}
