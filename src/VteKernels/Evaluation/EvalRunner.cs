// Answers evaluation questions under several settings of the methods. A question's image is decoded and
// preprocessed and its prompt tokenized once; each setting then runs on its own session (created once per
// setting, reset between questions), so a setting's answer is what a run of that setting alone gives.
// Generation is greedy up to MaxNewTokens or the end-of-sequence token; the answer text is the decoded
// tokens without special tokens, stripped (LLaVA's batch_decode(skip_special_tokens=True).strip()).
//
// Per answer it measures: time to first token (prefill + argmax; the shared image decode excluded), decode
// tokens/s, multiply-adds of the prefill (the engine's report) and of the decode steps (Cost's formulas over
// each layer's cache length: an exit leaves later layers shorter caches, EAS-skipped layers run only their
// FFN), each beside the full model's count for the same tokens, and the KV bytes held after the prefill
// and at the end. PIA adapter products in decode steps are not counted (2·d·H per adapted layer and token).
using System.Diagnostics;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Imaging;
using VteKernels.Text;

namespace VteKernels.Evaluation;

/// <summary>How an evaluation prompts and generates.</summary>
public sealed record EvalOptions
{
    /// <summary>Prompt format (default LLaVA's eval conv mode, vicuna_v1).</summary>
    public PromptStyle PromptStyle { get; init; } = PromptStyle.VicunaV1;

    /// <summary>Pad images to a square of the mean colour first (LLaVA-1.5's image_aspect_ratio "pad"; default).</summary>
    public bool PadToSquare { get; init; } = true;

    /// <summary>Most tokens generated per answer (LLaVA's model_vqa_loader default: 128).</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>What an exit does with the early layers' visual K/V.</summary>
    public ExitKvMode ExitKvMode { get; init; } = ExitKvMode.KeepEarly;

    /// <summary>Force one metric for every question (null: chosen per question, see <see cref="VqaScoring.AutoMetric"/>).</summary>
    public ScoreMetric? Metric { get; init; }
}

/// <summary>One question answered under one setting.</summary>
public sealed record EvalAnswer
{
    /// <summary>The setting's name.</summary>
    public required string Setting { get; init; }

    /// <summary>The answer text (special tokens skipped, stripped).</summary>
    public required string Text { get; init; }

    /// <summary>Generated token ids, the stop token included when one came.</summary>
    public required int[] TokenIds { get; init; }

    /// <summary>Argmax of the prefill's last row (the first generated token).</summary>
    public required int FirstToken { get; init; }

    /// <summary>FNV-1a 64 of the prefill's last-row logits (their float32 bits), hex: equal iff bit-identical (up to hash collisions).</summary>
    public required string PrefillLogitsHash { get; init; }

    /// <summary>Prompt length in tokens (image tokens included).</summary>
    public required int PromptTokens { get; init; }

    /// <summary>Decoder layers that saw the visual tokens when an exit fired; null when none fired.</summary>
    public int? ExitLayer { get; init; }

    /// <summary>Decoder depth.</summary>
    public required int Layers { get; init; }

    /// <summary>Prefill multiply-adds executed.</summary>
    public required long PrefillMacs { get; init; }

    /// <summary>Prefill multiply-adds of the full model on the same prompt.</summary>
    public required long PrefillMacsFull { get; init; }

    /// <summary>Multiply-adds of the decode steps executed.</summary>
    public required long DecodeMacs { get; init; }

    /// <summary>Multiply-adds the full model spends on the same decode steps.</summary>
    public required long DecodeMacsFull { get; init; }

    /// <summary>KV-cache bytes held after the prefill.</summary>
    public required long KvBytes { get; init; }

    /// <summary>KV-cache bytes held after the last token.</summary>
    public required long KvBytesEnd { get; init; }

    /// <summary>Time to the first token (prefill and argmax), milliseconds.</summary>
    public required double TimeToFirstTokenMs { get; init; }

