// `vte train-gate`: DyVTE's gate-training recipe on a model directory and a JSONL file of
// {"image", "question", "answer"} samples. Features and labels are computed once with the model (on the
// --device backend) and cached next to the output (OUT.features); the gates then train on the host, writing
// a checkpoint (OUT.ckpt unless --checkpoint) every --checkpoint-every steps and at the end, and finally the
// gates file OUT, which `generate --exit gate:OUT` and ExitGates.Load read. --resume continues from the
// checkpoint with the cached features. Progress goes to stderr: a Spectre.Console bar on a terminal, plain
// lines (a few per phase) otherwise; results go to stdout.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Formats;
using VteKernels.Text;

namespace VteKernels.Cli;

internal static class TrainGateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var d = new GateTrainingOptions();
        var model = new Option<string>("--model", "-m") { Description = "Model directory", Required = true };
        var data = new Option<string>("--data") { Description = "JSONL, one {\"image\": PATH (relative to the file's folder; optional), \"question\": TEXT, \"answer\": TEXT} a line", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Gates file to write (safetensors; loads with --exit gate:FILE)", Required = true };
        var layers = new Option<string>("--layers") { Description = "Decoder layers that get a gate, e.g. 1-30 or 3,5,8-12 (default: every layer but the last)" };
        var hidden = new Option<int>("--hidden") { Description = "Gate hidden width (DyVTE: 2048)", DefaultValueFactory = _ => d.Hidden };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the training samples", DefaultValueFactory = _ => d.Epochs };
        var batch = new Option<int>("--batch-size") { Description = "(sample, layer) pairs per step", DefaultValueFactory = _ => d.BatchSize };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => d.LearningRate };
        var beta1 = new Option<double>("--beta1") { Description = "AdamW beta1", DefaultValueFactory = _ => d.Beta1 };
        var beta2 = new Option<double>("--beta2") { Description = "AdamW beta2", DefaultValueFactory = _ => d.Beta2 };
        var wd = new Option<double>("--weight-decay") { Description = "AdamW decoupled weight decay", DefaultValueFactory = _ => d.WeightDecay };
        var warmup = new Option<double>("--warmup") { Description = "Fraction of the steps in linear warmup (then cosine decay)", DefaultValueFactory = _ => d.WarmupFraction };
        var seed = new Option<ulong>("--seed") { Description = "Seed of initialisation, held-out split, sample order and layer draws", DefaultValueFactory = _ => d.Seed };
        var val = new Option<double>("--val-fraction") { Description = "Fraction of samples held out for accuracy", DefaultValueFactory = _ => d.ValFraction };
        var log = new Option<string>("--log") { Description = "Write a JSONL loss/accuracy log (one line per step and per epoch)" };
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint file (default: OUT.ckpt)" };
        var every = new Option<int>("--checkpoint-every") { Description = "Steps between checkpoints (0: only at the end)", DefaultValueFactory = _ => d.CheckpointEvery };
        var resume = new Option<bool>("--resume") { Description = "Continue from the checkpoint (same data, model and options)" };
        var style = new Option<string>("--prompt-style") { Description = "As for generate: llava, vicuna, template or raw", DefaultValueFactory = _ => "llava" };
        var imageMode = new Option<string>("--image-mode") { Description = "As for generate: clip or pad", DefaultValueFactory = _ => "clip" };
        var noEos = new Option<bool>("--no-eos") { Description = "Do not append the EOS token to the answers" };
        var device = new BackendOptions();
        var noMmap = NoMmapOption.Create();
        style.AcceptOnlyFromAmong("llava", "vicuna", "template", "raw");
        imageMode.AcceptOnlyFromAmong("clip", "pad");
        var cmd = new Command("train-gate", "Train DyVTE exit gates: label each (sample, layer) by whether exiting there keeps the answer, then fit one router per layer")
        {
            model, data, output, layers, hidden, epochs, batch, lr, beta1, beta2, wd, warmup, seed, val, log, checkpoint, every, resume,
            style, imageMode, noEos, noMmap,
        };
        device.AddTo(cmd);
        cmd.SetAction((p, ct) =>
        {
            var options = new GateTrainingOptions
            {
                Hidden = p.GetValue(hidden), Epochs = p.GetValue(epochs), BatchSize = p.GetValue(batch), LearningRate = p.GetValue(lr),
                Beta1 = p.GetValue(beta1), Beta2 = p.GetValue(beta2), WeightDecay = p.GetValue(wd), WarmupFraction = p.GetValue(warmup),
                Seed = p.GetValue(seed), ValFraction = p.GetValue(val), CheckpointEvery = p.GetValue(every),
            };
            options.Validate();
            var dataOptions = new GateDataOptions
            {
                PromptStyle = p.GetValue(style)!, PadToSquare = p.GetValue(imageMode) == "pad", AppendEos = !p.GetValue(noEos),
                Layers = p.GetValue(layers) is string text ? EasAdapters.ParseLayers(text) : null,
            };
            var outPath = p.GetValue(output)!;
            var run = new Run(stdout, stderr, p.GetValue(model)!, p.GetValue(data)!, outPath, p.GetValue(checkpoint) ?? outPath + ".ckpt",
                p.GetValue(log), p.GetValue(resume), () => device.Create(p), options, dataOptions, NoMmapOption.Read(p, noMmap));
            return Task.FromResult(run.Execute(ct));
        });
        return cmd;
    }

    private sealed record Run(TextWriter Stdout, TextWriter Stderr, string ModelDir, string DataPath, string OutPath, string CheckpointPath,
        string? LogPath, bool Resume, Func<Backends.IBackend> Backend, GateTrainingOptions Options, GateDataOptions DataOptions, LoadOptions Load)
    {
        public int Execute(CancellationToken ct)
        {
            var samples = GateSamples.Read(DataPath);
            if (Resume && !File.Exists(CheckpointPath)) throw new UsageException($"--resume: no checkpoint at {CheckpointPath}");
            if (!File.Exists(Path.Combine(ModelDir, "tokenizer.json"))) throw new UsageException($"{ModelDir} has no tokenizer.json: train-gate builds prompts from text");
            using var backend = Backend();
            using var m = LlavaModel.Load(ModelDir, backend, options: Load);
            var tokenizer = Tokenizer.Load(ModelDir);
            var layers = DataOptions.ResolveLayers(m.Config.Text.NumLayers);
            var cachePath = OutPath + ".features";
            var clock = Stopwatch.StartNew();
            var fingerprint = GateDataset.ComputeFingerprint(ModelDir, DataPath, samples, DataOptions, m.Config.Text.NumLayers);
            if (Resume) GateTrainer.CheckResumable(CheckpointPath, fingerprint, Options);
            var dataset = GateDataset.TryLoad(cachePath, fingerprint);
            if (dataset is not null) Stdout.WriteLine($"features: read {dataset.Count} samples from {cachePath}");
            else
            {
                Stdout.WriteLine($"features: {samples.Count} samples x {layers.Length} layers ({EasAdapters.FormatLayers(layers)}) on {backend.Device}; " +
                    $"{samples.Count(s => s.ImagePath is not null) * (layers.Length + 1) + samples.Count(s => s.ImagePath is null)} prefills");
                dataset = WithProgress("features", samples.Count, report =>
                    GateDataset.Build(m, tokenizer, ModelDir, samples, DataOptions, fingerprint, (done, _) => report(done, null), ct));
                dataset.Save(cachePath);
                Stdout.WriteLine($"features: {clock.Elapsed.TotalSeconds:F1} s; cached in {cachePath}");
            }
            foreach (var s in dataset.Skipped) Stdout.WriteLine($"skipped line {s.Line}: {s.Reason}");
            var positives = dataset.PositivesPerLayer();
            Stdout.WriteLine($"labels (exit keeps the answer) per layer: " +
                string.Join(", ", dataset.Layers.Select((l, k) => $"{l}: {positives[k]}/{dataset.Count}")));

            var trainer = Resume ? GateTrainer.Resume(dataset, Options, CheckpointPath) : new GateTrainer(dataset, Options);
            Stdout.WriteLine($"training: {trainer.TrainSamples.Count} samples, {trainer.HeldOutSamples.Count} held out; {trainer.TotalSteps} steps of {Options.BatchSize}" +
                (Resume ? $"; resuming at step {trainer.Step}" : ""));
            using var logFile = LogPath is null ? null : GateTrainingLog.Open(LogPath, Resume ? trainer.Step : null);
            clock.Restart();
            var result = WithProgress("training", trainer.TotalSteps, report =>
            {
                report(trainer.Step, null);
                return trainer.Run(CheckpointPath, logFile, pr => report(pr.Step, Describe(pr)), ct);
            });
            result.Gates.Save(OutPath);
            Stdout.WriteLine($"training: {clock.Elapsed.TotalSeconds:F1} s; train accuracy {result.Train.Accuracy:F3} (loss {result.Train.Loss:F4})");
            if (result.HeldOut is { } h)
                Stdout.WriteLine($"held-out accuracy {h.Accuracy:F3} (loss {h.Loss:F4}); per layer " +
                    string.Join(", ", h.AccuracyPerLayer.Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key}: {kv.Value:F2}"))));
            Stdout.WriteLine($"wrote {result.Gates.Gates.Count} gates (hidden {Options.Hidden}) to {OutPath}; checkpoint {CheckpointPath}");
            return 0;
        }

        private static string Describe(GateTrainingProgress p) =>
            string.Create(CultureInfo.InvariantCulture, $"epoch {p.Epoch} loss {p.Loss:F3} acc {p.Accuracy:F2}") +
            (p.HeldOut is { } h ? string.Create(CultureInfo.InvariantCulture, $" held-out {h.Accuracy:F2}") : "");

        /// <summary>Runs <paramref name="work"/> with a progress display on stderr; work reports (done, note).</summary>
        private T WithProgress<T>(string phase, int total, Func<Action<int, string?>, T> work)
        {
            if (ReferenceEquals(Stderr, Console.Error) && !Console.IsErrorRedirected)
            {
                var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
                return console.Progress().AutoClear(false)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask(phase, maxValue: Math.Max(1, total));
                        var r = work((done, note) =>
                        {
                            task.Value = done;
                            if (note is not null) task.Description = $"{phase} {Markup.Escape(note)}";
                        });
                        task.StopTask();
                        return r;
                    });
            }
            // Not a terminal: a line at most every 2 s, and the last one.
            var clock = Stopwatch.StartNew();
            long last = 0;
            return work((done, note) =>
            {
                long ms = clock.ElapsedMilliseconds;
                if (done < total && ms - last < 2000) return;
                last = ms;
                Stderr.WriteLine($"{phase}: {done}/{total} ({100.0 * done / Math.Max(1, total):F0}%, {ms / 1000.0:F1} s){(note is null ? "" : "; " + note)}");
            });
        }
    }
}
