// Trains DyVTE's exit gates on a GateDataset: one router per candidate layer (W1 [H, 2d] -> GELU ->
// W2 [2, H], no biases), plain 2-class cross-entropy, AdamW, a linear warmup then a cosine decay of the
// learning rate, minibatches of (sample, layer) pairs in which each sample comes with one layer drawn
// uniformly from the candidates (as DyVTE's training samples a layer per sample).
//
// Choices the method leaves open, and ours:
//  * Initialisation as torch.nn.Linear's: uniform in ±1/sqrt(fan_in).
//  * The loss of a minibatch is the mean over its pairs. A gate that got no pair in a minibatch has no
//    gradient and is not stepped at all (as torch's AdamW skips parameters whose grad is None); each gate
//    counts its own AdamW steps for the bias corrections.
//  * Learning rate at step s (0-based) of T with W = ceil(warmup · T) warmup steps:
//    lr · (s + 1) / W while s < W, then lr · 0.5 · (1 + cos(π (s − W) / (T − W))).
//  * Held-out split: a seeded shuffle of the samples; the first round(n · valFraction) are held out (at
//    least one when the fraction is positive, none with a single sample), and their pairs at every
//    candidate layer are scored with ExitGate.Evaluate, the inference code path, at the end of each epoch.
//  * Randomness is counter-based (SplitMix64 keyed by seed, purpose, epoch and position), so the step number
//    is the whole random state: a run resumed from a checkpoint draws exactly what the uninterrupted run
//    draws, and ends with the same weights bit for bit.
// A checkpoint (gates, AdamW moments and step counts, the step, running epoch sums, the options and the
// dataset's fingerprint) is written atomically every CheckpointEvery steps and at the end.
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Formats;

namespace VteKernels.Engine.Exit;

/// <summary>Hyperparameters of gate training.</summary>
public sealed record GateTrainingOptions
{
    /// <summary>Router hidden width H (DyVTE: 2048).</summary>
    public int Hidden { get; init; } = 2048;

    /// <summary>Passes over the training samples.</summary>
    public int Epochs { get; init; } = 10;

    /// <summary>(sample, layer) pairs per minibatch.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>AdamW's β1.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>AdamW's β2.</summary>
    public double Beta2 { get; init; } = 0.999;

    /// <summary>AdamW's ε.</summary>
    public double Epsilon { get; init; } = 1e-8;

    /// <summary>AdamW's decoupled weight decay (torch's default 0.01).</summary>
    public double WeightDecay { get; init; } = 0.01;

    /// <summary>Fraction of the steps spent in linear warmup (LLaVA's warmup_ratio 0.03).</summary>
    public double WarmupFraction { get; init; } = 0.03;

    /// <summary>Fraction of the samples held out for accuracy.</summary>
    public double ValFraction { get; init; } = 0.1;

    /// <summary>Seed of the initialisation, the split, the sample order and the layer draws.</summary>
    public ulong Seed { get; init; }

    /// <summary>Write a checkpoint every this many steps (0: only at the end). Does not change the result.</summary>
    public int CheckpointEvery { get; init; } = 100;

    /// <summary>Checks the ranges.</summary>
    /// <exception cref="ArgumentException">A value is out of range; the message names it.</exception>
    public void Validate()
    {
        void Check(bool ok, string what) { if (!ok) throw new ArgumentException(what); }
        Check(Hidden >= 1, $"gate hidden width must be at least 1 (got {Hidden})");
        Check(Epochs >= 1, $"epochs must be at least 1 (got {Epochs})");
        Check(BatchSize >= 1, $"batch size must be at least 1 (got {BatchSize})");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), $"learning rate must be positive (got {LearningRate})");
        Check(Beta1 is >= 0 and < 1, $"beta1 must lie in [0, 1) (got {Beta1})");
        Check(Beta2 is >= 0 and < 1, $"beta2 must lie in [0, 1) (got {Beta2})");
        Check(Epsilon > 0, $"epsilon must be positive (got {Epsilon})");
        Check(WeightDecay >= 0 && double.IsFinite(WeightDecay), $"weight decay must be >= 0 (got {WeightDecay})");
        Check(WarmupFraction is >= 0 and < 1, $"warmup fraction must lie in [0, 1) (got {WarmupFraction})");
        Check(ValFraction is >= 0 and < 1, $"validation fraction must lie in [0, 1) (got {ValFraction})");
        Check(CheckpointEvery >= 0, $"checkpoint interval must be >= 0 steps (got {CheckpointEvery})");
    }

    /// <summary>The options that decide the result, as JSON (CheckpointEvery is left out): what a checkpoint records and a resume compares.</summary>
    internal JsonObject ToJson() => new()
    {
        ["hidden"] = Hidden, ["epochs"] = Epochs, ["batch_size"] = BatchSize, ["lr"] = LearningRate, ["beta1"] = Beta1,
        ["beta2"] = Beta2, ["eps"] = Epsilon, ["weight_decay"] = WeightDecay, ["warmup"] = WarmupFraction,
        ["val_fraction"] = ValFraction, ["seed"] = Seed,
    };
}

