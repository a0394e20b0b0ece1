// LLaVA-1.5's vision encoder: the CLIP tower on the image's one tile, then the projector: TokensPerImage
// rows. SAISA checkpoints (LlavaConfig.Saisa) keep the raw tower features instead and project them with a
// projector of each decoder layer: layer 0's projection fills the embeddings, and before every later layer
// SaisaRows overwrites the visual rows with that layer's own projection (the model is trained for NAAViT,
// which the session switches on with it).
using VteKernels.Backends;
using VteKernels.Engine;
using VteKernels.Engine.Vision;
using VteKernels.Models;

namespace VteKernels.Families.Llava;

internal sealed class LlavaVision : VisionEncoder
{
    private readonly IBackend _backend;
    private readonly ClipTower _tower;
    private readonly MlpProjector _projector;
    private readonly MlpProjector[]? _saisa;

    public LlavaVision(LlavaConfig config, LlavaWeights weights, IBackend backend)
    {
        _backend = backend;
        _tower = new ClipTower(config, weights.Vision, backend);
        _projector = MlpProjector.Upload(backend, weights.Projector);
        if (weights.Saisa is { } saisa)
            _saisa = saisa.Layers.Select(l => new MlpProjector(backend, backend.Upload(l.W1), backend.Upload(l.B1), backend.Upload(l.W2), backend.Upload(l.B2))).ToArray();
    }

    public override EncodedImage Encode(ImageInput image, List<float[]>? states)
    {
        var raw = _tower.Features(image, states);
        try
        {
            if (_saisa is null)
            {
                using (raw) return new EncodedImage(_projector.Project(raw));
            }
            return new EncodedImage(_saisa[0].Project(raw), raw);
        }
        catch
        {
            raw.Dispose();
            throw;
        }
    }

    public override ILayerVisualRows? LayerRows(IReadOnlyList<EncodedImage> images) =>
        _saisa is null || images.Count == 0 ? null : new SaisaRows(_backend, _saisa, [.. images.Select(i => i.Raw!)]);

    /// <summary>SAISA: before decoder layer l > 0, each image's rows become layer l's projection of its raw features.</summary>
    private sealed class SaisaRows(IBackend backend, MlpProjector[] projectors, Tensor[] raw) : ILayerVisualRows
    {
        public long Write(int layer, Tensor x, IReadOnlyList<ImageSpan> spans)
        {
            if (layer == 0) return 0;   // layer 0's projection came in through the embeddings
            long macs = 0;
            for (int i = 0; i < spans.Count; i++)
            {
                using var projected = projectors[layer].Project(raw[i]);
                backend.CopyBlock(projected, 0, 0, x, spans[i].Start, 0, projected.Rows, projected.Cols);
                macs += spans[i].Length * projectors[layer].MacsPerRow;
            }
            return macs;
        }
    }
}
