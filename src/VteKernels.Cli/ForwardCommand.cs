// `vte forward`: one prefill, full logits [seq, vocab] float32 written as .npy. The research tool by which
// outside references (HF transformers) are compared with this engine.
using System.CommandLine;
using System.Diagnostics;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Formats;

namespace VteKernels.Cli;

internal static class ForwardCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory", Required = true };
        var ids = new Option<string>("--input-ids") { Description = "Comma-separated token ids, image placeholders expanded (or @FILE holding them)", Required = true };
        var pixels = new Option<string[]>("--pixels") { Description = "float32 .npy [1,3,H,W] (or [3,H,W]) per image, in prompt order", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out", "-o") { Description = "Where to write the logits .npy", Required = true };
        var device = new BackendOptions();
        var noMmap = NoMmapOption.Create();
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var cmd = new Command("forward", "Run one prefill and write the logits of every row as .npy (after a visual-token exit: the rows that remain)") { model, ids, pixels, output, noMmap };
        device.AddTo(cmd);
        exit.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var (policy, kvMode, traceFile) = exit.Read(p);
            var (naavit, sessionOptions) = methods.Read(p);
            var tokenIds = TokenIdList.Parse(p.GetValue(ids)!);
            var images = (p.GetValue(pixels) ?? []).Select(PixelFile.Read).ToList();
            policy.Validate(Models.LlavaCheckpoint.ReadConfig(p.GetValue(model)!, methods.VisionTowerDir(p)));   // before the weights load
            using var backend = device.Create(p);
            var clock = Stopwatch.StartNew();
            using var m = LlavaModel.Load(p.GetValue(model)!, backend, methods.VisionTowerDir(p), NoMmapOption.Read(p, noMmap));
            var load = clock.Elapsed;
            using var session = m.CreateSession(sessionOptions);
            var result = session.Prefill(new PromptInput(tokenIds, images),
                new PrefillOptions { AllLogits = true, Exit = policy, ExitKvMode = kvMode, Trace = traceFile is not null, Naavit = naavit });
            var outPath = p.GetValue(output)!;
            Npy.Write(outPath, result.Logits.Values, [result.Logits.Rows, result.Logits.Vocab]);
            stdout.WriteLine($"device {backend.Device}; load {load.TotalMilliseconds:F0} ms, prefill {(clock.Elapsed - load).TotalMilliseconds:F0} ms; " +
                $"wrote logits [{result.Logits.Rows}, {result.Logits.Vocab}] to {outPath}");
            var report = result.Report!;
            if (report.ExitLayer is not null || policy is not NoExit || report.Naavit || report.SkippedLayers.Length > 0) stdout.WriteLine(report.Summary());
            if (result.Logits.Rows < tokenIds.Length)
                stdout.WriteLine($"rows written: the {result.Logits.Rows} non-visual rows of {tokenIds.Length}, in prompt order");
            if (traceFile is not null)
            {
                ExitOptions.WriteTrace(traceFile, report, new Dictionary<string, string> { ["model"] = Path.GetFullPath(p.GetValue(model)!), ["command"] = "forward" });
                stdout.WriteLine($"wrote trace to {traceFile}");
            }
            return 0;
        });
        return cmd;
    }
}

/// <summary>Token-id lists on the command line: "1,2,3", whitespace allowed, or @FILE.</summary>
internal static class TokenIdList
{
    public static int[] Parse(string text)
    {
        if (text.StartsWith('@'))
        {
            var path = text[1..];
            if (!File.Exists(path)) throw new UsageException($"token id file '{path}' does not exist");
            text = File.ReadAllText(path);
        }
        var parts = text.Split([',', ' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new UsageException("no token ids given");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out ids[i]) || ids[i] < 0)
                throw new UsageException($"token id #{i + 1} '{parts[i]}' is not a non-negative integer");
        return ids;
    }
}

/// <summary>Reads preprocessed pixels from .npy.</summary>
internal static class PixelFile
{
    public static ImageInput Read(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"pixel file '{path}' does not exist");
        var a = Npy.ReadFloat32(path);
        var s = a.Shape;
        if (s.Length == 4 && s[0] == 1) s = s[1..];
        if (s.Length != 3)
            throw new UsageException($"{Path.GetFileName(path)}: pixels must be [1, C, H, W] or [C, H, W], got [{string.Join(", ", a.Shape)}]");
        return new ImageInput(a.Data, s[0], s[1], s[2]);
    }
}
