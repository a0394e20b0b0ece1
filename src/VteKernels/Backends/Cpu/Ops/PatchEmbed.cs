// CpuOps.PatchEmbed: CLIP's patch embedding, Conv2d(channels -> d, kernel = stride = patch, no bias) on one
// image, as im2col followed by Linear. Each patch becomes a row laid out in the conv weight's own flatten
// order [c, ky, kx], so the weight [d, c, p, p] is used as the [d, c·p·p] matrix it already is in memory
// and nothing about it is rearranged. Patches are numbered row-major over the patch grid (py, px), the
// order CLIP's flatten(2).transpose(1, 2) produces.

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>
    /// y[(py·(width/patch) + px), :] = conv · the patch at (py, px) of <paramref name="pixels"/> [channels,
    /// height, width]: a stride-<paramref name="patch"/> convolution without bias.
    /// </summary>
    /// <param name="pixels">One image, [channels, height, width], already normalized.</param>
    /// <param name="channels">Input channels (3 for RGB).</param>
    /// <param name="height">Image height; a multiple of patch.</param>
    /// <param name="width">Image width; a multiple of patch.</param>
    /// <param name="patch">Patch size (kernel and stride).</param>
    /// <param name="conv">Convolution weight [d, channels, patch, patch].</param>
    /// <param name="y">Output, [(height/patch)·(width/patch), d].</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    /// <exception cref="ArgumentException">A size is not a multiple of patch, or a length or the weight shape disagrees.</exception>
    public static void PatchEmbed(ReadOnlySpan<float> pixels, int channels, int height, int width, int patch, Weight conv, Span<float> y, int threads = 0)
    {
        ArgumentNullException.ThrowIfNull(conv);
        CheckPositive(channels, nameof(channels));
        CheckPositive(height, nameof(height));
        CheckPositive(width, nameof(width));
        CheckPositive(patch, nameof(patch));
        if (height % patch != 0) throw new ArgumentException($"height {height} is not a multiple of the patch size {patch}", nameof(height));
        if (width % patch != 0) throw new ArgumentException($"width {width} is not a multiple of the patch size {patch}", nameof(width));
        int patchLength = channels * patch * patch;
        if (conv.Cols != patchLength)
            throw new ArgumentException($"'{conv.Name}' [{string.Join(", ", conv.Shape)}] does not hold {channels}×{patch}×{patch} weights per output channel", nameof(conv));
        CheckLength(pixels.Length, (long)channels * height * width, nameof(pixels), $"[{channels}, {height}, {width}]");
        int gridH = height / patch, gridW = width / patch, patches = gridH * gridW;
        CheckLength(y.Length, (long)patches * conv.Rows, nameof(y), $"[{patches}, {conv.Rows}]");

        var columns = new float[(long)patches * patchLength];
        for (int py = 0; py < gridH; py++)
            for (int px = 0; px < gridW; px++)
            {
                var dst = columns.AsSpan((py * gridW + px) * patchLength, patchLength);
                int d = 0;
                for (int c = 0; c < channels; c++)
                    for (int ky = 0; ky < patch; ky++, d += patch)
                        pixels.Slice((c * height + py * patch + ky) * width + px * patch, patch).CopyTo(dst.Slice(d, patch));
            }
        Linear(columns, patches, conv, null, y, threads);
    }
}
