// The geometry of LLaVA-NeXT's "anyres" images, rule by rule as transformers v4.45.1 computes it (the
// fixtures' FACTS.md names each source function). Everything is integer or float64 arithmetic in the order
// Python evaluates it, so that every size lands on the same side of every truncation as HF:
//   best resolution   select_best_resolution: per pinpoint (ph, pw), scale = min(pw / W, ph / H),
//                     effective = min(int(W * scale) * int(H * scale), W * H), wasted = ph * pw - effective;
//                     the largest effective wins, ties go to the least wasted, then to the earlier pinpoint.
//   grid              (bh // S, bw // S) tiles (rows, columns); num patches = 1 + rows * columns (the base image).
//   unpad             unpad_image on the (rows * side) x (cols * side) feature map: if W / H > cols / rows
//                     (float compare), new_h = int(H * (cols / W)), keep rows [pad, rows - pad) with
//                     pad = (rows - new_h) // 2; else the same on the columns.
//   model count       side^2 (the base tile) + kept_rows * (kept_cols + 1) (image_newline after every row).
//   processor count   LlavaNextProcessor._get_number_of_features floors the exact product instead
//                     ((H * cur_w) // W): for some sizes it writes more tokens than the model makes features
//                     (36 sizes of llava-v1.6's real config in 1..1399 squared, e.g. 47 x 1128: 868 against
//                     722), and HF then fails. This runtime expands prompts to the model's count.
namespace VteKernels.Families.LlavaNext;

/// <summary>One anyres resolution: image_grid_pinpoints' [height, width] pair.</summary>
public readonly record struct GridPinpoint(int Height, int Width)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Height}x{Width}";
}

/// <summary>The window of the tile grid's feature map that survives unpadding.</summary>
/// <param name="RowStart">First kept feature-map row.</param>
/// <param name="Rows">Kept rows.</param>
/// <param name="ColStart">First kept feature-map column.</param>
/// <param name="Cols">Kept columns.</param>
public readonly record struct UnpadWindow(int RowStart, int Rows, int ColStart, int Cols);

/// <summary>LLaVA-NeXT's anyres rules (transformers v4.45.1), as pure functions of sizes.</summary>
public static class AnyRes
{
    /// <summary>
    /// select_best_resolution: the pinpoint that keeps the most of an <paramref name="height"/> x
    /// <paramref name="width"/> image when it is scaled to fit, the least wasted area breaking ties.
    /// </summary>
    /// <exception cref="ArgumentException">No pinpoints, or a size that is not positive.</exception>
    public static GridPinpoint BestResolution(int height, int width, IReadOnlyList<GridPinpoint> pinpoints)
    {
        ArgumentNullException.ThrowIfNull(pinpoints);
        if (pinpoints.Count == 0) throw new ArgumentException("no grid pinpoints", nameof(pinpoints));
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        GridPinpoint best = default;
        long bestEffective = 0, bestWasted = long.MaxValue;
        long area = (long)width * height;
        foreach (var p in pinpoints)
        {
            double scale = Math.Min((double)p.Width / width, (double)p.Height / height);
            long downW = (long)(width * scale), downH = (long)(height * scale);   // int() truncates toward zero
            long effective = Math.Min(downW * downH, area);
            long wasted = (long)p.Height * p.Width - effective;
            if (effective > bestEffective || (effective == bestEffective && wasted < bestWasted))
            {
                best = p;
                bestEffective = effective;
                bestWasted = wasted;
            }
        }
        return best;
    }

    /// <summary>get_anyres_image_grid_shape: tile rows and columns for an image (best resolution // tile size).</summary>
    /// <exception cref="ArgumentException">No pinpoints, or a size that is not positive.</exception>
    public static (int Rows, int Cols) GridShape(int height, int width, IReadOnlyList<GridPinpoint> pinpoints, int tileSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tileSize, 1);
        var best = BestResolution(height, width, pinpoints);
        return (best.Height / tileSize, best.Width / tileSize);
    }

    /// <summary>image_size_to_num_patches: the base image plus ceil(bh / S) * ceil(bw / S) grid tiles.</summary>
    /// <exception cref="ArgumentException">No pinpoints, or a size that is not positive.</exception>
    public static int TileCount(int height, int width, IReadOnlyList<GridPinpoint> pinpoints, int tileSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tileSize, 1);
        var best = BestResolution(height, width, pinpoints);
        return 1 + CeilDiv(best.Height, tileSize) * CeilDiv(best.Width, tileSize);
    }

    /// <summary>
    /// unpad_image: the rows or columns of a <paramref name="mapRows"/> x <paramref name="mapCols"/> feature
    /// map that hold the <paramref name="height"/> x <paramref name="width"/> image rather than padding.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size that is not positive.</exception>
    public static UnpadWindow Unpad(int height, int width, int mapRows, int mapCols)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(mapRows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(mapCols, 1);
        double original = (double)width / height, current = (double)mapCols / mapRows;
        if (original > current)
        {
            int newH = (int)(height * ((double)mapCols / width));
            int pad = (mapRows - newH) / 2;   // newH <= mapRows here, so floor division and truncation agree
            return new UnpadWindow(pad, mapRows - 2 * pad, 0, mapCols);
        }
        else
        {
            int newW = (int)(width * ((double)mapRows / height));
            int pad = (mapCols - newW) / 2;
            return new UnpadWindow(0, mapRows, pad, mapCols - 2 * pad);
        }
    }

    /// <summary>
    /// The features LlavaNextForConditionalGeneration packs for one image ("default" strategy): the base tile's
    /// side^2, then every kept row of the grid's feature map followed by image_newline.
    /// </summary>
    /// <param name="height">Original image height.</param>
    /// <param name="width">Original image width.</param>
    /// <param name="pinpoints">image_grid_pinpoints.</param>
    /// <param name="tileSize">vision_config.image_size.</param>
    /// <param name="patchSize">vision_config.patch_size.</param>
    /// <exception cref="ArgumentException">No pinpoints, or a size that is not positive.</exception>
    public static int FeatureCount(int height, int width, IReadOnlyList<GridPinpoint> pinpoints, int tileSize, int patchSize)
    {
        int side = tileSize / patchSize;
        var (rows, cols) = GridShape(height, width, pinpoints, tileSize);
        var w = Unpad(height, width, rows * side, cols * side);
        return side * side + w.Rows * (w.Cols + 1);
    }

    /// <summary>
    /// The number of image tokens transformers v4.45.1's LlavaNextProcessor writes for one image
    /// (<c>_get_number_of_features</c>, "default" strategy). It differs from <see cref="FeatureCount"/> for
    /// some sizes (see the file header); the engine uses <see cref="FeatureCount"/>.
    /// </summary>
    /// <exception cref="ArgumentException">No pinpoints, or a size that is not positive.</exception>
    public static int ProcessorTokenCount(int height, int width, IReadOnlyList<GridPinpoint> pinpoints, int tileSize, int patchSize)
    {
        var best = BestResolution(height, width, pinpoints);
        int side = tileSize / patchSize;
        long curH = (long)side * (best.Height / tileSize), curW = (long)side * (best.Width / tileSize);
        if ((double)width / height > (double)curW / curH)
        {
            long newH = height * curW / width;   // Python's // on non-negative integers
            curH -= 2 * ((curH - newH) / 2);
        }
        else
        {
            long newW = width * curH / height;
            curW -= 2 * ((curW - newW) / 2);
        }
        return (int)(curH * curW + curH + side * side);
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;
}
