// `vte generate`: prompt in, streamed tokens out, on a model directory or, with no --model, on the
// built-in synthetic model (the "tiny" preset, written once to the user's cache folder). Until the
// tokenizer front end lands the prompt is given as token ids; without --input-ids a default LLaVA-style
// prompt is built (BOS, the image placeholders, a few text tokens) around a synthetic test image.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using VteKernels.Engine;
using VteKernels.Models;
using VteKernels.Synth;

namespace VteKernels.Cli;

internal static class GenerateCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (default: the built-in synthetic tiny model)" };
        var ids = new Option<string>("--input-ids") { Description = "Prompt as comma-separated token ids with image placeholders expanded (or @FILE)" };
        var pixels = new Option<string[]>("--pixels") { Description = "float32 .npy [1,3,H,W] per image (default: a synthetic test image when the prompt has one)", AllowMultipleArgumentsPerToken = true };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Most tokens to generate", DefaultValueFactory = _ => 24 };
        var temp = new Option<float>("--temp") { Description = "Sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "Random seed for sampling" };
        var device = DeviceOption.Create();
        var exit = new ExitOptions();
        var cmd = new Command("generate", "Generate tokens for a prompt (streams them as they come)") { model, ids, pixels, maxNew, temp, topK, topP, seed, device };
        exit.AddTo(cmd);
        cmd.SetAction(async (p, ct) =>
        {
            var (policy, kvMode, traceFile) = exit.Read(p);
            if (p.GetValue(maxNew) < 0) throw new UsageException("--max-new-tokens must be >= 0");
            var sampling = new SamplingOptions { Temperature = p.GetValue(temp), TopK = p.GetValue(topK), TopP = p.GetValue(topP), Seed = p.GetValue(seed) };
            try { sampling.Validate(); }
            catch (ArgumentOutOfRangeException e) { throw new UsageException(e.Message.Split('(')[0].Trim()); }

            var dir = p.GetValue(model) ?? BuiltInModel.EnsureTiny(stdout);
            using var backend = DeviceOption.CreateBackend(p.GetValue(device)!);
            var clock = Stopwatch.StartNew();
            using var m = LlavaModel.Load(dir, backend);
            var load = clock.Elapsed;
            var cfg = m.Config;
            var prompt = BuildPrompt(cfg, p.GetValue(ids), p.GetValue(pixels));
            var decoder = PieceDecoder.TryLoad(dir);
            var stops = cfg.Text.EosTokenId is int eos ? new[] { eos } : [];

            stdout.WriteLine($"model {Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))} on {backend.Device}; prompt {prompt.TokenIds.Length} tokens ({prompt.Images.Count} image(s)); load {load.TotalMilliseconds:F0} ms");
            using var session = m.CreateSession();
            var options = new GenerationOptions
            {
                MaxNewTokens = p.GetValue(maxNew), Sampling = sampling, StopTokens = stops,
                Prefill = new PrefillOptions { Exit = policy, ExitKvMode = kvMode, Trace = traceFile is not null },
            };
            var generated = new List<int>();
            TimeSpan first = default, last = default;
            await foreach (var t in Generator.GenerateAsync(session, prompt, options, ct))
            {
                if (t.Index == 0) first = t.Elapsed;
                last = t.Elapsed;
                generated.Add(t.Id);
                stdout.Write(decoder?.Piece(t.Id) is string s ? s : $"[{t.Id}]");
                stdout.Flush();
            }
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

    private static PromptInput BuildPrompt(LlavaConfig cfg, string? idText, string[]? pixelFiles)
    {
        var images = (pixelFiles ?? []).Select(PixelFile.Read).ToList();
        int[] tokenIds;
        if (idText is not null) tokenIds = TokenIdList.Parse(idText);
        else
        {
            // BOS, then the image, then a short fixed text tail, like "USER: <image>\n... ASSISTANT:".
            var list = new List<int> { cfg.Text.BosTokenId ?? 1 };
            list.AddRange(Enumerable.Repeat(cfg.ImageTokenIndex, cfg.TokensPerImage));
            list.AddRange(Enumerable.Range(0, 8).Select(i => (int)((300 + 37L * i) % Math.Max(1, cfg.ImageTokenIndex))));
            tokenIds = [.. list];
        }
        int placeholders = tokenIds.Count(id => id == cfg.ImageTokenIndex) / Math.Max(1, cfg.TokensPerImage);
        if (images.Count == 0 && placeholders > 0)
            images.AddRange(Enumerable.Range(0, placeholders).Select(i => SyntheticImage.Create(cfg.Vision.ImageSize, i)));
        return new PromptInput(tokenIds, images);
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
