// `tokenize`: encode throughput of the tokenizer, single thread, on English prose (bench/data/english-gpl3.txt,
// the GPL-3 text) and on C# code (bench/data/code-sample.txt), for each tokenizer fixture of the tests
// (tests/VteKernels.Tests/Data/Tokenizers). Two figures per row: cold (the word cache emptied before every
// run, so every word is merged) and warm (the cache holds the text's words, as in a long-running server).
// Before timing, each tokenizer must reproduce its reference corpus (ids from HF tokenizers).
// Where bench/results/reference-tokenize.json exists (written by tools/reference/tokenizers/gen.mjs on the
// same texts) the HF tokenizers (Rust, via its Node binding) and Tokenizers.js figures are shown beside ours.
//
//   dotnet run -c Release --project bench/VteKernels.Bench -- tokenize [--quick] [--out bench/results/cpu-tokenize.json]
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using VteKernels.Backends.Cpu;
using VteKernels.Text;

namespace VteKernels.Bench;

internal static class TokenizeBench
{
    private static readonly string[] Names = ["mistral-32k", "llama3-128k", "qwen3-151k", "gpt2-50k"];

    private sealed record Row(string Tokenizer, string Text, int Bytes, int Tokens, double ColdMs, double ColdMBps, double ColdBestMBps,
        double WarmMs, double WarmMBps, double? HfRustMBps, double? TokenizersJsMBps);

