// numpy's .npz: a ZIP archive of .npy members, one per named array ("name.npy"), as np.savez writes it
// (members stored, not compressed). np.load(path)["name"] reads each back. Used by `vte forward` to export
// hidden states and attention probabilities.
using System.IO.Compression;

namespace VteKernels.Formats;

/// <summary>Writes an .npz archive member by member.</summary>
public sealed class NpzWriter : IDisposable
{
    private readonly ZipArchive _zip;
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>Creates (or replaces) the archive at <paramref name="path"/>.</summary>
    /// <exception cref="IOException">The file cannot be created.</exception>
    public NpzWriter(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        _zip = new ZipArchive(new FileStream(Path.GetFullPath(path), FileMode.Create, FileAccess.ReadWrite, FileShare.None), ZipArchiveMode.Create, leaveOpen: false);
    }

    /// <summary>Adds a float32 array named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">The name is used already, or the shape does not hold the data.</exception>
    public void Add(string name, ReadOnlySpan<float> data, ReadOnlySpan<int> shape)
    {
        using var s = Entry(name);
        Npy.Write(s, data, shape);
    }

    /// <summary>Adds an int32 array named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">The name is used already, or the shape does not hold the data.</exception>
    public void Add(string name, ReadOnlySpan<int> data, ReadOnlySpan<int> shape)
    {
        using var s = Entry(name);
        Npy.WriteInt32(s, data, shape);
    }

    private Stream Entry(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (!_names.Add(name)) throw new ArgumentException($"array '{name}' is already in the archive", nameof(name));
        return _zip.CreateEntry(name + ".npy", CompressionLevel.NoCompression).Open();
    }

    /// <summary>Finishes and closes the archive.</summary>
    public void Dispose() => _zip.Dispose();
}
