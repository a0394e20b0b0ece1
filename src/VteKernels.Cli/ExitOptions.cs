// The visual-token exit options shared by `vte generate` and `vte forward`: --exit POLICY, --exit-kv
// keep|drop and --trace FILE.json.
using System.CommandLine;
using VteKernels.Engine.Exit;

namespace VteKernels.Cli;

internal sealed class ExitOptions
{
    public Option<string> Exit { get; } = new("--exit")
    {
        Description = "When visual tokens leave: none | layer:K (first K layers see them) | gate:FILE (DyVTE gates) | attn:TAU[:M] (text-to-image attention mass below TAU for M layers)",
        DefaultValueFactory = _ => "none",
    };

    public Option<string> KvMode { get; } = new("--exit-kv")
    {
        Description = "After an exit, the early layers' visual K/V: keep (DyVTE) or drop (memory-lean variant)",
        DefaultValueFactory = _ => "keep",
    };

    public Option<string> Trace { get; } = new("--trace") { Description = "Write per-layer details of the prefill (attention mass on the image, gate decisions) to this JSON file" };

    public ExitOptions() => KvMode.AcceptOnlyFromAmong("keep", "drop");

    public IEnumerable<Option> All => [Exit, KvMode, Trace];

    /// <summary>Adds the options; <paramref name="trace"/> false leaves --trace out (chat writes no trace).</summary>
    public void AddTo(Command command, bool trace = true)
    {
        foreach (var o in All) if (trace || o != Trace) command.Options.Add(o);
    }

    public (ExitPolicy Policy, ExitKvMode Mode, string? TraceFile) Read(ParseResult p)
    {
        var policy = ReadPolicy(p);
        var mode = ReadKvMode(p);
        var trace = p.GetValue(Trace);
        if (trace is not null && !trace.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            throw new UsageException($"--trace '{trace}': the trace is JSON; give a file name ending in .json");
        return (policy, mode, trace);
    }

    /// <summary>The --exit policy (gate files loaded).</summary>
    public ExitPolicy ReadPolicy(ParseResult p)
    {
        try
        {
            return ExitPolicy.Parse(p.GetValue(Exit)!, ExitGates.Load);
        }
        catch (FormatException e)
        {
            throw new UsageException(e.Message);
        }
    }

    /// <summary>The --exit-kv mode.</summary>
    public ExitKvMode ReadKvMode(ParseResult p) => p.GetValue(KvMode) == "drop" ? ExitKvMode.DropAll : ExitKvMode.KeepEarly;

    public static void WriteTrace(string path, PrefillReport report, IReadOnlyDictionary<string, string> context)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + ".tmp";
        using (var f = File.Create(tmp)) report.WriteJson(f, context);
        File.Move(tmp, full, overwrite: true);
    }
}
