// `gpu-e2e`: the whole engine on the CUDA backend at LLaVA-1.5-7B's shape beside HF transformers, in one run:
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- gpu-e2e [--small] [--layers N] [--model DIR] [--write-only]
//       [--no-hf] [--hf-timeout S] [--decode N] [--samples N] [--out bench/results/gpu-e2e.json]
//
// Model: random bf16 weights in the llava-hf layout, written by the code behind `vte synth` (SyntheticModel) into
// --model (default: a temporary folder) unless a model of the same preset is there already; the write is timed
// (the 32-layer 7B is ~14 GB). --layers cuts Vicuna-7B's 32 decoder layers (the exit and EAS layers scale with it);
// --small takes the tiny preset instead (the CPU emulator: it proves the harness, never the speed).
// Prompt: LLaVA's layout, batch 1: 35 prefix tokens (the Vicuna system prompt's length), one image (576 tokens,
// seeded pixels, already normalised) and a 60-token question of seeded ids (--small: 5 + 64 + 12, 4 decode steps, 1 sample).
// Configurations: no exit; DyVTE-style exit after 8, 16 and 24 layers (layer:K); NAAViT; EAS with the attention of
// layers 20-31 skipped (training-free, no adapters).
// Correctness first (also the warm-up): greedy tokens of the no-exit configuration against HF transformers'
// (bf16, attn_implementation="sdpa", tools/bench/hf_llava_peer.py on the very same folder, ids and pixels), and with
// --small against our CPU backend. The figures: time to first token (prefill with the vision tower, projector and the
// first argmax, on the host clock after a device sync) and decode tokens/s (--decode greedy steps, each with its
// argmax on the host), medians of --samples runs. Then the bars: decode >= 80% of copy bandwidth / weight bytes
// per token, exit after layer 16 cuts prefill >= 1.6x, end to end (first token + decode) >= 3x HF transformers.
// Without a usable GPU it prints one "error:" line and exits 2; without torch the HF rows say why.
using System.Diagnostics;
using System.Text.Json;
using VteKernels.Backends.Cpu;
using VteKernels.Cuda;
using VteKernels.Engine;
using VteKernels.Engine.Exit;
using VteKernels.Models;
using VteKernels.Synth;

using static VteKernels.Bench.GpuTiming;

namespace VteKernels.Bench;

internal static class GpuE2eBench
{

    private sealed record Config(string Name, SessionOptions Session, PrefillOptions Prefill);

    private sealed record Row(string Config, double TtftMs, double TtftMinMs, double DecodeTokS, double EndToEndMs, int Samples,
        int[] Tokens, int LastLayerRows, double? VsNone);