/// <summary>How the gates do on a set of pairs.</summary>
/// <param name="Pairs">Number of (sample, layer) pairs scored.</param>
/// <param name="Loss">Mean cross-entropy.</param>
/// <param name="Accuracy">Fraction of pairs whose exit decision equals the label.</param>
/// <param name="AccuracyPerLayer">The same per candidate layer, keyed by layer.</param>
public sealed record GateEvaluation(int Pairs, double Loss, double Accuracy, IReadOnlyDictionary<int, double> AccuracyPerLayer);

/// <summary>What a training run reports as it goes.</summary>
/// <param name="Step">Steps done.</param>
/// <param name="TotalSteps">Steps in the whole run.</param>
/// <param name="Epoch">The epoch the step belongs to (1-based).</param>
/// <param name="Loss">The step's minibatch loss.</param>
/// <param name="Accuracy">The step's minibatch accuracy.</param>
/// <param name="HeldOut">Held-out scores when the step ended an epoch and samples are held out, else null.</param>
public sealed record GateTrainingProgress(int Step, int TotalSteps, int Epoch, double Loss, double Accuracy, GateEvaluation? HeldOut);

/// <summary>The outcome of a training run.</summary>
/// <param name="Gates">The trained gates.</param>
/// <param name="Steps">Steps taken in total (including those before a resume).</param>
/// <param name="Train">Scores on the training samples' pairs at every candidate layer, with the final weights.</param>
/// <param name="HeldOut">Scores on the held-out samples' pairs, or null when none were held out.</param>
public sealed record GateTrainingResult(ExitGates Gates, int Steps, GateEvaluation Train, GateEvaluation? HeldOut);

/// <summary>Training state of the exit gates over one dataset: weights, AdamW moments, the step.</summary>
public sealed class GateTrainer
{
    private const string CheckpointFormat = "vte-gate-checkpoint";
    private readonly GateDataset _data;
    private readonly int _inputs;
    private readonly float[][] _w1, _w2, _m1, _v1, _m2, _v2;
    private readonly long[] _adamSteps;
    private double[]? _g1, _g2;
    private double _epochLoss;
    private int _epochCorrect, _epochPairs;

    /// <summary>The options the run uses.</summary>
    public GateTrainingOptions Options { get; }

    /// <summary>Steps taken so far.</summary>
    public int Step { get; private set; }

    /// <summary>Steps per epoch: ceil(training samples / batch size).</summary>
    public int StepsPerEpoch { get; }

    /// <summary>Steps of the whole run.</summary>
    public int TotalSteps => StepsPerEpoch * Options.Epochs;

    /// <summary>Indices of the training samples in the dataset.</summary>
    public IReadOnlyList<int> TrainSamples { get; }

    /// <summary>Indices of the held-out samples in the dataset.</summary>
    public IReadOnlyList<int> HeldOutSamples { get; }

    /// <summary>Fresh gates for <paramref name="data"/>, initialised from the seed.</summary>
    /// <exception cref="ArgumentException">The options are out of range, or no sample is left for training.</exception>
    public GateTrainer(GateDataset data, GateTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _data = data;
        Options = options;
        _inputs = 2 * data.ModelDim;
        int k = data.Layers.Count, h = options.Hidden;
        (TrainSamples, HeldOutSamples) = Split(data.Count, options.ValFraction, options.Seed);
        if (TrainSamples.Count == 0) throw new ArgumentException($"no training samples: {data.Count} sample(s), {HeldOutSamples.Count} held out");
        StepsPerEpoch = (TrainSamples.Count + options.BatchSize - 1) / options.BatchSize;
        _w1 = new float[k][]; _w2 = new float[k][]; _m1 = new float[k][]; _v1 = new float[k][]; _m2 = new float[k][]; _v2 = new float[k][];
        _adamSteps = new long[k];
        for (int g = 0; g < k; g++)
        {
            _w1[g] = Uniform(h * _inputs, 1 / Math.Sqrt(_inputs), Rng.For(options.Seed, Purpose.Init, (ulong)data.Layers[g], 1));
            _w2[g] = Uniform(2 * h, 1 / Math.Sqrt(h), Rng.For(options.Seed, Purpose.Init, (ulong)data.Layers[g], 2));
            _m1[g] = new float[h * _inputs]; _v1[g] = new float[h * _inputs];
            _m2[g] = new float[2 * h]; _v2[g] = new float[2 * h];
        }
    }

