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
    public static Command Create(TextWriter stdout, Func<TextReader> stdin)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (default: the built-in synthetic tiny model)" };
        var image = new Option<string>("--image") { Description = "Image for the first turn (default: none; /image PATH sets one)" };
        var style = new Option<string>("--prompt-style") { Description = "llava, vicuna or template", DefaultValueFactory = _ => "llava" };
        var imageMode = new Option<string>("--image-mode") { Description = "clip or pad", DefaultValueFactory = _ => "clip" };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Most tokens per answer", DefaultValueFactory = _ => 128 };
        var temp = new Option<float>("--temp") { Description = "Sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0f };
        var seed = new Option<int?>("--seed") { Description = "Random seed for sampling" };
        var device = new BackendOptions();
        style.AcceptOnlyFromAmong("llava", "vicuna", "template");
        imageMode.AcceptOnlyFromAmong("clip", "pad");
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var cmd = new Command("chat", "Chat about an image (/image PATH, /clear, /quit)") { model, image, style, imageMode, maxNew, temp, seed };
        device.AddTo(cmd);
        exit.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction(async (p, ct) =>
        {
            var (policy, kvMode, _) = exit.Read(p);
            var (naavit, sessionOptions) = methods.Read(p);
            if (p.GetValue(maxNew) < 1) throw new UsageException("--max-new-tokens must be >= 1");
            var sampling = new SamplingOptions { Temperature = p.GetValue(temp), Seed = p.GetValue(seed) };
            try { sampling.Validate(); }
            catch (ArgumentOutOfRangeException e) { throw new UsageException(e.Message.Split('(')[0].Trim()); }
            var dir = p.GetValue(model) ?? BuiltInModel.EnsureTiny(stdout);
            using var backend = device.Create(p);
            using var m = LlavaModel.Load(dir, backend, methods.VisionTowerDir(p));
            var cfg = m.Config;
            if (!File.Exists(Path.Combine(dir, "tokenizer.json"))) throw new UsageException($"{dir} has no tokenizer.json; chat needs the model's tokenizer");
            var tokenizer = Tokenizer.Load(dir);
            var promptStyle = PromptFormat.ParseStyle(p.GetValue(style)!);
            var preprocessing = MultimodalPrompt.PreprocessingFor(dir, cfg, pad: p.GetValue(imageMode) == "pad");
            var options = new GenerationOptions
            {
                MaxNewTokens = p.GetValue(maxNew), Sampling = sampling, StopTokens = GenerateCommand.StopTokens(cfg, tokenizer),
                Prefill = new PrefillOptions { Exit = policy, ExitKvMode = kvMode, Naavit = naavit },
            };

            using var session = m.CreateSession(sessionOptions);
            var turns = new List<(string User, string? Assistant)>();
            ImageInput? current = p.GetValue(image) is string first ? MultimodalPrompt.LoadImage(first, preprocessing, cfg) : null;
            var input = stdin();
            stdout.WriteLine($"chatting with {Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))} on {backend.Device}{(current is null ? "" : " about the given image")}; /image PATH, /clear, /quit");
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                stdout.Write("> ");
                stdout.Flush();
                var line = input.ReadLine();
                if (line is null || line.Trim() == "/quit") break;
                line = line.Trim();
                if (line.Length == 0) continue;
                if (line == "/clear")
                {
                    turns.Clear();
                    session.Reset();
                    current = null;
                    stdout.WriteLine("(conversation cleared)");
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
                        stdout.WriteLine($"(new conversation about {Path.GetFileName(path)})");
                    }
                    catch (Exception e) when (e is VteException or IOException or UnauthorizedAccessException or ArgumentException)
                    {
                        stdout.WriteLine($"error: {e.Message}");
                    }
                    continue;
                }
                if (line.StartsWith('/'))
                {
                    stdout.WriteLine("commands: /image PATH, /clear, /quit");
                    continue;
                }

                turns.Add((line, null));
                var images = current is null ? new List<ImageInput>() : [current];
                var (text, special) = MultimodalPrompt.Render(promptStyle, tokenizer, turns, images.Count, dir);
                var full = MultimodalPrompt.Build(cfg, tokenizer, text, images, special);
                var step = ContinueOrRestart(session, full, cfg.ImageTokenIndex);
                var stream = tokenizer.CreateStreamingDecoder();
                var answer = new List<int>();
                await foreach (var t in Generator.GenerateAsync(session, step, options, ct))
                {
                    if (!t.IsStop) answer.Add(t.Id);
                    stdout.Write(stream.Push(t.Id));
                    stdout.Flush();
                }
                stdout.Write(stream.Flush());
                stdout.WriteLine();
                turns[^1] = (line, tokenizer.Decode(answer.ToArray(), skipSpecialTokens: true).Trim());
            }
            return 0;
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
