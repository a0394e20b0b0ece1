// Features and labels of DyVTE's gate training, computed once: the model is frozen while the gates train,
// so every (sample, layer) pair's gate input and label is a constant. Per sample:
//   1. the prompt is built as `vte generate` builds it (same prompt styles, image preprocessing, BOS), and the
//      answer's tokens are appended: tokenizer.Encode(answer) without special tokens (a SentencePiece
//      tokenizer puts its "▁" in front, which is how "ASSISTANT: answer" tokenizes as one text), then the
//      EOS token unless told not to, since LLaVA's training targets end with "</s>" and an exit that loses
//      the end of the answer is not harmless;
//   2. one full prefill over prompt + answer with all logits and hidden states gives, for every candidate
//      layer l, the gate input after layer l over the PROMPT rows only (attention is causal, so those rows
//      equal a prompt-only run; ExitGates.Feature forms it exactly as the engine's gate does) and the full
//      model's answer logits (row P + i - 1 predicts answer token i for a prompt of P tokens);
//   3. for each candidate layer l, the exit branch FixedLayerExit(l + 1) (visual keys masked from layer l + 1
//      on) over prompt + answer gives the branch's answer logits, and GateLabels scores the pair.
// That is 1 + |layers| prefills per sample (the branches recompute layers 0..l; the engine offers no way
// to fork a prefill at a layer). A text-only sample has no visual keys to mask: every branch is the full
// model and every label is 1, as the rule gives, without running the branches. A sample whose prompt has
// no text between the last image and the last prompt token has no gate input (the engine's gate never
// decides there) and is skipped with its reason.
//
// The result is cached in a safetensors file (one [layers, 2d] tensor per sample, labels [n, layers],
// scores [n, layers, 3]) keyed by a fingerprint of the data file, the images' sizes and times, the model's
// config, tokenizer and weight files, and these options; a run that finds a cache with the same fingerprint
// reads it instead of running the model. Size: n · layers · 2d · 4 bytes (1,000 samples on a 7B model with
// 31 candidate layers: 1.0 GB).
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Formats;
using VteKernels.Text;

namespace VteKernels.Engine.Exit;

/// <summary>How gate-training samples become prompts, and which layers get gates.</summary>
public sealed record GateDataOptions
{
    /// <summary>llava, vicuna, template or raw (the question as given, "&lt;image&gt;" where the image goes), as `vte generate --prompt-style` takes them.</summary>
    public string PromptStyle { get; init; } = "llava";

    /// <summary>Pad images to a square of the mean colour before CLIP preprocessing (LLaVA-1.5's "pad" image mode).</summary>
    public bool PadToSquare { get; init; }

    /// <summary>Append the EOS token to each answer (LLaVA's training targets end with it).</summary>
    public bool AppendEos { get; init; } = true;

    /// <summary>Decoder layers that get a gate (0-based; the gate of layer l decides after layer l). Null: every layer but the last.</summary>
    public IReadOnlyList<int>? Layers { get; init; }

    /// <summary>The candidate layers for a model with <paramref name="numLayers"/> decoder layers, checked.</summary>
    /// <exception cref="InvalidInputException">A layer is outside 0..numLayers - 2 (after the last layer there is nothing left to skip), or the list is empty.</exception>
    public int[] ResolveLayers(int numLayers)
    {
        if (numLayers < 2) throw new InvalidInputException($"the model has {numLayers} decoder layer(s); gates need at least 2");
        var layers = (Layers ?? Enumerable.Range(0, numLayers - 1).ToArray()).Distinct().Order().ToArray();
        if (layers.Length == 0) throw new InvalidInputException("no gate layers given");
        foreach (var l in layers)
            if (l < 0 || l > numLayers - 2)
                throw new InvalidInputException($"gate layer {l} is outside 0..{numLayers - 2}: gates decide after layers 0..{numLayers - 2} of {numLayers} (after the last layer there is nothing left to skip)");
        return layers;
    }
}

/// <summary>A sample that produced no training pair, and why.</summary>
public sealed record SkippedSample(int Line, string Reason);

/// <summary>Precomputed gate inputs and labels for every (sample, candidate layer) pair.</summary>
public sealed class GateDataset
{
    private const string Format = "vte-gate-features";
    private const int Version = 1;
    private readonly float[][] _features;
    private readonly byte[] _labels;
    private readonly float[] _scores;

    /// <summary>The candidate layers, ascending; layer index k in the accessors means Layers[k].</summary>
    public IReadOnlyList<int> Layers { get; }

