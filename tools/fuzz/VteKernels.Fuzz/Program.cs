// vte-fuzz: a mutation fuzzer over every parser of the library (Targets.cs), run as a supervisor and
// worker processes so that a death (stack overflow, abort, a fault in a memory map) is a finding of the
// input that caused it, not the end of the campaign:
//   campaign  spawns one worker per target (--jobs at a time), reads its progress line by line, records a
//             worker that dies or stops reporting (--hang-ms) against the input it was on, and restarts it
//             after that input; prints a table and writes OUT/summary.json; exit 1 on any finding.
//   worker    runs inputs [start, start + count) of one target in-process and reports each: "B i" before,
//             "E i ms outcome" after, "F i ..." for an exception that is not the library's own, "S i ms"
//             for an input over --time-cap-ms twice in a row; the input and the exception go to OUT.
//   replay    runs one input (by number, or a file) and prints what happens.
// Inputs are a pure function of (--seed, target, index) (Mutator), so every finding is replayable by its
// number. Workers run with a GC heap limit (--heap-mb), so an unbounded allocation is an
// OutOfMemoryException finding rather than a machine brought to its knees.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace VteKernels.Fuzz;

internal static class Program
{
    private static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("""
                usage: vte-fuzz campaign [--targets a,b,...] [--inputs N] [--seed S] [--out DIR] [--jobs J] [--time-cap-ms T] [--hang-ms H] [--heap-mb M]
                       vte-fuzz worker --target T --seed S --start I --count N --out DIR [--time-cap-ms T]
                       vte-fuzz replay --target T (--seed S --index I | --file F)
                       vte-fuzz list
                """);
            return args.Length == 0 ? 2 : 0;
        }
        var opts = Options.Parse(args.Skip(1));
        return args[0] switch
        {
            "campaign" => Campaign.Run(opts),
            "worker" => Worker.Run(opts),
            "replay" => Replay(opts),
            "list" => List(),
            _ => Usage($"unknown command '{args[0]}'"),
        };
    }

    private static int Usage(string problem)
    {
        Console.Error.WriteLine($"error: {problem}");
        return 2;
    }

    private static int List()
    {
        foreach (var t in Target.All) Console.WriteLine($"{t.Name,-20} inputs up to {t.MaxBytes} bytes");
        return 0;
    }

    private static int Replay(Options o)
    {
        var target = Target.Get(o.Get("target"));
        using var scratch = new Scratch(Repo.Root);
        byte[] input = o.Has("file") ? File.ReadAllBytes(o.Get("file"))
            : Worker.MutatorFor(target, scratch).Make(o.ULong("seed", 1), target.Name, o.Long("index", 0));
        var clock = Stopwatch.StartNew();
        var (outcome, error) = Worker.RunOne(target, scratch, input);
        Console.WriteLine($"{target.Name}: {input.Length} bytes, {outcome} in {clock.Elapsed.TotalMilliseconds:F1} ms");
        if (error is not null) Console.WriteLine(error);
        return outcome == "finding" ? 1 : 0;
    }
}

/// <summary>The repository root (the folder holding VteKernels.sln): $VTE_FUZZ_REPO, else found above the tool's own location.</summary>
internal static class Repo
{
    public static string Root { get; } = Find();

    private static string Find()
    {
        if (Environment.GetEnvironmentVariable("VTE_FUZZ_REPO") is { Length: > 0 } given) return Path.GetFullPath(given);
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "VteKernels.sln"))) return d.FullName;
        throw new InvalidOperationException($"no VteKernels.sln above {AppContext.BaseDirectory}");
    }
}

/// <summary>--name value pairs.</summary>
internal sealed class Options
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    public static Options Parse(IEnumerable<string> args)
    {
        var o = new Options();
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            if (!list[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= list.Count) throw new ArgumentException($"expected --name value, got '{list[i]}'");
            o._values[list[i][2..]] = list[++i];
        }
        return o;
    }

    public bool Has(string name) => _values.ContainsKey(name);

    public string Get(string name, string? dflt = null) => _values.TryGetValue(name, out var v) ? v : dflt ?? throw new ArgumentException($"--{name} is required");

    public long Long(string name, long dflt) => _values.TryGetValue(name, out var v) ? long.Parse(v, CultureInfo.InvariantCulture) : dflt;

    public ulong ULong(string name, ulong dflt) => _values.TryGetValue(name, out var v) ? ulong.Parse(v, CultureInfo.InvariantCulture) : dflt;
}

internal static class Worker
{
    public static Mutator MutatorFor(Target t, Scratch s)
    {
        var dict = File.Exists(t.DictionaryPath(s.Repo)) ? Mutator.ReadDictionary(t.DictionaryPath(s.Repo)) : [];
        var seeds = t.Seeds(s);
        if (seeds.Count == 0) throw new InvalidOperationException($"target {t.Name} has no seeds");
        return new Mutator(seeds, dict, t.MaxBytes);
    }

