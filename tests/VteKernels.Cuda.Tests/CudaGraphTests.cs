// GPU: CUDA graphs (CudaBackend.CaptureGraph), the shape the decode step will take. A captured graph
// replays its kernels; the device blocks a capture gave back to the pool stay the graph's, so a later rent
// cannot receive one and have a replay overwrite it; host data (token ids, positions) reaches the device
// through pinned staging, so uploads can be captured and replayed; and when the captured work fails, that
// failure is what the caller sees, not the failure of ending the capture it invalidated.
using Xunit;
using static VteKernels.Cuda.Tests.CudaOpTests;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class CudaGraphTests
{
    [Fact]
    public void ACapturedGraphReplaysItsKernels()
    {
        using var b = Gpu.Backend(DType.F32);
        using var x = Put(b, new float[1000], 10, 100);
        using var inc = Put(b, Enumerable.Repeat(1f, 1000).ToArray(), 10, 100);
        b.LoadKernels(); // no module load inside a capture
        b.Synchronize();
        using var graph = b.CaptureGraph(() =>
        {
            b.Add(x, inc, x);
            b.Add(x, inc, x);
        });
        Assert.All(Get(b, x), v => Assert.Equal(0f, v)); // capturing runs nothing
        for (int i = 0; i < 5; i++) graph.Launch();
        Assert.All(Get(b, x), v => Assert.Equal(10f, v));
    }

    [Fact]
    public void BlocksReturnedDuringACaptureStayTheGraphs()
    {
        using var b = Gpu.Backend(DType.F32);
        using var x = Put(b, new float[1000], 10, 100);
        using var inc = Put(b, Enumerable.Repeat(1f, 1000).ToArray(), 10, 100);
        b.LoadKernels();
        b.Allocate(10, 100).Dispose(); // the pool now holds a block of this size, so the capture rents without cuMemAlloc
        using var graph = b.CaptureGraph(() =>
        {
            using var tmp = b.Allocate(10, 100);
            b.Add(x, inc, tmp); // tmp = x + 1
            b.Add(tmp, inc, x); // x = tmp + 1
        });
        using var live = Put(b, Enumerable.Repeat(7f, 1000).ToArray(), 10, 100); // the same size class as tmp
        graph.Launch();
        Assert.All(Get(b, x), v => Assert.Equal(2f, v));
        Assert.All(Get(b, live), v => Assert.Equal(7f, v)); // the replay wrote tmp into the graph's own block
    }

    [Fact]
    public void HostUploadsAreCapturedAndReplayed()
    {
        using var b = Gpu.Backend(DType.F32);
        var table = b.Upload(Weight.FromFloats("embed", Random(32 * 16, 3, DType.F32), DType.F32, 32, 16));
        int[] ids = [3, 1, 4, 1, 5, 9, 2];
        int[] first = [0, 1, 2, 3, 4, 5, 6], second = [10, 11, 600, 601, 602, 603, 604];
        using var y = b.Allocate(ids.Length, 16);
        // Run everything once (kernels, pool blocks, staging), ending with other positions than the captured ones.
        b.Embedding(table, ids, y);
        b.Rope(y, 2, 8, second, 10000f);
        var expected = Get(b, y);
        b.Rope(y, 2, 8, first, 10000f);
        using (b.Allocate(1, 8))
        using (b.Allocate(1, 8)) { } // two spare small blocks: the captured ids and positions rent them
        b.Fill(y, float.NaN);

        using var graph = b.CaptureGraph(() =>
        {
            b.Embedding(table, ids, y); // uploads the ids
            b.Rope(y, 2, 8, second, 10000f); // uploads the new positions
        });
        Assert.All(Get(b, y), v => Assert.True(float.IsNaN(v))); // capturing runs nothing
        graph.Launch();
        Assert.Equal(expected, Get(b, y));
        b.Fill(y, float.NaN);
        graph.Launch(); // a replay copies the staged ids and positions again
        Assert.Equal(expected, Get(b, y));
    }

    [Fact]
    public void AFailedCaptureReportsTheFailureOfTheCapturedWork()
    {
        using var b = Gpu.Backend(DType.F32);
        using var x = Put(b, new float[64], 8, 8);
        b.LoadKernels();
        var e = Assert.Throws<CudaException>(() => b.CaptureGraph(() =>
        {
            b.Add(x, x, x);
            b.Synchronize(); // not allowed while the stream is captured: the capture is invalidated
        }));
        Assert.Equal("cuStreamSynchronize", e.Api); // not cuStreamEndCapture's CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        Assert.Equal("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", e.CodeName);
        b.Add(x, x, x); // the stream is not left capturing
        Assert.All(Get(b, x), v => Assert.Equal(0f, v));
    }
}
