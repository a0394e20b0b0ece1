// The parsers under fuzz, each with its seeds, its dictionary (tools/fuzz/dict/NAME.dict), its largest input
// and what one input runs: the parser, then what a caller does next with its result (encode and decode with
// a tokenizer, render a template, preprocess an image, load and run a model whose config was fuzzed), so
// that an input the parser accepts but cannot honour is found too. Any exception other than the library's
// own (VteException and its subtypes) is a finding.
using System.Text;
using System.Text.Json.Nodes;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Formats;
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Synth;
using VteKernels.Text;

namespace VteKernels.Fuzz;

/// <summary>One parser under fuzz.</summary>
internal sealed record Target(string Name, int MaxBytes, Func<Scratch, IReadOnlyList<byte[]>> Seeds, Action<Scratch, byte[]> Run)
{
    public static readonly IReadOnlyList<Target> All =
    [
        new("npy", 4 << 10, NpySeeds, (s, b) =>
        {
            File.WriteAllBytes(s.File("in.npy"), b);
            Npy.ReadFloat32(s.File("in.npy"));
        }),
        new("safetensors", 8 << 10, SafetensorsSeeds, (s, b) =>
        {
            File.WriteAllBytes(s.File("in.safetensors"), b);
            using var f = SafetensorsFile.Open(s.File("in.safetensors"), new LoadOptions { MemoryMap = b.Length % 2 == 0 });
            long sum = 0;
            foreach (var e in f.Entries)
                foreach (var x in f.GetWeight(e.Name).Bytes) sum += x;
            GC.KeepAlive(sum);
        }),
        new("weight-index", 8 << 10, s => [File.ReadAllBytes(Path.Combine(s.ShardDir, WeightStore.IndexFileName))], (s, b) =>
        {
            File.WriteAllBytes(Path.Combine(s.ShardDir, WeightStore.IndexFileName), b);
            using var store = WeightStore.Open(s.ShardDir);
            foreach (var n in store.Names) store.Get(n);
        }),
        new("config", 16 << 10, ConfigSeeds, RunConfig),
        new("tokenizer-json", 32 << 10, TokenizerSeeds, (s, b) =>
        {
            File.WriteAllBytes(s.File("tokenizer.json"), b);
            Exercise(Tokenizer.Load(s.File("tokenizer.json")));
        }),
        new("tokenizer-config", 16 << 10, TokenizerConfigSeeds, (s, b) =>
        {
            File.WriteAllBytes(Path.Combine(s.TokenizerDir, "tokenizer_config.json"), b);
            var tok = Tokenizer.Load(s.TokenizerDir);
            Exercise(tok);
            if (tok.ChatTemplate is { } t) RenderTemplate(Encoding.UTF8.GetBytes(t));
        }),
        new("chat-template", 16 << 10, TemplateSeeds, (_, b) => RenderTemplate(b)),
        new("image", 16 << 10, ImageSeeds, (_, b) =>
        {
            var img = ImageDecoder.Decode(b, new DecodeOptions(ApplyExifOrientation: b.Length % 2 == 0));
            ClipPreprocessor.Preprocess(img, ClipOptions.Clip336 with { ShortestEdge = 24, CropHeight = 24, CropWidth = 24 });
        }),
        new("preprocessor-config", 4 << 10, PreprocessorSeeds, (s, b) =>
        {
            File.WriteAllBytes(s.File("preprocessor_config.json"), b);
            var o = ClipOptions.FromPreprocessorConfig(s.File("preprocessor_config.json"));
            // Preprocessing is linear in the output, which the config may legitimately make 4096 x 4096: run it
            // where that stays small, so the time cap measures the parser and the checks, not a big legal resize.
            var (h, w) = ClipPreprocessor.OutputSize(s.Image.Width, s.Image.Height, o);
            if ((long)h * w <= 1 << 16 && (o.ShortestEdge ?? Math.Max(o.ResizeHeight ?? 0, o.ResizeWidth ?? 0)) <= 256)
                ClipPreprocessor.Preprocess(s.Image, o);
        }),
    ];

    public static Target Get(string name) => All.FirstOrDefault(t => t.Name == name)
        ?? throw new ArgumentException($"unknown target '{name}' (targets: {string.Join(", ", All.Select(t => t.Name))})");

    public string DictionaryPath(string repo) => Path.Combine(repo, "tools", "fuzz", "dict", Name + ".dict");

    // ---------------------------------------------------------------- what runs

    private static readonly string SampleText = "Hello, world! 123 héllo  你好\t🙂 <s> don't\n  x\u0301 ÅÅ ﬁ";

