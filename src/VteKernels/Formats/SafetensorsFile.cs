// Reads one safetensors file by memory-mapping it read-only, or (LoadOptions.MemoryMap = false) by reading
// it whole into native memory. A mapped file remembers its FileStamp and CheckUnchanged compares it with
// the file now (see LoadOptions for the hazard this guards against).
// Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 header length N, N bytes of
// UTF-8 JSON (an object, which may be padded with trailing spaces), then the byte buffer. Each tensor entry is
// {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the byte buffer; an optional
// "__metadata__" entry maps strings to strings. Every claim the header makes is checked before a pointer is
// handed out, and the entries, sorted by offset, must cover the buffer exactly (no overlap, no gap, no
// trailing bytes), as the reference implementation requires. Tensor bytes are never copied into managed
// memory: weights returned by GetWeight point into the mapping (or the native copy) and are valid until Dispose.
// A "U8" tensor [rows, bytes] that "__metadata__" names under "vte.quant.<name>" as "q8_0" or "q4_0" is a
// block-quantized weight (SafetensorsWriter) and reads as that type with shape [rows, columns].
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Unicode;

namespace VteKernels.Formats;

/// <summary>One tensor as a safetensors header describes it.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Shape, outermost first (empty for a scalar).</param>
/// <param name="Begin">Offset of the first byte, relative to the start of the data section.</param>
/// <param name="End">Offset one past the last byte, relative to the start of the data section.</param>
public sealed record TensorEntry(string Name, DType DType, int[] Shape, long Begin, long End)
{
    /// <summary>Size in bytes (<see cref="End"/> - <see cref="Begin"/>).</summary>
    public long ByteLength => End - Begin;

    /// <summary>Number of elements: the product of the shape (1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {DType.SafetensorsName()} [{string.Join(", ", Shape)}] bytes [{Begin}, {End})";
}

