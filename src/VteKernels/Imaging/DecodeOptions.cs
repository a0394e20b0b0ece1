// Limits and switches for the image decoders.
namespace VteKernels.Imaging;

/// <summary>Options for <see cref="ImageDecoder"/>.</summary>
/// <param name="MaxPixels">
/// Largest width x height accepted. A header declaring more is rejected before any pixel buffer is allocated;
/// the decoders' memory is a small multiple of this (a progressive JPEG holds 2 bytes per sample of coefficients).
/// </param>
/// <param name="ApplyExifOrientation">
/// Rotate/flip by the EXIF Orientation tag (JPEG APP1, PNG eXIf) as PIL's ImageOps.exif_transpose does.
/// Off by default, matching PIL's Image.open, which leaves pixels as stored.
/// </param>
public sealed record DecodeOptions(long MaxPixels = 100_000_000, bool ApplyExifOrientation = false)
{
    /// <summary>The defaults.</summary>
    public static DecodeOptions Default { get; } = new();
}