    private static void Exercise(Tokenizer tok)
    {
        var ids = tok.Encode(SampleText);
        tok.Decode(ids);
        tok.Decode(ids, skipSpecialTokens: true, cleanUpTokenizationSpaces: true);
        tok.Decode([0, 1, 2, tok.VocabSize - 1, tok.VocabSize, int.MaxValue, -1]);
        var stream = tok.CreateStreamingDecoder();
        foreach (var id in ids) stream.Push(id);
    }

    private static readonly IReadOnlyList<ChatMessage> Chat =
        [new("system", "Be brief."), new("user", "What is this?", ImageCount: 1), new("assistant", "A cat."), new("user", "And this?", ImageCount: 2)];

    private static readonly Dictionary<string, object?> Variables = new()
    {
        ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["tools"] = null, ["enable_thinking"] = false,
        ["custom"] = new Dictionary<string, object?> { ["a"] = new List<object?> { 1L, "x", null } },
    };

    private static void RenderTemplate(byte[] b)
    {
        var template = ChatTemplate.Parse(Encoding.UTF8.GetString(b));
        template.Render(Chat, addGenerationPrompt: true, Variables);
        template.Render(new Dictionary<string, object?> { ["messages"] = new List<object?> { "x", 1L }, ["add_generation_prompt"] = false });
    }

    private static void RunConfig(Scratch s, byte[] b)
    {
        var text = Encoding.UTF8.GetString(b);
        LlavaConfig.Parse(text, "config.json");
        // Accepted: load the tiny model's tensors under it and run a step (sizes the tensors do not bear out,
        // or values the engine cannot honour, must fail here with a typed error, not inside the backend).
        File.WriteAllText(Path.Combine(s.ConfigModelDir, "config.json"), text);
        using var model = LlavaModel.Load(s.ConfigModelDir, s.Backend);
        using var session = model.CreateSession();
        int n = Math.Min(model.Config.Text.VocabSize, 5);
        var ids = Enumerable.Range(0, n).ToArray();
        var logits = session.Prefill(PromptInput.TextOnly(ids)).Logits;
        session.Decode(0);
        GC.KeepAlive(logits);
    }

    // ---------------------------------------------------------------- seeds

