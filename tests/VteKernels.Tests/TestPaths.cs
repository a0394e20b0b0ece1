// Locates the shared test fixtures (golden outputs of Hugging Face transformers for tiny LLaVA models).
// They live in a folder shared/fixtures/hf-llava-tiny either inside the repository or beside it; the
// lookup walks up from the test binaries' folder, so it works from any checkout location.
namespace VteKernels.Tests;

internal static class TestPaths
{
    private static readonly Lazy<string> Root = new(FindFixturesRoot);

    /// <summary>The shared/fixtures folder (it holds hf-llava-tiny/).</summary>
    public static string FixturesRoot => Root.Value;

    /// <summary>A path under hf-llava-tiny/, e.g. Tiny("basic", "pixels.npy").</summary>
    public static string Tiny(params string[] parts) => Path.Combine([FixturesRoot, "hf-llava-tiny", .. parts]);

    private static string FindFixturesRoot()
    {
        var start = AppContext.BaseDirectory;
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "fixtures");
            if (Directory.Exists(Path.Combine(candidate, "hf-llava-tiny"))) return candidate;
        }
        throw new DirectoryNotFoundException(
            $"test fixtures not found: no folder shared/fixtures/hf-llava-tiny in {start} or any folder above it " +
            "(it is expected inside the repository or beside it)");
    }
}
