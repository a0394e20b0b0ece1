// Locates the golden HF transformers fixtures (shared/fixtures/hf-llava-tiny and hf-llava-next-tiny) by
// walking up from the test binaries: the folder may sit inside an ancestor directory or beside it (../shared/...).
namespace VteKernels.Tests.Reference;

/// <summary>Paths of the HF LLaVA golden fixtures.</summary>
internal static class FixturePaths
{
    private const string Relative = "shared/fixtures/hf-llava-tiny";
    private const string NextRelative = "shared/fixtures/hf-llava-next-tiny";

    /// <summary>The fixture root (the folder holding README.md and one folder per case).</summary>
    public static string Root => LazyRoot.Value;

    /// <summary>The LLaVA-NeXT fixture root (README.md, FACTS.md, images/ and one folder per case).</summary>
    public static string NextRoot => LazyNextRoot.Value;

    private static readonly Lazy<string> LazyRoot = new(() => Find(Relative));
    private static readonly Lazy<string> LazyNextRoot = new(() => Find(NextRelative));

    /// <summary>The folder of one LLaVA-NeXT case, e.g. "anyres-basic"; throws when it does not exist.</summary>
    public static string NextCase(string name)
    {
        var dir = Path.Combine(NextRoot, name);
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException($"fixture case '{name}' not found: {dir} does not exist");
        return dir;
    }

    /// <summary>The folder of one case, e.g. "basic"; throws when it does not exist.</summary>
    public static string Case(string name)
    {
        var dir = Path.Combine(Root, name);
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException($"fixture case '{name}' not found: {dir} does not exist");
        return dir;
    }

    /// <summary>The token ids of a fixture's comma-separated list (input_ids.txt, greedy8.txt).</summary>
    public static int[] ReadIds(string path) =>
        File.ReadAllText(path).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.Parse(s, System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    /// <summary>A fixture's prompt: its input ids and its one image, as the engine takes them.</summary>
    public static (int[] Ids, VteKernels.Engine.PromptInput Prompt) Prompt(string caseDir, VteKernels.Models.LlavaConfig cfg)
    {
        var ids = ReadIds(Path.Combine(caseDir, "input_ids.txt"));
        var px = VteKernels.Formats.Npy.ReadFloat32(Path.Combine(caseDir, "pixels.npy"));
        return (ids, new VteKernels.Engine.PromptInput(ids, [VteKernels.Engine.ImageInput.Square(px.Data, cfg.Vision.ImageSize)]));
    }

    private static string Find(string relative)
    {
        var start = AppContext.BaseDirectory;
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            var inside = Path.Combine(dir.FullName, relative);
            if (Directory.Exists(inside)) return inside;
            var beside = Path.GetFullPath(Path.Combine(dir.FullName, "..", relative));
            if (Directory.Exists(beside)) return beside;
        }
        throw new DirectoryNotFoundException(
            $"HF fixtures not found: no '{relative}' in any ancestor of {start} or beside one " +
            $"(expected e.g. <repo>/{relative} or <repo>/../{relative})");
    }
}