    private static IReadOnlyList<byte[]> NpySeeds(Scratch s)
    {
        var seeds = new List<byte[]>();
        foreach (var shape in new[] { new[] { 2, 3 }, [5], [], [1, 3, 2, 2], [0, 4] })
        {
            long n = shape.Aggregate(1L, (a, d) => a * d);
            var path = s.File("seed.npy");
            Npy.Write(path, Enumerable.Range(0, (int)n).Select(i => i * 0.5f).ToArray(), shape);
            seeds.Add(File.ReadAllBytes(path));
        }
        seeds.Add([.. "\x93NUMPY\x02\x00"u8, 60, 0, 0, 0, .. "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }      \n"u8, .. new byte[8]]);
        seeds.Add([.. "\x93NUMPY\x03\x00"u8, 52, 0, 0, 0, .. "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": [2]}\n"u8, .. new byte[8]]);
        return seeds;
    }

    private static IReadOnlyList<byte[]> SafetensorsSeeds(Scratch s)
    {
        var seeds = new List<byte[]>();
        TensorSpec[][] sets =
        [
            [new("a", DType.F32, [2, 3]), new("b.weight", DType.F16, [4]), new("c", DType.BF16, [1, 1, 2])],
            [new("scalar", DType.F32, [])],
            [new("empty", DType.F32, [0, 5]), new("x", DType.BF16, [3])],
        ];
        foreach (var set in sets)
        {
            var path = s.File("seed.safetensors");
            SafetensorsWriter.Write(path, set, (t, stream) => stream.Write(new byte[t.ByteLength]), new Dictionary<string, string> { ["format"] = "pt" });
            seeds.Add(File.ReadAllBytes(path));
        }
        return seeds;
    }

    private static IReadOnlyList<byte[]> ConfigSeeds(Scratch s)
    {
        var tiny = File.ReadAllBytes(Path.Combine(s.ConfigModelDir, "config.json"));
        var big = Encoding.UTF8.GetBytes(SyntheticModel.ConfigJson(SynthPreset.Get("llava-1.5-7b").Config));
        var v5 = JsonNode.Parse(tiny)!.AsObject();
        v5["image_token_id"] = v5["image_token_index"]!.DeepClone();
        v5.Remove("image_token_index");
        v5["text_config"]!["rope_parameters"] = new JsonObject { ["rope_theta"] = 10000.0, ["rope_type"] = "default" };
        v5["vision_feature_layer"] = new JsonArray(-2, -1);
        return [tiny, big, Encoding.UTF8.GetBytes(v5.ToJsonString())];
    }

    private static IReadOnlyList<byte[]> TokenizerSeeds(Scratch s) =>
    [
        .. Directory.EnumerateFiles(Path.Combine(s.Repo, "tools", "fuzz", "corpus"), "tokenizer-*.json").Order(StringComparer.Ordinal).Select(File.ReadAllBytes),
        File.ReadAllBytes(Path.Combine(s.TokenizerDir, "tokenizer.json")),
    ];

    private static IReadOnlyList<byte[]> TokenizerConfigSeeds(Scratch s) =>
    [
        File.ReadAllBytes(Path.Combine(s.TokenizerDir, "tokenizer_config.json")),
        .. Directory.EnumerateFiles(Path.Combine(s.Repo, "tools", "fuzz", "corpus"), "tokenizer_config-*.json").Order(StringComparer.Ordinal).Select(File.ReadAllBytes),
    ];

    private static IReadOnlyList<byte[]> TemplateSeeds(Scratch s) =>
    [
        .. Directory.EnumerateFiles(Path.Combine(s.TestData, "chat-templates", "templates"), "*.jinja").Order(StringComparer.Ordinal).Select(File.ReadAllBytes),
        .. Directory.EnumerateFiles(Path.Combine(s.Repo, "tools", "fuzz", "corpus"), "template-*.jinja").Order(StringComparer.Ordinal).Select(File.ReadAllBytes),
    ];

    private static IReadOnlyList<byte[]> ImageSeeds(Scratch s) =>
        Directory.EnumerateFiles(Path.Combine(s.TestData, "images"))
            .Where(f => Path.GetExtension(f) is ".png" or ".jpg" or ".bmp" or ".ppm" or ".pgm" && new FileInfo(f).Length <= 4096)
            .Order(StringComparer.Ordinal).Select(File.ReadAllBytes).ToList();

    private static IReadOnlyList<byte[]> PreprocessorSeeds(Scratch s) =>
        Directory.EnumerateFiles(Path.Combine(s.TestData, "images"), "preprocessor_config*.json").Order(StringComparer.Ordinal).Select(File.ReadAllBytes).ToList();
}

/// <summary>A worker's files: a scratch folder with the tiny model, a small tokenizer and two weight shards.</summary>
internal sealed class Scratch : IDisposable
{
    public string Repo { get; }
    public string Dir { get; }
    public string TestData => Path.Combine(Repo, "tests", "VteKernels.Tests", "Data");
    public string ConfigModelDir => Path.Combine(Dir, "model");
    public string TokenizerDir => Path.Combine(Dir, "tokenizer");
    public string ShardDir => Path.Combine(Dir, "shards");
    public RgbImage Image { get; } = new(37, 23, Enumerable.Range(0, 37 * 23 * 3).Select(i => (byte)(i * 7)).ToArray());
    public CpuBackend Backend { get; } = new();

    public Scratch(string repo)
    {
        Repo = repo;
        Dir = Path.Combine(Path.GetTempPath(), "vte-fuzz", $"{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Dir);
        SyntheticModel.Write(SynthPreset.Get("tiny"), ConfigModelDir, 1, DType.F32);
        Directory.CreateDirectory(TokenizerDir);
        System.IO.File.WriteAllText(Path.Combine(TokenizerDir, "tokenizer.json"), SyntheticTokenizer.TokenizerJson(400, 398));
        System.IO.File.WriteAllText(Path.Combine(TokenizerDir, "tokenizer_config.json"), SyntheticTokenizer.TokenizerConfigJson(398, 512));
        Directory.CreateDirectory(ShardDir);
        var specs = new TensorSpec[] { new("a", DType.F32, [2, 2]), new("b", DType.F16, [3]), new("c", DType.BF16, [1]) };
        var shards = SafetensorsWriter.WriteSharded(ShardDir, specs, (t, stream) => stream.Write(new byte[t.ByteLength]), maxShardBytes: 16);
        if (!System.IO.File.Exists(Path.Combine(ShardDir, WeightStore.IndexFileName)))
            throw new InvalidOperationException($"expected a sharded store in {ShardDir} ({shards.Count} files written)");
    }

    public string File(string name) => Path.Combine(Dir, name);

    public void Dispose()
    {
        Backend.Dispose();
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
