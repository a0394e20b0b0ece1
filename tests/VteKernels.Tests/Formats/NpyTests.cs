// Tests of the .npy reader and writer: round trips, byte-exact agreement with the headers numpy wrote for the
// shared fixtures, the other format versions and '<f8', and malformed or unsupported files.
using System.Buffers.Binary;
using System.Text;
using VteKernels.Formats;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Formats;

public sealed class NpyTests
{
    public static TheoryData<int[]> Shapes => new([[2, 3], [5], [], [0, 3], [1, 3, 64, 64], [7, 1, 1]]);

    [Theory]
    [MemberData(nameof(Shapes))]
    public void RoundTrip(int[] shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        var data = Enumerable.Range(0, (int)n).Select(i => MathF.Sin(i) * 100 + i).ToArray();
        using var tmp = new TempDir();
        var path = tmp.File("a.npy");
        Npy.Write(path, data, shape);

        var bytes = File.ReadAllBytes(path);
        Assert.Equal([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0], bytes[..8]);
        int headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
        Assert.Equal(0, (10 + headerLength) % 64);
        Assert.Equal((byte)'\n', bytes[10 + headerLength - 1]);
        Assert.Equal(10 + headerLength + 4 * n, bytes.Length);

        var back = Npy.ReadFloat32(path);
        Assert.Equal(shape, back.Shape);
        Assert.Equal(data, back.Data);
    }

    [Theory]
    [InlineData("basic", "pixels.npy")]
    [InlineData("basic", "logits.npy")]
    [InlineData("gqa-minimal-bf16", "pixels.npy")]
    public void HeaderIsByteForByteWhatNumpyWrites(string folder, string file)
    {
        var fixture = Path.Combine(FixturePaths.Root, folder, file);
        var array = Npy.ReadFloat32(fixture);
        using var tmp = new TempDir();
        var path = tmp.File(file);
        Npy.Write(path, array.Data, array.Shape);
        Assert.Equal(File.ReadAllBytes(fixture), File.ReadAllBytes(path));
    }

