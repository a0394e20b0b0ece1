// A deliberately minimal safetensors reader for the float64 reference model: it reads the whole file,
// parses the JSON header with System.Text.Json and widens every tensor (F32, F16, BF16) to double.
// It shares no code with the library's loader, so the reference can check that loader's results.
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace VteKernels.Tests.Reference;

/// <summary>One tensor widened to double, row-major, with its shape.</summary>
internal sealed record NaiveTensor(double[] Data, int[] Shape);

/// <summary>All tensors of one safetensors file, loaded eagerly as double.</summary>
internal sealed class NaiveSafetensors
{
    private readonly Dictionary<string, NaiveTensor> _tensors;

    private NaiveSafetensors(Dictionary<string, NaiveTensor> tensors) => _tensors = tensors;

    /// <summary>Tensor names in the file.</summary>
    public IEnumerable<string> Names => _tensors.Keys;

    /// <summary>Whether the file holds a tensor of that name.</summary>
    public bool Has(string name) => _tensors.ContainsKey(name);

    /// <summary>The tensor of that name; throws when it is absent.</summary>
    public NaiveTensor Get(string name) =>
        _tensors.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"safetensors: no tensor '{name}'");

    /// <summary>Reads a whole .safetensors file.</summary>
    public static NaiveSafetensors Read(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < 8) throw new InvalidDataException($"{path}: shorter than the 8-byte header length");
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (headerLen > (ulong)(bytes.Length - 8)) throw new InvalidDataException($"{path}: header length {headerLen} exceeds the file");
        int dataStart = 8 + (int)headerLen;
        string json = Encoding.UTF8.GetString(bytes, 8, (int)headerLen);

        var tensors = new Dictionary<string, NaiveTensor>();
        using var doc = JsonDocument.Parse(json);
        foreach (var entry in doc.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__") continue;
            var e = entry.Value;
            string dtype = e.GetProperty("dtype").GetString() ?? "";
            int[] shape = e.GetProperty("shape").EnumerateArray().Select(s => s.GetInt32()).ToArray();
            var offsets = e.GetProperty("data_offsets").EnumerateArray().Select(o => o.GetInt64()).ToArray();
            long count = 1;
            foreach (var d in shape) count *= d;
            int elemSize = dtype switch
            {
                "F32" => 4,
                "F16" or "BF16" => 2,
                _ => throw new InvalidDataException($"{path}: tensor '{entry.Name}' has unsupported dtype {dtype}"),
            };
            if (offsets.Length != 2 || offsets[1] - offsets[0] != count * elemSize || dataStart + offsets[1] > bytes.Length)
                throw new InvalidDataException($"{path}: tensor '{entry.Name}' has inconsistent data_offsets");

            var data = new double[count];
            var src = bytes.AsSpan(dataStart + (int)offsets[0], (int)(count * elemSize));
            for (int i = 0; i < count; i++)
            {
                data[i] = dtype switch
                {
                    "F32" => BinaryPrimitives.ReadSingleLittleEndian(src[(4 * i)..]),
                    "F16" => (double)BinaryPrimitives.ReadHalfLittleEndian(src[(2 * i)..]),
                    _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]) << 16),
                };
            }
            tensors[entry.Name] = new NaiveTensor(data, shape);
        }
        return new NaiveSafetensors(tensors);
    }
}