    /// <summary>Decode tokens per second after the first; null with fewer than two tokens.</summary>
    public double? DecodeTokensPerSecond { get; init; }

    /// <summary>Generation time (prefill and decode), milliseconds.</summary>
    public required double TimeMs { get; init; }

    /// <summary>How the answer was scored.</summary>
    public required ScoreMetric Metric { get; init; }

    /// <summary>The score in [0, 1]; null when unscored.</summary>
    public double? Score { get; init; }
}

/// <summary>Runs questions under a list of settings on one model.</summary>
public sealed class EvalRunner : IDisposable
{
    private readonly LlavaModel _model;
    private readonly Tokenizer _tokenizer;
    private readonly string _modelDir;
    private readonly InferenceSession[] _sessions;
    private readonly int[] _stops;
    private readonly ClipOptions _preprocessing;

    /// <summary>Creates one session per setting.</summary>
    /// <exception cref="ModelFormatException">A setting's EAS configuration does not fit the model.</exception>
    /// <exception cref="ArgumentException">No settings, or a non-positive token limit.</exception>
    public EvalRunner(LlavaModel model, Tokenizer tokenizer, string modelDir, IReadOnlyList<EvalSetting> settings, EvalOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(options);
        if (settings.Count == 0) throw new ArgumentException("no settings to run", nameof(settings));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxNewTokens, 1);
        _model = model;
        _tokenizer = tokenizer;
        _modelDir = modelDir;
        Settings = settings;
        Options = options;
        _sessions = new InferenceSession[settings.Count];
        try
        {
            for (int i = 0; i < settings.Count; i++) _sessions[i] = model.CreateSession(settings[i].Session);
        }
        catch
        {
            Dispose();
            throw;
        }
        var cfg = model.Config;
        _stops = cfg.Text.EosTokenId is int eos ? [eos] : [.. tokenizer.EosIds];
        _preprocessing = MultimodalPrompt.PreprocessingFor(modelDir, cfg, options.PadToSquare);
    }

    /// <summary>The settings, in run order.</summary>
    public IReadOnlyList<EvalSetting> Settings { get; }

    /// <summary>The options.</summary>
    public EvalOptions Options { get; }

    /// <summary>
    /// The question's prompt: its image (from <paramref name="imagesDir"/> unless absolute) decoded and
    /// preprocessed, and the text rendered and tokenized. Shared by every setting.
    /// </summary>
    /// <exception cref="InvalidInputException">The image is missing or does not preprocess to the tower's size, or the prompt is invalid.</exception>
    /// <exception cref="ImageFormatException">The image cannot be decoded.</exception>
    public PromptInput BuildPrompt(VqaQuestion question, string imagesDir)
    {
        ArgumentNullException.ThrowIfNull(question);
        var images = new List<ImageInput>();
        if (question.Image is string file)
        {
            var path = ImagePath(question, imagesDir);
            if (!File.Exists(path)) throw new InvalidInputException($"question {question.Key}: image '{file}' does not exist ({path})");
            images.Add(MultimodalPrompt.LoadImage(path, _preprocessing, _model.Config));
        }
        var (text, special) = MultimodalPrompt.Render(Options.PromptStyle, _tokenizer, [(question.Text, null)], images.Count, _modelDir);
        return MultimodalPrompt.Build(_model.Config, _tokenizer, text, images, special);
    }

    /// <summary>Where a question's image lies: its path relative to <paramref name="imagesDir"/>, or absolute.</summary>
    public static string ImagePath(VqaQuestion question, string imagesDir) =>
        question.Image is null ? throw new ArgumentException("the question has no image", nameof(question))
            : Path.IsPathRooted(question.Image) ? question.Image : Path.GetFullPath(Path.Combine(imagesDir, question.Image));

    /// <summary>Answers <paramref name="question"/> (with its prompt from <see cref="BuildPrompt"/>) under setting <paramref name="setting"/>.</summary>
    /// <exception cref="InvalidInputException">The prompt does not fit the model or the setting (for example NAAViT with the image last).</exception>
    /// <exception cref="OperationCanceledException">Cancelled (checked between the prefill's layers and between tokens).</exception>
    public EvalAnswer Answer(VqaQuestion question, PromptInput prompt, int setting, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(question);
        ArgumentNullException.ThrowIfNull(prompt);
        cancellationToken.ThrowIfCancellationRequested();
        var s = Settings[setting];
        var session = _sessions[setting];
        var t = _model.Config.Text;
        session.Reset();
        var clock = Stopwatch.StartNew();
        var prefill = session.Prefill(prompt, s.PrefillOptions(Options.ExitKvMode) with { CancellationToken = cancellationToken });
        int next = Sampler.ArgMax(prefill.Logits.Last);
        var ttft = clock.Elapsed;
        var report = prefill.Report!;
        var ids = new List<int> { next };
        long decodeMacs = 0, decodeFull = 0;
        while (!_stops.Contains(next) && ids.Count < Options.MaxNewTokens)
        {
            cancellationToken.ThrowIfCancellationRequested();
            for (int l = 0; l < t.NumLayers; l++)
            {
                long full = prompt.TokenIds.Length + ids.Count - 1;   // keys the full model holds before this token
                decodeFull += Cost.DecoderLayer(t, 1, full);
                decodeMacs += s.Session.Eas?.Skips(l) == true ? Cost.Ffn(t, 1) : Cost.DecoderLayer(t, 1, session.Cache.Length(l));
            }
            decodeFull += Cost.Head(t, 1);
            decodeMacs += Cost.Head(t, 1);
            next = Sampler.ArgMax(session.Decode(next).Logits.Last);
            ids.Add(next);
        }
        var total = clock.Elapsed;
        var answerIds = ids.Where(id => !_stops.Contains(id)).ToArray();
        var text = VqaScoring.PythonStrip(_tokenizer.Decode(answerIds, skipSpecialTokens: true));
        var metric = Options.Metric ?? VqaScoring.AutoMetric(question.Text, question.Answer, question.Answers);
        long kvEnd = Enumerable.Range(0, t.NumLayers).Sum(l => (long)session.Cache.Length(l)) * t.KvDim * 2 * session.Cache.ElementBytes;
        return new EvalAnswer
        {
            Setting = s.Name, Text = text, TokenIds = [.. ids], FirstToken = ids[0], PrefillLogitsHash = Fnv1a(prefill.Logits.Last),
            PromptTokens = prompt.TokenIds.Length, ExitLayer = report.ExitLayer, Layers = t.NumLayers,
            PrefillMacs = report.Executed.Total, PrefillMacsFull = report.Full.Total, DecodeMacs = decodeMacs, DecodeMacsFull = decodeFull,
            KvBytes = report.KvBytes, KvBytesEnd = kvEnd, TimeToFirstTokenMs = ttft.TotalMilliseconds,
            DecodeTokensPerSecond = ids.Count > 1 ? (ids.Count - 1) / (total - ttft).TotalSeconds : null,
            TimeMs = total.TotalMilliseconds, Metric = metric, Score = VqaScoring.Score(metric, text, question.Answer, question.Answers),
        };
    }

    /// <summary>FNV-1a 64 over the float32 bit patterns, as 16 hex digits.</summary>
    internal static string Fnv1a(ReadOnlySpan<float> values)
    {
        ulong h = 14695981039346656037UL;
        foreach (var v in values)
        {
            uint bits = BitConverter.SingleToUInt32Bits(v);
            for (int b = 0; b < 4; b++)
            {
                h ^= (bits >> (8 * b)) & 0xFF;
                h *= 1099511628211UL;
            }
        }
        return h.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Frees the sessions.</summary>
    public void Dispose()
    {
        foreach (var s in _sessions) s?.Dispose();
    }
}
