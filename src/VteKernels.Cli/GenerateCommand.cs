// `vte generate`: a question and an image in, streamed text out, on a model directory or, with no --model,
// on the built-in synthetic model (the "tiny" preset, written once to the user's cache folder) and the sample
// image shipped with the tool. The prompt is rendered in LLaVA-1.5's format (or Vicuna-v1's, or the model's
// chat template), tokenized with the model's tokenizer.json, and each image is decoded and preprocessed as
// HF's CLIPImageProcessor does (or padded to a square first, as the original LLaVA-1.5 does). Research
// callers can bypass the front end with --input-ids and --pixels.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using VteKernels.Engine;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Text;

namespace VteKernels.Cli;

internal static class GenerateCommand
{
    public const string DefaultQuestion = "Describe this image.";

    /// <summary>Exit code of a run the user interrupted (Ctrl+C), as shells report SIGINT.</summary>
    public const int Interrupted = 130;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (default: the built-in synthetic tiny model)" };
        var prompt = new Option<string>("--prompt", "-p") { Description = $"The question (default: \"{DefaultQuestion}\")" };
        var images = new Option<string[]>("--image") { Description = "Image file (PNG, JPEG, BMP, PPM); repeat for several. Default: the bundled sample image", AllowMultipleArgumentsPerToken = true };
        var noImage = new Option<bool>("--no-image") { Description = "Text-only prompt" };
        var style = new Option<string>("--prompt-style") { Description = "llava (USER: <image>\\n{q} ASSISTANT:), vicuna (with the Vicuna-v1 system prompt), template (the model's chat_template) or raw (the text as given, <image> where the images go)", DefaultValueFactory = _ => "llava" };
        var imageMode = ImageModeOption();
        var ids = new Option<string>("--input-ids") { Description = "Prompt as comma-separated token ids with image placeholders expanded (or @FILE); bypasses the tokenizer" };
        var pixels = new Option<string[]>("--pixels") { Description = "Preprocessed float32 .npy [1,3,H,W] per image (with --input-ids)", AllowMultipleArgumentsPerToken = true };
        var device = new BackendOptions();
        var noMmap = NoMmapOption.Create();
        style.AcceptOnlyFromAmong("llava", "vicuna", "template", "raw");
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var gen = new GenerationCliOptions();
        var cmd = new Command("generate", "Answer a question about an image (streams the text as it comes)")
        {
            model, prompt, images, noImage, style, imageMode, ids, pixels, noMmap,
        };
        device.AddTo(cmd);
        gen.AddTo(cmd);
        exit.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction(async (p, ct) =>
        {
            var (policy, kvMode, traceFile) = exit.Read(p);
            var (naavit, sessionOptions) = methods.Read(p);
            var request = gen.Read(p);
            bool research = p.GetValue(ids) is not null;
            if (research && (p.GetValue(prompt) is not null || p.GetValue(images) is { Length: > 0 }))
                throw new UsageException("--input-ids bypasses the text and image front end: give --pixels, not --prompt or --image");
            if (!research && p.GetValue(pixels) is { Length: > 0 })
                throw new UsageException("--pixels goes with --input-ids; give images with --image");
            if (p.GetValue(noImage) && p.GetValue(images) is { Length: > 0 }) throw new UsageException("--no-image and --image exclude each other");
            var researchIds = research ? TokenIdList.Parse(p.GetValue(ids)!) : null;
            var output = new GenerationOutput(stdout, stderr, request.Json, request.Quiet);
            var progress = new CliProgress(stderr, request.Quiet);

            var dir = p.GetValue(model) ?? BuiltInModel.EnsureTiny(request.Quiet ? TextWriter.Null : stderr);
            var peek = CheckBeforeLoad(dir, methods.VisionTowerDir(p), policy, request, output);
            if (!research && !ModelTokenizer.Exists(dir)) throw new UsageException($"{dir} has no tokenizer.json or tokenizer.model: give the prompt as --input-ids");
            using var backend = device.Create(p);
            var clock = Stopwatch.StartNew();
            using var m = progress.Spin($"loading {ModelName(dir)}", () => LlavaModel.Load(dir, backend, methods.VisionTowerDir(p), NoMmapOption.Read(p, noMmap)));
            var load = clock.Elapsed;
            var cfg = m.Config;
            var tokenizer = ModelTokenizer.Exists(dir) ? Tokenizer.Load(dir) : null;

            PromptInput input;
            if (research) input = ResearchPrompt(cfg, researchIds!, p.GetValue(pixels));
            else
            {
                var files = p.GetValue(noImage) ? [] : p.GetValue(images) is { Length: > 0 } given ? given : [SampleImage.Path()];
                var options = MultimodalPrompt.PreprocessingFor(dir, cfg, pad: ImageMode(p, imageMode));
                var loaded = files.Select(f => MultimodalPrompt.LoadImage(f, options, cfg)).ToList();
                var question = p.GetValue(prompt) ?? DefaultQuestion;
                var (text, special) = p.GetValue(style) == "raw" ? (question, true)
                    : MultimodalPrompt.Render(PromptFormat.ParseStyle(p.GetValue(style)!), tokenizer!, [(question, null)], loaded.Count, dir);
                input = MultimodalPrompt.Build(cfg, tokenizer!, text, loaded, special);
            }
            var genOptions = request.For(m, new PrefillOptions { Exit = policy, ExitKvMode = kvMode, Trace = traceFile is not null, Naavit = naavit });
            genOptions = ClampToContext(genOptions, cfg, input.TokenIds.Length, 0, output);

            output.Info($"model {ModelName(dir)} on {backend.Device}; prompt {input.TokenIds.Length} tokens ({input.Images.Count} image(s)); load {load.TotalMilliseconds:F0} ms");
            if (p.GetValue(model) is null) output.Info("(the built-in synthetic model has random weights: its text is noise; give a real model with -m DIR)");
            using var session = m.CreateSession(sessionOptions);
            var result = await Stream(session, input, genOptions, tokenizer, output, progress, cfg.Text.NumLayers, ct);
            if (tokenizer is null && !request.Json && !request.Quiet)
            {
                var pieces = PieceDecoder.TryLoad(dir);
                output.Info("text " + string.Concat(result.Ids.Select(id => pieces?.Piece(id) ?? $"[{id}]")));
            }
            output.End(result, load, tokenizer, result.Report?.Summary());
            if (result.Report is { } report && traceFile is not null)
            {
                ExitOptions.WriteTrace(traceFile, report, new Dictionary<string, string> { ["model"] = Path.GetFullPath(dir), ["command"] = "generate" });
                output.Info($"wrote trace to {traceFile}");
            }
            return result.FinishReason == FinishReason.Cancelled ? Interrupted : 0;
        });
        return cmd;
    }

    /// <summary>--image-mode clip|pad; without it, the model's own choice (pad for an original-layout config with image_aspect_ratio "pad").</summary>
    public static Option<string> ImageModeOption()
    {
        var o = new Option<string>("--image-mode") { Description = "clip (HF CLIPImageProcessor: resize, center crop) or pad (LLaVA-1.5: pad to a square with the mean colour first). Default: pad when an original-layout config says image_aspect_ratio \"pad\", else clip" };
        o.AcceptOnlyFromAmong("clip", "pad");
        return o;
    }

    public static bool? ImageMode(ParseResult p, Option<string> o) => p.GetValue(o) is string mode ? mode == "pad" : null;

    public static string ModelName(string dir) => Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'));

    /// <summary>What can be checked from config.json alone, before the weights load: the exit policy and the context size.</summary>
    public static LlavaConfig CheckBeforeLoad(string dir, string? visionTowerDir, Engine.Exit.ExitPolicy policy, GenerationCliOptions.Request request, GenerationOutput output)
    {
        var cfg = LlavaCheckpoint.ReadConfig(dir, visionTowerDir);
        policy.Validate(cfg);
        if (request.Options.ContextLength is int c && c > cfg.Text.MaxPositionEmbeddings)
            output.Note($"--ctx-size {c} is above the model's context of {cfg.Text.MaxPositionEmbeddings} tokens: using {cfg.Text.MaxPositionEmbeddings}");
        return cfg;
    }

    /// <summary>A -n larger than the context leaves room for is clamped, with a note.</summary>
    public static GenerationOptions ClampToContext(GenerationOptions o, LlavaConfig cfg, int promptTokens, int held, GenerationOutput output)
    {
        int context = Math.Min(o.ContextLength ?? int.MaxValue, cfg.Text.MaxPositionEmbeddings);
        int room = context - held - promptTokens + 1;   // the last token needs no position of its own
        if (room < 1)
            throw new UsageException($"the prompt ({held + promptTokens} tokens) does not fit the context of {context} tokens");
        if (o.MaxNewTokens is int n && n > room)
        {
            output.Note($"-n {n} is more than fits: the context of {context} tokens leaves room for {room} new token(s) after the {held + promptTokens}-token prompt; generating at most {room}");
            return o with { MaxNewTokens = room };
        }
        return o;
    }

    /// <summary>Streams the answer to the output, with the prefill's layers on a progress bar; the result at the end.</summary>
    public static async Task<GenerationResult> Stream(InferenceSession session, PromptInput input, GenerationOptions options, Tokenizer? tokenizer,
        GenerationOutput output, CliProgress progress, int layers, CancellationToken ct)
    {
        var forward = new ForwardProgress();
        var stream = Generator.Stream(session, input, options with { Prefill = options.Prefill with { Progress = forward } }, tokenizer, ct);
        await using var e = stream.GetAsyncEnumerator(ct);
        // The first MoveNext runs the prefill: that is the long wait a bar is for.
        bool more = await progress.Bar($"prefill {input.TokenIds.Length} tokens", layers, async bar =>
        {
            forward.Target = bar;
            var r = await e.MoveNextAsync();
            forward.Target = null;
            return r;
        });
        while (more)
        {
            output.Token(e.Current);
            more = await e.MoveNextAsync();
        }
        return stream.Result!;
    }

    private sealed class ForwardProgress : IProgress<(int Done, int Total)>
    {
        public IProgress<(int Done, int Total)>? Target { get; set; }

        public void Report((int Done, int Total) value) => Target?.Report(value);
    }

    private static PromptInput ResearchPrompt(LlavaConfig cfg, int[] tokenIds, string[]? pixelFiles)
    {
        var images = (pixelFiles ?? []).Select(PixelFile.Read).ToList();
        int placeholders = tokenIds.Count(id => id == cfg.ImageTokenIndex) / Math.Max(1, cfg.TokensPerImage);
        if (images.Count == 0 && placeholders > 0)
            images.AddRange(Enumerable.Range(0, placeholders).Select(i => SyntheticImage.Create(cfg.Vision.ImageSize, i)));
        return new PromptInput(tokenIds, images);
    }
}

