// The kernel cache: the key changes with every input that changes the output (source, each header, each
// option and their order, NVRTC version, output kind) and with nothing else; entries round-trip; damaged or
// foreign entries read as misses; concurrent writers of one key leave one valid entry and no temporary file.
using VteKernels.Cuda.Kernels;
using VteKernels.Tests;
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class KernelCacheTests
{
    private static readonly (string, string)[] Headers = [("common.cuh", "// common"), ("vte_params.h", "// params")];
    private static readonly string[] Options = ["--gpu-architecture=sm_90", "-std=c++17", "-DVTE_DTYPE_BF16"];

    private static string Key(string source = "kernel", (string, string)[]? headers = null, string[]? options = null, string version = "11.8", bool cubin = true) =>
        KernelCache.Key("k.cu", source, headers ?? Headers, options ?? Options, version, cubin);

    [Fact]
    public void KeyIsStableAndHex() => Assert.Matches("^[0-9a-f]{64}$", Key());

    [Fact]
    public void HeaderOrderDoesNotMatter() => Assert.Equal(Key(), Key(headers: [Headers[1], Headers[0]]));

    public static TheoryData<string, string> Changes() => new()
    {
        { "source", Key(source: "kernel ") },
        { "header text", Key(headers: [("common.cuh", "// common!"), Headers[1]]) },
        { "header name", Key(headers: [("common2.cuh", "// common"), Headers[1]]) },
        { "dtype option", Key(options: ["--gpu-architecture=sm_90", "-std=c++17", "-DVTE_DTYPE_F16"]) },
        { "architecture", Key(options: ["--gpu-architecture=sm_80", "-std=c++17", "-DVTE_DTYPE_BF16"]) },
        { "option order", Key(options: ["-std=c++17", "--gpu-architecture=sm_90", "-DVTE_DTYPE_BF16"]) },
        { "nvrtc version", Key(version: "12.4") },
        { "output kind", Key(cubin: false) },
        { "boundary between fields", KernelCache.Key("k.c", "ukernel", Headers, Options, "11.8", true) },
    };

    [Theory, MemberData(nameof(Changes))]
    public void KeyChangesWithEveryInput(string what, string changed) => Assert.True(changed != Key(), what);

    [Fact]
    public void EntriesRoundTrip()
    {
        using var dir = new TempDir();
        var cache = new KernelCache(Path.Combine(dir.Path, "kernels"));
        var image = Enumerable.Range(0, 5000).Select(i => (byte)(i * 7)).ToArray();
        Assert.Null(cache.TryRead(Key()));
        Assert.True(cache.Write(Key(), image));
        Assert.Equal(image, cache.TryRead(Key()));
        Assert.Null(cache.TryRead(Key(source: "other")));
    }

    public static TheoryData<string> Damages() => ["truncated", "flipped payload byte", "foreign file", "empty"];

    [Theory, MemberData(nameof(Damages))]
    public void DamagedEntriesAreMisses(string damage)
    {
        using var dir = new TempDir();
        var cache = new KernelCache(dir.Path);
        var image = new byte[1000];
        new Random(3).NextBytes(image);
        cache.Write(Key(), image);
        var path = cache.PathOf(Key());
        var bytes = File.ReadAllBytes(path);
        byte[] damaged = damage switch
        {
            "truncated" => bytes[..^10],
            "flipped payload byte" => Flip(bytes, bytes.Length - 1),
            "foreign file" => "not a kernel"u8.ToArray(),
            _ => [],
        };
        File.WriteAllBytes(path, damaged);
        Assert.Null(cache.TryRead(Key()));
        Assert.True(cache.Write(Key(), image)); // and a fresh write repairs it
        Assert.Equal(image, cache.TryRead(Key()));
    }

    private static byte[] Flip(byte[] b, int at)
    {
        b[at] ^= 0x10;
        return b;
    }

    [Fact]
    public void ConcurrentWritersLeaveOneValidEntryAndNoTemporaryFiles()
    {
        using var dir = new TempDir();
        var cache = new KernelCache(dir.Path);
        var images = Enumerable.Range(0, 16).Select(i => Enumerable.Repeat((byte)i, 100_000 + i).ToArray()).ToArray();
        Parallel.For(0, 64, i => Assert.True(cache.Write(Key(), images[i % images.Length])));
        var read = cache.TryRead(Key());
        Assert.NotNull(read);
        Assert.Contains(images, img => img.AsSpan().SequenceEqual(read));
        Assert.Equal([Path.GetFileName(cache.PathOf(Key()))], dir.FileNames());
    }

    [Fact]
    public void AnUnwritableFolderIsNotAnError()
    {
        using var dir = new TempDir();
        var blocker = dir.File("file");
        File.WriteAllText(blocker, "x");
        var cache = new KernelCache(Path.Combine(blocker, "kernels")); // a folder inside a file cannot exist
        Assert.False(cache.Write(Key(), [1, 2, 3]));
        Assert.Null(cache.TryRead(Key()));
    }
}

/// <summary>Tests that set process environment variables run alone.</summary>
[CollectionDefinition("Environment variables", DisableParallelization = true)]
public sealed class EnvironmentVariablesCollection;

[Collection("Environment variables")]
public sealed class KernelCacheFolderTests
{
    [Theory]
    [InlineData("/tmp/vte-cache-test", null, "/tmp/vte-cache-test/kernels")]
    [InlineData(null, "/tmp/xdg", "/tmp/xdg/vtekernels/kernels")]
    public void DefaultFolderFollowsTheCacheVariables(string? vteCacheDir, string? xdgCacheHome, string expected)
    {
        var (oldVte, oldXdg) = (Environment.GetEnvironmentVariable("VTE_CACHE_DIR"), Environment.GetEnvironmentVariable("XDG_CACHE_HOME"));
        try
        {
            Environment.SetEnvironmentVariable("VTE_CACHE_DIR", vteCacheDir);
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", xdgCacheHome);
            Assert.Equal(expected, KernelCache.DefaultDirectory());
        }
        finally
        {
            Environment.SetEnvironmentVariable("VTE_CACHE_DIR", oldVte);
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", oldXdg);
        }
    }
}
