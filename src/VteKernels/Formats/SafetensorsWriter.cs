// Writes safetensors files, one or a sharded set, streaming tensor data through a callback so that a
// checkpoint of any size is never held in memory. The header lists tensors in the given order with
// contiguous data_offsets and is padded with spaces so the data section starts 8-byte aligned (as the
// reference writer does). Each file is written under a temporary name in its destination folder and renamed
// into place only when complete, so a failed write leaves no partial file. Sharding follows Hugging Face's
// save_pretrained: tensors are packed in order into shards of at most maxShardBytes (a larger tensor gets a
// shard of its own), named model-00001-of-0000N.safetensors, with model.safetensors.index.json mapping each
// tensor to its shard; a set that fits in one shard is written as model.safetensors.
// Block-quantized tensors (Q8_0, Q4_0: ggml's blocks, see BlockQuant.cs) are stored as dtype "U8" with
// shape [rows, bytes per row], and the header's "__metadata__" names their format under
// "vte.quant.<tensor name>" (e.g. "q8_0"): any safetensors reader opens the file, and SafetensorsFile reads
// such a tensor back as the [rows, columns] weight it quantizes.
using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace VteKernels.Formats;

/// <summary>A tensor to be written: name, element type and shape.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">Element type as stored.</param>
/// <param name="Shape">Shape, outermost first (empty for a scalar).</param>
public sealed record TensorSpec(string Name, DType DType, int[] Shape)
{
    /// <summary>Number of elements: the product of the shape (1 for a scalar).</summary>
    /// <exception cref="OverflowException">The product does not fit a 64-bit integer.</exception>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n = checked(n * d);
            return n;
        }
    }

    /// <summary>Size of the tensor's data in bytes.</summary>
    /// <exception cref="ArgumentException">A block-quantized tensor's rows are not whole blocks.</exception>
    public long ByteLength => DType.ByteCount(ElementCount);

    /// <summary>The shape written to the header: the shape itself, or [rows, bytes per row] for a block-quantized tensor.</summary>
    public int[] StoredShape => DType.IsBlockQuantized() ? [Shape[0], checked((int)DType.ByteCount(ElementCount / Math.Max(1, Shape[0])))] : Shape;

    /// <summary>The "__metadata__" key naming a block-quantized tensor's format.</summary>
    public static string QuantKey(string tensorName) => "vte.quant." + tensorName;

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {DType.SafetensorsName()} [{string.Join(", ", Shape)}]";
}

/// <summary>Writes safetensors files and sharded checkpoints.</summary>
public static partial class SafetensorsWriter
{
    private const int StreamBufferBytes = 1 << 20;