    private static float[] Uniform(int n, double bound, Rng rng)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
        return a;
    }

    private static (int[] Train, int[] HeldOut) Split(int n, double fraction, ulong seed)
    {
        var order = Enumerable.Range(0, n).ToArray();
        Rng.For(seed, Purpose.Split).Shuffle(order);
        int held = fraction <= 0 || n < 2 ? 0 : Math.Clamp((int)Math.Round(n * fraction), 1, n - 1);
        return ([.. order[held..].Order()], [.. order[..held].Order()]);
    }

    /// <summary>The learning rate of step <paramref name="step"/> (0-based): linear warmup, then cosine decay to 0.</summary>
    public double LearningRate(int step)
    {
        int total = TotalSteps, warm = (int)Math.Ceiling(Options.WarmupFraction * total);
        if (step < warm) return Options.LearningRate * (step + 1) / warm;
        double progress = (step - warm) / (double)Math.Max(1, total - warm);
        return Options.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>The (sample, candidate-layer index) pairs of step <paramref name="step"/>.</summary>
    internal (int Sample, int LayerIndex)[] Minibatch(int step)
    {
        int epoch = step / StepsPerEpoch, slot = step % StepsPerEpoch;
        var order = TrainSamples.ToArray();
        Rng.For(Options.Seed, Purpose.Order, (ulong)epoch).Shuffle(order);
        int start = slot * Options.BatchSize, end = Math.Min(order.Length, start + Options.BatchSize);
        var pairs = new (int, int)[end - start];
        for (int i = start; i < end; i++)
            pairs[i - start] = (order[i], Rng.For(Options.Seed, Purpose.Layer, (ulong)epoch, (ulong)i).Below(_data.Layers.Count));
        return pairs;
    }

    /// <summary>Takes one minibatch step; returns its mean loss and accuracy.</summary>
    /// <exception cref="InvalidOperationException">The run is complete.</exception>
    public (double Loss, double Accuracy) TakeStep()
    {
        if (Step >= TotalSteps) throw new InvalidOperationException($"all {TotalSteps} steps are done");
        if (Step % StepsPerEpoch == 0) (_epochLoss, _epochCorrect, _epochPairs) = (0, 0, 0);
        var pairs = Minibatch(Step);
        double lr = LearningRate(Step), lossSum = 0;
        int correct = 0, h = Options.Hidden;
        _g1 ??= new double[h * _inputs];
        _g2 ??= new double[2 * h];
        foreach (var group in pairs.GroupBy(p => p.LayerIndex).OrderBy(g => g.Key))
        {
            int g = group.Key;
            var feats = group.Select(p => _data.FeatureMemory(p.Sample, g)).ToArray();
            var labels = group.Select(p => _data.Label(p.Sample, g)).ToArray();
            var (loss, right) = GateBackprop.Gradient(_w1[g], _w2[g], h, _inputs, feats, labels, 1.0 / pairs.Length, _g1, _g2);
            lossSum += loss;
            correct += right;
            long t = ++_adamSteps[g];
            var o = Options;
            GateBackprop.AdamW(_w1[g], _m1[g], _v1[g], _g1, lr, o.Beta1, o.Beta2, o.Epsilon, o.WeightDecay, t);
            GateBackprop.AdamW(_w2[g], _m2[g], _v2[g], _g2, lr, o.Beta1, o.Beta2, o.Epsilon, o.WeightDecay, t);
        }
        Step++;
        _epochLoss += lossSum;
        _epochCorrect += correct;
        _epochPairs += pairs.Length;
        return (lossSum / pairs.Length, correct / (double)pairs.Length);
    }

    /// <summary>The mean loss and accuracy over the current epoch's minibatches so far (the weights moved meanwhile).</summary>
    public (double Loss, double Accuracy) EpochRunningScores() =>
        _epochPairs == 0 ? (double.NaN, double.NaN) : (_epochLoss / _epochPairs, _epochCorrect / (double)_epochPairs);

    /// <summary>The current weights as gates (copies).</summary>
    public ExitGates Gates() => new(_data.Layers.Select((l, g) =>
        new ExitGate(l, _data.ModelDim, Options.Hidden, (float[])_w1[g].Clone(), (float[])_w2[g].Clone())));

    /// <summary>Scores the current gates on every candidate layer's pair of <paramref name="samples"/>, through ExitGate.Evaluate.</summary>
    public GateEvaluation Evaluate(IReadOnlyList<int> samples)
    {
        // The live weights, not copies: a 7B model's 31 gates of 2048 x 8192 are 2 GB.
        var gates = _data.Layers.Select((l, g) => new ExitGate(l, _data.ModelDim, Options.Hidden, _w1[g], _w2[g])).ToArray();
        int k = _data.Layers.Count, pairs = 0, right = 0;
        double loss = 0;
        var perLayer = new Dictionary<int, double>();
        for (int g = 0; g < k; g++)
        {
            int layerRight = 0;
            foreach (var s in samples)
            {
                var (stay, exit) = gates[g].Evaluate(_data.Feature(s, g));
                int y = _data.Label(s, g);
                double m = Math.Max(stay, exit), lse = m + Math.Log(Math.Exp(stay - m) + Math.Exp(exit - m));
                loss += lse - (y == 1 ? exit : stay);
                if (exit > stay == (y == 1)) layerRight++;
            }
            perLayer[_data.Layers[g]] = samples.Count == 0 ? double.NaN : layerRight / (double)samples.Count;
            right += layerRight;
            pairs += samples.Count;
        }
        return new GateEvaluation(pairs, pairs == 0 ? double.NaN : loss / pairs, pairs == 0 ? double.NaN : right / (double)pairs, perLayer);
    }

    /// <summary>
    /// Trains to the end: steps, logs each step and epoch to <paramref name="log"/>, checkpoints to
    /// <paramref name="checkpointPath"/> every CheckpointEvery steps and at the end, and reports through
    /// <paramref name="progress"/>. Cancellation stops between steps; the last checkpoint stays valid.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancel"/> was signalled.</exception>
    public GateTrainingResult Run(string? checkpointPath = null, GateTrainingLog? log = null, Action<GateTrainingProgress>? progress = null,
        CancellationToken cancel = default)
    {
        while (Step < TotalSteps)
        {
            cancel.ThrowIfCancellationRequested();
            double lr = LearningRate(Step);
            var (loss, acc) = TakeStep();
            int epoch = (Step - 1) / StepsPerEpoch + 1;
            log?.Write(new JsonObject { ["kind"] = "step", ["step"] = Step, ["epoch"] = epoch, ["lr"] = lr, ["loss"] = loss, ["accuracy"] = acc });
            GateEvaluation? heldOut = null;
            if (Step % StepsPerEpoch == 0)
            {
                var (trainLoss, trainAcc) = EpochRunningScores();
                heldOut = HeldOutSamples.Count > 0 ? Evaluate(HeldOutSamples) : null;
                var line = new JsonObject
                {
                    ["kind"] = "epoch", ["step"] = Step, ["epoch"] = epoch, ["train_loss"] = trainLoss, ["train_accuracy"] = trainAcc,
                    ["heldout_loss"] = heldOut?.Loss, ["heldout_accuracy"] = heldOut?.Accuracy,
                };
                if (heldOut is not null)
                    line["heldout_accuracy_per_layer"] = new JsonObject(heldOut.AccuracyPerLayer.Select(kv =>
                        KeyValuePair.Create(kv.Key.ToString(CultureInfo.InvariantCulture), (JsonNode?)kv.Value)));
                log?.Write(line);
            }
            if (checkpointPath is not null && (Step == TotalSteps || Options.CheckpointEvery > 0 && Step % Options.CheckpointEvery == 0))
                SaveCheckpoint(checkpointPath);
            progress?.Invoke(new GateTrainingProgress(Step, TotalSteps, epoch, loss, acc, heldOut));
        }
        return new GateTrainingResult(Gates(), Step, Evaluate(TrainSamples), HeldOutSamples.Count > 0 ? Evaluate(HeldOutSamples) : null);
    }

    // ---------------------------------------------------------------- checkpoints

    /// <summary>Writes the whole training state as safetensors (float32 tensors, the rest in the metadata); the file is replaced only once complete.</summary>
    public void SaveCheckpoint(string path)
    {
        var specs = new List<TensorSpec>();
        var arrays = new Dictionary<string, float[]>();
        for (int g = 0; g < _data.Layers.Count; g++)
        {
            int l = _data.Layers[g];
            void Add(string name, float[] a, params int[] shape)
            {
                specs.Add(new TensorSpec(name, DType.F32, shape));
                arrays[name] = a;
            }
            Add($"gate{l}.w1", _w1[g], Options.Hidden, _inputs);
            Add($"gate{l}.w1.adam_m", _m1[g], Options.Hidden, _inputs);
            Add($"gate{l}.w1.adam_v", _v1[g], Options.Hidden, _inputs);
            Add($"gate{l}.w2", _w2[g], 2, Options.Hidden);
            Add($"gate{l}.w2.adam_m", _m2[g], 2, Options.Hidden);
            Add($"gate{l}.w2.adam_v", _v2[g], 2, Options.Hidden);
        }
        var metadata = new Dictionary<string, string>
        {
            ["format"] = CheckpointFormat,
            ["options"] = Options.ToJson().ToJsonString(),
            ["dataset"] = _data.Fingerprint,
            ["layers"] = string.Join(",", _data.Layers),
            ["step"] = Step.ToString(CultureInfo.InvariantCulture),
            ["adam_steps"] = string.Join(",", _adamSteps),
            ["rng"] = $"splitmix64 counter streams keyed by seed {Options.Seed}; position = step",
            ["epoch_sums"] = string.Join(",", _epochLoss.ToString("R", CultureInfo.InvariantCulture), _epochCorrect, _epochPairs),
        };
        SafetensorsWriter.Write(path, specs, (spec, stream) => stream.Write(MemoryMarshal.AsBytes(arrays[spec.Name].AsSpan())), metadata);
    }

    /// <summary>
    /// Restores the state saved by <see cref="SaveCheckpoint"/>. The checkpoint must come from a run over the
    /// same dataset (fingerprint and layers) with the same options (CheckpointEvery aside).
    /// </summary>
    /// <exception cref="InvalidInputException">The file is not a gate checkpoint, or it was made for other data or options.</exception>
    public static GateTrainer Resume(GateDataset data, GateTrainingOptions options, string checkpointPath)
    {
        CheckResumable(checkpointPath, data.Fingerprint, options);
        using var st = SafetensorsFile.Open(checkpointPath);
        var m = st.Metadata;
        var name = Path.GetFileName(checkpointPath);
        if (m.GetValueOrDefault("layers") != string.Join(",", data.Layers))
            throw new InvalidInputException($"{name} has gates for layers {m.GetValueOrDefault("layers")}, the features are for {string.Join(",", data.Layers)}");
        var t = new GateTrainer(data, options) { Step = int.Parse(m["step"], CultureInfo.InvariantCulture) };
        var steps = m["adam_steps"].Split(',');
        var sums = m["epoch_sums"].Split(',');
        t._epochLoss = double.Parse(sums[0], CultureInfo.InvariantCulture);
        t._epochCorrect = int.Parse(sums[1], CultureInfo.InvariantCulture);
        t._epochPairs = int.Parse(sums[2], CultureInfo.InvariantCulture);
        for (int g = 0; g < data.Layers.Count; g++)
        {
            int l = data.Layers[g];
            t._adamSteps[g] = long.Parse(steps[g], CultureInfo.InvariantCulture);
            void Read(string tensor, float[] into)
            {
                var w = st.GetWeight(tensor);
                if (w.ElementCount != into.Length) throw new InvalidInputException($"{name}: {tensor} holds {w.ElementCount} values, expected {into.Length}");
                w.RowsToFloat(0, into);
            }
            Read($"gate{l}.w1", t._w1[g]); Read($"gate{l}.w1.adam_m", t._m1[g]); Read($"gate{l}.w1.adam_v", t._v1[g]);
            Read($"gate{l}.w2", t._w2[g]); Read($"gate{l}.w2.adam_m", t._m2[g]); Read($"gate{l}.w2.adam_v", t._v2[g]);
        }
        if (t.Step > t.TotalSteps) throw new InvalidInputException($"{name} is at step {t.Step}, past the run's {t.TotalSteps} steps");
        return t;
    }

    /// <summary>
    /// Checks, without loading any weights, that <paramref name="checkpointPath"/> can continue a run over the
    /// dataset with fingerprint <paramref name="datasetFingerprint"/> and <paramref name="options"/>, so that a
    /// mismatch is reported before any features are computed.
    /// </summary>
    /// <exception cref="InvalidInputException">No checkpoint there, not a gate checkpoint, other features, or other options.</exception>
    public static void CheckResumable(string checkpointPath, string datasetFingerprint, GateTrainingOptions options)
    {
        if (!File.Exists(checkpointPath)) throw new InvalidInputException($"no checkpoint to resume from at {checkpointPath}");
        var name = Path.GetFileName(checkpointPath);
        using var st = SafetensorsFile.Open(checkpointPath);
        var m = st.Metadata;
        if (m.GetValueOrDefault("format") != CheckpointFormat || !m.ContainsKey("options")) throw new InvalidInputException($"{name} is not a gate-training checkpoint");
        if (m.GetValueOrDefault("dataset") != datasetFingerprint)
            throw new InvalidInputException($"{name} was trained on other features (the data, the model, the layers or the prompt options changed since)");
        var saved = JsonNode.Parse(m["options"]) as JsonObject ?? throw new InvalidInputException($"{name}: unreadable options");
        var asked = options.ToJson();
        foreach (var (key, value) in saved)
            if (value?.ToJsonString() != asked[key]?.ToJsonString())
                throw new InvalidInputException($"{name} was made with {key} = {value?.ToJsonString()}, this run asks for {asked[key]?.ToJsonString()}: a resumed run keeps its options");
    }

    // ---------------------------------------------------------------- randomness

    private enum Purpose : ulong { Init = 1, Split = 2, Order = 3, Layer = 4 }

    /// <summary>SplitMix64 (Steele, Lea, Flood 2014) keyed by a tuple: independent, reproducible streams.</summary>
    private struct Rng
    {
        private ulong _state;

        public static Rng For(ulong seed, Purpose purpose, ulong a = 0, ulong b = 0)
        {
            ulong s = Mix(seed + 0x9E3779B97F4A7C15UL);
            s = Mix(s ^ (ulong)purpose);
            s = Mix(s ^ Mix(a + 0x632BE59BD9B4E019UL));
            s = Mix(s ^ Mix(b + 0x8CB92BA72F3D8DD7UL));
            return new Rng { _state = s };
        }

        private static ulong Mix(ulong z)
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        public ulong Next() => Mix(_state += 0x9E3779B97F4A7C15UL);

        /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
        public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

        /// <summary>Uniform in [0, n) (Lemire's multiply-high; the bias is below n / 2^64).</summary>
        public int Below(int n) => (int)Math.BigMul(Next(), (ulong)n, out _);

        public void Shuffle(int[] a)
        {
            for (int i = a.Length - 1; i > 0; i--)
            {
                int j = Below(i + 1);
                (a[i], a[j]) = (a[j], a[i]);
            }
        }
    }
}

