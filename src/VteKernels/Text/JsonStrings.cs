// Reading strings out of tokenizer JSON files without the BCL exceptions System.Text.Json throws for text
// it cannot decode (invalid UTF-8 bytes, escaped lone surrogates such as "\ud800"): those are a
// TokenizerException naming the file and the key. Also the capped reading of a whole JSON file.
using System.IO.Compression;
using System.Text.Json;
using System.Text.Unicode;

namespace VteKernels.Text;

internal static class JsonStrings
{
    /// <summary>Largest tokenizer file read (after gzip decompression): 512 MiB, ten times the largest real tokenizer.json.</summary>
    public const long MaxFileBytes = 512L << 20;

    /// <summary>The string value of <paramref name="e"/> (a JSON string).</summary>
    /// <exception cref="TokenizerException">The string does not decode to valid UTF-16.</exception>
    public static string Value(JsonElement e, string? path, string where)
    {
        try
        {
            return e.GetString()!;
        }
        catch (InvalidOperationException x)
        {
            throw new TokenizerException(path, $"{where}: a string is not valid UTF-8 / UTF-16 ({x.Message})", x);
        }
    }

    /// <summary>The name of a property.</summary>
    /// <exception cref="TokenizerException">The name does not decode to valid UTF-16.</exception>
    public static string Name(JsonProperty p, string? path, string where)
    {
        try
        {
            return p.Name;
        }
        catch (InvalidOperationException x)
        {
            throw new TokenizerException(path, $"{where}: a key is not valid UTF-8 / UTF-16 ({x.Message})", x);
        }
    }

    /// <summary>Reads a JSON file (".gz" decompressed) of at most <see cref="MaxFileBytes"/> bytes and checks that it is UTF-8.</summary>
    /// <exception cref="TokenizerException">The file is too large, not valid gzip, or not valid UTF-8.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static byte[] ReadFile(string path)
    {
        byte[] bytes;
        using (var file = File.OpenRead(path))
        {
            if (!path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
            {
                if (file.Length > MaxFileBytes) throw new TokenizerException(path, $"the file is {file.Length} bytes, more than the {MaxFileBytes} read");
                bytes = new byte[file.Length];
                file.ReadExactly(bytes);
            }
            else
            {
                try
                {
                    using var gz = new GZipStream(file, CompressionMode.Decompress);
                    var ms = new MemoryStream();
                    var buffer = new byte[1 << 16];
                    int n;
                    while ((n = gz.Read(buffer)) > 0)
                    {
                        if (ms.Length + n > MaxFileBytes) throw new TokenizerException(path, $"decompresses to more than the {MaxFileBytes} bytes read");
                        ms.Write(buffer, 0, n);
                    }
                    bytes = ms.ToArray();
                }
                catch (InvalidDataException e)
                {
                    throw new TokenizerException(path, $"not valid gzip: {e.Message}", e);
                }
            }
        }
        if (!Utf8.IsValid(bytes))
        {
            int at = FirstInvalidUtf8(bytes);
            throw new TokenizerException(path, $"not valid UTF-8 (first bad byte at offset {at})");
        }
        return bytes;
    }

    private static int FirstInvalidUtf8(ReadOnlySpan<byte> bytes)
    {
        int lo = 0, hi = bytes.Length;
        // The longest valid prefix ends at most 3 bytes before the bad byte; a binary search finds it.
        while (hi - lo > 1)
        {
            int mid = (lo + hi) / 2;
            if (Utf8.IsValid(bytes[..mid])) lo = mid;
            else hi = mid;
        }
        return lo;
    }
}
