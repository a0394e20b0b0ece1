// `vte forward --device cuda`: without a usable GPU it is one "error:" line saying why (no fallback to
// the CPU); with one it prints the device and writes the CPU's logits to float32 noise.
using VteKernels.Cli;
using VteKernels.Formats;
using VteKernels.Tests;
using Xunit;

namespace VteKernels.Cuda.Tests;

[Collection("Environment variables")] // the CLI reads VTE_CACHE_DIR
public sealed class CudaCliTests
{
    private static (int Code, string Out, string Err) Vte(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public void WithoutAGpuCudaIsOneErrorLine()
    {
        if (Gpu.Present) Assert.Skip("this machine has a usable GPU");
        var dir = TestModels.Tiny();
        var r = Vte("forward", "-m", dir, "--input-ids", "1,2,3", "--out", Path.Combine(TestModels.NewTempDir("cli"), "x.npy"), "--device", "cuda");
        Assert.Equal(2, r.Code);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: CUDA is not available: ", lines[0]);
    }

    [Fact, Trait("Category", "Gpu")]
    public void ForwardOnCudaMatchesTheCpu()
    {
        Gpu.Require();
        var dir = TestModels.Tiny();
        var outDir = TestModels.NewTempDir("cli-cuda");
        var ids = "1,5,9,13,17,21,25";
        var cpu = Vte("forward", "-m", dir, "--input-ids", ids, "--out", Path.Combine(outDir, "cpu.npy"));
        var cuda = Vte("forward", "-m", dir, "--input-ids", ids, "--out", Path.Combine(outDir, "cuda.npy"), "--device", "cuda");
        Assert.True(cpu.Code == 0, cpu.Err);
        Assert.True(cuda.Code == 0, cuda.Err);
        Assert.Contains(CudaDevice.Get(0).Name, cuda.Out);
        var a = Npy.ReadFloat32(Path.Combine(outDir, "cpu.npy"));
        var b = Npy.ReadFloat32(Path.Combine(outDir, "cuda.npy"));
        Assert.Equal(a.Shape, b.Shape);
        double scale = DeviceTolerance.MaxAbs(a.Data);
        for (int i = 0; i < a.Data.Length; i++)
            Assert.True(Math.Abs(a.Data[i] - b.Data[i]) <= 2e-4 * scale, $"logit {i}: cpu {a.Data[i]}, cuda {b.Data[i]}");
    }
}
