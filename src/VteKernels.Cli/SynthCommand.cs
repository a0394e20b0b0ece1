// `vte synth`: writes a random-weight model in the llava-hf layout (see SyntheticModel for the scaling).
using System.CommandLine;
using System.Diagnostics;
using VteKernels.Synth;

namespace VteKernels.Cli;

internal static class SynthCommand
{
    public static Command Create(TextWriter stdout)
    {
        var preset = new Option<string>("--preset") { Description = $"Model shape: {string.Join(", ", SynthPreset.Names)}", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong([.. SynthPreset.Names]);
        var output = new Option<string>("--out", "-o") { Description = "Directory to write the model into", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random weights", DefaultValueFactory = _ => 0 };
        var dtype = new Option<string>("--dtype") { Description = "Stored dtype: f32, f16 or bf16 (default: f32 for tiny and next-tiny, bf16 otherwise)" };
        dtype.AcceptOnlyFromAmong("f32", "f16", "bf16");
        var cmd = new Command("synth", "Write a random-weight LLaVA model (config, safetensors, tokenizer); nothing is downloaded") { preset, output, seed, dtype };
        cmd.SetAction(p =>
        {
            var pr = SynthPreset.Get(p.GetValue(preset)!);
            var dt = p.GetValue(dtype) is string s ? DTypes.Parse(s) : pr.Name.EndsWith("tiny", StringComparison.Ordinal) ? DType.F32 : DType.BF16;
            var dir = p.GetValue(output)!;
            var clock = Stopwatch.StartNew();
            var progress = new ProgressLine(stdout, $"writing {pr.Name} ({dt.SafetensorsName()})");
            SyntheticModel.Write(pr, dir, p.GetValue(seed), dt, progress.Report);
            progress.Done();
            stdout.WriteLine($"wrote {pr.Name} to {dir} in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return cmd;
    }
}

/// <summary>A one-line byte progress report that rewrites itself on a terminal and prints sparsely otherwise.</summary>
internal sealed class ProgressLine(TextWriter w, string label)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _lastPrint = -1;

    public void Report(long done, long total)
    {
        long ms = _clock.ElapsedMilliseconds;
        if (done < total && ms - _lastPrint < 1000) return;
        _lastPrint = ms;
        double gb = done / 1e9, totalGb = total / 1e9;
        double rate = ms > 0 ? gb / (ms / 1000.0) : 0;
        var line = $"{label}: {gb:F2} / {totalGb:F2} GB ({100.0 * done / Math.Max(1, total):F0}%, {rate:F2} GB/s)";
        if (Console.IsOutputRedirected || !ReferenceEquals(w, Console.Out)) w.WriteLine(line);
        else w.Write("\r" + line);
    }

    public void Done()
    {
        if (!Console.IsOutputRedirected && ReferenceEquals(w, Console.Out)) w.WriteLine();
    }
}
