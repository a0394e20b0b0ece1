// The CLIP vision tower (HF CLIPVisionModel) on a backend, shared by the CLIP-based families: one image's
// tiles go through it together, as one batch of rows [tiles * positions, hidden] (HF batches all patches of
// all images the same way). Per tile: class token, patch convolution, position embeddings, pre-LayerNorm;
// then pre-LN encoder layers x = x + Attn(LN1(x)); x = x + Mlp(LN2(x)), whose linear layers run over every
// tile's rows at once while attention stays within each tile. The tower stops at the deepest feature layer
// the config reads (LLaVA reads layer -2 of 24, so the last layer never runs), post_layernorm is never used.
// Features: the selected hidden states (0 = embeddings after pre-LN, i = output of layer i), concatenated
// across feature layers, the class token dropped for the "default" strategy, tile after tile.
using VteKernels.Backends;
using VteKernels.Models;

namespace VteKernels.Engine.Vision;

internal sealed class ClipTower
{
    private readonly IBackend B;
    private readonly LlavaConfig _config;
    private readonly Layer[] _layers;
    private readonly DeviceWeight _classEmbedding, _patchEmbedding, _positionEmbedding, _preLnW, _preLnB;

    private sealed record Layer(
        DeviceWeight Ln1W, DeviceWeight Ln1B, DeviceWeight QW, DeviceWeight QB, DeviceWeight KW, DeviceWeight KB,
        DeviceWeight VW, DeviceWeight VB, DeviceWeight OutW, DeviceWeight OutB, DeviceWeight Ln2W, DeviceWeight Ln2B,
        DeviceWeight Fc1W, DeviceWeight Fc1B, DeviceWeight Fc2W, DeviceWeight Fc2B);

    /// <summary>Uploads the tower's weights (the layers that run) to <paramref name="backend"/>.</summary>
    public ClipTower(LlavaConfig config, VisionWeights w, IBackend backend)
    {
        B = backend;
        _config = config;
        DeviceWeight U(Weight x) => backend.Upload(x);
        DeviceWeight UV(Weight x) => backend.UploadLinear(x, LinearRole.Vision);   // matrices Linear multiplies by
        _classEmbedding = U(w.ClassEmbedding);
        _patchEmbedding = U(w.PatchEmbedding);
        _positionEmbedding = U(w.PositionEmbedding);
        _preLnW = U(w.PreLnWeight);
        _preLnB = U(w.PreLnBias);
        _layers = w.Layers.Take(config.VisionLayersNeeded).Select(l => new Layer(
            U(l.Ln1Weight), U(l.Ln1Bias), UV(l.QWeight), U(l.QBias), UV(l.KWeight), U(l.KBias), UV(l.VWeight), U(l.VBias),
            UV(l.OutWeight), U(l.OutBias), U(l.Ln2Weight), U(l.Ln2Bias), UV(l.Fc1Weight), U(l.Fc1Bias), UV(l.Fc2Weight), U(l.Fc2Bias))).ToArray();
    }

    /// <summary>Feature rows per tile: the patches, plus the class token for the "full" strategy.</summary>
    public int TokensPerTile => _config.TokensPerImage;

    /// <summary>
    /// The selected features of every tile of <paramref name="image"/> (already checked by its family):
    /// [tiles * TokensPerTile, ProjectorInputSize], tile after tile; the caller owns it. Each hidden state that
    /// is computed ([tiles * positions, hidden]) is appended to <paramref name="states"/> when given.
    /// </summary>
    public Tensor Features(ImageInput image, List<float[]>? states)
    {
        var v = _config.Vision;
        var indices = _config.FeatureHiddenStateIndices;
        int tiles = image.Tiles, n = v.NumPositions, d = v.HiddenSize;
        int first = n - TokensPerTile;   // 1 drops the class token ("default"), 0 keeps it ("full")
        var features = B.Allocate(tiles * TokensPerTile, _config.ProjectorInputSize);
        try
        {
            using var x = B.Allocate(tiles * n, d);
            for (int t = 0; t < tiles; t++)
            {
                using (var cls = x.Slice(t * n, 1)) B.Embedding(_classEmbedding, [0], cls);
                using (var patches = x.Slice(t * n + 1, v.NumPatches))
                    B.PatchEmbed(image.Tile(t), image.Channels, image.Height, image.Width, v.PatchSize, _patchEmbedding, patches);
                using var tile = x.Slice(t * n, n);
                B.AddWeight(tile, _positionEmbedding);
            }
            B.LayerNorm(x, _preLnW, _preLnB, v.LayerNormEps, x);
            Keep(0, x);
            for (int l = 0; l < _layers.Length; l++)
            {
                Block(_layers[l], x, tiles);
                Keep(l + 1, x);
            }
            return features;
        }
        catch
        {
            features.Dispose();
            throw;
        }

        void Keep(int state, Tensor x)
        {
            if (states is not null)
            {
                var host = new float[x.Rows * x.Cols];
                B.CopyToHost(x, host);
                states.Add(host);
            }
            for (int k = 0; k < indices.Count; k++)
                if (indices[k] == state)
                    for (int t = 0; t < tiles; t++)
                        B.CopyBlock(x, t * n + first, 0, features, t * TokensPerTile, k * d, TokensPerTile, d);
        }
    }

    /// <summary>One pre-LN CLIP encoder layer over every tile's rows, in place; attention within each tile.</summary>
    private void Block(Layer w, Tensor x, int tiles)
    {
        var v = _config.Vision;
        int rows = x.Rows, d = v.HiddenSize, n = rows / tiles;
        using (var h = B.Allocate(rows, d))
        using (var q = B.Allocate(rows, d))
        using (var k = B.Allocate(rows, d))
        using (var val = B.Allocate(rows, d))
        using (var a = B.Allocate(rows, d))
        {
            B.LayerNorm(x, w.Ln1W, w.Ln1B, v.LayerNormEps, h);
            B.Linear(h, w.QW, w.QB, q);
            B.Linear(h, w.KW, w.KB, k);
            B.Linear(h, w.VW, w.VB, val);
            for (int t = 0; t < tiles; t++)
            {
                using var qt = q.Slice(t * n, n);
                using var kt = k.Slice(t * n, n);
                using var vt = val.Slice(t * n, n);
                using var at = a.Slice(t * n, n);
                B.Attention(qt, v.NumHeads, kt, vt, v.NumHeads, v.HeadDim, AttentionMask.None, at);
            }
            B.Linear(a, w.OutW, w.OutB, h);
            B.Add(x, h, x);
        }
        using (var h = B.Allocate(rows, d))
        using (var f = B.Allocate(rows, v.IntermediateSize))
        {
            B.LayerNorm(x, w.Ln2W, w.Ln2B, v.LayerNormEps, h);
            B.Linear(h, w.Fc1W, w.Fc1B, f);
            if (v.HiddenAct == "quick_gelu") B.QuickGelu(f); else B.Gelu(f);
            B.Linear(f, w.Fc2W, w.Fc2B, h);
            B.Add(x, h, x);
        }
    }
}