    // A hand-made file: version bytes, header text (padded by the caller or not at all), then data.
    private static byte[] Make(byte major, string header, ReadOnlySpan<byte> data, Encoding? encoding = null)
    {
        var h = (encoding ?? Encoding.Latin1).GetBytes(header);
        int preamble = major == 1 ? 10 : 12;
        var bytes = new byte[preamble + h.Length + data.Length];
        bytes[0] = 0x93;
        Encoding.ASCII.GetBytes("NUMPY").CopyTo(bytes, 1);
        bytes[6] = major;
        bytes[7] = 0;
        if (major == 1) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)h.Length);
        else BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), (uint)h.Length);
        h.CopyTo(bytes, preamble);
        data.CopyTo(bytes.AsSpan(preamble + h.Length));
        return bytes;
    }

    private static byte[] Floats(params float[] v)
    {
        var b = new byte[v.Length * 4];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(4 * i), v[i]);
        return b;
    }

    [Fact]
    public void ReadsVersion2Float64NarrowedToFloat32()
    {
        var d = new byte[3 * 8];
        double[] values = [1.5, -2.25, 1e-3];
        for (int i = 0; i < 3; i++) BinaryPrimitives.WriteDoubleLittleEndian(d.AsSpan(8 * i), values[i]);
        using var tmp = new TempDir();
        var path = tmp.File("f8.npy");
        File.WriteAllBytes(path, Make(2, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", d));
        var a = Npy.ReadFloat32(path);
        Assert.Equal([3], a.Shape);
        Assert.Equal(values.Select(v => (float)v), a.Data);
    }

    [Fact]
    public void ReadsVersion3WithUtf8Header()
    {
        using var tmp = new TempDir();
        var path = tmp.File("v3.npy");
        File.WriteAllBytes(path, Make(3, "{\"shape\": (2, 1), \"fortran_order\": False, \"descr\": '<f4'}  \n", Floats(4, 5), Encoding.UTF8));
        var a = Npy.ReadFloat32(path);
        Assert.Equal([2, 1], a.Shape);
        Assert.Equal([4f, 5f], a.Data);
    }

    public sealed record BadNpy(Func<byte[]> Bytes, string Problem);

    private const string Good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";

    private static readonly Dictionary<string, BadNpy> BadFiles = new()
    {
        ["empty file"] = new(() => [], "not an .npy file (bad magic bytes)"),
        ["bad magic"] = new(() => { var b = Make(1, Good, Floats(1, 2)); b[1] = (byte)'X'; return b; }, "not an .npy file (bad magic bytes)"),
        ["text file"] = new(() => Encoding.ASCII.GetBytes("1.0 2.0\n"), "bad magic bytes"),
        ["truncated preamble"] = new(() => Make(1, Good, Floats(1, 2))[..8], "truncated inside the preamble"),
        ["version 4.0"] = new(() => { var b = Make(1, Good, Floats(1, 2)); b[6] = 4; return b; }, "unsupported .npy format version 4.0"),
        ["version 1.1"] = new(() => { var b = Make(1, Good, Floats(1, 2)); b[7] = 1; return b; }, "unsupported .npy format version 1.1"),
        ["header past end"] = new(() => Make(1, Good, [])[..40], "runs past the end of the file"),
        ["header not a dict literal"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,) \n", Floats(1, 2)), "header is not a valid Python dict literal"),
        ["header is a list"] = new(() => Make(1, "['<f4', False, (2,)]\n", Floats(1, 2)), "header is not a Python dict"),
        ["header lacks shape"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': False, }\n", Floats(1, 2)), "header lacks 'shape'"),
        ["header has an extra key"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n", Floats(1, 2)), "unexpected key 'x'"),
        ["dtype int32"] = new(() => Make(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n", Floats(1, 2)), "unsupported dtype '<i4'"),
        ["dtype big-endian float32"] = new(() => Make(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", Floats(1, 2)), "unsupported dtype '>f4'"),
        ["dtype float16"] = new(() => Make(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }\n", Floats(1)), "unsupported dtype '<f2'"),
        ["structured dtype"] = new(() => Make(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }\n", Floats(1, 2)), "structured arrays are not read"),
        ["fortran order"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 1), }\n", Floats(1, 2)), "fortran_order True (column-major data) is not supported"),
        ["shape not a tuple"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }\n", Floats(1, 2)), "'shape' is not a tuple"),
        ["shape negative"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }\n", Floats(1, 2)), "'shape' has a negative dimension -2"),
        ["data truncated"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n", Floats(1, 2, 3)), "data is truncated: 12 bytes where shape (2, 2) of '<f4' needs 16"),
        ["data longer than shape"] = new(() => Make(1, Good, Floats(1, 2, 3)), "data size mismatch: 4 bytes past the end of the array"),
        // Hostile nesting: 10,000 brackets overflowed the stack of the recursive-descent literal parser.
        ["header of 10,000 '('"] = new(() => Make(1, new string('(', 10_000), []), "brackets nest deeper than 32 levels"),
        ["header of 10,000 '['"] = new(() => Make(1, "{'descr': " + new string('[', 10_000), []), "brackets nest deeper than 32 levels"),
        ["header of 10,000 '{'"] = new(() => Make(2, new string('{', 10_000), []), "brackets nest deeper than 32 levels"),
        ["header nested 33 deep"] = new(() => Make(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': " + new string('[', 32) + new string(']', 32) + "}\n", Floats(1, 2)), "brackets nest deeper than 32 levels"),
    };

    public static TheoryData<string> BadFileNames => new(BadFiles.Keys);

    [Theory]
    [MemberData(nameof(BadFileNames))]
    public void BadFileIsRejected(string caseName)
    {
        var c = BadFiles[caseName];
        using var tmp = new TempDir();
        var path = tmp.File("bad.npy");
        File.WriteAllBytes(path, c.Bytes());
        var ex = Assert.Throws<NpyException>(() => Npy.ReadFloat32(path));
        Assert.Contains(c.Problem, ex.Message);
        Assert.StartsWith("bad.npy: ", ex.Message);
    }

    [Fact]
    public void WriteRejectsAShapeThatDoesNotHoldTheData()
    {
        using var tmp = new TempDir();
        Assert.Throws<ArgumentException>(() => Npy.Write(tmp.File("x.npy"), new float[5], [2, 3]));
        Assert.Throws<ArgumentException>(() => Npy.Write(tmp.File("x.npy"), new float[0], [-1, 0]));
        Assert.Throws<FileNotFoundException>(() => Npy.ReadFloat32(tmp.File("absent.npy")));
    }
}