/// <summary>Whether a model folder has a tokenizer the runtime reads.</summary>
internal static class ModelTokenizer
{
    public static bool Exists(string dir) =>
        File.Exists(Path.Combine(dir, "tokenizer.json")) || File.Exists(Path.Combine(dir, "tokenizer.json.gz")) || File.Exists(Path.Combine(dir, "tokenizer.model"));
}

/// <summary>The sample image shipped next to the tool (assets/sample.png in the repository).</summary>
internal static class SampleImage
{
    public static string Path()
    {
        var path = System.IO.Path.Combine(AppContext.BaseDirectory, "assets", "sample.png");
        if (!File.Exists(path)) throw new UsageException($"the bundled sample image is missing ({path}); give an image with --image");
        return path;
    }
}

/// <summary>The built-in default model: the tiny synthetic preset, written once under the user's cache folder.</summary>
internal static class BuiltInModel
{
    public static string EnsureTiny(TextWriter log)
    {
        var root = Environment.GetEnvironmentVariable("VTE_CACHE_DIR")
            ?? Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "vtekernels");
        var dir = Path.Combine(root, "models", "synth-tiny-seed0");
        if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        log.WriteLine($"no --model given: writing the built-in synthetic model (random weights: its text is noise) to {dir}");
        var tmp = dir + ".tmp-" + Environment.ProcessId;
        SyntheticModel.Write(SynthPreset.Get("tiny"), tmp, seed: 0, DType.F32);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(Path.GetDirectoryName(dir)!);
        Directory.Move(tmp, dir);
        return dir;
    }
}

