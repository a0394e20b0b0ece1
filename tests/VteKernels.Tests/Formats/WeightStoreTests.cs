// Tests of the weight store over single-file and sharded checkpoints written by SafetensorsWriter: shard
// naming and the index as Hugging Face writes them, lookups across shards, and every way an index can
// disagree with its shards or point outside the model directory.
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Formats;
using Xunit;

namespace VteKernels.Tests.Formats;

public sealed class WeightStoreTests
{
    // Ten tensors of 16, 32, ..., 160 bytes (880 in all), cycling through F32, F16 and BF16: 300-byte shards
    // pack them into 4 shards ([0-4], [5-6], [7-8], [9]), 600-byte shards into 2.
    private static readonly List<TensorSpec> Specs =
        Enumerable.Range(0, 10).Select(i => new TensorSpec($"model.layers.{i}.weight", (DType)(i % 3), [i + 1, 8 / (i % 3 == 0 ? 2 : 1)])).ToList();

    private static byte Pattern(string name, long i) => (byte)(name.Length * 17 + name[^8] * 3 + i * 13);

    private static void Data(TensorSpec t, Stream s)
    {
        var b = new byte[t.ByteLength];
        for (int i = 0; i < b.Length; i++) b[i] = Pattern(t.Name, i);
        s.Write(b);
    }

    private static IReadOnlyList<string> WriteSharded(string dir, long maxShardBytes = 300) =>
        SafetensorsWriter.WriteSharded(dir, Specs, Data, maxShardBytes, new Dictionary<string, string> { ["format"] = "pt" });

