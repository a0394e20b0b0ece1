// The committed image references (tests/VteKernels.Tests/Data/images, written by
// tools/reference/images/make_reference.py with PIL 9.4 / libjpeg-turbo 2.1): paths, the JSON manifests,
// and comparison helpers that report where two RGB buffers differ.
using System.Security.Cryptography;
using System.Text.Json;
using VteKernels.Imaging;

namespace VteKernels.Tests.Imaging;

internal static class ImageData
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "Data", "images");

    public static string PathOf(string file) => Path.Combine(Dir, file);

    public static byte[] Bytes(string file) => File.ReadAllBytes(PathOf(file));

    private static readonly Lazy<JsonDocument> DecodeDoc = new(() => Load("decode.json"));
    private static readonly Lazy<JsonDocument> ResizeDoc = new(() => Load("resize.json"));
    private static readonly Lazy<JsonDocument> PreprocessDoc = new(() => Load("preprocess.json"));

    public static JsonElement Decode => DecodeDoc.Value.RootElement;
    public static JsonElement Resize => ResizeDoc.Value.RootElement;
    public static JsonElement Preprocess => PreprocessDoc.Value.RootElement;

    private static JsonDocument Load(string name) => JsonDocument.Parse(File.ReadAllBytes(PathOf(name)));

    /// <summary>The decode.json entry of one image.</summary>
    public static JsonElement DecodeEntry(string file) =>
        Decode.GetProperty("images").EnumerateArray().Single(e => e.GetProperty("file").GetString() == file);

    public static string Sha256(ReadOnlySpan<byte> data) => Convert.ToHexStringLower(SHA256.HashData(data));

    /// <summary>Checks an image against a reference {width, height, sha256, samples: [[x, y, r, g, b], ...]}.</summary>
    public static void AssertMatches(RgbImage image, JsonElement reference, string context)
    {
        int w = reference.GetProperty("width").GetInt32(), h = reference.GetProperty("height").GetInt32();
        Xunit.Assert.True(image.Width == w && image.Height == h, $"{context}: size {image.Width}x{image.Height}, expected {w}x{h}");
        var mismatches = new List<string>();
        foreach (var s in reference.GetProperty("samples").EnumerateArray())
        {
            int x = s[0].GetInt32(), y = s[1].GetInt32();
            var px = image[x, y];
            if (px[0] != s[2].GetInt32() || px[1] != s[3].GetInt32() || px[2] != s[4].GetInt32())
                mismatches.Add($"({x},{y}) got {px[0]},{px[1]},{px[2]} expected {s[2]},{s[3]},{s[4]}");
        }
        string sha = Sha256(image.Pixels);
        if (sha != reference.GetProperty("sha256").GetString() || mismatches.Count > 0)
            Xunit.Assert.Fail($"{context}: pixels differ from PIL's (SHA-256 {sha}); sampled pixels: " +
                              (mismatches.Count == 0 ? "all equal" : string.Join("; ", mismatches)));
    }
}
