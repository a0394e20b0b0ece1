// Reads the shared Hugging Face fixtures (tiny random LLaVA checkpoints saved by transformers, and numpy
// arrays): the real files the engine will be checked against must open through the same code paths.
using VteKernels.Formats;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Formats;

public sealed class FixtureTests
{
    [Fact]
    public void BasicCheckpointOpens()
    {
        using var store = WeightStore.Open(Path.Combine(FixturePaths.Root, "basic", "model"));
        Assert.Equal(64, store.Names.Count);
        Assert.Single(store.Files);
        var norm = store.Get("language_model.model.norm.weight");
        Assert.Equal(DType.F32, norm.DType);
        Assert.Equal([64], norm.Shape);
        Assert.All(norm.ToFloatArray(), v => Assert.True(float.IsFinite(v)));
        Assert.All(store.Names, n => Assert.Equal(DType.F32, store.GetEntry(n).DType));

        using var file = SafetensorsFile.Open(Path.Combine(FixturePaths.Root, "basic", "model", "model.safetensors"));
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(64, file.Entries.Count);
        Assert.Equal(new FileInfo(file.FilePath).Length - file.DataOffset, file.Entries.Sum(e => e.ByteLength));
    }

    [Fact]
    public void Bf16CheckpointOpens()
    {
        using var store = WeightStore.Open(Path.Combine(FixturePaths.Root, "gqa-minimal-bf16", "model"));
        Assert.Equal(89, store.Names.Count);
        Assert.All(store.Names, n => Assert.Equal(DType.BF16, store.GetEntry(n).DType));
        var norm = store.Get("language_model.model.norm.weight");
        Assert.Equal([64], norm.Shape);
        Assert.All(norm.ToFloatArray(), v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void PixelsNpyReads()
    {
        var pixels = Npy.ReadFloat32(Path.Combine(FixturePaths.Root, "gqa-minimal-bf16", "pixels.npy"));
        Assert.Equal([1, 3, 64, 64], pixels.Shape);
        Assert.Equal(3 * 64 * 64, pixels.Data.Length);
        Assert.All(pixels.Data, v => Assert.True(float.IsFinite(v)));
        Assert.Contains(pixels.Data, v => v != 0);
    }
}
