// `vte serve`: the model behind OpenAI's chat-completions API and a web page, on this machine. It binds to
// loopback unless --host says otherwise; --api-key guards /v1/*. The methods given here (--exit, --naavit,
// --skip-attn, --eas) are the defaults; each request may choose its own in the "vte" object. Gate files are
// opened only at start-up: a request may name the --exit gate file, never another path.
using System.CommandLine;
using System.Net;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Extensions.AI;
using VteKernels.Server;
using VteKernels.Text;

namespace VteKernels.Cli;

internal static class ServeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (default: the built-in synthetic tiny model)" };
        var host = new Option<string>("--host") { Description = "Address to bind: 127.0.0.1 (default, this machine only), ::1, 0.0.0.0 (every interface), ...", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0: any free port)", DefaultValueFactory = _ => 8080 };
        var apiKey = new Option<string>("--api-key") { Description = "Require \"Authorization: Bearer KEY\" on /v1/* (default: $VTE_API_KEY, else no key)" };
        var fileUrls = new Option<bool>("--allow-file-urls") { Description = "Accept image_url parts with file:// paths on this machine (off: only data: URIs)" };
        var maxWaiting = new Option<int>("--max-waiting") { Description = "Requests that may wait while one runs; more get 503", DefaultValueFactory = _ => 8 };
        var maxBody = new Option<int>("--max-body-mb") { Description = "Largest request body in MiB", DefaultValueFactory = _ => 20 };
        var modelId = new Option<string>("--model-id") { Description = "The model name clients use (default: the model folder's name)" };
        var style = new Option<string>("--prompt-style") { Description = "template (the model's chat template; the default when it has one), llava or vicuna" };
        var imageMode = new Option<string>("--image-mode") { Description = "clip or pad (LLaVA-1.5: pad to a square first)", DefaultValueFactory = _ => "clip" };
        var maxNew = new Option<int?>("--max-new-tokens", "-n") { Description = "Most tokens per answer when a request does not say (default: the model's generation_config.json, else 256)" };
        var device = new BackendOptions();
        var noMmap = NoMmapOption.Create();
        style.AcceptOnlyFromAmong("template", "llava", "vicuna");
        imageMode.AcceptOnlyFromAmong("clip", "pad");
        var exit = new ExitOptions();
        var methods = new MethodOptions();
        var cmd = new Command("serve", "Serve the model over OpenAI's chat-completions API (with images) and a web page")
        {
            model, host, port, apiKey, fileUrls, maxWaiting, maxBody, modelId, style, imageMode, maxNew, exit.Exit, exit.KvMode, noMmap,
        };
        device.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction(async (p, ct) =>
        {
            var (policy, kvMode, _) = exit.Read(p);
            var (naavit, sessionOptions) = methods.Read(p);
            if (p.GetValue(port) is < 0 or > 65535) throw new UsageException("--port must be in 0..65535");
            if (p.GetValue(maxWaiting) < 0) throw new UsageException("--max-waiting must be >= 0");
            if (p.GetValue(maxBody) is < 1 or > 4096) throw new UsageException("--max-body-mb must be in 1..4096");
            if (p.GetValue(maxNew) < 1) throw new UsageException("--max-new-tokens must be >= 1");
            var hostText = p.GetValue(host)!;
            if (hostText != "localhost" && !IPAddress.TryParse(hostText, out _))
                throw new UsageException($"--host '{hostText}' is not an IP address (127.0.0.1, ::1, 0.0.0.0, ...) or localhost");
            var key = p.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("VTE_API_KEY");

            var dir = p.GetValue(model) ?? BuiltInModel.EnsureTiny(stdout);
            if (!File.Exists(Path.Combine(dir, "tokenizer.json"))) throw new UsageException($"{dir} has no tokenizer.json: vte serve needs the model's tokenizer");
            using var backend = device.Create(p);
            using var m = LlavaModel.Load(dir, backend, methods.VisionTowerDir(p), NoMmapOption.Read(p, noMmap));
            var tokenizer = Tokenizer.Load(dir);
            var startupGates = policy is GateExit g ? g : null;
            var clientOptions = new VteChatClientOptions
            {
                ModelId = p.GetValue(modelId),
                Methods = new VteMethods { Exit = policy, ExitKv = kvMode, Naavit = naavit, Eas = sessionOptions.Eas, PiaMode = sessionOptions.PiaMode },
                PromptStyle = p.GetValue(style) is string s ? PromptFormat.ParseStyle(s) : null,
                PadImages = p.GetValue(imageMode) == "pad",
                DefaultMaxOutputTokens = p.GetValue(maxNew),
                AllowFileUris = p.GetValue(fileUrls),
                LoadGates = file => startupGates is not null && (file == startupGates.Gates.Source || file == "default")
                    ? startupGates.Gates
                    : throw new InvalidInputException($"gate file '{file}' is not loaded: the server opens gate files only at start-up (vte serve --exit gate:FILE), and a request names that file or \"default\""),
            };
            using var client = new VteChatClient(m, tokenizer, dir, clientOptions);
            await using var server = await VteServer.StartAsync(client, new VteServerOptions
            {
                Host = hostText, Port = p.GetValue(port), ApiKey = key, MaxWaiting = p.GetValue(maxWaiting),
                MaxBodyBytes = (long)p.GetValue(maxBody) << 20, Device = backend.Device, Log = stdout,
            }, ct);
            stdout.WriteLine($"model {client.ModelId} on {backend.Device} ({client.PromptStyle.ToString().ToLowerInvariant()} prompts); methods by default: exit {policy}{(naavit ? ", naavit" : "")}{(sessionOptions.Eas is { } eas ? $", attention skipped in {EasAdaptersText(eas)}" : "")}");
            if (p.GetValue(model) is null) stdout.WriteLine("(the built-in synthetic model has random weights: its answers are noise; give a real model with -m DIR)");
            stdout.WriteLine($"listening on {server.Address} - web page {server.Address}, API {new Uri(server.Address, "/v1/chat/completions")}; one request at a time, up to {p.GetValue(maxWaiting)} waiting{(key is null ? "" : "; API key required")}");
            if (key is null && !IsLoopback(hostText)) stdout.WriteLine($"warning: --host {hostText} is reachable from other machines and no --api-key is set");
            stdout.WriteLine("Ctrl+C stops the server");
            stdout.Flush();
            await server.WaitForShutdownAsync(ct);
            return 0;
        });
        return cmd;
    }

    private static string EasAdaptersText(Engine.Eas.EasAdapters eas) => $"layers {Engine.Eas.EasAdapters.FormatLayers(eas.SkippedLayers)}";

    private static bool IsLoopback(string host) => host == "localhost" || (IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip));
}