/// <summary>A safetensors file, validated and memory-mapped read-only.</summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted, in bytes (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    // Types the format defines that this runtime does not compute with: reported as unsupported, not unknown.
    private static readonly HashSet<string> KnownUnsupported = new(StringComparer.Ordinal)
    {
        "BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F64", "C64",
        "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
    };

    private MemoryMappedFile? _map;
    private MemoryMappedViewAccessor? _view;
    private FileStream? _stream;  // kept open while mapped: its handle is what CheckUnchanged stats
    private byte* _base;          // start of the file in the mapping or the native copy, or null once disposed
    private readonly bool _owned; // _base is a native copy (NativeMemory), not a mapping
    private readonly FileStamp _stamp;
    private readonly Dictionary<string, TensorEntry> _byName;

    /// <summary>Full path of the file.</summary>
    public string FilePath { get; }

    /// <summary>The "__metadata__" map of the header (empty when the header has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensors, sorted by data offset.</summary>
    public IReadOnlyList<TensorEntry> Entries { get; }

    /// <summary>Offset in the file of the data section (8 + the header length).</summary>
    public long DataOffset { get; }

    /// <summary>Size of the file in bytes.</summary>
    public long FileLength { get; }

    /// <summary>True when the file is memory-mapped; false when it was read into memory.</summary>
    public bool IsMapped => !_owned;

    private SafetensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, FileStream? stream, byte* basePtr, long length, FileStamp stamp)
    {
        FilePath = path;
        _map = map;
        _view = view;
        _stream = stream;
        _owned = map is null;
        _base = basePtr;
        _stamp = stamp;
        FileLength = length;
        try
        {
            (DataOffset, Metadata, Entries) = Parse(path, new ReadOnlySpan<byte>(basePtr, (int)Math.Min(length, int.MaxValue)), length);
        }
        catch
        {
            // Open frees what it allocated; this half-built object must not free it again when finalized.
            _base = null;
            GC.SuppressFinalize(this);
            throw;
        }
        _byName = new Dictionary<string, TensorEntry>(Entries.Count, StringComparer.Ordinal);
        foreach (var e in Entries) _byName.Add(e.Name, e);
    }

    /// <summary>Opens and validates a safetensors file: memory-mapped, or read into memory when <paramref name="options"/> says so.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafetensorsException">The path is a directory, or the file is malformed or lies about its contents.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static SafetensorsFile Open(string path, LoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        options ??= LoadOptions.Default;
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new SafetensorsException(full, null, "is a directory, not a safetensors file");
        if (!File.Exists(full)) throw new FileNotFoundException($"safetensors file '{full}' does not exist", full);

        var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        byte* copy = null;
        bool acquired = false;
        try
        {
            var stamp = FileStamp.Of(stream.SafeFileHandle);
            long length = stamp.Length;
            if (length < 8) throw new SafetensorsException(full, null, $"file is {length} bytes, shorter than the 8-byte header length");
            if (!options.MemoryMap)
            {
                copy = (byte*)NativeMemory.AlignedAlloc((nuint)length, 64);
                ReadWhole(stream, full, copy, length);
                stream.Dispose();
                var owned = new SafetensorsFile(full, null, null, null, copy, length, stamp);
                copy = null;
                return owned;
            }
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            acquired = true;
            return new SafetensorsFile(full, map, view, stream, p + view.PointerOffset, length, stamp);
        }
        catch
        {
            if (acquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            stream.Dispose();
            if (copy != null) NativeMemory.AlignedFree(copy);
            throw;
        }
    }

    // The whole file into native memory, in chunks a span can hold.
    private static void ReadWhole(FileStream stream, string path, byte* dst, long length)
    {
        long done = 0;
        while (done < length)
        {
            int n = RandomAccess.Read(stream.SafeFileHandle, new Span<byte>(dst + done, (int)Math.Min(length - done, 1 << 30)), done);
            if (n == 0) throw new SafetensorsException(path, null, $"file ended after {done} of its {length} bytes while it was read");
            done += n;
        }
    }

    /// <summary>
    /// Throws if the file changed since it was mapped: its size or modification time (as the open file sees them),
    /// or, on Linux, the file its path names (replaced or removed). Nothing to check for a file read into memory.
    /// </summary>
    /// <exception cref="WeightFileChangedException">The file changed.</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public void CheckUnchanged()
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        if (_owned) return;
        var now = FileStamp.Of(_stream!.SafeFileHandle);
        string? problem = now.DifferenceFrom(_stamp);
        if (problem is null && !_stamp.SameFileAs(FilePath)) problem = "its path now names another file (replaced or removed)";
        if (problem is not null)
            throw new WeightFileChangedException(FilePath,
                $"the memory-mapped weight file changed after it was loaded: {problem}; reading it could crash the process. Reload the model, or load it into memory (LoadOptions.MemoryMap = false, --no-mmap)");
    }

    /// <summary>Whether the file holds a tensor of this name.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The entry of a tensor.</summary>
    /// <exception cref="SafetensorsException">The file holds no such tensor.</exception>
    public TensorEntry GetEntry(string name) =>
        _byName.TryGetValue(name, out var e) ? e : throw new SafetensorsException(FilePath, name, "no such tensor in this file");

    /// <summary>The entry of a tensor, if the file holds it.</summary>
    public bool TryGetEntry(string name, [NotNullWhen(true)] out TensorEntry? entry) => _byName.TryGetValue(name, out entry);

    /// <summary>A view of a tensor's bytes inside the mapping; valid until this file is disposed.</summary>
    /// <exception cref="SafetensorsException">The file holds no such tensor.</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public Weight GetWeight(string name)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        var e = GetEntry(name);
        return new Weight(e.Name, e.DType, (int[])e.Shape.Clone(), _base + DataOffset + e.Begin);
    }

    /// <summary>Unmaps the file (or frees its copy in memory). Weights obtained from it must not be used afterwards.</summary>
    public void Dispose()
    {
        if (_base == null) return;
        var b = _base;
        _base = null;
        GC.SuppressFinalize(this);
        if (_owned)
        {
            NativeMemory.AlignedFree(b);
            return;
        }
        _view!.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map!.Dispose();
        _stream!.Dispose();
        _view = null;
        _map = null;
        _stream = null;
    }

    /// <summary>Frees a copy in memory that was never disposed (a mapping is released by its own handles).</summary>
    ~SafetensorsFile()
    {
        if (_owned && _base != null) NativeMemory.AlignedFree(_base);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Path.GetFileName(FilePath)} ({Entries.Count} tensors, {FileLength} bytes{(_owned ? ", in memory" : "")})";

    // ---- header parsing and validation ----

    private static (long DataOffset, IReadOnlyDictionary<string, string> Metadata, IReadOnlyList<TensorEntry> Entries)
        Parse(string file, ReadOnlySpan<byte> head, long fileLength)
    {
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(head);
        if (n > MaxHeaderBytes)
            throw new SafetensorsException(file, null, $"header length {n} exceeds the {MaxHeaderBytes}-byte limit");
        if (8 + (long)n > fileLength)
            throw new SafetensorsException(file, null, $"header length {n} runs past the end of the file ({fileLength} bytes)");
        var header = head.Slice(8, (int)n);
        if (header.Length == 0 || header[0] != (byte)'{')
            throw new SafetensorsException(file, null, "header does not begin with '{'");
        if (!Utf8.IsValid(header))
            throw new SafetensorsException(file, null, "header is not valid UTF-8");

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException ex)
        {
            throw new SafetensorsException(file, null, $"header is not valid JSON: {OneLine(ex.Message)}", ex);
        }

        long dataOffset = 8 + (long)n;
        long dataLength = fileLength - dataOffset;
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var entries = new List<TensorEntry>();
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new SafetensorsException(file, null, $"header is not a JSON object (found {root.ValueKind})");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            try
            {
                ParseEntries(file, root, seen, metadata, entries, dataLength);
            }
            catch (InvalidOperationException e) when (e.Source == "System.Text.Json")
            {
                // The header is valid UTF-8, but a name or value holds an escaped lone surrogate ("\ud800").
                throw new SafetensorsException(file, null, $"header holds a string that is not valid UTF-16: {OneLine(e.Message)}", e);
            }
        }

        entries.Sort(static (a, b) =>
        {
            int c = a.Begin.CompareTo(b.Begin);
            if (c == 0) c = a.End.CompareTo(b.End);
            return c != 0 ? c : string.CompareOrdinal(a.Name, b.Name);
        });
        long covered = 0;
        TensorEntry? previous = null;
        foreach (var e in entries)
        {
            if (e.Begin < covered)
                throw new SafetensorsException(file, e.Name,
                    $"data_offsets [{e.Begin}, {e.End}] overlap tensor '{previous!.Name}' at [{previous.Begin}, {previous.End}]");
            if (e.Begin > covered)
                throw new SafetensorsException(file, e.Name,
                    $"gap of {e.Begin - covered} unused bytes before this tensor (data_offsets begin at {e.Begin}, the previous tensor ends at {covered})");
            covered = e.End;
            previous = e;
        }
        if (covered != dataLength)
            throw new SafetensorsException(file, null,
                $"{dataLength - covered} trailing bytes after the last tensor (tensors cover {covered} of the {dataLength} data bytes)");
        return (dataOffset, metadata, entries);
    }

    private static void ParseEntries(string file, JsonElement root, HashSet<string> seen, Dictionary<string, string> metadata, List<TensorEntry> entries, long dataLength)
    {
        // The metadata first: it says which U8 tensors are block-quantized weights.
        foreach (var prop in root.EnumerateObject())
        {
            if (prop.Name != "__metadata__") continue;
            if (!seen.Add(prop.Name)) throw new SafetensorsException(file, null, "duplicate '__metadata__' key in header");
            ParseMetadata(file, prop.Value, metadata);
        }
        foreach (var prop in root.EnumerateObject())
        {
            if (prop.Name == "__metadata__") continue;
            if (!seen.Add(prop.Name)) throw new SafetensorsException(file, prop.Name, "duplicate tensor name in header");
            entries.Add(ParseEntry(file, prop.Name, prop.Value, dataLength, metadata));
        }
    }

    private static void ParseMetadata(string file, JsonElement value, Dictionary<string, string> into)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(file, null, $"'__metadata__' is not a JSON object of strings (found {value.ValueKind})");
        foreach (var p in value.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw new SafetensorsException(file, null, $"'__metadata__' value of '{p.Name}' is not a string (found {p.Value.ValueKind})");
            if (!into.TryAdd(p.Name, p.Value.GetString()!))
                throw new SafetensorsException(file, null, $"duplicate key '{p.Name}' in '__metadata__'");
        }
    }

    private static TensorEntry ParseEntry(string file, string name, JsonElement value, long dataLength, Dictionary<string, string> metadata)
    {
        SafetensorsException Bad(string problem) => new(file, name, problem);

        if (value.ValueKind != JsonValueKind.Object) throw Bad($"entry is not a JSON object (found {value.ValueKind})");
        JsonElement? dtypeEl = null, shapeEl = null, offsetsEl = null;
        var keys = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in value.EnumerateObject())
        {
            if (!keys.Add(p.Name)) throw Bad($"duplicate key '{p.Name}' in entry");
            switch (p.Name)
            {
                case "dtype": dtypeEl = p.Value; break;
                case "shape": shapeEl = p.Value; break;
                case "data_offsets": offsetsEl = p.Value; break;
            }
        }

        if (dtypeEl is not { } dt) throw Bad("entry lacks 'dtype'");
        if (dt.ValueKind != JsonValueKind.String) throw Bad($"'dtype' is not a string (found {dt.ValueKind})");
        var dtypeName = dt.GetString()!;
        DType dtype;
        string? quant = dtypeName == "U8" && metadata.TryGetValue(TensorSpec.QuantKey(name), out var q) ? q : null;
        if (quant is not null)
            dtype = quant switch
            {
                "q8_0" => DType.Q8_0,
                "q4_0" => DType.Q4_0,
                _ => throw Bad($"'__metadata__' names an unknown quantization '{quant}' for this tensor (expected q8_0 or q4_0)"),
            };
        else if (!DTypes.TryParseSafetensors(dtypeName, out dtype))
            throw Bad(KnownUnsupported.Contains(dtypeName)
                ? $"unsupported dtype {dtypeName} (this runtime reads F32, F16 and BF16)"
                : $"unknown dtype '{dtypeName}'");

        if (shapeEl is not { } sh) throw Bad("entry lacks 'shape'");
        if (sh.ValueKind != JsonValueKind.Array) throw Bad($"'shape' is not an array (found {sh.ValueKind})");
        var shape = new int[sh.GetArrayLength()];
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            long v = ReadNonNegativeInteger(d, "'shape' dimension", Bad);
            if (v > int.MaxValue) throw Bad($"'shape' dimension {v} is too large (over {int.MaxValue})");
            shape[i++] = (int)v;
        }
        long byteCount;
        try
        {
            long count = 1;
            foreach (var d in shape) count = checked(count * d);
            byteCount = quant is null ? checked(count * dtype.Size()) : count;
        }
        catch (OverflowException)
        {
            throw Bad($"element count of shape [{string.Join(", ", shape)}] overflows");
        }
        if (quant is not null)
        {
            // Stored [rows, bytes per row]: the weight is [rows, whole blocks per row * 32].
            int blockBytes = BlockQuant.BlockBytes(dtype);
            if (shape.Length != 2 || shape[1] % blockBytes != 0)
                throw Bad($"a {quant} tensor is stored as U8 [rows, a multiple of {blockBytes} bytes], got [{string.Join(", ", shape)}]");
            long cols = (long)shape[1] / blockBytes * BlockQuant.BlockElements;
            if (cols > int.MaxValue) throw Bad($"{quant} rows of {shape[1]} bytes hold more than {int.MaxValue} columns");
            shape = [shape[0], (int)cols];
        }

        if (offsetsEl is not { } off) throw Bad("entry lacks 'data_offsets'");
        if (off.ValueKind != JsonValueKind.Array) throw Bad($"'data_offsets' is not an array (found {off.ValueKind})");
        if (off.GetArrayLength() != 2) throw Bad($"'data_offsets' has {off.GetArrayLength()} values, expected exactly two");
        long begin = ReadNonNegativeInteger(off[0], "'data_offsets' value", Bad);
        long end = ReadNonNegativeInteger(off[1], "'data_offsets' value", Bad);
        if (begin > end) throw Bad($"data_offsets begin {begin} is after end {end}");
        if (end - begin != byteCount)
            throw Bad($"data_offsets [{begin}, {end}] span {end - begin} bytes but {dtypeName} [{string.Join(", ", shape)}] needs {byteCount}");
        if (end > dataLength)
            throw Bad($"data_offsets [{begin}, {end}] extend past the end of the file (the data section holds {dataLength} bytes)");
        return new TensorEntry(name, dtype, shape, begin, end);
    }

    // A JSON integer in [0, long.MaxValue]; anything else (a fraction, an exponent, a string, a negative or
    // overflowing number) is reported with its raw text.
    private static long ReadNonNegativeInteger(JsonElement e, string what, Func<string, SafetensorsException> bad)
    {
        if (e.ValueKind != JsonValueKind.Number) throw bad($"{what} is not a number (found {e.ValueKind})");
        var raw = e.GetRawText();
        if (e.TryGetInt64(out long v))
        {
            if (v < 0) throw bad($"{what} {v} is negative");
            return v;
        }
        bool integral = raw.AsSpan().TrimStart('-').IndexOfAnyExceptInRange('0', '9') < 0;
        if (!integral) throw bad($"{what} {raw} is not an integer");
        if (raw.StartsWith('-')) throw bad($"{what} {raw} is negative");
        throw bad($"{what} {raw} overflows (over {long.MaxValue})");
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");
}