    /// <summary>The model's hidden size d (gate inputs have 2d values).</summary>
    public int ModelDim { get; }

    /// <summary>Number of samples with features.</summary>
    public int Count => _features.Length;

    /// <summary>The data file's line number of each sample.</summary>
    public IReadOnlyList<int> Lines { get; }

    /// <summary>Samples that produced no pair.</summary>
    public IReadOnlyList<SkippedSample> Skipped { get; }

    /// <summary>What the cache is keyed by (see <see cref="ComputeFingerprint"/>).</summary>
    public string Fingerprint { get; }

    private GateDataset(IReadOnlyList<int> layers, int modelDim, float[][] features, byte[] labels, float[] scores,
        IReadOnlyList<int> lines, IReadOnlyList<SkippedSample> skipped, string fingerprint)
    {
        Layers = layers;
        ModelDim = modelDim;
        _features = features;
        _labels = labels;
        _scores = scores;
        Lines = lines;
        Skipped = skipped;
        Fingerprint = fingerprint;
    }

    /// <summary>The gate input of <paramref name="sample"/> after layer Layers[<paramref name="layerIndex"/>] (2d values).</summary>
    public ReadOnlySpan<float> Feature(int sample, int layerIndex) => _features[sample].AsSpan(layerIndex * 2 * ModelDim, 2 * ModelDim);

    internal ReadOnlyMemory<float> FeatureMemory(int sample, int layerIndex) => _features[sample].AsMemory(layerIndex * 2 * ModelDim, 2 * ModelDim);

    /// <summary>The label of the pair: 1 when the exit branch keeps the answer (exit here), else 0.</summary>
    public int Label(int sample, int layerIndex) => _labels[sample * Layers.Count + layerIndex];

    /// <summary>The label rule's measurements for the pair.</summary>
    public ExitBranchScore Score(int sample, int layerIndex)
    {
        int i = (sample * Layers.Count + layerIndex) * 3;
        return new ExitBranchScore(_scores[i], _scores[i + 1], _scores[i + 2]);
    }

    /// <summary>Pairs labelled 1 at each candidate layer.</summary>
    public int[] PositivesPerLayer()
    {
        var n = new int[Layers.Count];
        for (int s = 0; s < Count; s++)
            for (int k = 0; k < Layers.Count; k++) n[k] += Label(s, k);
        return n;
    }

    /// <summary>
    /// The prompt of one question as `vte generate` builds it: rendered in <paramref name="style"/> (raw: the
    /// text as given) with the images in the first user turn, tokenized, image placeholders expanded.
    /// </summary>
    /// <exception cref="InvalidInputException">Unknown style, no chat template for the template style, or placeholders that do not match the images.</exception>
    public static PromptInput BuildPrompt(Models.LlavaConfig config, Tokenizer tokenizer, string? modelDir, string style, string question, IReadOnlyList<ImageInput> images)
    {
        var (text, special) = style == "raw" ? (question, true)
            : MultimodalPrompt.Render(PromptFormat.ParseStyle(style), tokenizer, [(question, null)], images.Count, modelDir);
        return MultimodalPrompt.Build(config, tokenizer, text, images, special);
    }

    /// <summary>The answer's token ids: the text without special tokens, then EOS when <paramref name="appendEos"/> and the model has one.</summary>
    public static int[] AnswerTokens(Models.LlavaConfig config, Tokenizer tokenizer, string answer, bool appendEos)
    {
        var ids = tokenizer.Encode(answer, addSpecialTokens: false);
        int? eos = config.Text.EosTokenId ?? (tokenizer.EosIds.Count > 0 ? tokenizer.EosIds[0] : null);
        return appendEos && eos is int e ? [.. ids, e] : ids;
    }

