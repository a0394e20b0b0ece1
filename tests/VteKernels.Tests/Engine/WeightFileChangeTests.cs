// A memory-mapped weight file changed after the model loaded: truncated (reading the lost pages killed the
// process with AccessViolationException in CpuOps.Widen / CpuOps.Embedding), rewritten in place, or
// replaced. Each is a WeightFileChangedException when a session is created and before a prefill; a model
// loaded into memory (LoadOptions.MemoryMap = false, --no-mmap) keeps working whatever happens to the file.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Formats;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class WeightFileChangeTests
{
    private static PromptInput Prompt(LlavaModel m) =>
        new(TestModels.PromptIds(m.Config, 3), [ImageInput.Square(TestModels.Pixels(m.Config, 4), m.Config.Vision.ImageSize)]);

    private static string WeightsOf(string dir) => Path.Combine(dir, WeightStore.SingleFileName);

    // (name, what is done to the file after loading, a fragment of the message).
    public static TheoryData<string> Changes() => new("truncated", "rewritten in place", "replaced");

    private static void Change(string file, string how)
    {
        switch (how)
        {
            case "truncated":
                using (var f = new FileStream(file, FileMode.Open, FileAccess.Write)) f.SetLength(f.Length / 2);
                break;
            case "rewritten in place":
                var stamp = File.GetLastWriteTimeUtc(file);
                using (var f = new FileStream(file, FileMode.Open, FileAccess.Write))
                {
                    f.Position = f.Length - 64;
                    f.Write(new byte[64]);
                }
                File.SetLastWriteTimeUtc(file, stamp.AddMinutes(1)); // whatever the file system's time resolution
                break;
            default:
                File.Copy(file, file + ".new");
                File.Move(file + ".new", file, overwrite: true);
                break;
        }
    }

    private static string Expected(string how) => how switch
    {
        "truncated" => "its size changed from",
        "rewritten in place" => "it was modified",
        _ => OperatingSystem.IsLinux() ? "its path now names another file" : "",
    };

    [Theory, MemberData(nameof(Changes))]
    public void AChangedMappedFileIsATypedErrorAtSessionStartAndPrefill(string how)
    {
        var dir = TestModels.CopyOf(TestModels.Tiny());
        using var model = LlavaModel.Load(dir, new CpuBackend());
        using var session = model.CreateSession();
        session.Prefill(Prompt(model));
        session.Reset();

        Change(WeightsOf(dir), how);
        if (how == "replaced" && !OperatingSystem.IsLinux()) return; // inodes are compared on Linux only

        var atPrefill = Assert.Throws<WeightFileChangedException>(() => session.Prefill(Prompt(model)));
        Assert.Contains(Expected(how), atPrefill.Message);
        Assert.StartsWith("model.safetensors: the memory-mapped weight file changed after it was loaded", atPrefill.Message);
        Assert.Contains("--no-mmap", atPrefill.Message);
        var atStart = Assert.Throws<WeightFileChangedException>(() => model.CreateSession());
        Assert.Contains(Expected(how), atStart.Message);
    }

    [Theory, MemberData(nameof(Changes))]
    public void AModelReadIntoMemoryIgnoresTheFile(string how)
    {
        var dir = TestModels.CopyOf(TestModels.Tiny());
        using var model = LlavaModel.Load(dir, new CpuBackend(), options: new LoadOptions { MemoryMap = false });
        using var session = model.CreateSession();
        var before = session.Prefill(Prompt(model)).Logits.Values;
        session.Reset();

        Change(WeightsOf(dir), how);
        using var fresh = model.CreateSession();
        Assert.Equal(before, fresh.Prefill(Prompt(model)).Logits.Values);
        Assert.Equal(before, session.Prefill(Prompt(model)).Logits.Values);
    }

    [Fact]
    public void InMemoryAndMappedModelsGiveTheSameLogits()
    {
        var dir = TestModels.Tiny();
        using var mapped = LlavaModel.Load(dir, new CpuBackend());
        using var copied = LlavaModel.Load(dir, new CpuBackend(), options: new LoadOptions { MemoryMap = false });
        using var a = mapped.CreateSession();
        using var b = copied.CreateSession();
        Assert.Equal(a.Prefill(Prompt(mapped)).Logits.Values, b.Prefill(Prompt(copied)).Logits.Values);
        using var inMemory = SafetensorsFile.Open(WeightsOf(dir), new LoadOptions { MemoryMap = false });
        using var viaMap = SafetensorsFile.Open(WeightsOf(dir));
        Assert.False(inMemory.IsMapped);
        Assert.True(viaMap.IsMapped);
    }

    // A malformed file read into memory: Open frees the copy, and the half-built file's finalizer must not free it
    // again (found by vte-fuzz: "free(): double free detected", the process aborted).
    [Fact]
    public void AMalformedFileReadIntoMemoryIsFreedOnce()
    {
        using var tmp = new TempDir();
        var path = tmp.File("bad.safetensors");
        File.WriteAllBytes(path, [8, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'"', (byte)'a', (byte)'"', (byte)':', (byte)'1', (byte)'}', (byte)' ']);
        for (int i = 0; i < 100; i++)
            Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path, new LoadOptions { MemoryMap = false }));
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    [Fact]
    public void TheCliTakesNoMmap()
    {
        var dir = TestModels.Tiny();
        var ids = string.Join(',', TestModels.PromptIds(VteKernels.Models.LlavaConfig.Load(Path.Combine(dir, "config.json")), 5, images: 0));
        using var tmp = new TempDir();
        var r = VteKernels.Tests.Cli.CliRunner.Vte("forward", "-m", dir, "--input-ids", ids, "--out", tmp.File("l.npy"), "--no-mmap");
        Assert.True(r.Code == 0, r.Err);
        Assert.True(File.Exists(tmp.File("l.npy")));
    }
}
