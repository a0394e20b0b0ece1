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

    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (default: the built-in synthetic tiny model)" };
        var prompt = new Option<string>("--prompt", "-p") { Description = $"The question (default: \"{DefaultQuestion}\")" };
        var images = new Option<string[]>("--image") { Description = "Image file (PNG, JPEG, BMP, PPM); repeat for several. Default: the bundled sample image", AllowMultipleArgumentsPerToken = true };
        var noImage = new Option<bool>("--no-image") { Description = "Text-only prompt" };
        var style = new Option<string>("--prompt-style") { Description = "llava (USER: <image>\\n{q} ASSISTANT:), vicuna (with the Vicuna-v1 system prompt), template (the model's chat_template) or raw (the text as given, <image> where the images go)", DefaultValueFactory = _ => "llava" };
        var imageMode = new Option<string>("--image-mode") { Description = "clip (HF CLIPImageProcessor: resize, center crop) or pad (LLaVA-1.5: pad to a square with the mean colour first)", DefaultValueFactory = _ => "clip" };
        var ids = new Option<string>("--input-ids") { Description = "Prompt as comma-separated token ids with image placeholders expanded (or @FILE); bypasses the tokenizer" };
        var pixels = new Option<string[]>("--pixels") { Description = "Preprocessed float32 .npy [1,3,H,W] per image (with --input-ids)", AllowMultipleArgumentsPerToken = true };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Most tokens to generate", DefaultValueFactory = _ => 24 };
        var temp = new Option<float>("--temp") { Description = "Sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "Random seed for sampling" };
        var device = new BackendOptions();
        style.AcceptOnlyFromAmong("llava", "vicuna", "template", "raw");
        imageMode.AcceptOnlyFromAmong("clip", "pad");
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var cmd = new Command("generate", "Answer a question about an image (streams the text as it comes)")
        {
            model, prompt, images, noImage, style, imageMode, ids, pixels, maxNew, temp, topK, topP, seed,
        };
        device.AddTo(cmd);
        exit.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction(async (p, ct) =>
        {
            var (policy, kvMode, traceFile) = exit.Read(p);
            var (naavit, sessionOptions) = methods.Read(p);
            if (p.GetValue(maxNew) < 0) throw new UsageException("--max-new-tokens must be >= 0");
            var sampling = new SamplingOptions { Temperature = p.GetValue(temp), TopK = p.GetValue(topK), TopP = p.GetValue(topP), Seed = p.GetValue(seed) };
            try { sampling.Validate(); }
            catch (ArgumentOutOfRangeException e) { throw new UsageException(e.Message.Split('(')[0].Trim()); }
            bool research = p.GetValue(ids) is not null;
            if (research && (p.GetValue(prompt) is not null || p.GetValue(images) is { Length: > 0 }))
                throw new UsageException("--input-ids bypasses the text and image front end: give --pixels, not --prompt or --image");
            if (!research && p.GetValue(pixels) is { Length: > 0 })
                throw new UsageException("--pixels goes with --input-ids; give images with --image");
            if (p.GetValue(noImage) && p.GetValue(images) is { Length: > 0 }) throw new UsageException("--no-image and --image exclude each other");

            var dir = p.GetValue(model) ?? BuiltInModel.EnsureTiny(stdout);
            using var backend = device.Create(p);
            var clock = Stopwatch.StartNew();
            using var m = LlavaModel.Load(dir, backend, methods.VisionTowerDir(p));
            var load = clock.Elapsed;
            var cfg = m.Config;
            var tokenizer = File.Exists(Path.Combine(dir, "tokenizer.json")) ? Tokenizer.Load(dir) : null;

            PromptInput input;
            if (research) input = ResearchPrompt(cfg, p.GetValue(ids)!, p.GetValue(pixels));
            else
            {
                if (tokenizer is null) throw new UsageException($"{dir} has no tokenizer.json: give the prompt as --input-ids");
                var files = p.GetValue(noImage) ? [] : p.GetValue(images) is { Length: > 0 } given ? given : [SampleImage.Path()];
                var options = MultimodalPrompt.PreprocessingFor(dir, cfg, pad: p.GetValue(imageMode) == "pad");
                var loaded = files.Select(f => MultimodalPrompt.LoadImage(f, options, cfg)).ToList();
                var question = p.GetValue(prompt) ?? DefaultQuestion;
                var (text, special) = p.GetValue(style) == "raw" ? (question, true)
                    : MultimodalPrompt.Render(PromptFormat.ParseStyle(p.GetValue(style)!), tokenizer, [(question, null)], loaded.Count, dir);
                input = MultimodalPrompt.Build(cfg, tokenizer, text, loaded, special);
            }
            var stops = StopTokens(cfg, tokenizer);

            stdout.WriteLine($"model {Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))} on {backend.Device}; prompt {input.TokenIds.Length} tokens ({input.Images.Count} image(s)); load {load.TotalMilliseconds:F0} ms");
            if (p.GetValue(model) is null) stdout.WriteLine("(the built-in synthetic model has random weights: its text is noise; give a real model with -m DIR)");
            using var session = m.CreateSession(sessionOptions);
            var genOptions = new GenerationOptions
            {
                MaxNewTokens = p.GetValue(maxNew), Sampling = sampling, StopTokens = stops,
                Prefill = new PrefillOptions { Exit = policy, ExitKvMode = kvMode, Trace = traceFile is not null, Naavit = naavit },
            };
            var generated = new List<int>();
            var stream = tokenizer?.CreateStreamingDecoder();
            var pieces = tokenizer is null ? PieceDecoder.TryLoad(dir) : null;
            TimeSpan first = default, last = default;
            await foreach (var t in Generator.GenerateAsync(session, input, genOptions, ct))
            {
                if (t.Index == 0) first = t.Elapsed;
                last = t.Elapsed;
                generated.Add(t.Id);
                stdout.Write(stream is not null ? stream.Push(t.Id) : pieces?.Piece(t.Id) is string s ? s : $"[{t.Id}]");
                stdout.Flush();
            }
            if (stream is not null) stdout.Write(stream.Flush());
            stdout.WriteLine();
            double decodeTps = generated.Count > 1 ? (generated.Count - 1) / (last - first).TotalSeconds : 0;
            stdout.WriteLine($"ids {string.Join(",", generated)}");
            stdout.WriteLine($"{generated.Count} tokens; time to first token {first.TotalMilliseconds:F0} ms; decode {decodeTps:F1} tok/s");
            if (session.LastReport is { } report)
            {
                stdout.WriteLine($"exit {report.Summary()}");
                if (traceFile is not null)
                {
                    ExitOptions.WriteTrace(traceFile, report, new Dictionary<string, string> { ["model"] = Path.GetFullPath(dir), ["command"] = "generate" });
                    stdout.WriteLine($"wrote trace to {traceFile}");
                }
            }
            return 0;
        });
        return cmd;
    }

    /// <summary>The end-of-sequence ids: the model config's, else the tokenizer's.</summary>
    public static int[] StopTokens(LlavaConfig cfg, Tokenizer? tokenizer) =>
        cfg.Text.EosTokenId is int eos ? [eos] : tokenizer is not null ? [.. tokenizer.EosIds] : [];

    private static PromptInput ResearchPrompt(LlavaConfig cfg, string idText, string[]? pixelFiles)
    {
        var images = (pixelFiles ?? []).Select(PixelFile.Read).ToList();
        var tokenIds = TokenIdList.Parse(idText);
        int placeholders = tokenIds.Count(id => id == cfg.ImageTokenIndex) / Math.Max(1, cfg.TokensPerImage);
        if (images.Count == 0 && placeholders > 0)
            images.AddRange(Enumerable.Range(0, placeholders).Select(i => SyntheticImage.Create(cfg.Vision.ImageSize, i)));
        return new PromptInput(tokenIds, images);
    }
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