    /// <summary>
    /// Runs the model over every sample (see the file's header) and collects features and labels.
    /// <paramref name="progress"/> receives samples done and the total after each sample.
    /// </summary>
    /// <exception cref="InvalidInputException">A sample cannot be built or run (bad image, prompt too long, placeholders); the message starts with the sample's line.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancel"/> was signalled.</exception>
    public static GateDataset Build(LlavaModel model, Tokenizer tokenizer, string? modelDir, IReadOnlyList<GateSample> samples,
        GateDataOptions options, string fingerprint = "", Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        var cfg = model.Config;
        int d = cfg.Text.HiddenSize, vocab = cfg.Text.VocabSize;
        var layers = options.ResolveLayers(cfg.Text.NumLayers);
        var preprocessor = modelDir is null ? null : MultimodalPrompt.PreprocessorFor(modelDir, cfg, options.PadToSquare);   // the model family's
        var features = new List<float[]>();
        var labels = new List<byte>();
        var scores = new List<float>();
        var lines = new List<int>();
        var skipped = new List<SkippedSample>();
        using var session = model.CreateSession();
        for (int si = 0; si < samples.Count; si++)
        {
            cancel.ThrowIfCancellationRequested();
            var sample = samples[si];
            try
            {
                var images = new List<ImageInput>();
                if (sample.ImagePath is string path)
                {
                    if (preprocessor is null) throw new InvalidInputException("image samples need the model directory (for its preprocessor_config.json)");
                    images.Add(MultimodalPrompt.LoadImage(path, preprocessor));
                }
                var prompt = BuildPrompt(cfg, tokenizer, modelDir, options.PromptStyle, sample.Question, images);
                var answer = AnswerTokens(cfg, tokenizer, sample.Answer, options.AppendEos);
                if (answer.Length == 0) throw new InvalidInputException("the answer has no tokens");
                int p = prompt.TokenIds.Length, a = answer.Length;
                var spans = prompt.FindImageSpans(cfg);
                var input = new PromptInput([.. prompt.TokenIds, .. answer], prompt.Images);

                session.Reset();
                var full = session.Prefill(input, new PrefillOptions { AllLogits = true, OutputHiddenStates = true });
                var hidden = full.HiddenStates!;
                var sampleFeatures = new float[layers.Length * 2 * d];
                string? skip = null;
                for (int k = 0; k < layers.Length && skip is null; k++)
                {
                    if (ExitGates.Feature(hidden[layers[k] + 1], p, d, spans) is { } f) f.CopyTo(sampleFeatures, k * 2 * d);
                    else skip = "no text between the last image and the last prompt token (the gate input is undefined there)";
                }
                if (skip is not null)
                {
                    skipped.Add(new SkippedSample(sample.Line, skip));
                    continue;
                }
                var fullAnswer = full.Logits.Values.AsSpan((p - 1) * vocab, a * vocab);
                foreach (var l in layers)
                {
                    ExitBranchScore score;
                    if (spans.Count == 0) score = GateLabels.Score(fullAnswer, fullAnswer, answer, vocab);
                    else
                    {
                        cancel.ThrowIfCancellationRequested();
                        session.Reset();
                        var branch = session.Prefill(input, new PrefillOptions { AllLogits = true, Exit = ExitPolicy.AtLayer(l + 1) });
                        score = GateLabels.Score(fullAnswer, AnswerRows(branch, p, a, vocab), answer, vocab);
                    }
                    labels.Add(score.KeepsAnswer ? (byte)1 : (byte)0);
                    scores.AddRange([(float)score.ArgmaxAgreement, (float)score.FullLoss, (float)score.ExitLoss]);
                }
                features.Add(sampleFeatures);
                lines.Add(sample.Line);
            }
            catch (VteException e) when (e is InvalidInputException or ImageFormatException)
            {
                throw new InvalidInputException($"line {sample.Line}: {e.Message}");
            }
            finally
            {
                progress?.Invoke(si + 1, samples.Count);
            }
        }
        if (features.Count == 0)
            throw new InvalidInputException($"no usable samples: all {samples.Count} were skipped ({skipped[0].Reason})");
        return new GateDataset(layers, d, [.. features], [.. labels], [.. scores], lines, skipped, fingerprint);
    }

    /// <summary>The branch's logits rows that predict the answer tokens: those of prompt positions p - 1 .. p + a - 2.</summary>
    private static ReadOnlySpan<float> AnswerRows(StepResult branch, int p, int a, int vocab)
    {
        // The visual rows all lie before the last prompt token, so these are the a rows before the last one.
        int first = branch.Rows.Count - a - 1;
        for (int i = 0; i < a; i++)
            if (branch.Rows[first + i] != p - 1 + i)
                throw new InvalidOperationException($"exit branch row {first + i} is prompt position {branch.Rows[first + i]}, expected {p - 1 + i}");
        return branch.Logits.Values.AsSpan(first * vocab, a * vocab);
    }

    // ---------------------------------------------------------------- cache