    public static int Run(string[] args)
    {
        bool quick = false;
        string data = Path.Combine("tests", "VteKernels.Tests", "Data", "Tokenizers");
        string outPath = Path.Combine("bench", "results", "cpu-tokenize.json");
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick": quick = true; break;
                case "--data" when i + 1 < args.Length: data = args[++i]; break;
                case "--out" when i + 1 < args.Length: outPath = args[++i]; break;
                default:
                    Console.Error.WriteLine($"unknown argument '{args[i]}'");
                    return 2;
            }
        }
        var texts = new[]
        {
            ("english", File.ReadAllText(Path.Combine("bench", "data", "english-gpl3.txt"))),
            ("code", File.ReadAllText(Path.Combine("bench", "data", "code-sample.txt"))),
        };
        var reference = ReadReference(Path.Combine(Path.GetDirectoryName(outPath) ?? ".", "reference-tokenize.json"));
        string loadBefore = MatmulBench.LoadAverage();
        Console.WriteLine($"{CpuInfo.ProcessorName}, {RuntimeInformation.FrameworkDescription}, single thread; texts: " +
                          string.Join(", ", texts.Select(t => $"{t.Item1} {Encoding.UTF8.GetByteCount(t.Item2) / 1024.0:F0} KB")));

        var rows = new List<Row>();
        int runs = quick ? 5 : 15;
        foreach (var name in Names)
        {
            var clock = Stopwatch.StartNew();
            var tok = Tokenizer.Load(Path.Combine(data, name));
            double loadMs = clock.Elapsed.TotalMilliseconds;
            if (!CheckCorpus(tok, Path.Combine(data, name, "corpus.jsonl"), name)) return 1;
            Console.WriteLine($"  {name}: loaded in {loadMs:F0} ms, reference corpus reproduced");
            foreach (var (label, text) in texts)
            {
                int bytes = Encoding.UTF8.GetByteCount(text);
                int tokens = tok.Encode(text).Length;
                var (cold, coldBest) = Time(runs, () => tok.Pipeline.Model.ClearCache(), () => tok.Encode(text));
                var (warm, _) = Time(runs, null, () => tok.Encode(text));
                reference.TryGetValue((name, label), out var refRow);
                rows.Add(new Row(name, label, bytes, tokens, cold, bytes / 1e3 / cold, bytes / 1e3 / coldBest, warm, bytes / 1e3 / warm, refRow.Rust, refRow.Js));
            }
        }

        Console.WriteLine();
        Console.WriteLine("MB/s = 10^6 bytes of UTF-8 input per second, median of the runs (best run in brackets); cold: word cache emptied before each run");
        Console.WriteLine($"{"tokenizer",-12} | {"text",-7} | {"KB",5} | {"tokens",6} | {"cold MB/s (best)",17} | {"warm MB/s",9} | {"HF Rust (node)",14} | {"tokenizers.js",13} | {"cold / js",9}");
        Console.WriteLine(new string('-', 118));
        foreach (var r in rows)
        {
            string hf = r.HfRustMBps is { } h ? $"{h,14:F2}" : $"{"-",14}";
            string js = r.TokenizersJsMBps is { } j ? $"{j,13:F2}" : $"{"-",13}";
            string ratio = r.TokenizersJsMBps is { } j2 ? $"{r.ColdMBps / j2,8:F1}x" : $"{"-",9}";
            Console.WriteLine($"{r.Tokenizer,-12} | {r.Text,-7} | {r.Bytes / 1024.0,5:F0} | {r.Tokens,6} | {r.ColdMBps,8:F2} ({r.ColdBestMBps,6:F2}) | {r.WarmMBps,9:F2} | {hf} | {js} | {ratio}");
        }

        var dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        var doc = new
        {
            benchmark = "Tokenizer.Encode throughput, single thread (UTF-8 input MB/s)",
            date = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
            quick,
            runs,
            note = "cold: the BPE word cache is emptied before every run; warm: it already holds the text's words. " +
                   "hfRustMBps / tokenizersJsMBps: tools/reference/tokenizers/gen.mjs on the same texts (bench/results/reference-tokenize.json), " +
                   "HF tokenizers through its Node binding (one encode call per run, includes the binding's overhead) and Tokenizers.js. " +
                   "Other processes may share the cores: see loadAverage (1, 5, 15 min) before and after.",
            loadAverage = new { before = loadBefore, after = MatmulBench.LoadAverage() },
            machine = new { processor = CpuInfo.ProcessorName, logicalCores = Environment.ProcessorCount, dotnet = RuntimeInformation.FrameworkDescription, os = RuntimeInformation.OSDescription },
            rows = rows.Select(r => new
            {
                tokenizer = r.Tokenizer, text = r.Text, bytes = r.Bytes, tokens = r.Tokens,
                coldMs = Math.Round(r.ColdMs, 3), coldMBps = Math.Round(r.ColdMBps, 2), coldBestMBps = Math.Round(r.ColdBestMBps, 2),
                warmMs = Math.Round(r.WarmMs, 3), warmMBps = Math.Round(r.WarmMBps, 2),
                hfRustMBps = r.HfRustMBps, tokenizersJsMBps = r.TokenizersJsMBps,
            }),
        };
        File.WriteAllText(outPath, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
        Console.WriteLine();
        Console.WriteLine($"wrote {outPath}");
        return 0;
    }

    // (median ms, best ms) of the runs.
    private static (double Median, double Best) Time(int runs, Action? before, Action run)
    {
        // Warm-up for a full second: tiered JIT compiles hot methods at full optimization only after
        // ~100 ms without new methods, and a few-millisecond loop would otherwise be timed in tier-0 code
        // (5-8x slower merges were measured that way).
        var warm = Stopwatch.StartNew();
        for (int i = 0; i < 3 || warm.ElapsedMilliseconds < 1000; i++)
        {
            before?.Invoke();
            run();
        }
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            before?.Invoke();
            long t0 = Stopwatch.GetTimestamp();
            run();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(times);
        return (times[runs / 2], times[0]);
    }

    private static bool CheckCorpus(Tokenizer tok, string path, string name)
    {
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            using var doc = JsonDocument.Parse(text);
            var want = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var got = tok.Encode(doc.RootElement.GetProperty("text").GetString()!);
            if (!got.AsSpan().SequenceEqual(want))
            {
                Console.Error.WriteLine($"{name}: corpus line {line} does not match HF tokenizers; not timing a wrong tokenizer");
                return false;
            }
        }
        return true;
    }

    private static Dictionary<(string, string), (double? Rust, double? Js)> ReadReference(string path)
    {
        var result = new Dictionary<(string, string), (double?, double?)>();
        if (!File.Exists(path)) return result;
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        foreach (var r in doc.RootElement.GetProperty("rows").EnumerateArray())
            result[(r.GetProperty("tokenizer").GetString()!, r.GetProperty("text").GetString()!)] =
                (r.GetProperty("rust").GetProperty("mbPerS").GetDouble(), r.GetProperty("js").GetProperty("mbPerS").GetDouble());
        return result;
    }
}
