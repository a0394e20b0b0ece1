// Tests of the safetensors reader and writer: hand-made files that lie about their contents in every way the
// reader checks (each must fail with a SafetensorsException naming the file, the tensor where there is one,
// and the problem), round trips through the writer for every supported dtype, header padding, and the
// writer's all-or-nothing behaviour when a data callback misbehaves.
using System.Buffers.Binary;
using System.Text;
using VteKernels.Formats;
using Xunit;

namespace VteKernels.Tests.Formats;

public sealed class SafetensorsTests
{
    // ---- hand-made files ----

    /// <summary>A file whose 8-byte prefix declares <paramref name="declaredLength"/> (default: the header's real length).</summary>
    private static byte[] Build(byte[] header, int dataBytes, ulong? declaredLength = null)
    {
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        for (int i = 0; i < dataBytes; i++) bytes[8 + header.Length + i] = (byte)(i * 7 + 1);
        return bytes;
    }

    private static byte[] Build(string header, int dataBytes) => Build(Encoding.UTF8.GetBytes(header), dataBytes);

    private const string A4 = """{"dtype":"F32","shape":[1],"data_offsets":[0,4]}""";

    public sealed record LyingCase(Func<byte[]> Bytes, string? Tensor, string Problem);

    private static readonly Dictionary<string, LyingCase> Lies = new()
    {
        ["empty file"] = new(() => [], null, "file is 0 bytes, shorter than the 8-byte header length"),
        ["file shorter than 8 bytes"] = new(() => [2, 0, 0, 0, 0], null, "file is 5 bytes, shorter than the 8-byte header length"),
        ["header length past end of file"] = new(() => Build("{}"u8.ToArray(), 0, declaredLength: 1000), null, "header length 1000 runs past the end of the file (10 bytes)"),
        ["header length over the limit"] = new(() => Build("{}"u8.ToArray(), 0, declaredLength: 200_000_000), null, "header length 200000000 exceeds the 100000000-byte limit"),
        ["header length u64 max"] = new(() => Build("{}"u8.ToArray(), 0, declaredLength: ulong.MaxValue), null, "exceeds the 100000000-byte limit"),
        ["header length zero"] = new(() => Build([], 0), null, "header does not begin with '{'"),
        ["header is a JSON array"] = new(() => Build("[1, 2]", 0), null, "header does not begin with '{'"),
        ["header starts with a space"] = new(() => Build(" {}", 0), null, "header does not begin with '{'"),
        ["header not UTF-8"] = new(() => Build([(byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)':', (byte)'1', (byte)'}'], 0), null, "header is not valid UTF-8"),
        ["header not JSON"] = new(() => Build("""{"a": """, 0), null, "header is not valid JSON"),
        ["header JSON followed by garbage"] = new(() => Build("{} x", 0), null, "header is not valid JSON"),
        ["header padded with NULs"] = new(() => Build("{}\0\0\0\0\0\0", 0), null, "header is not valid JSON"),
        ["duplicate tensor name"] = new(() => Build($$$"""{"a":{{{A4}}},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8), "a", "duplicate tensor name in header"),
        ["entry not an object"] = new(() => Build("""{"a":[0,4]}""", 4), "a", "entry is not a JSON object (found Array)"),
        ["entry with a duplicate key"] = new(() => Build("""{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}""", 4), "a", "duplicate key 'dtype' in entry"),
        ["dtype missing"] = new(() => Build("""{"a":{"shape":[1],"data_offsets":[0,4]}}""", 4), "a", "entry lacks 'dtype'"),
        ["dtype not a string"] = new(() => Build("""{"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}""", 4), "a", "'dtype' is not a string"),
        ["dtype unknown"] = new(() => Build("""{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}""", 4), "a", "unknown dtype 'F33'"),
        ["dtype lower-case is unknown"] = new(() => Build("""{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}""", 4), "a", "unknown dtype 'f32'"),
        ["dtype I64 unsupported"] = new(() => Build("""{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}""", 8), "a", "unsupported dtype I64"),
        ["dtype F8_E4M3 unsupported"] = new(() => Build("""{"a":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}""", 4), "a", "unsupported dtype F8_E4M3"),
        ["shape missing"] = new(() => Build("""{"a":{"dtype":"F32","data_offsets":[0,4]}}""", 4), "a", "entry lacks 'shape'"),
        ["shape not an array"] = new(() => Build("""{"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}""", 4), "a", "'shape' is not an array"),
        ["shape dimension negative"] = new(() => Build("""{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", 4), "a", "'shape' dimension -1 is negative"),
        ["shape dimension fractional"] = new(() => Build("""{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,4]}}""", 4), "a", "'shape' dimension 2.5 is not an integer"),
        ["shape dimension a string"] = new(() => Build("""{"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}""", 4), "a", "'shape' dimension is not a number"),
        ["shape dimension over int32"] = new(() => Build("""{"a":{"dtype":"F32","shape":[3000000000],"data_offsets":[0,4]}}""", 4), "a", "'shape' dimension 3000000000 is too large"),
        ["shape dimension over int64"] = new(() => Build("""{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}""", 4), "a", "'shape' dimension 99999999999999999999 overflows"),
        ["shape element count overflows"] = new(() => Build("""{"a":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,4]}}""", 4), "a", "element count of shape [2147483647, 2147483647, 2147483647] overflows"),
        ["data_offsets missing"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1]}}""", 4), "a", "entry lacks 'data_offsets'"),
        ["data_offsets not an array"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}}""", 4), "a", "'data_offsets' is not an array"),
        ["data_offsets one value"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}}""", 4), "a", "'data_offsets' has 1 values, expected exactly two"),
        ["data_offsets three values"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}""", 4), "a", "'data_offsets' has 3 values, expected exactly two"),
        ["data_offsets negative"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", 4), "a", "'data_offsets' value -4 is negative"),
        ["data_offsets fractional"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}}""", 4), "a", "'data_offsets' value 4.0 is not an integer"),
        ["data_offsets over int64"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}""", 4), "a", "'data_offsets' value 18446744073709551615 overflows"),
        ["data_offsets begin after end"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}""", 8), "a", "data_offsets begin 8 is after end 4"),
        ["byte length disagrees with shape"] = new(() => Build("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}""", 4), "a", "data_offsets [0, 4] span 4 bytes but F32 [2] needs 8"),
        ["byte length disagrees with dtype"] = new(() => Build("""{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}}""", 16), "a", "span 16 bytes but BF16 [4] needs 8"),
        ["tensor past end of file"] = new(() => Build("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4), "a", "data_offsets [0, 8] extend past the end of the file (the data section holds 4 bytes)"),
        ["overlapping tensors"] = new(() => Build("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12), "b", "data_offsets [4, 12] overlap tensor 'a' at [0, 8]"),
        ["same bytes claimed twice"] = new(() => Build($$$"""{"a":{{{A4}}},"b":{{{A4}}}}""", 4), "b", "overlap tensor 'a'"),
        ["gap between tensors"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12), "b", "gap of 4 unused bytes before this tensor"),
        ["gap before the first tensor"] = new(() => Build("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8), "a", "gap of 4 unused bytes before this tensor"),
        ["trailing bytes after the last tensor"] = new(() => Build($$$"""{"a":{{{A4}}}}""", 9), null, "5 trailing bytes after the last tensor (tensors cover 4 of the 9 data bytes)"),
        ["trailing bytes after an empty header"] = new(() => Build("{}", 3), null, "3 trailing bytes after the last tensor"),
        ["metadata not an object"] = new(() => Build("""{"__metadata__":["pt"]}""", 0), null, "'__metadata__' is not a JSON object of strings"),
        ["metadata value not a string"] = new(() => Build("""{"__metadata__":{"format":"pt","step":3}}""", 0), null, "'__metadata__' value of 'step' is not a string"),
        ["metadata value null"] = new(() => Build("""{"__metadata__":{"format":null}}""", 0), null, "'__metadata__' value of 'format' is not a string"),
        ["metadata twice"] = new(() => Build("""{"__metadata__":{},"__metadata__":{}}""", 0), null, "duplicate '__metadata__' key in header"),
    };

    public static TheoryData<string> LyingCaseNames => new(Lies.Keys);

    [Theory]
    [MemberData(nameof(LyingCaseNames))]
    public void LyingFileIsRejected(string caseName)
    {
        var c = Lies[caseName];
        using var tmp = new TempDir();
        var path = tmp.File("lying.safetensors");
        File.WriteAllBytes(path, c.Bytes());

        var ex = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path));
        Assert.Contains(c.Problem, ex.Message);
        Assert.StartsWith("lying.safetensors: ", ex.Message);
        Assert.Equal(path, ex.FilePath);
        Assert.Equal(c.Tensor, ex.TensorName);
        if (c.Tensor is not null) Assert.Contains($"tensor '{c.Tensor}'", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void UnknownAndUnsupportedDtypesAreToldApart()
    {
        var unknown = Lies["dtype unknown"].Problem;
        var unsupported = Lies["dtype I64 unsupported"].Problem;
        Assert.DoesNotContain("unsupported", unknown);
        Assert.DoesNotContain("unknown", unsupported);
    }

    [Fact]
    public void MissingFileAndDirectoryGiveTypedErrors()
    {
        using var tmp = new TempDir();
        Assert.Throws<FileNotFoundException>(() => SafetensorsFile.Open(tmp.File("absent.safetensors")));
        var ex = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(tmp.Path));
        Assert.Contains("is a directory", ex.Message);
    }

    [Fact]
    public void EmptyHeaderFileIsValid()
    {
        using var tmp = new TempDir();
        var path = tmp.File("empty.safetensors");
        File.WriteAllBytes(path, Build("{}", 0));
        using var f = SafetensorsFile.Open(path);
        Assert.Empty(f.Entries);
        Assert.Empty(f.Metadata);
        Assert.False(f.Contains("a"));
        Assert.Equal(10, f.DataOffset);
    }

    [Fact]
    public void HandMadeFileWithPaddingAndUnsortedEntriesIsRead()
    {
        // Entries listed out of offset order, unknown extra keys, a zero-element tensor sharing an offset, and
        // a header padded with trailing spaces: all valid.
        const string header = """{"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8],"extra":1},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}      """;
        using var tmp = new TempDir();
        var path = tmp.File("m.safetensors");
        var bytes = Build(header, 8);
        BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(8 + header.Length), 2.5f);
        BinaryPrimitives.WriteHalfLittleEndian(bytes.AsSpan(8 + header.Length + 4), (Half)1.5f);
        BinaryPrimitives.WriteHalfLittleEndian(bytes.AsSpan(8 + header.Length + 6), (Half)(-3f));
        File.WriteAllBytes(path, bytes);

        using var f = SafetensorsFile.Open(path);
        Assert.Equal(["a", "z", "b"], f.Entries.Select(e => e.Name));
        Assert.Equal("pt", f.Metadata["format"]);
        var z = f.GetEntry("z");
        Assert.Equal([0, 3], z.Shape);
        Assert.Equal(0, z.ByteLength);
        Assert.Equal(0, z.ElementCount);
        Assert.Equal([2.5f], f.GetWeight("a").ToFloatArray());
        Assert.Equal([1.5f, -3f], f.GetWeight("b").ToFloatArray());
        Assert.Empty(f.GetWeight("z").ToFloatArray());
    }

    // ---- writer round trips ----

    private static float[] Values(int n, int seed)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(rng.NextDouble() * 8 - 4);
        return v;
    }

    private static byte[] Encode(float[] values, DType dtype)
    {
        var bytes = new byte[values.Length * dtype.Size()];
        DTypes.FromFloat(values, dtype, bytes);
        return bytes;
    }

    public static TheoryData<DType> AllDTypes => new([DType.F32, DType.F16, DType.BF16]);

    [Theory]
    [MemberData(nameof(AllDTypes))]
    public void WriterRoundTripsOddShapes(DType dtype)
    {
        int[][] shapes = [[3, 5, 7], [1, 1, 9], [13], [], [0, 4], [2, 0], [11, 3]];
        var specs = shapes.Select((s, i) => new TensorSpec($"layer.{i}.weight", dtype, s)).ToList();
        var values = specs.ToDictionary(s => s.Name, s => Values((int)s.ElementCount, s.Name.Length * 31 + s.Shape.Length));
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcödé <&> \"quoted\"" };

        using var tmp = new TempDir();
        var path = tmp.File("rt.safetensors");
        SafetensorsWriter.Write(path, specs, (t, s) => s.Write(Encode(values[t.Name], t.DType)), metadata);

        using var f = SafetensorsFile.Open(path);
        Assert.Equal(metadata.OrderBy(kv => kv.Key), f.Metadata.OrderBy(kv => kv.Key));
        Assert.Equal(specs.Select(s => s.Name), f.Entries.Select(e => e.Name)); // contiguous, in the given order
        foreach (var spec in specs)
        {
            var e = f.GetEntry(spec.Name);
            Assert.Equal(dtype, e.DType);
            Assert.Equal(spec.Shape, e.Shape);
            Assert.Equal(spec.ByteLength, e.ByteLength);
            var w = f.GetWeight(spec.Name);
            Assert.Equal(spec.Shape, w.Shape);
            Assert.Equal(Encode(values[spec.Name], dtype), w.Bytes.ToArray());
            var back = w.ToFloatArray();
            var expected = new float[back.Length];
            DTypes.ToFloat(Encode(values[spec.Name], dtype), dtype, expected);
            Assert.Equal(expected, back);
            if (dtype == DType.F32) Assert.Equal(values[spec.Name], back);
        }
    }

    [Fact]
    public void WriterWithoutTensorsWritesAValidFile()
    {
        using var tmp = new TempDir();
        var path = tmp.File("none.safetensors");
        SafetensorsWriter.Write(path, [], (_, _) => throw new InvalidOperationException("not called"));
        using var f = SafetensorsFile.Open(path);
        Assert.Empty(f.Entries);
        Assert.Equal(0, f.DataOffset % 8);
    }

    [Fact]
    public void HeaderIsPaddedWithSpacesToAnEightByteBoundary()
    {
        using var tmp = new TempDir();
        for (int len = 1; len <= 17; len++)
        {
            var spec = new TensorSpec(new string('w', len), DType.F16, [3]);
            var path = tmp.File($"pad{len}.safetensors");
            SafetensorsWriter.Write(path, [spec], (_, s) => s.Write(new byte[6]));
            var bytes = File.ReadAllBytes(path);
            long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.Equal(0, (8 + n) % 8);
            var header = Encoding.UTF8.GetString(bytes, 8, (int)n);
            var json = header.TrimEnd(' ');
            Assert.EndsWith("}", json);
            Assert.True(header.Length - json.Length < 8);
            Assert.Equal(8 + n + 6, bytes.Length);
            using var f = SafetensorsFile.Open(path);
            Assert.Equal(8 + n, f.DataOffset);
        }
    }

    [Fact]
    public void WeightViewsReadTheirOwnBytes()
    {
        var specs = new List<TensorSpec>
        {
            new("a", DType.F32, [4, 3]),
            new("b", DType.BF16, [5]),
            new("c", DType.F16, [2, 2, 2]),
        };
        using var tmp = new TempDir();
        var path = tmp.File("v.safetensors");
        // Every byte of the data section distinct mod 251, so a view off by any amount is caught.
        long pos = 0;
        SafetensorsWriter.Write(path, specs, (t, s) =>
        {
            for (long i = 0; i < t.ByteLength; i++) s.WriteByte((byte)(pos++ % 251));
        });

        var file = File.ReadAllBytes(path);
        using var f = SafetensorsFile.Open(path);
        foreach (var spec in specs)
        {
            var e = f.GetEntry(spec.Name);
            var expected = file.AsSpan((int)(f.DataOffset + e.Begin), (int)e.ByteLength).ToArray();
            Assert.Equal(expected, f.GetWeight(spec.Name).Bytes.ToArray());
        }
        var a = f.GetWeight("a");
        Assert.Equal(4, a.Rows);
        Assert.Equal(3, a.Cols);
        Assert.Equal(file.AsSpan((int)(f.DataOffset + 12), 12).ToArray(), a.RowBytes(1).ToArray());
        var row = new float[3];
        a.RowsToFloat(2, row);
        Assert.Equal(a.ToFloatArray()[6..9], row);
    }

    [Fact]
    public void MissingTensorAndDisposedFileAreReported()
    {
        using var tmp = new TempDir();
        var path = tmp.File("x.safetensors");
        SafetensorsWriter.Write(path, [new TensorSpec("w", DType.F32, [2])], (_, s) => s.Write(new byte[8]));
        var f = SafetensorsFile.Open(path);
        var ex = Assert.Throws<SafetensorsException>(() => f.GetEntry("nope"));
        Assert.Equal("nope", ex.TensorName);
        Assert.Contains("'nope'", ex.Message);
        Assert.False(f.TryGetEntry("nope", out _));
        f.Dispose();
        Assert.Throws<ObjectDisposedException>(() => f.GetWeight("w"));
        f.Dispose(); // twice is harmless
    }

    // ---- writer failures ----

    public static TheoryData<string> BadCallbacks => new(["too few bytes", "too many bytes", "callback throws"]);

    [Theory]
    [MemberData(nameof(BadCallbacks))]
    public void FailedWriteLeavesNoFile(string how)
    {
        var specs = new List<TensorSpec> { new("ok", DType.F32, [2]), new("bad", DType.F16, [3]) };
        void Data(TensorSpec t, Stream s)
        {
            if (t.Name == "ok") { s.Write(new byte[8]); return; }
            switch (how)
            {
                case "too few bytes": s.Write(new byte[5]); break;
                case "too many bytes": s.Write(new byte[7]); break;
                default: throw new IOException("disk on fire");
            }
        }

        using var tmp = new TempDir();
        var path = tmp.File("out.safetensors");
        if (how == "callback throws")
            Assert.Throws<IOException>(() => SafetensorsWriter.Write(path, specs, Data));
        else
        {
            var ex = Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.Write(path, specs, Data));
            Assert.Contains("'bad'", ex.Message);
        }
        Assert.Empty(tmp.FileNames()); // neither the file nor a temporary one
    }

    [Fact]
    public void FailedWriteKeepsThePreviousFile()
    {
        using var tmp = new TempDir();
        var path = tmp.File("keep.safetensors");
        SafetensorsWriter.Write(path, [new TensorSpec("w", DType.F32, [1])], (_, s) => s.Write(BitConverter.GetBytes(7f)));
        Assert.Throws<InvalidOperationException>(() =>
            SafetensorsWriter.Write(path, [new TensorSpec("w", DType.F32, [2])], (_, s) => s.Write(new byte[4])));
        Assert.Equal(["keep.safetensors"], tmp.FileNames());
        using var f = SafetensorsFile.Open(path);
        Assert.Equal([7f], f.GetWeight("w").ToFloatArray());
    }

    [Fact]
    public void WriterRejectsBadSpecs()
    {
        using var tmp = new TempDir();
        var path = tmp.File("bad.safetensors");
        Action<TensorSpec, Stream> none = (_, _) => { };
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("a", DType.F32, [1]), new("a", DType.F32, [1])], none));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("__metadata__", DType.F32, [1])], none));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("a", DType.F32, [-1])], none));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new("a", DType.F32, [int.MaxValue, int.MaxValue, int.MaxValue])], none));
        Assert.Empty(tmp.FileNames());
    }
}