    private static JsonObject ReadIndex(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, WeightStore.IndexFileName)))!.AsObject();

    private static void WriteIndex(string dir, JsonObject index) => File.WriteAllText(Path.Combine(dir, WeightStore.IndexFileName), index.ToJsonString());

    [Fact]
    public void ShardedCheckpointIsWrittenAndReadLikeHuggingFace()
    {
        using var tmp = new TempDir();
        var files = WriteSharded(tmp.Path);
        Assert.True(files.Count >= 3);
        int n = files.Count;
        var expectedNames = Enumerable.Range(1, n).Select(i => $"model-{i:D5}-of-{n:D5}.safetensors").ToList();
        Assert.Equal(expectedNames, files.Select(Path.GetFileName));
        Assert.Equal([.. expectedNames, WeightStore.IndexFileName], tmp.FileNames());

        var index = ReadIndex(tmp.Path);
        long total = Specs.Sum(s => s.ByteLength);
        Assert.Equal(total, index["metadata"]!["total_size"]!.GetValue<long>());
        var map = index["weight_map"]!.AsObject();
        Assert.Equal(Specs.Select(s => s.Name).Order(StringComparer.Ordinal), map.Select(kv => kv.Key)); // sorted keys
        Assert.EndsWith("}\n", File.ReadAllText(Path.Combine(tmp.Path, WeightStore.IndexFileName)));

        foreach (var f in files)
        {
            using var shard = SafetensorsFile.Open(f);
            Assert.Equal("pt", shard.Metadata["format"]);
            Assert.True(shard.Entries.Sum(e => e.ByteLength) <= 300);
        }

        using var store = WeightStore.Open(tmp.Path);
        Assert.Equal(Path.Combine(tmp.Path, WeightStore.IndexFileName), store.SourcePath);
        Assert.Equal(files, store.Files);
        Assert.Equal(total, store.TotalBytes);
        Assert.Equal(Specs.Select(s => s.Name), store.Names); // shard order, then offset order: the written order
        foreach (var spec in Specs)
        {
            Assert.True(store.Contains(spec.Name));
            Assert.Equal(Path.Combine(tmp.Path, map[spec.Name]!.GetValue<string>()), store.FileOf(spec.Name));
            var e = store.GetEntry(spec.Name);
            Assert.Equal(spec.DType, e.DType);
            Assert.Equal(spec.Shape, e.Shape);
            var w = store.Get(spec.Name);
            var bytes = w.Bytes.ToArray();
            Assert.Equal(spec.ByteLength, bytes.Length);
            for (int i = 0; i < bytes.Length; i++) Assert.Equal(Pattern(spec.Name, i), bytes[i]);
        }
        Assert.False(store.Contains("lm_head.weight"));
        var missing = Assert.Throws<ModelFormatException>(() => store.Get("lm_head.weight"));
        Assert.Equal("lm_head.weight", missing.TensorName);
        Assert.Contains("'lm_head.weight'", missing.Message);
        Assert.False(store.TryGet("lm_head.weight", out _));
    }

    [Fact]
    public void CheckpointThatFitsOneShardIsASingleFile()
    {
        using var tmp = new TempDir();
        var files = WriteSharded(tmp.Path, maxShardBytes: 10_000);
        Assert.Equal([Path.Combine(tmp.Path, WeightStore.SingleFileName)], files);
        Assert.Equal([WeightStore.SingleFileName], tmp.FileNames());
        using var store = WeightStore.Open(tmp.Path);
        Assert.Equal(Specs.Count, store.Names.Count);
        Assert.Single(store.Files);
    }

    [Fact]
    public void TensorLargerThanAShardGetsOneOfItsOwn()
    {
        using var tmp = new TempDir();
        var files = WriteSharded(tmp.Path, maxShardBytes: 1);
        Assert.Equal(Specs.Count, files.Count);
        using var store = WeightStore.Open(tmp.Path);
        Assert.Equal(Specs.Count, store.Names.Count);
    }

    [Fact]
    public void RewritingACheckpointRemovesTheFilesOfTheOldOne()
    {
        using var tmp = new TempDir();
        WriteSharded(tmp.Path, maxShardBytes: 10_000);
        var sharded = WriteSharded(tmp.Path);
        Assert.DoesNotContain(WeightStore.SingleFileName, tmp.FileNames());
        Assert.Equal(4, sharded.Count);
        Assert.Equal(sharded.Count + 1, tmp.FileNames().Length);
        WriteSharded(tmp.Path, maxShardBytes: 600); // fewer shards: the old numbered ones go
        Assert.Equal(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", WeightStore.IndexFileName], tmp.FileNames());
        WriteSharded(tmp.Path, maxShardBytes: 10_000);
        Assert.Equal([WeightStore.SingleFileName], tmp.FileNames());
    }

    [Fact]
    public void FailedShardedWriteLeavesNoFiles()
    {
        using var tmp = new TempDir();
        Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.WriteSharded(tmp.Path, Specs,
            (t, s) => s.Write(new byte[t.Name.EndsWith("7.weight") ? 1 : t.ByteLength]), 300));
        Assert.Empty(tmp.FileNames());
    }

    [Fact]
    public void DirectoryWithoutWeightsIsReported()
    {
        using var tmp = new TempDir();
        var ex = Assert.Throws<ModelFormatException>(() => WeightStore.Open(tmp.Path));
        Assert.Contains("neither model.safetensors nor model.safetensors.index.json", ex.Message);
        Assert.Throws<DirectoryNotFoundException>(() => WeightStore.Open(Path.Combine(tmp.Path, "absent")));
    }

    // ---- lying indexes ----

    public sealed record IndexLie(Action<string, JsonObject> Tamper, string? Tensor, string Problem);

    private static string ShardOf(JsonObject index, int i) => index["weight_map"]![Specs[i].Name]!.GetValue<string>();

    private static readonly Dictionary<string, IndexLie> IndexLies = new()
    {
        ["index not JSON"] = new((dir, _) => File.WriteAllText(Path.Combine(dir, WeightStore.IndexFileName), "{\"weight_map\": "), null, "not valid JSON"),
        ["index not an object"] = new((dir, _) => File.WriteAllText(Path.Combine(dir, WeightStore.IndexFileName), "[]"), null, "index is not a JSON object"),
        ["weight_map missing"] = new((dir, ix) => { ix.Remove("weight_map"); WriteIndex(dir, ix); }, null, "index has no 'weight_map'"),
        ["weight_map not an object"] = new((dir, ix) => { ix["weight_map"] = new JsonArray(); WriteIndex(dir, ix); }, null, "'weight_map' is not a JSON object"),
        ["shard name not a string"] = new((dir, ix) => { ix["weight_map"]![Specs[2].Name] = 3; WriteIndex(dir, ix); }, Specs[2].Name, "'weight_map' value is not a string"),
        ["shard missing"] = new((dir, ix) => File.Delete(Path.Combine(dir, ShardOf(ix, 9))), Specs[9].Name, "shard model-00004-of-00004.safetensors does not exist in"),
        ["shard name climbs out"] = new((dir, ix) => { ix["weight_map"]![Specs[0].Name] = "../" + ShardOf(ix, 0); WriteIndex(dir, ix); }, Specs[0].Name, "is not a plain file name in the model directory (it contains a directory separator)"),
        ["shard name is dot-dot"] = new((dir, ix) => { ix["weight_map"]![Specs[0].Name] = ".."; WriteIndex(dir, ix); }, Specs[0].Name, "(it names a directory)"),
        ["shard name absolute"] = new((dir, ix) => { ix["weight_map"]![Specs[0].Name] = Path.Combine(dir, ShardOf(ix, 0)); WriteIndex(dir, ix); }, Specs[0].Name, "(it is an absolute path)"),
        ["shard name in a subfolder"] = new((dir, ix) => { ix["weight_map"]![Specs[0].Name] = "sub/" + ShardOf(ix, 0); WriteIndex(dir, ix); }, Specs[0].Name, "(it contains a directory separator)"),
        ["shard name empty"] = new((dir, ix) => { ix["weight_map"]![Specs[0].Name] = ""; WriteIndex(dir, ix); }, Specs[0].Name, "(it is empty)"),
        ["tensor listed but not in its shard"] = new((dir, ix) => { ix["weight_map"]!["ghost.weight"] = ShardOf(ix, 0); WriteIndex(dir, ix); }, "ghost.weight", "the index assigns this tensor to model-00001-of-00004.safetensors, which does not hold it"),
        ["tensor in a shard but not listed"] = new((dir, ix) => { ix["weight_map"]!.AsObject().Remove(Specs[4].Name); WriteIndex(dir, ix); }, Specs[4].Name, "holds this tensor but the index does not list it"),
        ["tensor listed for the wrong shard"] = new((dir, ix) => { ix["weight_map"]![Specs[0].Name] = ShardOf(ix, 9); WriteIndex(dir, ix); }, Specs[0].Name, "shard model-00001-of-00004.safetensors holds this tensor but the index assigns it to model-00004-of-00004.safetensors"),
        ["tensor stored in two shards"] = new((dir, ix) =>
        {
            SafetensorsWriter.Write(Path.Combine(dir, "extra.safetensors"), [Specs[0], new TensorSpec("extra.bias", DType.F32, [2])], Data);
            ix["weight_map"]!["extra.bias"] = "extra.safetensors";
            WriteIndex(dir, ix);
        }, Specs[0].Name, "tensor is stored in two shards, extra.safetensors and model-00001-of-00004.safetensors"),
        ["tensor listed twice"] = new((dir, ix) =>
        {
            var text = ix.ToJsonString();
            var entry = $"\"{Specs[0].Name}\":\"{ShardOf(ix, 0)}\"";
            File.WriteAllText(Path.Combine(dir, WeightStore.IndexFileName), text.Replace(entry, entry + "," + entry));
        }, Specs[0].Name, "tensor is listed twice in 'weight_map'"),
    };

    public static TheoryData<string> IndexLieNames => new(IndexLies.Keys);

    [Theory]
    [MemberData(nameof(IndexLieNames))]
    public void LyingIndexIsRejected(string caseName)
    {
        var lie = IndexLies[caseName];
        using var tmp = new TempDir();
        WriteSharded(tmp.Path);
        lie.Tamper(tmp.Path, ReadIndex(tmp.Path));

        var ex = Assert.Throws<ModelFormatException>(() => WeightStore.Open(tmp.Path));
        Assert.Contains(lie.Problem, ex.Message);
        Assert.StartsWith(WeightStore.IndexFileName + ": ", ex.Message);
        Assert.Equal(lie.Tensor, ex.TensorName);
        if (lie.Tensor is not null) Assert.Contains($"tensor '{lie.Tensor}'", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void BrokenShardIsReportedByItsName()
    {
        using var tmp = new TempDir();
        var files = WriteSharded(tmp.Path);
        File.WriteAllBytes(files[1], [1, 2, 3]);
        var ex = Assert.Throws<SafetensorsException>(() => WeightStore.Open(tmp.Path));
        Assert.StartsWith(Path.GetFileName(files[1]) + ": ", ex.Message);
    }

    [Fact]
    public void SingleFileWinsOverAnIndex()
    {
        using var tmp = new TempDir();
        WriteSharded(tmp.Path);
        SafetensorsWriter.Write(tmp.File(WeightStore.SingleFileName), [new TensorSpec("only", DType.F32, [1])], (_, s) => s.Write(new byte[4]));
        using var store = WeightStore.Open(tmp.Path);
        Assert.Equal(["only"], store.Names);
    }
}