/// <summary>A deterministic smooth test image, already normalized: colour gradients and rings.</summary>
internal static class SyntheticImage
{
    public static ImageInput Create(int size, int variant)
    {
        var px = new float[3 * size * size];
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                {
                    double u = x / (double)size - 0.5, v = y / (double)size - 0.5;
                    double r = Math.Sqrt(u * u + v * v);
                    px[(c * size + y) * size + x] = (float)(1.5 * Math.Sin(8 * r + c + variant) + u * (c - 1) + v);
                }
        return ImageInput.Square(px, size);
    }
}

/// <summary>
/// Token id to text for display, from tokenizer.json's vocabulary with the Llama decoder's rules
/// ("▁" is a space, &lt;0xNN&gt; pieces are raw bytes). A stand-in for the full tokenizer.
/// </summary>
internal sealed class PieceDecoder(string[] pieces)
{
    public static PieceDecoder? TryLoad(string dir)
    {
        var path = Path.Combine(dir, "tokenizer.json");
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (!doc.RootElement.TryGetProperty("model", out var m) || !m.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                return null;
            var map = new Dictionary<int, string>();
            foreach (var e in vocab.EnumerateObject()) map[e.Value.GetInt32()] = e.Name;
            if (doc.RootElement.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var a in added.EnumerateArray()) map[a.GetProperty("id").GetInt32()] = a.GetProperty("content").GetString() ?? "";
            var arr = new string[map.Count == 0 ? 0 : map.Keys.Max() + 1];
            foreach (var (id, s) in map) arr[id] = s;
            return new PieceDecoder(arr);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            return null;
        }
    }

    public string? Piece(int id)
    {
        if ((uint)id >= (uint)pieces.Length || pieces[id] is not string p) return null;
        if (p.Length == 6 && p.StartsWith("<0x", StringComparison.Ordinal) && p.EndsWith('>'))
        {
            byte b = Convert.ToByte(p.Substring(3, 2), 16);
            return b is >= 0x20 and < 0x7F ? ((char)b).ToString() : $"<0x{b:X2}>";
        }
        return p.Replace('\u2581', ' ');
    }
}
