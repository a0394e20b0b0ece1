// An 8-bit RGB raster, the one pixel layout every decoder produces and the preprocessor consumes:
// Height rows of Width pixels, each pixel 3 bytes R, G, B, rows packed with no padding.
namespace VteKernels.Imaging;

/// <summary>An 8-bit RGB image: <see cref="Pixels"/> holds Height x Width x 3 bytes, row-major, R G B per pixel.</summary>
public sealed class RgbImage
{
    /// <summary>Width in pixels (at least 1).</summary>
    public int Width { get; }

    /// <summary>Height in pixels (at least 1).</summary>
    public int Height { get; }

    /// <summary>The pixels, Height x Width x 3 bytes.</summary>
    public byte[] Pixels { get; }

    /// <summary>Wraps existing pixels.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A dimension is not positive.</exception>
    /// <exception cref="ArgumentException"><paramref name="pixels"/> is not exactly width x height x 3 bytes long.</exception>
    public RgbImage(int width, int height, byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        long n = ByteCount(width, height);
        if (pixels.Length != n)
            throw new ArgumentException($"a {width}x{height} RGB image takes {n} bytes, got {pixels.Length}", nameof(pixels));
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    /// <summary>Allocates a black image.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A dimension is not positive or the image would not fit in one array.</exception>
    public RgbImage(int width, int height) : this(width, height, new byte[ByteCount(width, height)]) { }

    /// <summary>The 3 bytes of pixel (x, y).</summary>
    public Span<byte> this[int x, int y]
    {
        get
        {
            if ((uint)x >= (uint)Width) throw new ArgumentOutOfRangeException(nameof(x));
            if ((uint)y >= (uint)Height) throw new ArgumentOutOfRangeException(nameof(y));
            return Pixels.AsSpan((y * Width + x) * 3, 3);
        }
    }

    /// <summary>One row of pixels, Width x 3 bytes.</summary>
    public Span<byte> Row(int y)
    {
        if ((uint)y >= (uint)Height) throw new ArgumentOutOfRangeException(nameof(y));
        return Pixels.AsSpan(y * Width * 3, Width * 3);
    }

    /// <inheritdoc/>
    public override string ToString() => $"RGB8 {Width}x{Height}";

    private static long ByteCount(int width, int height)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        long n = (long)width * height * 3;
        if (n > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(width), $"a {width}x{height} RGB image does not fit in one array");
        return n;
    }
}
