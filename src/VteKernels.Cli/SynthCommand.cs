// `vte synth`: writes a random-weight model in the llava-hf layout (see SyntheticModel for the scaling).
using System.CommandLine;
using System.Diagnostics;
using VteKernels.Synth;

namespace VteKernels.Cli;

internal static class SynthCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var preset = new Option<string>("--preset") { Description = $"Model shape: {string.Join(", ", SynthPreset.Names)}", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong([.. SynthPreset.Names]);
        var output = new Option<string>("--out", "-o") { Description = "Directory to write the model into", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random weights", DefaultValueFactory = _ => 0 };
        var dtype = new Option<string>("--dtype") { Description = "Stored dtype: f32, f16 or bf16 (default: f32 for tiny, bf16 otherwise)" };
        dtype.AcceptOnlyFromAmong("f32", "f16", "bf16");
        var cmd = new Command("synth", "Write a random-weight LLaVA model (config, safetensors, tokenizer); nothing is downloaded") { preset, output, seed, dtype };
        cmd.SetAction(p =>
        {
            var pr = SynthPreset.Get(p.GetValue(preset)!);
            var dt = p.GetValue(dtype) is string s ? DTypes.Parse(s) : pr.Name == "tiny" ? DType.F32 : DType.BF16;
            var dir = p.GetValue(output)!;
            var clock = Stopwatch.StartNew();
            var label = $"writing {pr.Name} ({dt.SafetensorsName()})";
            var bar = new CliProgress(stderr, quiet: false);
            bar.Bytes(label, report => SyntheticModel.Write(pr, dir, p.GetValue(seed), dt, (done, all) => report(done, all)));
            stdout.WriteLine($"wrote {pr.Name} to {dir} in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return cmd;
    }
}

