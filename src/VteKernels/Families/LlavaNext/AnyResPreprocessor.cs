// LLaVA-NeXT's image preprocessing exactly as transformers v4.45.1's LlavaNextImageProcessor (PIL-based)
// computes it (LlavaNextImageProcessor.preprocess -> get_image_patches -> _preprocess), on the uint8 image:
//   1. best resolution (bh, bw) from the pinpoints (AnyRes.BestResolution);
//   2. resize for patching (_get_patch_output_size): sw = bw / W, sh = bh / H; if sw < sh the width becomes bw
//      and the height min(ceil(H * sw), bh), else the height bh and the width min(ceil(W * sh), bw); PIL resize;
//   3. pad for patching: (bh - new_h) // 2 black rows on top AND bottom, (bw - new_w) // 2 columns on each side,
//      so an odd difference leaves the padded image one pixel short of the pinpoint;
//   4. tiles (divide_to_patches): S x S crops row-major over the padded image; in the odd case the last tile
//      row (column) is S - 1 tall (wide);
//   5. base image: the original resized straight to S x S (size.shortest_edge; aspect not kept, no crop);
//   6. [base] + tiles, each through CLIP's _preprocess (ClipPreprocessor without pad-to-square): shortest edge
//      to S, centre crop S x S (an (S - 1) x S tile IS resized, to S x int(S * S / (S - 1)), then cropped),
//      rescale, normalize, channels first.
// S for the tiles is crop_size.height (HF's patch_size argument); the base image goes to size.shortest_edge
// (or the smaller of size.height/width). Every processed tile must come out at the vision tower's size.
using System.Text.Json;
using VteKernels.Engine;
using VteKernels.Imaging;

namespace VteKernels.Families.LlavaNext;

/// <summary>Settings of <see cref="AnyResPreprocessor"/>: a LlavaNextImageProcessor's preprocessor_config.json.</summary>
/// <param name="Clip">Per-tile CLIP preprocessing (resize, centre crop, rescale, normalize); PadToSquare must be off.</param>
/// <param name="Pinpoints">image_grid_pinpoints.</param>
public sealed record AnyResOptions(ClipOptions Clip, IReadOnlyList<GridPinpoint> Pinpoints)
{
    /// <summary>Tile edge for divide_to_patches: crop_size.height.</summary>
    public int TileSize => Clip.CropHeight;

    /// <summary>Edge the base image is resized to: size.shortest_edge, or the smaller of size.height and size.width.</summary>
    public int BaseSize => Clip.ShortestEdge ?? Math.Min(Clip.ResizeHeight ?? Clip.CropHeight, Clip.ResizeWidth ?? Clip.CropWidth);

    /// <summary>
    /// Reads a LlavaNextImageProcessor preprocessor_config.json: the CLIP keys (as <see cref="ClipOptions.FromPreprocessorConfig"/>)
    /// and image_grid_pinpoints (<paramref name="defaultPinpoints"/> when the file has none).
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="ModelFormatException">The file is not valid JSON, or a value has the wrong type or range.</exception>
    public static AnyResOptions FromPreprocessorConfig(string path, IReadOnlyList<GridPinpoint> defaultPinpoints)
    {
        var clip = ClipOptions.FromPreprocessorConfig(path);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));   // valid JSON: FromPreprocessorConfig parsed it
        var pinpoints = doc.RootElement.TryGetProperty("image_grid_pinpoints", out var p) && p.ValueKind != JsonValueKind.Null
            ? LlavaNextFamily.ReadPinpoints(p, path, "image_grid_pinpoints", (f, m) => new ModelFormatException(f, null, m))
            : defaultPinpoints;
        return new AnyResOptions(clip, pinpoints);
    }
}

/// <summary>Anyres preprocessing (LLaVA-NeXT): the base image and the grid tiles, each a CLIP tile.</summary>
public sealed class AnyResPreprocessor : ImagePreprocessor
{
    private readonly int _towerSize;