/// <summary>
/// The JSONL loss/accuracy log of a training run, one object a line, flushed as written. A resumed run
/// keeps the lines up to the checkpoint's step and drops later ones (they belong to steps that will run again).
/// </summary>
public sealed class GateTrainingLog : IDisposable
{
    private readonly StreamWriter _w;

    private GateTrainingLog(StreamWriter w) => _w = w;

    /// <summary>Starts a log: empty for a new run, or the lines of steps up to <paramref name="resumeStep"/> for a resumed one.</summary>
    public static GateTrainingLog Open(string path, int? resumeStep)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var kept = new List<string>();
        if (resumeStep is int step && File.Exists(full))
            foreach (var line in File.ReadLines(full))
            {
                try
                {
                    if (JsonNode.Parse(line)?["step"]?.GetValue<int>() is int s && s <= step) kept.Add(line);
                }
                catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
                {
                    // A line cut short by an interruption: dropped.
                }
            }
        var tmp = full + ".tmp";
        File.WriteAllLines(tmp, kept);
        File.Move(tmp, full, overwrite: true);
        return new GateTrainingLog(new StreamWriter(new FileStream(full, FileMode.Append, FileAccess.Write, FileShare.Read)) { NewLine = "\n" });
    }

    /// <summary>Appends one line.</summary>
    public void Write(JsonObject line)
    {
        _w.WriteLine(line.ToJsonString());
        _w.Flush();
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _w.Dispose();
}
