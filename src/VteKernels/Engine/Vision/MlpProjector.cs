// The two-layer GELU MLP that maps vision features to the language model's width: LLaVA's projector
// (multi_modal_projector / mm_projector, mlp2x_gelu) and SAISA's per-layer projectors alike:
// y = Linear2(GELU(Linear1(x))), exact (erf) GELU, biases optional.
using VteKernels.Backends;
using VteKernels.Models;

namespace VteKernels.Engine.Vision;

internal sealed class MlpProjector(IBackend backend, DeviceWeight w1, DeviceWeight? b1, DeviceWeight w2, DeviceWeight? b2)
{
    private int Hidden => w1.Source.Rows;

    /// <summary>The model's projector on <paramref name="backend"/>: its matrices uploaded as the vision side's linears.</summary>
    public static MlpProjector Upload(IBackend backend, ProjectorWeights p) => new(backend,
        backend.UploadLinear(p.Linear1Weight, LinearRole.Vision), p.Linear1Bias is null ? null : backend.Upload(p.Linear1Bias),
        backend.UploadLinear(p.Linear2Weight, LinearRole.Vision), p.Linear2Bias is null ? null : backend.Upload(p.Linear2Bias));

    /// <summary>Output width.</summary>
    public int OutputSize => w2.Source.Rows;

    /// <summary>Multiply-adds per projected row.</summary>
    public long MacsPerRow => (long)w1.Source.Rows * w1.Source.Cols + (long)w2.Source.Rows * w2.Source.Cols;

    /// <summary>The projection of every row of <paramref name="x"/>, a new tensor [rows, OutputSize] the caller owns.</summary>
    public Tensor Project(Tensor x)
    {
        var y = backend.Allocate(x.Rows, OutputSize);
        try
        {
            using var h = backend.Allocate(x.Rows, Hidden);
            backend.Linear(x, w1, b1, h);
            backend.Gelu(h);
            backend.Linear(h, w2, b2, y);
            return y;
        }
        catch
        {
            y.Dispose();
            throw;
        }
    }
}
