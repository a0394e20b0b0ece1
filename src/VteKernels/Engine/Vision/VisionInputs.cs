// Shape checks every family runs on an image input before its tower sees it: the tiles' channels and size,
// the value count, finite values. Family-specific rules (how many tiles) live in the family.
namespace VteKernels.Engine.Vision;

internal static class VisionInputs
{
    /// <summary>Each of the image's tiles must be [channels, size, size] and every value finite.</summary>
    /// <exception cref="InvalidInputException">They are not.</exception>
    public static void CheckTiles(ImageInput image, int channels, int size)
    {
        if (image.Tiles < 1) throw new InvalidInputException($"image has {image.Tiles} tiles");
        if (image.Channels != channels || image.Height != size || image.Width != size)
            throw new InvalidInputException($"image is [{image.Channels}, {image.Height}, {image.Width}] but the vision tower takes [{channels}, {size}, {size}]");
        if (image.Pixels.Length != (long)image.Tiles * image.TileLength)
            throw new InvalidInputException($"image holds {image.Pixels.Length} values, its shape says {(long)image.Tiles * image.TileLength}" +
                (image.Tiles > 1 ? $" ({image.Tiles} tiles of [{image.Channels}, {image.Height}, {image.Width}])" : ""));
        foreach (var px in image.Pixels)
            if (!float.IsFinite(px)) throw new InvalidInputException("image pixels contain NaN or infinity");
    }
}