    /// <summary>Runs one input: "accepted", "rejected" (the library's own exception) or "finding" with the exception.</summary>
    public static (string Outcome, Exception? Error) RunOne(Target t, Scratch s, byte[] input)
    {
        try
        {
            t.Run(s, input);
            return ("accepted", null);
        }
        catch (VteException)
        {
            return ("rejected", null);
        }
        catch (Exception e)
        {
            return ("finding", e);
        }
    }

    public static int Run(Options o)
    {
        var target = Target.Get(o.Get("target"));
        ulong seed = o.ULong("seed", 1);
        long start = o.Long("start", 0), count = o.Long("count", 1000);
        long cap = o.Long("time-cap-ms", 2000);
        var outDir = Directory.CreateDirectory(o.Get("out")).FullName;
        var stdout = new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = true };
        using var scratch = new Scratch(Repo.Root);
        var mutator = MutatorFor(target, scratch);
        for (long i = start; i < start + count; i++)
        {
            var input = mutator.Make(seed, target.Name, i);
            stdout.WriteLine($"B {i}");
            var clock = Stopwatch.StartNew();
            var (outcome, error) = RunOne(target, scratch, input);
            long ms = clock.ElapsedMilliseconds;
            if (error is not null)
            {
                string stem = Save(outDir, target.Name, seed, i, input, error.ToString());
                stdout.WriteLine($"F {i} {error.GetType().FullName} {stem}");
            }
            else if (ms > cap)
            {
                // Over the cap: timed once more before it counts, so a moment of load on a shared machine is not a finding.
                clock.Restart();
                RunOne(target, scratch, input);
                if (clock.ElapsedMilliseconds > cap)
                {
                    string stem = Save(outDir, target.Name, seed, i, input, $"over the time cap of {cap} ms: {ms} ms, then {clock.ElapsedMilliseconds} ms");
                    stdout.WriteLine($"S {i} {Math.Min(ms, clock.ElapsedMilliseconds)} {stem}");
                }
            }
            stdout.WriteLine($"E {i} {ms} {outcome}");
        }
        stdout.WriteLine("D");
        return 0;
    }

    public static string Save(string outDir, string target, ulong seed, long index, byte[] input, string what)
    {
        string stem = Path.Combine(outDir, $"{target}-seed{seed}-{index}");
        File.WriteAllBytes(stem + ".bin", input);
        File.WriteAllText(stem + ".txt", $"vte-fuzz replay --target {target} --seed {seed} --index {index}\n{what}\n");
        return stem;
    }
}

/// <summary>The supervisor: workers as child processes, deaths and hangs attributed to their input.</summary>
internal static class Campaign
{
    private sealed class Tally
    {
        public string Target = "";
        public long Inputs, Accepted, Rejected, SlowestMs;
        public long SlowestIndex = -1;
        public double Seconds;
        public readonly List<string> Findings = [];
    }

    public static int Run(Options o)
    {
        var names = o.Get("targets", string.Join(",", Target.All.Select(t => t.Name))).Split(',', StringSplitOptions.RemoveEmptyEntries);
        foreach (var n in names) Target.Get(n);
        long inputs = o.Long("inputs", 20_000);
        ulong seed = o.ULong("seed", 1);
        int jobs = (int)o.Long("jobs", Math.Min(2, Environment.ProcessorCount));
        long cap = o.Long("time-cap-ms", 2000), hang = o.Long("hang-ms", 30_000), heapMb = o.Long("heap-mb", 2048);
        var outDir = Directory.CreateDirectory(o.Get("out", Path.Combine(Path.GetTempPath(), "vte-fuzz-out"))).FullName;
        var clock = Stopwatch.StartNew();
        var tallies = new ConcurrentDictionary<string, Tally>();
        Parallel.ForEach(names, new ParallelOptions { MaxDegreeOfParallelism = jobs },
            name => tallies[name] = RunTarget(name, seed, inputs, cap, hang, heapMb, outDir));

        Console.WriteLine($"{"target",-20} {"inputs",8} {"accepted",9} {"rejected",9} {"findings",9} {"slowest ms",11} {"seconds",8}");
        int findings = 0;
        foreach (var name in names)
        {
            var t = tallies[name];
            findings += t.Findings.Count;
            Console.WriteLine($"{t.Target,-20} {t.Inputs,8} {t.Accepted,9} {t.Rejected,9} {t.Findings.Count,9} {t.SlowestMs,11} {t.Seconds,8:F1}");
        }
        foreach (var t in names.Select(n => tallies[n]))
            foreach (var f in t.Findings) Console.WriteLine($"finding: {t.Target}: {f}");
        Console.WriteLine($"{names.Length} targets, {tallies.Values.Sum(t => t.Inputs)} inputs (seed {seed}), {findings} findings, {clock.Elapsed.TotalSeconds:F1} s");
        File.WriteAllText(Path.Combine(outDir, "summary.json"), JsonSerializer.Serialize(new
        {
            seed, inputsPerTarget = inputs, timeCapMs = cap, hangMs = hang, heapMb, seconds = clock.Elapsed.TotalSeconds,
            targets = names.Select(n => tallies[n]).Select(t => new { t.Target, t.Inputs, t.Accepted, t.Rejected, t.SlowestMs, t.SlowestIndex, t.Seconds, t.Findings }),
        }, new JsonSerializerOptions { WriteIndented = true }));
        return findings == 0 ? 0 : 1;
    }

