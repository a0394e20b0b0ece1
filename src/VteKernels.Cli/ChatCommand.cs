// `vte chat`: a conversation about an image on the terminal. Lines starting with "/" are commands:
// /image PATH (use this image; starts a new conversation, as LLaVA-1.5 takes its image in the first turn),
// /clear (forget the conversation), /quit. Each turn renders the whole conversation in the chosen prompt
// style; when the tokens already in the KV cache are a prefix of the new prompt only the rest is prefilled,
// otherwise the conversation is prefilled again from the start.
using System.CommandLine;
using VteKernels.Engine;
using VteKernels.Text;

namespace VteKernels.Cli;

internal static class ChatCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr, Func<TextReader> stdin)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (default: the built-in synthetic tiny model)" };
        var image = new Option<string>("--image") { Description = "Image for the first turn (default: none; /image PATH sets one)" };
        var style = new Option<string>("--prompt-style") { Description = "llava, vicuna or template", DefaultValueFactory = _ => "llava" };
        var imageMode = GenerateCommand.ImageModeOption();
        var device = new BackendOptions();
        var noMmap = NoMmapOption.Create();
        style.AcceptOnlyFromAmong("llava", "vicuna", "template");
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var gen = new GenerationCliOptions();
        var cmd = new Command("chat", "Chat about an image (/image PATH, /clear, /quit)") { model, image, style, imageMode, noMmap };
        device.AddTo(cmd);
        gen.AddTo(cmd);
        exit.AddTo(cmd, trace: false);
        methods.AddTo(cmd);
        cmd.SetAction(async (p, ct) =>
        {
            var (policy, kvMode, _) = exit.Read(p);
            var (naavit, sessionOptions) = methods.Read(p);
            var request = gen.Read(p);
            var output = new GenerationOutput(stdout, stderr, request.Json, request.Quiet);
            var progress = new CliProgress(stderr, request.Quiet);
            var dir = p.GetValue(model) ?? BuiltInModel.EnsureTiny(request.Quiet ? TextWriter.Null : stderr);
            GenerateCommand.CheckBeforeLoad(dir, methods.VisionTowerDir(p), policy, request, output);
            if (!ModelTokenizer.Exists(dir)) throw new UsageException($"{dir} has no tokenizer.json or tokenizer.model; chat needs the model's tokenizer");
            using var backend = device.Create(p);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var m = progress.Spin($"loading {GenerateCommand.ModelName(dir)}", () => LlavaModel.Load(dir, backend, methods.VisionTowerDir(p), NoMmapOption.Read(p, noMmap)));
            var load = clock.Elapsed;
            var cfg = m.Config;
            var tokenizer = Tokenizer.Load(dir);
            var promptStyle = PromptFormat.ParseStyle(p.GetValue(style)!);
            var preprocessing = MultimodalPrompt.PreprocessingFor(dir, cfg, pad: GenerateCommand.ImageMode(p, imageMode));
            var options = request.For(m, new PrefillOptions { Exit = policy, ExitKvMode = kvMode, Naavit = naavit });

            using var session = m.CreateSession(sessionOptions);
            var turns = new List<(string User, string? Assistant)>();
            ImageInput? current = p.GetValue(image) is string first ? MultimodalPrompt.LoadImage(first, preprocessing, cfg) : null;
            var input = stdin();
            output.Info($"chatting with {GenerateCommand.ModelName(dir)} on {backend.Device}{(current is null ? "" : " about the given image")}; /image PATH, /clear, /quit");
            while (!ct.IsCancellationRequested)
            {
                if (!request.Quiet) { stderr.Write("> "); stderr.Flush(); }
                var line = input.ReadLine();
                if (line is null || line.Trim() == "/quit") break;
                line = line.Trim();
                if (line.Length == 0) continue;
                if (line == "/clear")
                {
                    turns.Clear();
                    session.Reset();
                    current = null;
                    output.Info("(conversation cleared)");
                    continue;
                }
                if (line.StartsWith("/image", StringComparison.Ordinal))
                {
                    var path = line["/image".Length..].Trim();
                    try
                    {
                        current = MultimodalPrompt.LoadImage(path, preprocessing, cfg);
                        turns.Clear();
                        session.Reset();
                        output.Info($"(new conversation about {Path.GetFileName(path)})");
                    }
                    catch (Exception e) when (e is VteException or IOException or UnauthorizedAccessException or ArgumentException)
                    {
                        stderr.WriteLine($"error: {e.Message}");
                    }
                    continue;
                }
                if (line.StartsWith('/'))
                {
                    output.Info("commands: /image PATH, /clear, /quit");
                    continue;
                }

                turns.Add((line, null));
                var images = current is null ? new List<ImageInput>() : [current];
                var (text, special) = MultimodalPrompt.Render(promptStyle, tokenizer, turns, images.Count, dir);
                var full = MultimodalPrompt.Build(cfg, tokenizer, text, images, special);
                var step = ContinueOrRestart(session, full, cfg.ImageTokenIndex);
                var turnOptions = GenerateCommand.ClampToContext(options, cfg, step.TokenIds.Length, session.Position, output);
                var result = await GenerateCommand.Stream(session, step, turnOptions, tokenizer, output, progress, cfg.Text.NumLayers, ct);
                output.End(result, load, tokenizer, null);
                load = TimeSpan.Zero;   // counted once
                if (result.FinishReason == FinishReason.Cancelled) return GenerateCommand.Interrupted;
                turns[^1] = (line, result.Text.Trim());
            }
            return ct.IsCancellationRequested ? GenerateCommand.Interrupted : 0;
        });
        return cmd;
    }

    /// <summary>The part of <paramref name="full"/> not yet in the cache, or, when the cache holds something else, all of it after a reset.</summary>
    private static PromptInput ContinueOrRestart(InferenceSession session, PromptInput full, int imageToken)
    {
        var held = session.Tokens.ToArray();
        if (held.Length > 0 && held.Length < full.TokenIds.Length && full.TokenIds.AsSpan(0, held.Length).SequenceEqual(held))
        {
            var rest = full.TokenIds[held.Length..];
            if (!rest.Contains(imageToken)) return PromptInput.TextOnly(rest);
        }
        session.Reset();
        return full;
    }
}
