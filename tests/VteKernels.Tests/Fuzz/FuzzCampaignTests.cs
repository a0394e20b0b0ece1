// The bounded, seeded fuzz campaign of CI: tools/fuzz (vte-fuzz) over every parser, each target in a
// supervisor whose workers are child processes, so that a stack overflow, an abort or a fault in a memory
// map is reported against its input instead of ending the test run. A target fails on any exception that
// is not the library's own, any input over the 2 s time cap (timed twice), any worker death or hang.
// The campaign runs alone (no other test competes for the two cores while inputs are timed). The inputs
// are the same on every run (seed 20); `vte-fuzz campaign --inputs N --seed S` runs a longer one (README).
using System.Diagnostics;
using Xunit;

namespace VteKernels.Tests.Fuzz;

[CollectionDefinition(nameof(FuzzCampaign), DisableParallelization = true)]
public sealed class FuzzCampaign;

[Collection(nameof(FuzzCampaign))]
public sealed class FuzzCampaignTests
{
    /// <summary>Inputs per target in CI ($VTE_FUZZ_INPUTS overrides).</summary>
    private const int InputsPerTarget = 20_000;

    private const int Seed = 20;

    public static TheoryData<string> Targets() => new("npy", "safetensors", "weight-index", "config", "tokenizer-json", "tokenizer-config",
        "chat-template", "image", "preprocessor-config");

    [Theory, MemberData(nameof(Targets))]
    public async Task BoundedCampaignFindsNothing(string target)
    {
        string config = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name; // bin/<Configuration>/net10.0
        string repo = FindRepo();
        string tool = Path.Combine(repo, "tools", "fuzz", "VteKernels.Fuzz", "bin", config, "net10.0", "vte-fuzz.dll");
        Assert.True(File.Exists(tool), $"{tool} is not built (the test project builds it)");
        int inputs = int.TryParse(Environment.GetEnvironmentVariable("VTE_FUZZ_INPUTS"), out int n) ? n : InputsPerTarget;
        using var outDir = new TempDir();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { tool, "campaign", "--targets", target, "--inputs", inputs.ToString(), "--seed", Seed.ToString(), "--jobs", "1", "--out", outDir.Path })
            psi.ArgumentList.Add(a);
        psi.Environment["VTE_FUZZ_REPO"] = repo;
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        string stdout = await p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        await p.WaitForExitAsync(TestContext.Current.CancellationToken);
        TestContext.Current.SendDiagnosticMessage(stdout);
        Assert.True(p.ExitCode == 0, $"vte-fuzz exited {p.ExitCode}:\n{stdout}\n{await stderr}");
        Assert.Contains($"1 targets, {inputs} inputs (seed {Seed}), 0 findings", stdout);
    }

    private static string FindRepo()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "VteKernels.sln"))) return d.FullName;
        throw new InvalidOperationException("no VteKernels.sln above the test assembly");
    }
}