    public static int Run(string[] args)
    {
        if (GpuBenchArgs.Parse(args, Path.Combine("bench", "results", "gpu-e2e.json"), "--layers=", "--model=", "--write-only", "--no-hf", "--decode=", "--samples=", "--hf-timeout=") is not { } a)
            return 2;
        int layers = a.Extra.TryGetValue("--layers", out var l) ? int.Parse(l, System.Globalization.CultureInfo.InvariantCulture) : 32;
        int decode = a.Extra.TryGetValue("--decode", out var d) ? int.Parse(d, System.Globalization.CultureInfo.InvariantCulture) : a.Small ? 4 : 64;
        int samples = a.Extra.TryGetValue("--samples", out var s) ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : a.Small ? 1 : 5;
        // LLaVA's layout at 7B; with --small a shorter one (the emulator runs a 159-token prefill in ~9 s).
        int prefix = a.Small ? 5 : 35, question = a.Small ? 12 : 60;
        int hfTimeout = a.Extra.TryGetValue("--hf-timeout", out var ht) ? int.Parse(ht, System.Globalization.CultureInfo.InvariantCulture) : 300;
        var preset = a.Small ? SynthPreset.Get("tiny") : Preset(layers);
        var dir = a.Extra.TryGetValue("--model", out var m) ? m : Path.Combine(Path.GetTempPath(), $"vte-gpu-e2e-{preset.Name}");
        double writeSeconds = EnsureModel(preset, dir);
        if (a.Extra.ContainsKey("--write-only")) return 0;

        if (GpuTiming.OpenBackend(fusedFromEnvironment: true) is not { } b) return 2;
        bool emulated = b.Info.IsEmulator;
        Console.WriteLine($"device: {b.Device}{(emulated ? " (the CPU emulator of CUDA: semantics only, timings mean nothing)" : "")}; fused attention {b.Options.FusedAttention}");
        double copy = CopyGBps(b, a.Quick, 5, a.Small);
        var load = Stopwatch.StartNew();
        using var model = LlavaModel.Load(dir, b);
        double loadSeconds = load.Elapsed.TotalSeconds;
        var cfg = model.Config;
        int L = cfg.Text.NumLayers;
        var (ids, prompt) = BenchModels.LlavaPrompt(cfg, prefix, question);
        long weightBytes = DecodeWeightBytes(cfg);
        Console.WriteLine($"model {preset.Name}: {L} decoder layers, loaded in {loadSeconds:F1} s; prompt {ids.Count} tokens; decode reads {weightBytes / 1e9:F2} GB of weights a token; copy {copy:F0} GB/s");

        var configs = Configs(L);
        // Correctness first: greedy tokens of the full model against the peers.
        var ours = Greedy(model, configs[0], prompt, decode, out _, out _, out _);
        var failures = new List<string>();
        if (a.Small)
        {
            using var cpu = LlavaModel.Load(dir, new CpuBackend());
            var cpuTokens = Greedy(cpu, configs[0], prompt, decode, out _, out _, out _);
            int lead = Leading(ours, cpuTokens);
            Console.WriteLine($"greedy tokens, CUDA vs CPU backend: first {lead} of {ours.Length} equal");
            if (lead == 0) failures.Add("the first greedy token differs from the CPU backend's");
        }
        var hf = a.Extra.ContainsKey("--no-hf") || a.NoTorch ? (null, "--no-hf") : HfPeer.Run(dir, ids, prompt, cfg, decode, samples, hfTimeout);
        int hfLead = 0;
        if (hf.Result is { } h)
        {
            hfLead = Leading(ours, h.Tokens);
            Console.WriteLine($"greedy tokens, ours vs HF transformers: first {hfLead} of {ours.Length} equal (ours {string.Join(',', ours.Take(8))}..., HF {string.Join(',', h.Tokens.Take(8))}...)");
            if (hfLead == 0) failures.Add("the first greedy token differs from HF transformers'");
        }
        else Console.WriteLine($"HF transformers: {hf.Why}");
        foreach (var f in failures) Console.Error.WriteLine($"incorrect: {f}");

        var rows = new List<Row>();
        foreach (var c in configs)
        {
            Greedy(model, c, prompt, decode, out _, out _, out _); // warm-up of this configuration
            var ttft = new List<double>();
            var dec = new List<double>();
            int[] tokens = [];
            int lastRows = 0;
            for (int i = 0; i < samples; i++)
            {
                tokens = Greedy(model, c, prompt, decode, out var t, out var ds, out lastRows);
                ttft.Add(t);
                dec.Add(ds);
            }
            double tt = BenchModels.Median(ttft), decMs = BenchModels.Median(dec);
            double tokS = decode / (decMs * 1e-3);
            var row = new Row(c.Name, tt, ttft.Min(), tokS, tt + decMs, samples, tokens, lastRows, rows.Count > 0 ? rows[0].TtftMs / tt : null);
            rows.Add(row);
            Console.WriteLine($"  {c.Name,-22}: first token {tt:F2} ms, decode {tokS:F1} tok/s, end to end {row.EndToEndMs:F1} ms, last layer ran {lastRows} rows");
        }

        Print(rows, hf.Result, decode);
        var bars = Bars(rows, hf.Result, copy, weightBytes, L, a.Small);
        PrintBars(bars, emulated);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(a.OutPath))!);
        var doc = new
        {
            benchmark = "gpu-e2e: the CUDA engine at LLaVA-1.5-7B's shape (random bf16 weights), batch 1, beside HF transformers",
            date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            small = a.Small,
            model = new { preset = preset.Name, decoderLayers = L, dir, writeSeconds = Math.Round(writeSeconds, 1), loadSeconds = Math.Round(loadSeconds, 1), weightBytesPerDecodeToken = weightBytes },
            prompt = new { tokens = ids.Count, prefix, image = cfg.TokensPerImage, question, decodeSteps = decode },
            device = DeviceJson(b),
            fusedAttention = b.Options.FusedAttention,
            copyGBps = Math.Round(copy, 1),
            correct = failures.Count == 0,
            failures,
            greedyLeadingAgreementWithHf = hf.Result is null ? (int?)null : hfLead,
            hf = hf.Result is { } r ? new { r.Versions, ttftMs = Math.Round(r.TtftMs, 3), decodeTokS = Math.Round(r.DecodeTokS, 2), endToEndMs = Math.Round(r.TtftMs + decode / r.DecodeTokS * 1e3, 2), r.LoadSeconds, tokens = r.Tokens } : null,
            hfNote = hf.Result is null ? hf.Why : null,
            note = "first token = prefill (vision tower, projector, decoder, last row's logits to the host, argmax), host clock after a sync; decode = --decode greedy steps, " +
                   "each step's logits to the host and argmax there, for ours and HF alike; medians of the samples after one warm-up per configuration.",
            bars = bars.Select(x => new { name = x.Name, target = x.Target, measured = x.Measured, met = x.Met }),
            rows = rows.Select(x => new
            {
                config = x.Config, ttftMs = Math.Round(x.TtftMs, 3), ttftMinMs = Math.Round(x.TtftMinMs, 3), decodeTokS = Math.Round(x.DecodeTokS, 2),
                endToEndMs = Math.Round(x.EndToEndMs, 2), samples = x.Samples, lastLayerRows = x.LastLayerRows,
                prefillSpeedupVsNoExit = x.VsNone is { } v ? Math.Round(v, 3) : (double?)null, tokens = x.Tokens,
            }),
        };
        File.WriteAllText(a.OutPath, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        Console.WriteLine($"wrote {a.OutPath}");
        return failures.Count == 0 ? 0 : 1;
    }

    /// <summary>LLaVA-1.5-7B with <paramref name="layers"/> decoder layers.</summary>
    private static SynthPreset Preset(int layers)
    {
        var seven = SynthPreset.Get("llava-1.5-7b");
        return layers == seven.Config.Text.NumLayers ? seven
            : new SynthPreset($"llava-1.5-7b-{layers}l", seven.Config with { Text = seven.Config.Text with { NumLayers = layers } });
    }

    /// <summary>Writes the model unless the folder holds this preset already; the seconds it took (0 when it was there).</summary>
    private static double EnsureModel(SynthPreset preset, string dir)
    {
        var cfgPath = Path.Combine(dir, "config.json");
        var stamp = Path.Combine(dir, "vte-synth-preset.txt");
        if (File.Exists(cfgPath) && File.Exists(stamp) && File.ReadAllText(stamp).Trim() == preset.Name)
        {
            Console.WriteLine($"model {preset.Name} already in {dir}");
            return 0;
        }
        var clock = Stopwatch.StartNew();
        SyntheticModel.Write(preset, dir, seed: 0, DType.BF16);
        File.WriteAllText(stamp, preset.Name + "\n");
        long bytes = Directory.EnumerateFiles(dir, "*.safetensors").Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"synth: wrote {preset.Name} ({bytes / 1e9:F2} GB bf16) to {dir} in {clock.Elapsed.TotalSeconds:F1} s");
        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>No exit; exit after L/4, L/2, 3L/4 layers (8, 16, 24 of 32); NAAViT; EAS skipping the attention of layers 20L/32..L-1.</summary>
    private static List<Config> Configs(int L)
    {
        var list = new List<Config> { new("none", new SessionOptions(), new PrefillOptions()) };
        foreach (int k in new[] { L / 4, L / 2, 3 * L / 4 }.Where(k => k > 0 && k < L).Distinct())
            list.Add(new($"exit after {k}", new SessionOptions(), new PrefillOptions { Exit = ExitPolicy.AtLayer(k) }));
        list.Add(new("naavit", new SessionOptions(), new PrefillOptions { Naavit = true }));
        int from = 20 * L / 32;
        list.Add(new($"eas skip {from}-{L - 1}", new SessionOptions { Eas = new Engine.Eas.EasAdapters(Enumerable.Range(from, L - from)) }, new PrefillOptions()));
        return list;
    }

    /// <summary>Greedy tokens: the first from the prefill, then <paramref name="decode"/> decode steps; times in ms.</summary>
    private static int[] Greedy(LlavaModel model, Config c, PromptInput prompt, int decode, out double ttftMs, out double decodeMs, out int lastLayerRows)
    {
        using var session = model.CreateSession(c.Session);
        var clock = Stopwatch.StartNew();
        var r = session.Prefill(prompt, c.Prefill);
        int next = ArgMax(r.Logits.Last);
        ttftMs = clock.Elapsed.TotalMilliseconds;
        lastLayerRows = r.Report?.TokensPerLayer[^1] ?? 0;
        var tokens = new int[decode + 1];
        tokens[0] = next;
        clock.Restart();
        for (int i = 0; i < decode; i++)
        {
            next = ArgMax(session.Decode(next).Logits.Last);
            tokens[i + 1] = next;
        }
        decodeMs = clock.Elapsed.TotalMilliseconds;
        return tokens;
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private static int Leading(int[] a, int[] b)
    {
        int n = 0;
        while (n < a.Length && n < b.Length && a[n] == b[n]) n++;
        return n;
    }

    /// <summary>Weight bytes one decode step must read (bf16): every decoder layer's projections and the LM head.</summary>
    private static long DecodeWeightBytes(LlavaConfig cfg)
    {
        var t = cfg.Text;
        long kv = t.KvDim, q = t.QDim;
        long perLayer = t.HiddenSize * (2 * q + 2 * kv) + 3L * t.HiddenSize * t.IntermediateSize + 2L * t.HiddenSize;
        return 2 * (t.NumLayers * perLayer + (long)t.VocabSize * t.HiddenSize + t.HiddenSize);
    }

    private static void Print(List<Row> rows, HfPeer.Result? hf, int decode)
    {
        Console.WriteLine();
        Console.WriteLine($"{"engine / configuration",-34} | {"first token ms",14} | {"decode tok/s",12} | {"end to end ms",13} | {"prefill vs none",15}");
        Console.WriteLine(new string('-', 100));
        foreach (var r in rows)
            Console.WriteLine($"{"ours " + r.Config,-34} | {r.TtftMs,14:F2} | {r.DecodeTokS,12:F1} | {r.EndToEndMs,13:F1} | {(r.VsNone is { } v ? $"{v:F2}x" : "-"),15}");
        if (hf is not null)
            Console.WriteLine($"{"HF transformers (sdpa, bf16) none",-34} | {hf.TtftMs,14:F2} | {hf.DecodeTokS,12:F1} | {hf.TtftMs + decode / hf.DecodeTokS * 1e3,13:F1} | {"-",15}");
    }

    private static List<Bar> Bars(List<Row> rows, HfPeer.Result? hf, double copy, long weightBytes, int L, bool small)
    {
        string tag = small ? " (--small model)" : L == 32 ? "" : $" ({L} layers)";
        var none = rows[0];
        double floor = copy * 1e9 / weightBytes;
        var exit16 = rows.FirstOrDefault(r => r.Config == $"exit after {L / 2}");
        double? hfE2e = hf is null ? null : hf.TtftMs + (none.EndToEndMs - none.TtftMs) * none.DecodeTokS / hf.DecodeTokS; // same step count
        return
        [
            new($"decode tokens/s{tag}", ">= 80% of copy GB/s / weight GB", $"{none.DecodeTokS:F1} tok/s = {100 * none.DecodeTokS / floor:F0}% of {floor:F0}", none.DecodeTokS >= 0.8 * floor),
            new($"exit after layer {L / 2} cuts prefill{tag}", ">= 1.6x", exit16?.VsNone is { } v ? $"{v:F2}x ({none.TtftMs:F1} -> {exit16.TtftMs:F1} ms)" : "-", exit16?.VsNone is { } w ? w >= 1.6 : null),
            new($"end to end vs HF transformers{tag}", ">= 3x", hfE2e is { } e ? $"{e / none.EndToEndMs:F2}x ({e:F0} vs {none.EndToEndMs:F0} ms)" : "- (no HF figure)", hfE2e is { } f ? f / none.EndToEndMs >= 3 : null),
        ];
    }

    /// <summary>HF transformers on the same folder, ids and pixels (tools/bench/hf_llava_peer.py); never throws.</summary>
    internal static class HfPeer
    {
        public sealed record Result(int[] Tokens, double TtftMs, double DecodeTokS, double LoadSeconds, string Versions);

        public static (Result? Result, string Why) Run(string dir, List<int> ids, PromptInput prompt, LlavaConfig cfg, int decode, int samples, int timeoutSeconds)
        {
            var script = FindScript("hf_llava_peer.py");
            if (script is null) return (null, "tools/bench/hf_llava_peer.py not found");
            var work = Path.Combine(Path.GetTempPath(), $"vte-hf-peer-{Environment.ProcessId}");
            Directory.CreateDirectory(work);
            try
            {
                var pixels = prompt.Images[0].Pixels;
                var bytes = new byte[pixels.Length * 4];
                Buffer.BlockCopy(pixels, 0, bytes, 0, bytes.Length);
                File.WriteAllBytes(Path.Combine(work, "pixels.f32"), bytes);
                File.WriteAllText(Path.Combine(work, "inputs.json"), JsonSerializer.Serialize(new { ids, image_size = cfg.Vision.ImageSize, decode, samples }));
                var start = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                start.ArgumentList.Add(script);
                start.ArgumentList.Add(dir);
                start.ArgumentList.Add(work);
                using var p = Process.Start(start)!;
                var stderr = p.StandardError.ReadToEndAsync();
                string stdout = p.StandardOutput.ReadToEnd();
                if (!p.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
                {
                    p.Kill(entireProcessTree: true);
                    return (null, $"hf_llava_peer.py ran past --hf-timeout {timeoutSeconds} s");
                }
                foreach (var line in stderr.Result.Split('\n').Where(x => x.StartsWith("hf:", StringComparison.Ordinal))) Console.WriteLine($"  {line}");
                var last = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "";
                JsonDocument doc;
                try { doc = JsonDocument.Parse(last); }
                catch (JsonException) { return (null, $"hf_llava_peer.py exited {p.ExitCode}: {stderr.Result.Trim().Split('\n').LastOrDefault()}"); }
                var root = doc.RootElement;
                if (root.TryGetProperty("error", out var error)) return (null, error.GetString() ?? "HF transformers not available");
                return (new Result(root.GetProperty("tokens").EnumerateArray().Select(x => x.GetInt32()).ToArray(), root.GetProperty("ttft_ms").GetDouble(),
                    root.GetProperty("decode_tok_s").GetDouble(), root.GetProperty("load_s").GetDouble(), root.GetProperty("versions").GetString() ?? ""), "");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                return (null, $"python3 could not be started ({e.Message})");
            }
            finally
            {
                try { Directory.Delete(work, recursive: true); } catch (IOException) { }
            }
        }

        private static string? FindScript(string name)
        {
            foreach (var root in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
                for (var dir = new DirectoryInfo(root); dir is not null; dir = dir.Parent)
                {
                    var path = Path.Combine(dir.FullName, "tools", "bench", name);
                    if (File.Exists(path)) return path;
                }
            return null;
        }
    }
}
