// Reads and writes NumPy .npy files holding float arrays (reference inputs and golden outputs), and writes uint8 images.
// Format (numpy.lib.format): the magic "\x93NUMPY", a version byte pair (1.0, 2.0 or 3.0), a little-endian
// header length (u16 for 1.0, u32 for 2.0 and 3.0), then a Python dict literal
// {'descr': ..., 'fortran_order': ..., 'shape': (...), } padded with spaces and ending in '\n' (latin-1 for
// 1.0/2.0, UTF-8 for 3.0), then the raw data. Reading takes '<f4' (and '<f8', narrowed to float32) in C order
// and requires the data to be exactly as long as the shape says. Writing produces version 1.0 '<f4' (or '|u1'
// for images) with the header laid out byte for byte as numpy writes it (so the data starts 64-byte aligned).
// Hostile headers: the header literal is parsed in time and memory linear in its length, with at most
// MaxHeaderNesting levels of brackets (numpy's own headers nest 2 deep; a structured dtype a few more), so
// a header of 10,000 '(' is an NpyException, not a stack overflow.
using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace VteKernels.Formats;

/// <summary>A float32 array read from an .npy file, in C (row-major) order.</summary>
/// <param name="Data">The elements.</param>
/// <param name="Shape">Shape, outermost first (empty for a scalar).</param>
public sealed record NpyArray(float[] Data, int[] Shape)
{
    /// <inheritdoc/>
    public override string ToString() => $"float32 [{string.Join(", ", Shape)}]";
}