    private static Tally RunTarget(string name, ulong seed, long inputs, long cap, long hang, long heapMb, string outDir)
    {
        var tally = new Tally { Target = name };
        var clock = Stopwatch.StartNew();
        long next = 0;
        while (next < inputs)
        {
            var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") psi.ArgumentList.Add(typeof(Program).Assembly.Location);
            foreach (var a in new[] { "worker", "--target", name, "--seed", seed.ToString(CultureInfo.InvariantCulture), "--start", next.ToString(CultureInfo.InvariantCulture),
                         "--count", (inputs - next).ToString(CultureInfo.InvariantCulture), "--out", outDir, "--time-cap-ms", cap.ToString(CultureInfo.InvariantCulture) })
                psi.ArgumentList.Add(a);
            psi.Environment["DOTNET_GCHeapHardLimit"] = "0x" + (heapMb << 20).ToString("X", CultureInfo.InvariantCulture);
            psi.Environment["DOTNET_TieredPGO"] = "0";
            using var p = Process.Start(psi)!;
            var lines = new BlockingCollection<string>();
            var stderr = new System.Text.StringBuilder();
            p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
            p.BeginErrorReadLine();
            var reader = new Thread(() =>
            {
                string? line;
                while ((line = p.StandardOutput.ReadLine()) is not null) lines.Add(line);
                lines.CompleteAdding();
            }) { IsBackground = true };
            reader.Start();

            long current = -1;
            bool done = false;
            while (true)
            {
                if (!lines.TryTake(out var line, TimeSpan.FromMilliseconds(hang)))
                {
                    if (lines.IsCompleted) break;
                    // No word for longer than the hang limit: the input it is on hangs.
                    try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                    p.WaitForExit();
                    Record(tally, name, seed, current, outDir, $"hang: no progress for {hang} ms");
                    break;
                }
                var parts = line.Split(' ', 5);
                switch (parts[0])
                {
                    case "B":
                        current = long.Parse(parts[1], CultureInfo.InvariantCulture);
                        break;
                    case "E":
                        tally.Inputs++;
                        long ms = long.Parse(parts[2], CultureInfo.InvariantCulture);
                        if (ms > tally.SlowestMs) (tally.SlowestMs, tally.SlowestIndex) = (ms, current);
                        if (parts[3] == "accepted") tally.Accepted++;
                        else if (parts[3] == "rejected") tally.Rejected++;
                        next = current + 1;
                        current = -1;
                        break;
                    case "F":
                        tally.Findings.Add($"input {parts[1]}: {parts[2]} ({parts[3]}.txt)");
                        break;
                    case "S":
                        tally.Findings.Add($"input {parts[1]}: over the time cap ({parts[2]} ms; {parts[3]}.txt)");
                        break;
                    case "D":
                        done = true;
                        break;
                }
            }
            p.WaitForExit();
            if (done) break;
            if (current >= 0 && !tally.Findings.Any(f => f.StartsWith($"input {current}: hang", StringComparison.Ordinal)))
            {
                string tail;
                lock (stderr) tail = string.Join(" | ", stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Take(3));
                Record(tally, name, seed, current, outDir, $"death: worker exited with code {p.ExitCode} ({tail})");
            }
            if (current < 0 && !done) throw new InvalidOperationException($"{name}: worker exited with code {p.ExitCode} between inputs: {stderr}");
            tally.Inputs++;
            next = current + 1; // skip the input that killed or hung the worker, go on with the next
        }
        tally.Seconds = clock.Elapsed.TotalSeconds;
        return tally;
    }

    private static void Record(Tally tally, string name, ulong seed, long index, string outDir, string what)
    {
        using var scratch = new Scratch(Repo.Root);
        var target = Target.Get(name);
        var input = Worker.MutatorFor(target, scratch).Make(seed, name, index);
        string stem = Worker.Save(outDir, name, seed, index, input, what);
        tally.Findings.Add($"input {index}: {what} ({stem}.txt)");
    }
}