    /// <summary>A preprocessor with <paramref name="options"/> for a tower taking <paramref name="towerSize"/> pixels square.</summary>
    /// <exception cref="ArgumentException">The options pad to a square (not an anyres step), have no pinpoints, or a tile size that is not positive.</exception>
    public AnyResPreprocessor(AnyResOptions options, int towerSize, string source = "")
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Clip.PadToSquare) throw new ArgumentException("anyres preprocessing does not pad to a square first", nameof(options));
        if (options.Pinpoints.Count == 0) throw new ArgumentException("anyres preprocessing needs grid pinpoints", nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.TileSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BaseSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(towerSize, 1);
        Options = options;
        _towerSize = towerSize;
        Description = $"anyres {options.TileSize}px tiles, pinpoints {string.Join(",", options.Pinpoints)}{(source.Length > 0 ? $" ({source})" : "")}";
    }

    /// <summary>The settings.</summary>
    public AnyResOptions Options { get; }

    /// <inheritdoc/>
    public override string Description { get; }

    /// <inheritdoc/>
    public override ImageInput Preprocess(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var tiles = Tiles(image, Options);
        int s = _towerSize, per = 3 * s * s;
        var pixels = new float[tiles.Count * per];
        for (int t = 0; t < tiles.Count; t++)
        {
            var (h, w) = ClipPreprocessor.OutputSize(tiles[t].Width, tiles[t].Height, Options.Clip);
            if (h != s || w != s)
                throw new InvalidInputException($"an anyres tile preprocesses to {w}x{h} but the vision tower takes {s}x{s} (check preprocessor_config.json's size and crop_size)");
            ClipPreprocessor.Preprocess(tiles[t], Options.Clip).CopyTo(pixels, t * per);
        }
        return ImageInput.Tiled(pixels, tiles.Count, s, image.Height, image.Width);
    }

    /// <summary>
    /// Steps 1-5 of the file header: the uint8 images that go through CLIP preprocessing, base image first,
    /// then the grid tiles row-major.
    /// </summary>
    public static IReadOnlyList<RgbImage> Tiles(RgbImage image, AnyResOptions options)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(options);
        int height = image.Height, width = image.Width, s = options.TileSize;
        var best = AnyRes.BestResolution(height, width, options.Pinpoints);
        var resample = options.Clip.Resample;

        double sw = (double)best.Width / width, sh = (double)best.Height / height;
        int newW, newH;
        if (sw < sh)
        {
            newW = best.Width;
            newH = (int)Math.Min(Math.Ceiling(height * sw), best.Height);
        }
        else
        {
            newH = best.Height;
            newW = (int)Math.Min(Math.Ceiling(width * sh), best.Width);
        }
        var resized = PilResize.Resize(image, newW, newH, resample);

        int padY = (best.Height - newH) / 2, padX = (best.Width - newW) / 2;
        int paddedH = newH + 2 * padY, paddedW = newW + 2 * padX;
        var list = new List<RgbImage> { PilResize.Resize(image, options.BaseSize, options.BaseSize, resample) };
        for (int y0 = 0; y0 < paddedH; y0 += s)
            for (int x0 = 0; x0 < paddedW; x0 += s)
            {
                int th = Math.Min(s, paddedH - y0), tw = Math.Min(s, paddedW - x0);
                var tile = new RgbImage(tw, th);   // black: the padding
                for (int y = 0; y < th; y++)
                {
                    int sy = y0 + y - padY;
                    if ((uint)sy >= (uint)newH) continue;
                    // Columns of this tile row that hold the resized image rather than padding.
                    int from = Math.Max(x0, padX), to = Math.Min(x0 + tw, padX + newW);
                    if (to <= from) continue;
                    resized.Row(sy).Slice((from - padX) * 3, (to - from) * 3).CopyTo(tile.Row(y).Slice((from - x0) * 3));
                }
                list.Add(tile);
            }
        return list;
    }
}
