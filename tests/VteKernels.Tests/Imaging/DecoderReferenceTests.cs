// Every committed test image decodes to exactly PIL's Image.open(f).convert("RGB") (SHA-256 of the RGB
// bytes), and with ApplyExifOrientation to exactly ImageOps.exif_transpose of it.
using VteKernels.Imaging;
using Xunit;

namespace VteKernels.Tests.Imaging;

public sealed class DecoderReferenceTests
{
    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var e in ImageData.Decode.GetProperty("images").EnumerateArray()) data.Add(e.GetProperty("file").GetString()!);
        return data;
    }

    public static TheoryData<string> OrientedFiles()
    {
        var data = new TheoryData<string>();
        foreach (var e in ImageData.Decode.GetProperty("images").EnumerateArray())
            if (e.TryGetProperty("oriented", out _)) data.Add(e.GetProperty("file").GetString()!);
        return data;
    }

    [Theory, MemberData(nameof(Files))]
    public void DecodesExactlyAsPil(string file)
    {
        var image = ImageDecoder.Decode(ImageData.Bytes(file));
        ImageData.AssertMatches(image, ImageData.DecodeEntry(file), file);
    }

    [Theory, MemberData(nameof(OrientedFiles))]
    public void ExifOrientationMatchesExifTranspose(string file)
    {
        var image = ImageDecoder.Load(ImageData.PathOf(file), new DecodeOptions(ApplyExifOrientation: true));
        ImageData.AssertMatches(image, ImageData.DecodeEntry(file).GetProperty("oriented"), file + " (exif_transpose)");
    }
}