/// <summary>Reads and writes .npy files of float arrays.</summary>
public static class Npy
{
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];
    private const int ChunkElements = 1 << 16;
    private const int GrowthAxisMaxDigits = 21; // numpy leaves room in the header to grow the first axis in place

    /// <summary>Deepest bracket nesting accepted in a header's dict literal.</summary>
    public const int MaxHeaderNesting = 32;

    /// <summary>Reads a C-order '&lt;f4' or '&lt;f8' array (the latter narrowed to float32).</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NpyException">The file is not a well-formed .npy file of a supported dtype and layout.</exception>
    public static NpyArray ReadFloat32(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new NpyException(full, "is a directory, not an .npy file");
        if (!File.Exists(full)) throw new FileNotFoundException($".npy file '{full}' does not exist", full);

        using var fs = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        long length = fs.Length;
        Span<byte> pre = stackalloc byte[12];
        int got = fs.ReadAtLeast(pre[..10], 10, throwOnEndOfStream: false);
        if (got < Magic.Length || !pre[..Magic.Length].SequenceEqual(Magic))
            throw new NpyException(full, "not an .npy file (bad magic bytes)");
        if (got < 10) throw new NpyException(full, "file is truncated inside the preamble");
        byte major = pre[6], minor = pre[7];
        if (major is < 1 or > 3 || minor != 0)
            throw new NpyException(full, $"unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)");
        long headerLength;
        int preamble;
        if (major == 1)
        {
            headerLength = BinaryPrimitives.ReadUInt16LittleEndian(pre[8..]);
            preamble = 10;
        }
        else
        {
            if (fs.ReadAtLeast(pre[10..12], 2, throwOnEndOfStream: false) < 2)
                throw new NpyException(full, "file is truncated inside the preamble");
            headerLength = BinaryPrimitives.ReadUInt32LittleEndian(pre[8..]);
            preamble = 12;
        }
        if (preamble + headerLength > length)
            throw new NpyException(full, $"file is truncated: the header length {headerLength} runs past the end of the file ({length} bytes)");

        var headerBytes = new byte[headerLength];
        fs.ReadExactly(headerBytes);
        string headerText;
        try
        {
            headerText = major == 3
                ? new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(headerBytes)
                : Encoding.Latin1.GetString(headerBytes);
        }
        catch (DecoderFallbackException ex)
        {
            throw new NpyException(full, "header is not valid UTF-8", ex);
        }

        var (itemSize, shape) = ParseHeader(full, headerText);
        long count = 1;
        try
        {
            foreach (var d in shape) count = checked(count * d);
        }
        catch (OverflowException)
        {
            throw new NpyException(full, $"element count of shape {ShapeRepr(shape)} overflows");
        }
        if (count > Array.MaxLength) throw new NpyException(full, $"shape {ShapeRepr(shape)} holds {count} elements, more than one array can");
        long need = count * itemSize;
        long have = length - preamble - headerLength;
        var descr = itemSize == 4 ? "<f4" : "<f8";
        if (have < need)
            throw new NpyException(full, $"data is truncated: {have} bytes where shape {ShapeRepr(shape)} of '{descr}' needs {need}");
        if (have > need)
            throw new NpyException(full, $"data size mismatch: {have - need} bytes past the end of the array (shape {ShapeRepr(shape)} of '{descr}' needs {need}, the file holds {have})");

        var data = new float[count];
        if (itemSize == 4)
        {
            for (long i = 0; i < count; i += ChunkElements)
            {
                var dst = data.AsSpan((int)i, (int)Math.Min(ChunkElements, count - i));
                fs.ReadExactly(MemoryMarshal.AsBytes(dst));
                if (!BitConverter.IsLittleEndian)
                {
                    var u = MemoryMarshal.Cast<float, uint>(dst);
                    BinaryPrimitives.ReverseEndianness(u, u);
                }
            }
        }
        else
        {
            var buf = new double[Math.Min(ChunkElements, count)];
            for (long i = 0; i < count; i += ChunkElements)
            {
                int n = (int)Math.Min(ChunkElements, count - i);
                var src = buf.AsSpan(0, n);
                fs.ReadExactly(MemoryMarshal.AsBytes(src));
                if (!BitConverter.IsLittleEndian)
                {
                    var u = MemoryMarshal.Cast<double, ulong>(src);
                    BinaryPrimitives.ReverseEndianness(u, u);
                }
                for (int j = 0; j < n; j++) data[i + j] = (float)src[j];
            }
        }
        return new NpyArray(data, shape);
    }

    /// <summary>Writes a C-order float32 array as a version 1.0 '&lt;f4' .npy file, laid out as numpy writes it.</summary>
    /// <exception cref="ArgumentException">A dimension is negative or the shape does not hold <paramref name="data"/>.Length elements.</exception>
    public static void Write(string path, ReadOnlySpan<float> data, ReadOnlySpan<int> shape)
    {
        ArgumentNullException.ThrowIfNull(path);
        CheckShape(data.Length, shape);
        using var fs = new FileStream(Path.GetFullPath(path), FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        WriteFloat32(fs, data, shape);
    }

    /// <summary>Writes a C-order float32 array to <paramref name="stream"/> in the .npy layout of <see cref="Write(string, ReadOnlySpan{float}, ReadOnlySpan{int})"/>.</summary>
    /// <exception cref="ArgumentException">A dimension is negative or the shape does not hold <paramref name="data"/>.Length elements.</exception>
    public static void Write(Stream stream, ReadOnlySpan<float> data, ReadOnlySpan<int> shape)
    {
        ArgumentNullException.ThrowIfNull(stream);
        CheckShape(data.Length, shape);
        WriteFloat32(stream, data, shape);
    }

    /// <summary>Writes a C-order int32 array ('&lt;i4') to <paramref name="stream"/> as a version 1.0 .npy.</summary>
    /// <exception cref="ArgumentException">A dimension is negative or the shape does not hold <paramref name="data"/>.Length elements.</exception>
    public static void WriteInt32(Stream stream, ReadOnlySpan<int> data, ReadOnlySpan<int> shape)
    {
        ArgumentNullException.ThrowIfNull(stream);
        CheckShape(data.Length, shape);
        WriteHeader(stream, "<i4", shape);
        Span<byte> b = stackalloc byte[4];
        foreach (var v in data)
        {
            BinaryPrimitives.WriteInt32LittleEndian(b, v);
            stream.Write(b);
        }
    }

    private static void WriteFloat32(Stream fs, ReadOnlySpan<float> data, ReadOnlySpan<int> shape)
    {
        WriteHeader(fs, "<f4", shape);
        if (BitConverter.IsLittleEndian)
        {
            for (int i = 0; i < data.Length; i += ChunkElements)
                fs.Write(MemoryMarshal.AsBytes(data.Slice(i, Math.Min(ChunkElements, data.Length - i))));
        }
        else
        {
            Span<byte> b = stackalloc byte[4];
            foreach (var v in data)
            {
                BinaryPrimitives.WriteSingleLittleEndian(b, v);
                fs.Write(b);
            }
        }
    }

    /// <summary>Writes a C-order uint8 array (decoded images, H x W x 3) as a version 1.0 '|u1' .npy file.</summary>
    /// <exception cref="ArgumentException">A dimension is negative or the shape does not hold <paramref name="data"/>.Length elements.</exception>
    public static void WriteUInt8(string path, ReadOnlySpan<byte> data, ReadOnlySpan<int> shape)
    {
        ArgumentNullException.ThrowIfNull(path);
        CheckShape(data.Length, shape);
        using var fs = new FileStream(Path.GetFullPath(path), FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        WriteHeader(fs, "|u1", shape);
        fs.Write(data);
    }

    private static void CheckShape(int length, ReadOnlySpan<int> shape)
    {
        long count = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape {ShapeRepr(shape)}", nameof(shape));
            count = checked(count * d);
        }
        if (count != length) throw new ArgumentException($"shape {ShapeRepr(shape)} holds {count} elements, got {length}", nameof(shape));
    }

    // The preamble and the header dict, byte for byte as numpy writes them.
    private static void WriteHeader(Stream fs, string descr, ReadOnlySpan<int> shape)
    {
        var header = new StringBuilder("{'descr': '").Append(descr).Append("', 'fortran_order': False, 'shape': ")
            .Append(ShapeRepr(shape)).Append(", }");
        if (shape.Length > 0) header.Append(' ', GrowthAxisMaxDigits - shape[0].ToString(CultureInfo.InvariantCulture).Length);
        // numpy: pad with 1..64 spaces so that magic + version + length + header + '\n' is a multiple of 64.
        int hlen = header.Length + 1;
        int preamble = 10;
        int pad = 64 - (preamble + hlen) % 64;
        if (hlen + pad > ushort.MaxValue)
        {
            preamble = 12;
            pad = 64 - (preamble + hlen) % 64;
        }
        header.Append(' ', pad).Append('\n');
        var headerBytes = Encoding.Latin1.GetBytes(header.ToString());
        Span<byte> pre = stackalloc byte[12];
        Magic.CopyTo(pre);
        pre[6] = preamble == 10 ? (byte)1 : (byte)2;
        pre[7] = 0;
        if (preamble == 10) BinaryPrimitives.WriteUInt16LittleEndian(pre[8..], (ushort)headerBytes.Length);
        else BinaryPrimitives.WriteUInt32LittleEndian(pre[8..], (uint)headerBytes.Length);
        fs.Write(pre[..preamble]);
        fs.Write(headerBytes);
    }

    // Python's repr of a tuple of ints: "()", "(3,)", "(1, 3)".
    private static string ShapeRepr(ReadOnlySpan<int> shape)
    {
        if (shape.Length == 1) return $"({shape[0].ToString(CultureInfo.InvariantCulture)},)";
        var sb = new StringBuilder("(");
        for (int i = 0; i < shape.Length; i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append(shape[i].ToString(CultureInfo.InvariantCulture));
        }
        return sb.Append(')').ToString();
    }

    // ---- header: a Python dict literal with exactly the keys descr, fortran_order and shape ----

    private static (int ItemSize, int[] Shape) ParseHeader(string file, string text)
    {
        object? parsed;
        try
        {
            var p = new LiteralParser(text);
            parsed = p.ParseValue();
            p.SkipSpace();
            if (!p.AtEnd) throw new FormatException($"unexpected '{p.Current}' after the dict");
        }
        catch (FormatException ex)
        {
            throw new NpyException(file, $"header is not a valid Python dict literal: {ex.Message}", ex);
        }
        if (parsed is not Dictionary<string, object?> dict) throw new NpyException(file, "header is not a Python dict");
        foreach (var key in dict.Keys)
            if (key is not ("descr" or "fortran_order" or "shape")) throw new NpyException(file, $"header has an unexpected key '{key}'");
        foreach (var key in (string[])["descr", "fortran_order", "shape"])
            if (!dict.ContainsKey(key)) throw new NpyException(file, $"header lacks '{key}'");

        int itemSize = dict["descr"] switch
        {
            "<f4" => 4,
            "<f8" => 8,
            string s => throw new NpyException(file, $"unsupported dtype '{s}' (this reader takes '<f4' or '<f8')"),
            _ => throw new NpyException(file, "unsupported dtype: 'descr' is not a plain type string (structured arrays are not read)"),
        };
        switch (dict["fortran_order"])
        {
            case false: break;
            case true: throw new NpyException(file, "fortran_order True (column-major data) is not supported; save the array in C order");
            default: throw new NpyException(file, "'fortran_order' is not True or False");
        }
        if (dict["shape"] is not Tuple<List<object?>> { Item1: var dims })
            throw new NpyException(file, "'shape' is not a tuple");
        var shape = new int[dims.Count];
        for (int i = 0; i < dims.Count; i++)
        {
            if (dims[i] is not long d) throw new NpyException(file, $"'shape' element {i} is not an integer");
            if (d < 0) throw new NpyException(file, $"'shape' has a negative dimension {d}");
            if (d > int.MaxValue) throw new NpyException(file, $"'shape' dimension {d} is too large");
            shape[i] = (int)d;
        }
        return (itemSize, shape);
    }

    // Parses the Python literals numpy headers use: dicts, strings, True/False/None, integers, tuples (returned as
    // Tuple<List<object?>>) and lists (List<object?>). Throws FormatException on anything else.
    private sealed class LiteralParser(string text)
    {
        private int _pos;
        private int _depth;

        public bool AtEnd => _pos >= text.Length;
        public char Current => text[_pos];

        public void SkipSpace()
        {
            while (!AtEnd && char.IsWhiteSpace(Current)) _pos++;
        }

        public object? ParseValue()
        {
            SkipSpace();
            if (AtEnd) throw new FormatException("unexpected end of header");
            char c = Current;
            switch (c)
            {
                case '{':
                {
                    var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (k, v) in ParseSequence('{', '}', dictionary: true))
                    {
                        if (k is not string key) throw new FormatException("a dict key is not a string");
                        if (!dict.TryAdd(key, v)) throw new FormatException($"duplicate key '{key}'");
                    }
                    return dict;
                }
                case '(':
                    return Tuple.Create(ParseSequence('(', ')', dictionary: false).Select(p => p.Value).ToList());
                case '[':
                    return ParseSequence('[', ']', dictionary: false).Select(p => p.Value).ToList();
                case '\'' or '"':
                    return ParseString();
            }
            if (c == '-' || char.IsAsciiDigit(c))
            {
                int start = _pos;
                if (c == '-') _pos++;
                while (!AtEnd && char.IsAsciiDigit(Current)) _pos++;
                var digits = text.AsSpan(start, _pos - start);
                if (!AtEnd && Current == 'L') _pos++; // Python 2 long suffix
                if (!long.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v))
                    throw new FormatException($"integer {digits} is not a 64-bit integer");
                return v;
            }
            if (char.IsAsciiLetter(c))
            {
                int start = _pos;
                while (!AtEnd && char.IsAsciiLetterOrDigit(Current)) _pos++;
                return text[start.._pos] switch
                {
                    "True" => true,
                    "False" => false,
                    "None" => null,
                    var word => throw new FormatException($"unexpected name '{word}'"),
                };
            }
            throw new FormatException($"unexpected '{c}'");
        }

        // Items of a bracketed, comma-separated sequence (a trailing comma is allowed); key/value pairs for a dict.
        private List<(object? Key, object? Value)> ParseSequence(char open, char close, bool dictionary)
        {
            if (++_depth > MaxHeaderNesting) throw new FormatException($"brackets nest deeper than {MaxHeaderNesting} levels");
            try { return ParseItems(open, close, dictionary); }
            finally { _depth--; }
        }

        private List<(object? Key, object? Value)> ParseItems(char open, char close, bool dictionary)
        {
            _pos++; // open
            var items = new List<(object?, object?)>();
            while (true)
            {
                SkipSpace();
                if (AtEnd) throw new FormatException($"'{open}' is not closed");
                if (Current == close) { _pos++; return items; }
                object? key = null;
                if (dictionary)
                {
                    key = ParseValue();
                    SkipSpace();
                    if (AtEnd || Current != ':') throw new FormatException("expected ':' after a dict key");
                    _pos++;
                }
                items.Add((key, ParseValue()));
                SkipSpace();
                if (AtEnd) throw new FormatException($"'{open}' is not closed");
                if (Current == ',') { _pos++; continue; }
                if (Current != close) throw new FormatException($"expected ',' or '{close}', found '{Current}'");
            }
        }

        private string ParseString()
        {
            char quote = Current;
            _pos++;
            var sb = new StringBuilder();
            while (true)
            {
                if (AtEnd) throw new FormatException("a string is not closed");
                char c = text[_pos++];
                if (c == quote) return sb.ToString();
                if (c == '\\')
                {
                    if (AtEnd) throw new FormatException("a string is not closed");
                    c = text[_pos++];
                }
                sb.Append(c);
            }
        }
    }
}