    /// <summary>
    /// A key for the cache: SHA-256 over the data file's bytes, each image's path, size and write time, the
    /// model directory's small files (config, tokenizer, templates, preprocessor config) and its weight files'
    /// names, sizes and write times, and the options.
    /// </summary>
    public static string ComputeFingerprint(string modelDir, string dataPath, IReadOnlyList<GateSample> samples, GateDataOptions options, int numLayers)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Text(string s) { h.AppendData(Encoding.UTF8.GetBytes(s)); h.AppendData([0]); }
        void Stat(string path)
        {
            var info = new FileInfo(path);
            Text(Path.GetFileName(path));
            Text(info.Length.ToString(CultureInfo.InvariantCulture));
            Text(info.LastWriteTimeUtc.Ticks.ToString(CultureInfo.InvariantCulture));
        }
        Text($"{Format} v{Version}");
        h.AppendData(File.ReadAllBytes(dataPath));
        foreach (var s in samples)
            if (s.ImagePath is string img) { Text(img); Stat(img); }
        foreach (var f in Directory.GetFiles(modelDir).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(f);
            if (name.EndsWith(".safetensors", StringComparison.Ordinal)) Stat(f);
            else if (name.EndsWith(".json", StringComparison.Ordinal) || name.EndsWith(".jinja", StringComparison.Ordinal))
            {
                Text(name);
                h.AppendData(File.ReadAllBytes(f));
            }
        }
        Text(options.PromptStyle);
        Text(options.PadToSquare ? "pad" : "clip");
        Text(options.AppendEos ? "eos" : "no-eos");
        Text(string.Join(",", options.ResolveLayers(numLayers)));
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    /// <summary>Writes the dataset as safetensors (replacing <paramref name="path"/> only once complete).</summary>
    public void Save(string path)
    {
        int n = Count, k = Layers.Count;
        var specs = new List<TensorSpec>
        {
            new("labels", DType.F32, [n, k]),
            new("scores", DType.F32, [n, k, 3]),
        };
        for (int s = 0; s < n; s++) specs.Add(new TensorSpec($"sample.{s}.features", DType.F32, [k, 2 * ModelDim]));
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["version"] = Version.ToString(CultureInfo.InvariantCulture),
            ["fingerprint"] = Fingerprint,
            ["layers"] = string.Join(",", Layers),
            ["model_dim"] = ModelDim.ToString(CultureInfo.InvariantCulture),
            ["lines"] = string.Join(",", Lines),
            ["skipped"] = new JsonArray([.. Skipped.Select(s => new JsonObject { ["line"] = s.Line, ["reason"] = s.Reason })]).ToJsonString(),
        };
        SafetensorsWriter.Write(path, specs, (spec, stream) =>
        {
            if (spec.Name == "labels") stream.Write(MemoryMarshal.AsBytes(_labels.Select(b => (float)b).ToArray().AsSpan()));
            else if (spec.Name == "scores") stream.Write(MemoryMarshal.AsBytes(_scores.AsSpan()));
            else stream.Write(MemoryMarshal.AsBytes(_features[int.Parse(spec.Name.Split('.')[1], CultureInfo.InvariantCulture)].AsSpan()));
        }, metadata);
    }

    /// <summary>Reads a cache written by <see cref="Save"/>; null when the file is missing, is not such a cache, or was made for another fingerprint.</summary>
    public static GateDataset? TryLoad(string path, string fingerprint)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var st = SafetensorsFile.Open(path);
            var m = st.Metadata;
            if (m.GetValueOrDefault("format") != Format || m.GetValueOrDefault("version") != Version.ToString(CultureInfo.InvariantCulture) ||
                m.GetValueOrDefault("fingerprint") != fingerprint)
                return null;
            var layers = m["layers"].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            int d = int.Parse(m["model_dim"], CultureInfo.InvariantCulture);
            var lines = m["lines"].Length == 0 ? [] : m["lines"].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
            var skipped = (JsonNode.Parse(m["skipped"]) as JsonArray ?? throw new FormatException("skipped is not an array"))
                .Select(o => new SkippedSample(o?["line"]?.GetValue<int>() ?? throw new FormatException("a skipped sample has no line"),
                    o["reason"]?.GetValue<string>() ?? "")).ToArray();
            var labels = st.GetWeight("labels").ToFloatArray().Select(x => (byte)x).ToArray();
            var scores = st.GetWeight("scores").ToFloatArray();
            var features = Enumerable.Range(0, lines.Length).Select(s => st.GetWeight($"sample.{s}.features").ToFloatArray()).ToArray();
            if (labels.Length != lines.Length * layers.Length || features.Any(f => f.Length != layers.Length * 2 * d)) return null;
            return new GateDataset(layers, d, features, labels, scores, lines, skipped, fingerprint);
        }
        catch (Exception e) when (e is ModelFormatException or FormatException or KeyNotFoundException or JsonException or InvalidOperationException or IOException)
        {
            return null;
        }
    }
}
