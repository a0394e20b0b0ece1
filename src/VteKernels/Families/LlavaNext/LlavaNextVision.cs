// LLaVA-NeXT's vision encoder (LlavaNextForConditionalGeneration.forward -> pack_image_features, unpad_image):
//   1. every tile of the image (base image first, then the grid row-major) through the CLIP tower together,
//      the feature layer selected and the class token dropped: [tiles * side^2, f];
//   2. the projector on every row: [tiles * side^2, d];
//   3. packing: the base tile's side^2 rows first, unchanged; then the grid tiles as one feature map of
//      (rows * side) x (cols * side) (token (tr, tc) of tile (i, j) at map row i * side + tr, column
//      j * side + tc), cut to the unpadded window (AnyRes.Unpad), each kept map row followed by image_newline.
// The packing is row copies on the backend: one copy per (map row, tile column) plus one per newline.
using VteKernels.Backends;
using VteKernels.Engine;
using VteKernels.Engine.Vision;
using VteKernels.Models;

namespace VteKernels.Families.LlavaNext;

internal sealed class LlavaNextVision : VisionEncoder
{
    private readonly IBackend B;
    private readonly LlavaConfig _config;
    private readonly LlavaNextFamily _family;
    private readonly ClipTower _tower;
    private readonly MlpProjector _projector;
    private readonly Tensor _newline;   // [1, d]

    public LlavaNextVision(LlavaConfig config, LlavaNextFamily family, LlavaWeights weights, IBackend backend)
    {
        B = backend;
        _config = config;
        _family = family;
        _tower = new ClipTower(config, weights.Vision, backend);
        _projector = MlpProjector.Upload(backend, weights.Projector);
        _newline = backend.Allocate(1, config.Text.HiddenSize);
        backend.CopyFromHost(weights.FamilyTensors[LlavaNextFamily.ImageNewlineTensor].ToFloatArray(), _newline);
    }

    public override EncodedImage Encode(ImageInput image, List<float[]>? states)
    {
        Tensor projected;
        using (var raw = _tower.Features(image, states)) projected = _projector.Project(raw);
        using (projected)
            return new EncodedImage(Pack(projected, image.SourceSize!.Value));
    }

    /// <summary>Step 3 of the file header: the packed rows [TokenCount, d] from the projected tiles.</summary>
    private Tensor Pack(Tensor tiles, (int Height, int Width) source)
    {
        var v = _config.Vision;
        int side = v.PatchesPerSide, perTile = side * side, d = tiles.Cols;
        var (gridRows, gridCols) = AnyRes.GridShape(source.Height, source.Width, _family.Pinpoints, v.ImageSize);
        var window = AnyRes.Unpad(source.Height, source.Width, gridRows * side, gridCols * side);
        var packed = B.Allocate(perTile + window.Rows * (window.Cols + 1), d);
        try
        {
            B.CopyBlock(tiles, 0, 0, packed, 0, 0, perTile, d);   // the base tile, first
            int at = perTile;
            for (int r = window.RowStart; r < window.RowStart + window.Rows; r++)
            {
                int i = r / side, tr = r % side;
                for (int j = 0; j < gridCols; j++)
                {
                    // The kept columns of this map row that lie in tile (i, j).
                    int from = Math.Max(window.ColStart, j * side), to = Math.Min(window.ColStart + window.Cols, (j + 1) * side);
                    if (to <= from) continue;
                    int tile = 1 + i * gridCols + j;
                    B.CopyBlock(tiles, tile * perTile + tr * side + (from - j * side), 0, packed, at, 0, to - from, d);
                    at += to - from;
                }
                B.CopyBlock(_newline, 0, 0, packed, at++, 0, 1, d);
            }
            return packed;
        }
        catch
        {
            packed.Dispose();
            throw;
        }
    }

    public override void Dispose() => _newline.Dispose();
}
