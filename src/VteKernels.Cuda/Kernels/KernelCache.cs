// The on-disk cache of compiled kernels. The key is a SHA-256 over everything that determines the output:
// the source name and text, every header handed to NVRTC (name and text), the options in order (they name
// the target architecture and the -D specialisation), the NVRTC version and the output kind, each
// length-prefixed so no two different inputs serialise alike. An entry is a small header (magic, format,
// payload length, SHA-256 of the payload) and the image; a truncated or damaged entry is treated as a
// miss and overwritten. Writes go to a unique temporary file in the same folder and are renamed over the
// entry (rename is atomic on one file system), so concurrent processes never see half an entry.
// Folder: $VTE_CACHE_DIR/kernels, else $XDG_CACHE_HOME/vtekernels/kernels, else ~/.cache/vtekernels/kernels.
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace VteKernels.Cuda.Kernels;

/// <summary>Compiled kernel images on disk, keyed by content.</summary>
internal sealed class KernelCache
{
    private static ReadOnlySpan<byte> Magic => "VTEK"u8;
    private const int FormatVersion = 1;
    private const int HeaderBytes = 4 + 4 + 8 + 32;

    /// <summary>The folder entries live in.</summary>
    public string Directory { get; }

    /// <summary>A cache in <paramref name="directory"/> (created on first write).</summary>
    public KernelCache(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory = directory;
    }

    /// <summary>The default folder (see the file header).</summary>
    public static string DefaultDirectory()
    {
        var root = Environment.GetEnvironmentVariable("VTE_CACHE_DIR");
        if (string.IsNullOrEmpty(root))
        {
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            root = Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache") : xdg, "vtekernels");
        }
        return Path.Combine(root, "kernels");
    }

    /// <summary>The key of one compilation, as 64 lowercase hex digits.</summary>
    public static string Key(string sourceName, string source, IEnumerable<(string Name, string Text)> headers, IEnumerable<string> options,
        string nvrtcVersion, bool cubin)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Add(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(len, bytes.Length);
            h.AppendData(len);
            h.AppendData(bytes);
        }
        Add($"vte-kernel-cache/{FormatVersion}");
        Add(sourceName);
        Add(source);
        foreach (var (name, text) in headers.OrderBy(x => x.Name, StringComparer.Ordinal))
        {
            Add("header");
            Add(name);
            Add(text);
        }
        foreach (var o in options)
        {
            Add("option");
            Add(o);
        }
        Add($"nvrtc {nvrtcVersion}");
        Add(cubin ? "cubin" : "ptx");
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    /// <summary>The path of an entry.</summary>
    public string PathOf(string key) => Path.Combine(Directory, $"{key}.bin");

    /// <summary>The image stored under <paramref name="key"/>, or null if there is none or it is damaged.</summary>
    public byte[]? TryRead(string key)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(PathOf(key));
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
        if (bytes.Length < HeaderBytes || !bytes.AsSpan(0, 4).SequenceEqual(Magic)) return null;
        if (BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4)) != FormatVersion) return null;
        long length = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(8));
        if (length != bytes.Length - HeaderBytes) return null;
        var payload = bytes.AsSpan(HeaderBytes);
        if (!SHA256.HashData(payload).AsSpan().SequenceEqual(bytes.AsSpan(16, 32))) return null;
        return payload.ToArray();
    }

    /// <summary>Stores <paramref name="image"/> under <paramref name="key"/> atomically; returns false (and leaves no file) if the folder is not writable.</summary>
    public bool Write(string key, ReadOnlySpan<byte> image)
    {
        var buffer = new byte[HeaderBytes + image.Length];
        Magic.CopyTo(buffer);
        BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(4), FormatVersion);
        BinaryPrimitives.WriteInt64LittleEndian(buffer.AsSpan(8), image.Length);
        SHA256.HashData(image, buffer.AsSpan(16, 32));
        image.CopyTo(buffer.AsSpan(HeaderBytes));
        string tmp = Path.Combine(Directory, $".{key}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            using (var f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                f.Write(buffer);
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, PathOf(key), overwrite: true);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            return false;
        }
    }
}
