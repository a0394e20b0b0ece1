// A minimal .npy reader for the reference tests: little-endian float32 ('<f4') or uint8 ('|u1'), C order,
// any shape. Enough for the golden arrays that HF transformers' outputs (and PIL's decodes) were saved as;
// anything else is refused.
using System.Buffers.Binary;
using System.Text;

namespace VteKernels.Tests.Reference;

/// <summary>Reads float32 .npy files.</summary>
internal static class NaiveNpy
{
    /// <summary>Reads a '&lt;f4' C-order array: its values, row-major, and its shape.</summary>
    public static (float[] Data, int[] Shape) Read(string path)
    {
        var (b, dataStart, shape, count) = Open(path, "<f4", 4);
        var data = new float[count];
        for (int i = 0; i < count; i++) data[i] = BinaryPrimitives.ReadSingleLittleEndian(b.AsSpan(dataStart + 4 * i));
        return (data, shape);
    }

    /// <summary>Reads a '|u1' C-order array (an RGB image as numpy holds PIL's decode).</summary>
    public static (byte[] Data, int[] Shape) ReadUInt8(string path)
    {
        var (b, dataStart, shape, count) = Open(path, "|u1", 1);
        return (b.AsSpan(dataStart, (int)count).ToArray(), shape);
    }

    private static (byte[] Bytes, int DataStart, int[] Shape, long Count) Open(string path, string descr, int size)
    {
        byte[] b = File.ReadAllBytes(path);
        if (b.Length < 10 || b[0] != 0x93 || Encoding.ASCII.GetString(b, 1, 5) != "NUMPY")
            throw new InvalidDataException($"{path}: not a .npy file");
        int major = b[6];
        int headerLen, headerStart;
        if (major == 1) { headerLen = BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(8)); headerStart = 10; }
        else if (major is 2 or 3) { headerLen = (int)BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(8)); headerStart = 12; }
        else throw new InvalidDataException($"{path}: .npy version {major} is not supported");
        string header = Encoding.ASCII.GetString(b, headerStart, headerLen);

        if (!header.Contains($"'descr': '{descr}'")) throw new InvalidDataException($"{path}: dtype is not '{descr}': {header.Trim()}");
        if (!header.Contains("'fortran_order': False")) throw new InvalidDataException($"{path}: Fortran order is not supported");
        int open = header.IndexOf("'shape': (", StringComparison.Ordinal);
        if (open < 0) throw new InvalidDataException($"{path}: no shape in header");
        open += "'shape': (".Length;
        int close = header.IndexOf(')', open);
        int[] shape = header[open..close]
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(int.Parse).ToArray();

        long count = 1;
        foreach (var d in shape) count *= d;
        int dataStart = headerStart + headerLen;
        if (b.Length - dataStart != count * size)
            throw new InvalidDataException($"{path}: {b.Length - dataStart} data bytes for {count} values of {size} bytes");
        return (b, dataStart, shape, count);
    }
}
