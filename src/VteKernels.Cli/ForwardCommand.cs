// `vte forward`: one prefill, full logits [seq, vocab] float32 written as .npy. The research tool by which
// outside references (HF transformers) are compared with this engine. Images come as files (--image,
// preprocessed as the model's family requires) or as HF's own pixel tensors (--pixels, with --image-sizes for
// anyres); the ids may carry one placeholder per image, which is expanded to each image's count.
// --hidden-states and --attentions export, through the decoder observer, the rows entering chosen layers and
// their attention probabilities as .npz archives (what HF gives only with eager attention, and vLLM/TGI not at all).
using System.CommandLine;
using System.Diagnostics;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Engine.Observers;
using VteKernels.Formats;

namespace VteKernels.Cli;

internal static class ForwardCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory", Required = true };
        var ids = new Option<string>("--input-ids") { Description = "Comma-separated token ids: image placeholders expanded, or one per image (or @FILE holding them)", Required = true };
        var imageFiles = new Option<string[]>("--image") { Description = "Image file per image, in prompt order, preprocessed as the model's family requires", AllowMultipleArgumentsPerToken = true };
        var pixels = new Option<string[]>("--pixels") { Description = "Preprocessed float32 .npy per image, in prompt order: [1,3,S,S] (or [3,S,S]), anyres [tiles,3,S,S]", AllowMultipleArgumentsPerToken = true };
        var sizes = new Option<string[]>("--image-sizes") { Description = "Original H,W of each --pixels image (HF's image_sizes; anyres needs them)", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out", "-o") { Description = "Where to write the logits .npy", Required = true };
        var hiddenOut = new Option<string>("--hidden-states") { Description = "Also write the hidden states entering each chosen decoder layer to this .npz: layer_L [rows, hidden] (HF's hidden_states[L]) and layer_L_rows (prompt row of each row)" };
        var attentionOut = new Option<string>("--attentions") { Description = "Also write the attention probabilities of each chosen layer to this .npz: layer_L [heads, queries, keys], layer_L_query_rows, layer_L_key_rows (prompt rows), heads" };
        var layers = new Option<string>("--layers") { Description = "Decoder layers for --hidden-states and --attentions, e.g. 0,8,16 or 0-3 (default: every layer)" };
        var heads = new Option<string>("--heads") { Description = "Query heads for --attentions, e.g. 0,5 or 0-7 (kept in ascending order; default: every head)" };
        var device = new BackendOptions();
        var noMmap = NoMmapOption.Create();
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var cmd = new Command("forward", "Run one prefill and write the logits of every row as .npy (after a visual-token exit: the rows that remain)")
        {
            model, ids, imageFiles, pixels, sizes, output, hiddenOut, attentionOut, layers, heads, noMmap,
        };
        device.AddTo(cmd);
        exit.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var (policy, kvMode, traceFile) = exit.Read(p);
            var (naavit, sessionOptions) = methods.Read(p);
            var tokenIds = TokenIdList.Parse(p.GetValue(ids)!);
            var files = p.GetValue(imageFiles) ?? [];
            if (files.Length > 0 && p.GetValue(pixels) is { Length: > 0 }) throw new UsageException("--image and --pixels exclude each other: give image files or preprocessed pixels");
            if (files.Length > 0 && p.GetValue(sizes) is { Length: > 0 }) throw new UsageException("--image-sizes goes with --pixels (an image file knows its size)");
            var pixelImages = ImageArguments.ReadPixels(p.GetValue(pixels), p.GetValue(sizes));
            string? hiddenPath = p.GetValue(hiddenOut), attentionPath = p.GetValue(attentionOut);
            if (hiddenPath is null && attentionPath is null && (p.GetValue(layers) is not null || p.GetValue(heads) is not null))
                throw new UsageException("--layers and --heads choose what --hidden-states and --attentions export: give one of those");
            if (attentionPath is null && p.GetValue(heads) is not null) throw new UsageException("--heads goes with --attentions");
            foreach (var path in new[] { hiddenPath, attentionPath })
                if (path is not null && !path.EndsWith(".npz", StringComparison.OrdinalIgnoreCase)) throw new UsageException($"'{path}': the export is an .npz archive; give a file name ending in .npz");
            var chosenLayers = ParseList(p.GetValue(layers), "--layers");
            var chosenHeads = ParseList(p.GetValue(heads), "--heads");
            policy.Validate(Models.LlavaCheckpoint.ReadConfig(p.GetValue(model)!, methods.VisionTowerDir(p)));   // before the weights load
            using var backend = device.Create(p);
            var clock = Stopwatch.StartNew();
            using var m = LlavaModel.Load(p.GetValue(model)!, backend, methods.VisionTowerDir(p), NoMmapOption.Read(p, noMmap));
            var load = clock.Elapsed;
            var images = files.Length > 0 ? ImageArguments.Load(p.GetValue(model)!, m.Config, files, pad: null) : pixelImages;
            var prompt = ImageArguments.Prompt(m.Config, tokenIds, images);
            tokenIds = prompt.TokenIds;
            if (chosenLayers?.FirstOrDefault(l => l >= m.Config.Text.NumLayers, -1) is int badLayer and >= 0)
                throw new UsageException($"--layers: the model has decoder layers 0..{m.Config.Text.NumLayers - 1}, not {badLayer}");
            if (chosenHeads?.FirstOrDefault(h => h >= m.Config.Text.NumHeads, -1) is int badHead and >= 0)
                throw new UsageException($"--heads: the model has attention heads 0..{m.Config.Text.NumHeads - 1}, not {badHead}");
            using var session = m.CreateSession(sessionOptions);
            using var export = hiddenPath is null && attentionPath is null ? null
                : new NpzExport(hiddenPath, attentionPath, new DecoderCapture
                {
                    Layers = chosenLayers?.ToHashSet(), InputRows = hiddenPath is not null, AttentionProbabilities = attentionPath is not null, Heads = chosenHeads,
                });
            var result = session.Prefill(prompt,
                new PrefillOptions { AllLogits = true, Exit = policy, ExitKvMode = kvMode, Trace = traceFile is not null, Naavit = naavit, Observer = export });
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
            if (export is not null)
            {
                export.Complete();
                if (hiddenPath is not null) stdout.WriteLine($"wrote hidden states of {export.HiddenLayers.Count} layer(s) ({EasAdapters.FormatLayers(export.HiddenLayers)}) to {hiddenPath}");
                if (attentionPath is not null)
                    stdout.WriteLine($"wrote attention probabilities of {export.AttentionLayers.Count} layer(s) ({(export.AttentionLayers.Count == 0 ? "none" : EasAdapters.FormatLayers(export.AttentionLayers))}) to {attentionPath}" +
                        (export.SkippedLayers.Count > 0 ? $"; layer(s) {EasAdapters.FormatLayers(export.SkippedLayers)} skip attention and have none" : ""));
            }
            return 0;
        });
        return cmd;
    }

    private static IReadOnlyList<int>? ParseList(string? text, string option)
    {
        if (text is null) return null;
        try
        {
            return EasAdapters.ParseLayers(text);
        }
        catch (FormatException e)
        {
            throw new UsageException($"{option}: {e.Message}");
        }
    }

    /// <summary>Writes each observed layer into the .npz archives as it comes, so only one layer's arrays are held at a time.</summary>
    private sealed class NpzExport(string? hiddenPath, string? attentionPath, DecoderCapture capture) : IDecoderObserver, IDisposable
    {
        // Written under a temporary name and renamed by Complete, so a failed run leaves no half archive.
        private readonly NpzWriter? _hidden = hiddenPath is null ? null : new NpzWriter(hiddenPath + ".tmp");
        private readonly NpzWriter? _attention = attentionPath is null ? null : new NpzWriter(attentionPath + ".tmp");
        private bool _headsWritten, _disposed, _complete;

        public DecoderCapture Capture { get; } = capture;

        public List<int> HiddenLayers { get; } = [];

        public List<int> AttentionLayers { get; } = [];

        public List<int> SkippedLayers { get; } = [];

        public void OnLayer(DecoderLayerObservation o)
        {
            if (o.Input is { } input)
            {
                _hidden!.Add($"layer_{o.Layer}", input, [o.Rows.Length, input.Length / Math.Max(1, o.Rows.Length)]);
                _hidden.Add($"layer_{o.Layer}_rows", o.Rows, [o.Rows.Length]);
                HiddenLayers.Add(o.Layer);
            }
            if (_attention is null || !Capture.Wants(o.Layer)) return;
            if (o.Attention is not { } p)
            {
                if (o.AttentionSkipped) SkippedLayers.Add(o.Layer);
                return;
            }
            int keys = o.CachedKeys + o.Rows.Length;
            _attention.Add($"layer_{o.Layer}", p, [o.AttentionHeads.Length, o.QueryRows.Length, keys]);
            _attention.Add($"layer_{o.Layer}_query_rows", o.QueryRows.Select(i => o.Rows[i]).ToArray(), [o.QueryRows.Length]);
            _attention.Add($"layer_{o.Layer}_key_rows", o.Rows, [o.Rows.Length]);   // a fresh session: the layer's keys are this prefill's rows
            if (!_headsWritten) _attention.Add("heads", o.AttentionHeads, [o.AttentionHeads.Length]);
            _headsWritten = true;
            AttentionLayers.Add(o.Layer);
        }

        /// <summary>Closes the archives and moves them to their names.</summary>
        public void Complete()
        {
            _complete = true;
            Dispose();
        }

        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            _hidden?.Dispose();
            _attention?.Dispose();
            foreach (var path in new[] { hiddenPath, attentionPath })
            {
                if (path is null) continue;
                if (_complete) File.Move(path + ".tmp", path, overwrite: true);
                else File.Delete(path + ".tmp");
            }
        }
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