    private static readonly JsonWriterOptions HeaderJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private static readonly JsonWriterOptions IndexJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, Indented = true, IndentSize = 2, NewLine = "\n" };

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$", RegexOptions.CultureInvariant)]
    private static partial Regex ShardName();

    /// <summary>
    /// Writes one safetensors file. <paramref name="writeData"/> is called once per tensor, in order, and must
    /// write exactly <see cref="TensorSpec.ByteLength"/> bytes (little-endian, C order) to the stream it is given.
    /// </summary>
    /// <param name="path">Destination; replaced if it exists, and only once the whole file is written.</param>
    /// <param name="tensors">The tensors, in the order their data is laid out.</param>
    /// <param name="writeData">Writes one tensor's bytes.</param>
    /// <param name="metadata">The header's "__metadata__" map, if any.</param>
    /// <exception cref="ArgumentException">A name repeats or is "__metadata__", or a shape has a negative or overflowing dimension.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="writeData"/> wrote too few or too many bytes.</exception>
    public static void Write(string path, IReadOnlyList<TensorSpec> tensors, Action<TensorSpec, Stream> writeData,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(writeData);
        Validate(tensors);
        WriteFile(Path.GetFullPath(path), tensors, writeData, metadata);
    }

    /// <summary>
    /// Writes a checkpoint into <paramref name="dir"/> the way Hugging Face's save_pretrained does: tensors are
    /// packed in order into shards of at most <paramref name="maxShardBytes"/> of tensor data (a tensor larger than
    /// that gets a shard of its own). One shard is written as <c>model.safetensors</c>; several as
    /// <c>model-00001-of-0000N.safetensors</c>... with <c>model.safetensors.index.json</c>
    /// (<c>{"metadata": {"total_size": N}, "weight_map": {...}}</c>). Files of an earlier checkpoint in the folder
    /// that the new one does not use (<c>model.safetensors</c>, the index, numbered shards) are removed afterwards.
    /// </summary>
    /// <param name="dir">Destination folder; created if missing.</param>
    /// <param name="tensors">The tensors, in order.</param>
    /// <param name="writeData">Writes one tensor's bytes, as for <see cref="Write"/>.</param>
    /// <param name="maxShardBytes">Most tensor bytes per shard.</param>
    /// <param name="metadata">The "__metadata__" map written into every shard, if any.</param>
    /// <returns>Full paths of the safetensors files written, in shard order (the index is not included).</returns>
    /// <exception cref="ArgumentException">As for <see cref="Write"/>, or <paramref name="maxShardBytes"/> is not positive.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="writeData"/> wrote too few or too many bytes.</exception>
    public static IReadOnlyList<string> WriteSharded(string dir, IReadOnlyList<TensorSpec> tensors, Action<TensorSpec, Stream> writeData,
        long maxShardBytes, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(dir);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(writeData);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        Validate(tensors);
        var full = Path.GetFullPath(dir);
        Directory.CreateDirectory(full);

        var shards = new List<List<TensorSpec>>();
        long inShard = 0;
        foreach (var t in tensors)
        {
            long n = t.ByteLength;
            if (shards.Count == 0 || (inShard + n > maxShardBytes && shards[^1].Count > 0))
            {
                shards.Add([]);
                inShard = 0;
            }
            shards[^1].Add(t);
            inShard += n;
        }

        var indexPath = Path.Combine(full, WeightStore.IndexFileName);
        if (shards.Count <= 1)
        {
            var single = Path.Combine(full, WeightStore.SingleFileName);
            WriteFile(single, tensors, writeData, metadata);
            RemoveStale(full, keep: [single]);
            return [single];
        }

        var written = new List<string>();
        try
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            long total = 0;
            for (int i = 0; i < shards.Count; i++)
            {
                var name = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                var path = Path.Combine(full, name);
                WriteFile(path, shards[i], writeData, metadata);
                written.Add(path);
                foreach (var t in shards[i])
                {
                    weightMap.Add(t.Name, name);
                    total += t.ByteLength;
                }
            }
            var buffer = new ArrayBufferWriter<byte>();
            using (var json = new Utf8JsonWriter(buffer, IndexJson))
            {
                json.WriteStartObject();
                json.WriteStartObject("metadata");
                json.WriteNumber("total_size", total);
                json.WriteEndObject();
                json.WriteStartObject("weight_map");
                foreach (var (tensor, shard) in weightMap) json.WriteString(tensor, shard);
                json.WriteEndObject();
                json.WriteEndObject();
            }
            var text = new byte[buffer.WrittenCount + 1];
            buffer.WrittenSpan.CopyTo(text);
            text[^1] = (byte)'\n';
            WriteAtomically(indexPath, fs => fs.Write(text));
        }
        catch
        {
            foreach (var p in written) TryDelete(p);
            throw;
        }
        RemoveStale(full, keep: [.. written, indexPath]);
        return written;
    }

    private static void Validate(IReadOnlyList<TensorSpec> tensors)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            ArgumentNullException.ThrowIfNull(t, nameof(tensors));
            ArgumentNullException.ThrowIfNull(t.Name, nameof(tensors));
            ArgumentNullException.ThrowIfNull(t.Shape, nameof(tensors));
            if (t.Name == "__metadata__") throw new ArgumentException("'__metadata__' is reserved and cannot name a tensor", nameof(tensors));
            if (!names.Add(t.Name)) throw new ArgumentException($"tensor '{t.Name}' is listed twice", nameof(tensors));
            foreach (var d in t.Shape)
                if (d < 0) throw new ArgumentException($"tensor '{t.Name}' has a negative dimension in shape [{string.Join(", ", t.Shape)}]", nameof(tensors));
            if (t.DType.IsBlockQuantized() && (t.Shape.Length != 2 || t.Shape[1] % BlockQuant.BlockElements != 0))
                throw new ArgumentException($"tensor '{t.Name}': {t.DType} needs a 2-D shape of whole {BlockQuant.BlockElements}-element blocks per row, got [{string.Join(", ", t.Shape)}]", nameof(tensors));
            try { _ = t.ByteLength; }
            catch (OverflowException) { throw new ArgumentException($"tensor '{t.Name}': the size of shape [{string.Join(", ", t.Shape)}] overflows", nameof(tensors)); }
        }
    }

    private static void WriteFile(string path, IReadOnlyList<TensorSpec> tensors, Action<TensorSpec, Stream> writeData,
        IReadOnlyDictionary<string, string>? metadata)
    {
        var header = BuildHeader(tensors, metadata);
        WriteAtomically(path, fs =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            fs.Write(length);
            fs.Write(header);
            foreach (var t in tensors)
            {
                using var data = new TensorDataStream(fs, t);
                writeData(t, data);
                data.Finish();
            }
        });
    }

    // The JSON header, padded with spaces so that 8 + its length is a multiple of 8.
    private static byte[] BuildHeader(IReadOnlyList<TensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, HeaderJson))
        {
            json.WriteStartObject();
            var quantized = tensors.Where(t => t.DType.IsBlockQuantized()).ToList();
            if (metadata is not null || quantized.Count > 0)
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
                    if (!quantized.Any(t => TensorSpec.QuantKey(t.Name) == k)) json.WriteString(k, v);
                foreach (var t in quantized) json.WriteString(TensorSpec.QuantKey(t.Name), t.DType.Name());
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType.SafetensorsName());
                json.WriteStartArray("shape");
                foreach (var d in t.StoredShape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += t.ByteLength;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int pad = (8 - buffer.WrittenCount % 8) % 8;
        var header = new byte[buffer.WrittenCount + pad];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }

    // Writes to a temporary file beside the destination, flushes it to disk, then renames it into place.
    private static void WriteAtomically(string path, Action<FileStream> write)
    {
        var dir = Path.GetDirectoryName(path)!;
        var temp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, StreamBufferBytes))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    private static void RemoveStale(string dir, IReadOnlyCollection<string> keep)
    {
        foreach (var path in Directory.EnumerateFiles(dir))
        {
            var name = Path.GetFileName(path);
            bool ours = name is WeightStore.SingleFileName or WeightStore.IndexFileName || ShardName().IsMatch(name);
            if (ours && !keep.Contains(path, StringComparer.Ordinal)) TryDelete(path);
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    // The stream a data callback writes one tensor into: forwards to the file and refuses to go past the
    // tensor's size, so a wrong callback cannot corrupt the next tensor's bytes.
    private sealed class TensorDataStream(Stream file, TensorSpec tensor) : Stream
    {
        private readonly long _expected = tensor.ByteLength;
        private long _written;
        private bool _closed;

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => !_closed;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _written; set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            if (_written + buffer.Length > _expected)
                throw new InvalidOperationException(
                    $"the data writer for tensor '{tensor.Name}' wrote more than its {_expected} bytes ({tensor.DType.SafetensorsName()} [{string.Join(", ", tensor.Shape)}])");
            file.Write(buffer);
            _written += buffer.Length;
        }

        public override void WriteByte(byte value) => Write([value]);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush() { }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public void Finish()
        {
            _closed = true;
            if (_written != _expected)
                throw new InvalidOperationException(
                    $"the data writer for tensor '{tensor.Name}' wrote {_written} bytes, expected {_expected} ({tensor.DType.SafetensorsName()} [{string.Join(", ", tensor.Shape)}])");
        }

        protected override void Dispose(bool disposing)
        {
            _closed = true;
            base.Dispose(disposing);
        }
    }
}
