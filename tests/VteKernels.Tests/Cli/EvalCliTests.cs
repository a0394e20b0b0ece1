// `vte eval` on the tiny synthetic model: --compare equals separate runs bit for bit, chunks cover the
// question set exactly once, a run killed with SIGKILL leaves whole lines and resumes to the same answers
// as an uninterrupted run, and mistakes are one-line errors.
using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Models;
using VteKernels.Synth;
using Xunit;

using static VteKernels.Tests.Cli.CliRunner;

namespace VteKernels.Tests.Cli;

public sealed class EvalCliTests
{
    /// <summary>A question set of <paramref name="count"/> questions over small PPM images (and one text-only question).</summary>
    internal static string Questions(string dir, int count)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < count; i++)
        {
            var name = $"img{i % 5}.ppm";
            var path = Path.Combine(dir, name);
            if (!File.Exists(path)) WritePpm(path, 30 + 7 * (i % 5), 23 + 3 * (i % 5), i % 5);
            var q = new JsonObject { ["question_id"] = 100 + i, ["image"] = name };
            switch (i % 4)
            {
                case 0: q["text"] = "What colour is the square?"; q["answer"] = "red"; break;
                case 1: q["text"] = "How many squares?"; q["answers"] = new JsonArray("2", "2", "2", "3", "2", "2", "2", "2", "2", "2"); break;
                case 2: q["text"] = "Which colour?\nA. red\nB. blue"; q["answer"] = "B"; break;
                default: q["text"] = "Describe it."; break;
            }
            if (i == count - 1) q.Remove("image");
            sb.Append(q.ToJsonString()).Append('\n');
        }
        var file = Path.Combine(dir, "questions.jsonl");
        File.WriteAllText(file, sb.ToString());
        return file;
    }

    private static void WritePpm(string path, int w, int h, int seed)
    {
        var rng = new Random(seed);
        var header = Encoding.ASCII.GetBytes($"P6\n{w} {h}\n255\n");
        var px = new byte[w * h * 3];
        rng.NextBytes(px);
        File.WriteAllBytes(path, [.. header, .. px]);
    }

    private static Dictionary<string, JsonObject> Read(string path) =>
        File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!.AsObject())
            .ToDictionary(o => o["question_id"]!.ToJsonString());

    private static readonly string[] Measured =
        ["tokens", "first_token", "prefill_logits_fnv1a", "exit_layer", "prefill_macs", "prefill_macs_full", "decode_macs", "decode_macs_full", "kv_bytes", "kv_bytes_end", "score", "metric"];

    private static void AssertSameAnswers(string expectedFile, string actualFile)
    {
        var a = Read(expectedFile);
        var b = Read(actualFile);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (key, line) in a)
        {
            Assert.Equal((string?)line["text"], (string?)b[key]["text"]);
            foreach (var m in Measured)
                Assert.True(JsonNode.DeepEquals(line["metadata"]![m], b[key]["metadata"]![m]), $"{Path.GetFileName(actualFile)} question {key}: {m} differs");
        }
    }

    [Fact]
    public void CompareEqualsSeparateRunsBitForBit()
    {
        var model = TestModels.Tiny();
        var cfg = LlavaConfig.Load(Path.Combine(model, "config.json"));
        using var dir = new TempDir();
        var data = Questions(dir.Path, 6);
        var easPath = dir.File("eas.safetensors");
        EasCheckpoint.Save(SyntheticEas.Adapters(cfg.Text, [2, 3], seed: 5, adapterDim: 8, replacedDim: 16), easPath);
        // Random gates with the exit logit pushed up in layer 1, so that they fire there on image questions.
        var gatePath = dir.File("gates.safetensors");
        var rng = new Random(7);
        int d = cfg.Text.HiddenSize;
        new ExitGates(Enumerable.Range(0, cfg.Text.NumLayers).Select(l => new ExitGate(l, d, 8,
            Enumerable.Range(0, 8 * 2 * d).Select(_ => (float)(rng.NextDouble() - 0.5) / 8).ToArray(),
            Enumerable.Range(0, 16).Select(i => i < 8 ? 0f : l == 1 ? 4f : -4f).ToArray()))).Save(gatePath);
        var compare = "none,layer:1,layer:2+naavit,naavit,skip-attn:2-3,attn:0.5,eas:" + easPath + ",gate:" + gatePath;
        var r = Vte("eval", "-m", model, "--data", data, "--out", dir.File("cmp.jsonl"), "-n", "6", "--compare", compare);
        Assert.True(r.Code == 0, r.Err);
        (string Slug, string[] Flags)[] separate =
        [
            ("none", []), ("layer-1", ["--exit", "layer:1"]), ("layer-2+naavit", ["--exit", "layer:2", "--naavit"]), ("naavit", ["--naavit"]),
            ("skip-attn-2-3", ["--skip-attn", "2-3"]), ("attn-0.5", ["--exit", "attn:0.5"]), ("eas-eas", ["--eas", easPath]),
            ("gate-gates", ["--exit", "gate:" + gatePath]),
        ];
        foreach (var (slug, flags) in separate)
        {
            var one = dir.File($"one-{slug}.jsonl");
            var s = Vte(["eval", "-m", model, "--data", data, "--out", one, "-n", "6", .. flags]);
            Assert.True(s.Code == 0, s.Err);
            AssertSameAnswers(dir.File($"cmp.{slug}.jsonl"), one);
        }
        // The settings really differ (else the equality above says nothing).
        var none = Read(dir.File("cmp.none.jsonl"));
        foreach (var slug in new[] { "layer-1", "naavit", "skip-attn-2-3", "eas-eas", "gate-gates" })
            Assert.Contains(Read(dir.File($"cmp.{slug}.jsonl")), kv => (string?)kv.Value["metadata"]!["prefill_logits_fnv1a"] != (string?)none[kv.Key]["metadata"]!["prefill_logits_fnv1a"]);
        Assert.Contains(Read(dir.File("cmp.gate-gates.jsonl")).Values, l => l["metadata"]!["exit_layer"] is not null);   // the gates fired
        // Agreement with none is recorded against the none answers.
        foreach (var (key, line) in Read(dir.File("cmp.layer-1.jsonl")))
            Assert.Equal((string?)line["text"] == (string?)none[key]["text"], (bool)line["metadata"]!["same_text_as_none"]!);
    }

    [Fact]
    public void AnswersHaveLlavasShapeAndTheSummaryAndChartAreWritten()
    {
        var model = TestModels.Tiny();
        using var dir = new TempDir();
        var data = Questions(dir.Path, 5);
        var r = Vte("eval", "-m", model, "--data", data, "--out", dir.File("a.jsonl"), "-n", "4", "--compare", "layer:1,none", "--model-id", "tiny-x");
        Assert.True(r.Code == 0, r.Err);
        var lines = Read(dir.File("a.layer-1.jsonl"));
        Assert.Equal(5, lines.Count);
        foreach (var line in lines.Values)
        {
            Assert.Equal(["question_id", "prompt", "text", "answer_id", "model_id", "metadata"], line.Select(kv => kv.Key));
            Assert.Equal("tiny-x", (string?)line["model_id"]);
            Assert.Equal(22, ((string?)line["answer_id"])!.Length);
        }
        Assert.Equal(["exact", "vqa", "choice", "none", "exact"], lines.Values.OrderBy(l => (int)l["question_id"]!).Select(l => (string?)l["metadata"]!["metric"]));
        Assert.Null(lines["103"]["metadata"]!["score"]);
        var summary = JsonNode.Parse(File.ReadAllText(dir.File("a.summary.json")))!;
        Assert.Equal("vte-eval-summary/1", (string?)summary["format"]);
        var settings = summary["settings"]!.AsArray();
        Assert.Equal(["layer:1", "none"], settings.Select(s => (string?)s!["setting"]));   // the order given, though none ran first
        Assert.Equal(1.0, (double)settings[1]!["same_text_as_none"]!);
        Assert.Equal(4, (int)settings[0]!["scored"]!);
        Assert.Contains("setting", r.Out);
        var svg = File.ReadAllText(dir.File("a.pareto.svg"));
        Assert.StartsWith("<svg", svg);
        _ = System.Xml.Linq.XDocument.Parse(svg);
        var png = dir.File("chart.png");
        Assert.Equal(0, Vte("eval", "-m", model, "--data", data, "--out", dir.File("a.jsonl"), "--compare", "layer:1,none", "--chart", png, "--chart-quality", "agreement").Code);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png)[..4]);
    }

    [Fact]
    public void ScienceQaFilesRunWithLlavasPromptAndLetterScoring()
    {
        var model = TestModels.Tiny();
        using var dir = new TempDir();
        Questions(dir.Path, 1);   // writes img0.ppm
        File.WriteAllText(dir.File("sqa.json"), """
            [{"id": "4", "image": "img0.ppm", "conversations": [{"from": "human", "value": "<image>\nWhich?\nA. x\nB. y"}, {"from": "gpt", "value": "The answer is B."}]},
             {"id": "9", "conversations": [{"from": "human", "value": "Which?\nA. p\nB. q"}, {"from": "gpt", "value": "A"}]}]
            """);
        var r = Vte("eval", "-m", model, "--data", dir.File("sqa.json"), "--out", dir.File("sqa-answers.jsonl"), "-n", "2", "--single-pred-prompt");
        Assert.True(r.Code == 0, r.Err);
        var lines = Read(dir.File("sqa-answers.jsonl"));
        Assert.Equal(["\"4\"", "\"9\""], lines.Keys);   // string ids, as eval_science_qa.py looks them up
        Assert.Equal("<image>\nWhich?\nA. x\nB. y\n" + VteKernels.Evaluation.VqaQuestions.SinglePredictionPrompt, (string?)lines["\"4\""]["prompt"]);
        Assert.Equal("Which?\nA. p\nB. q\n" + VteKernels.Evaluation.VqaQuestions.SinglePredictionPrompt, (string?)lines["\"9\""]["prompt"]);
        Assert.All(lines.Values, l => Assert.Equal("choice", (string?)l["metadata"]!["metric"]));
        Assert.True((int)lines["\"9\""]["metadata"]!["prompt_tokens"]! < (int)lines["\"4\""]["metadata"]!["prompt_tokens"]!);   // the text-only one has no image tokens
    }

    [Fact]
    public void ChunksCoverTheQuestionsExactlyOnce()
    {
        var model = TestModels.Tiny();
        using var dir = new TempDir();
        var data = Questions(dir.Path, 7);
        Assert.Equal(0, Vte("eval", "-m", model, "--data", data, "--out", dir.File("all.jsonl"), "-n", "3").Code);
        var all = Read(dir.File("all.jsonl"));
        var seen = new List<string>();
        for (int k = 0; k < 3; k++)
        {
            // The chunks run on one thread from weights read into memory: the backend options change nothing in the answers.
            var r = Vte("eval", "-m", model, "--data", data, "--out", dir.File($"3_{k}.jsonl"), "-n", "3", "--num-chunks", "3", "--chunk-idx", k.ToString(), "--threads", "1", "--no-mmap");
            Assert.True(r.Code == 0, r.Err);
            var chunk = File.ReadAllLines(dir.File($"3_{k}.jsonl")).Select(l => JsonNode.Parse(l)!["question_id"]!.ToJsonString()).ToList();
            Assert.Equal(k < 2 ? 3 : 1, chunk.Count);   // ceil(7 / 3) = 3 a chunk
            seen.AddRange(chunk);
            foreach (var key in chunk) Assert.Equal((string?)all[key]["text"], (string?)Read(dir.File($"3_{k}.jsonl"))[key]["text"]);
        }
        Assert.Equal(all.Keys.Order(), seen.Order());
        Assert.Equal(seen.Count, seen.Distinct().Count());
    }

    [Fact]
    public void KilledRunLeavesWholeLinesAndResumesToTheUninterruptedAnswers()
    {
        var model = TestModels.Tiny();
        using var dir = new TempDir();
        const int N = 24;
        var data = Questions(dir.Path, N);
        string[] common = ["eval", "-m", model, "--data", data, "-n", "32", "--compare", "none,layer:1"];
        Assert.Equal(0, Vte([.. common, "--out", dir.File("clean.jsonl")]).Code);

        var outPath = dir.File("killed.jsonl");
        var watched = dir.File("killed.layer-1.jsonl");
        using (var p = StartVte([.. common, "--out", outPath]))
        {
            var clock = Stopwatch.StartNew();
            while (!(File.Exists(watched) && File.ReadAllBytes(watched).Count(b => b == '\n') >= 2) && !p.HasExited && clock.Elapsed < TimeSpan.FromMinutes(3))
                Thread.Sleep(5);
            if (p.HasExited) Assert.Fail($"the run ended before it could be killed: {p.StandardError.ReadToEnd()}");
            p.Kill(entireProcessTree: true);   // SIGKILL
            p.WaitForExit();
        }
        int answered = 0;
        foreach (var f in Directory.GetFiles(dir.Path, "killed.*.jsonl"))
        {
            var bytes = File.ReadAllBytes(f);
            Assert.True(bytes.Length == 0 || bytes[^1] == '\n', $"{Path.GetFileName(f)} ends inside a line");
            var lines = Encoding.UTF8.GetString(bytes).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            foreach (var l in lines) Assert.NotNull(JsonNode.Parse(l)!["question_id"]);
            answered += lines.Length;
        }
        Assert.InRange(answered, 2, 2 * N - 1);

        var r = Vte([.. common, "--out", outPath]);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("resuming", r.Err);
        foreach (var slug in new[] { "none", "layer-1" })
        {
            var lines = File.ReadAllLines(dir.File($"killed.{slug}.jsonl"));
            Assert.Equal(N, lines.Length);
            Assert.Equal(N, lines.Select(l => JsonNode.Parse(l)!["question_id"]!.ToJsonString()).Distinct().Count());
            AssertSameAnswers(dir.File($"clean.{slug}.jsonl"), dir.File($"killed.{slug}.jsonl"));
        }
    }

    [Fact]
    public void AnUnfinishedLastLineIsRemovedOnResume()
    {
        var model = TestModels.Tiny();
        using var dir = new TempDir();
        var data = Questions(dir.Path, 3);
        var outPath = dir.File("a.jsonl");
        Assert.Equal(0, Vte("eval", "-m", model, "--data", data, "--out", outPath, "-n", "2", "--num-chunks", "2").Code);
        File.AppendAllText(outPath, "{\"question_id\": 102, \"prompt\": \"Whi");
        var r = Vte("eval", "-m", model, "--data", data, "--out", outPath, "-n", "2");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("2 of 3 answered; removed an unfinished last line (35 bytes)", r.Err);
        Assert.Equal(["100", "101", "102"], File.ReadAllLines(outPath).Select(l => JsonNode.Parse(l)!["question_id"]!.ToJsonString()));
    }

    [Fact]
    public void MistakesAreOneLineErrors()
    {
        var model = TestModels.Tiny();
        using var dir = new TempDir();
        var data = Questions(dir.Path, 4);
        var outPath = dir.File("a.jsonl");
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath, "--chunk-idx", "2", "--num-chunks", "2"), "--chunk-idx must lie in [0, 2)");
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath, "--compare", "none", "--naavit"), "give --naavit inside it");
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath, "--compare", "none,fast"), "setting part 'fast'");
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath, "--metric", "vqa"), "has no gold answer for --metric vqa");
        AssertUserError(Vte("eval", "-m", model, "--data", dir.File("missing.jsonl"), "--out", outPath), "does not exist");
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath, "--chart", dir.File("c.jpg")), ".svg or .png");
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath, "--device", "cuda", "--threads", "2"), "--threads applies to --device cpu only");
        File.Delete(Path.Combine(dir.Path, "img1.ppm"));
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath), "image 'img1.ppm' does not exist");
        File.WriteAllText(outPath, "not an answers file\n");
        Questions(dir.Path, 4);
        AssertUserError(Vte("eval", "-m", model, "--data", data, "--out", outPath), "a.jsonl:1: not a JSON line");
    }

    /// <summary>Starts `vte` as a child process (the CLI's build next to the tests).</summary>
    private static Process StartVte(string[] args)
    {
        var dll = typeof(VteKernels.Cli.UsageException).Assembly.Location;
        var host = Environment.ProcessPath is { } pp && Path.GetFileNameWithoutExtension(pp) == "dotnet" ? pp : "dotnet";
        var psi = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        return p;
    }
}
