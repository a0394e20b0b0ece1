// `vte quantize`: writes a copy of a model directory whose language-model matrices (attention and FFN
// projections, LM head; with --vision also the vision tower's and projector's) are Q8_0 or Q4_0 blocks.
//
// Layout: the same files and tensor names as the source (shards kept as they are); a quantized tensor is
// stored as safetensors dtype "U8" with shape [rows, bytes per row] holding ggml's blocks (BlockQuant.cs),
// and each file's "__metadata__" says "vte.quant.<name>": "q8_0" (or "q4_0") for it. config.json gains
// "vte_quantization": {"format", "block_size": 32, "modules"} as a note for people and tools; the loader
// goes by the tensor metadata alone. Every other file is copied. Matrices whose rows are not whole blocks
// stay as they are.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using VteKernels.Backends.Cpu;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Cli;

internal static class QuantizeCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory to read", Required = true };
        var to = new Option<string>("--to") { Description = "Block format: q8_0 or q4_0", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Directory to write the quantized model into (not the source)", Required = true };
        var vision = new Option<bool>("--vision") { Description = "Also quantize the vision tower's and the projector's matrices" };
        var threads = new Option<int?>("--threads") { Description = "Threads (default: all cores)" };
        to.AcceptOnlyFromAmong("q8_0", "q4_0");
        var cmd = new Command("quantize", "Write a copy of a model with its language-model matrices quantized to Q8_0 or Q4_0 blocks") { model, to, output, vision, threads };
        cmd.SetAction(p =>
        {
            var src = Path.GetFullPath(p.GetValue(model)!);
            var dst = Path.GetFullPath(p.GetValue(output)!);
            var type = DTypes.Parse(p.GetValue(to)!);
            int n = p.GetValue(threads) ?? 0;
            if (n < 0) throw new UsageException($"--threads must be 0 (all cores) or positive, got {n}");
            if (!Directory.Exists(src)) throw new UsageException($"model directory '{src}' does not exist");
            if (string.Equals(src.TrimEnd('/'), dst.TrimEnd('/'), StringComparison.Ordinal))
                throw new UsageException("--out must be another directory than --model (the source is read while the copy is written)");
            var clock = Stopwatch.StartNew();
            (int Count, long Before, long After) r = default;
            new CliProgress(stderr, quiet: false).Bytes($"quantizing to {type.Name()}", report => r = Quantize(src, dst, type, p.GetValue(vision), n, report));
            var (count, before, after) = r;
            stdout.WriteLine($"wrote {dst}: {count} matrices as {type.Name()}, tensors {before / 1e9:F2} GB -> {after / 1e9:F2} GB in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return cmd;
    }

    private static (int Count, long Before, long After) Quantize(string src, string dst, DType type, bool vision, int threads, Action<long, long> progress)
    {
        using var checkpoint = LlavaCheckpoint.Open(src);
        var w = checkpoint.Weights;
        var chosen = new List<Weight?>();
        foreach (var l in w.Text.Layers) chosen.AddRange([l.QProj, l.KProj, l.VProj, l.OProj, l.GateProj, l.UpProj, l.DownProj]);
        if (!ReferenceEquals(w.Text.LmHead, w.Text.EmbedTokens)) chosen.Add(w.Text.LmHead);
        if (vision)
        {
            if (checkpoint.VisionTowerDir is not null)
                throw new UsageException("--vision: this original-layout checkpoint keeps its vision tower in another folder, which quantize does not rewrite");
            foreach (var l in w.Vision.Layers) chosen.AddRange([l.QWeight, l.KWeight, l.VWeight, l.OutWeight, l.Fc1Weight, l.Fc2Weight]);
            chosen.AddRange([w.Projector.Linear1Weight, w.Projector.Linear2Weight]);
        }
        var quantize = chosen.OfType<Weight>().Where(CpuWeights.CanQuantize).Select(x => x.Name).ToHashSet(StringComparer.Ordinal);

        Directory.CreateDirectory(dst);
        foreach (var old in Directory.EnumerateFiles(dst, "model*.safetensors*")) File.Delete(old);
        using var store = WeightStore.Open(src);
        long before = 0, after = 0, total = store.TotalBytes, done = 0;
        foreach (var group in store.Names.GroupBy(store.FileOf))
        {
            using var file = SafetensorsFile.Open(group.Key);
            var specs = group.Select(name =>
            {
                var e = store.GetEntry(name);
                return new TensorSpec(name, quantize.Contains(name) ? type : e.DType, e.Shape);
            }).ToList();
            var metadata = file.Metadata.Where(kv => !kv.Key.StartsWith("vte.quant.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);
            SafetensorsWriter.Write(Path.Combine(dst, Path.GetFileName(group.Key)), specs, (spec, stream) =>
            {
                var weight = store.Get(spec.Name);
                if (spec.DType == weight.DType) CopyBytes(weight, stream);
                else WriteQuantized(weight, spec.DType, threads, stream);
                before += weight.ByteLength;
                after += spec.ByteLength;
                done += weight.ByteLength;
                progress(done, total);
            }, metadata);
        }
        if (File.Exists(Path.Combine(src, WeightStore.IndexFileName))) WriteIndex(src, dst, after);
        foreach (var f in Directory.EnumerateFiles(src))
        {
            var name = Path.GetFileName(f);
            if (name.EndsWith(".safetensors", StringComparison.Ordinal) || name == WeightStore.IndexFileName) continue;
            if (name == LlavaCheckpoint.ConfigFileName) WriteConfig(f, Path.Combine(dst, name), type, vision);
            else File.Copy(f, Path.Combine(dst, name), overwrite: true);
        }
        return (quantize.Count, before, after);
    }

    private static void CopyBytes(Weight w, Stream stream)
    {
        // Row ranges of at most 64 MiB: Weight.RowBytes views at most 2 GiB.
        int rows = w.Rows;
        long rowBytes = w.RowByteLength;
        if (rows == 0 || rowBytes == 0) return;
        int step = (int)Math.Max(1, (64L << 20) / rowBytes);
        for (int r = 0; r < rows; r += step) stream.Write(w.RowBytes(r, Math.Min(step, rows - r)));
    }

    /// <summary>Quantizes rows in batches on all threads, writing each batch in order.</summary>
    private static void WriteQuantized(Weight w, DType type, int threads, Stream stream)
    {
        const int Batch = 256;
        long rowBytes = type.ByteCount(w.Cols);
        var buffer = new byte[Batch * rowBytes];
        for (int r0 = 0; r0 < w.Rows; r0 += Batch)
        {
            int rows = Math.Min(Batch, w.Rows - r0);
            CpuWeights.QuantizeRows(w, r0, rows, type, buffer, threads);
            stream.Write(buffer, 0, checked((int)(rows * rowBytes)));
        }
    }

    private static void WriteIndex(string src, string dst, long totalBytes)
    {
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(src, WeightStore.IndexFileName)))!.AsObject();
        if (index["metadata"] is JsonObject meta) meta["total_size"] = totalBytes;
        File.WriteAllText(Path.Combine(dst, WeightStore.IndexFileName), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    private static void WriteConfig(string src, string dst, DType type, bool vision)
    {
        var config = JsonNode.Parse(File.ReadAllText(src))!.AsObject();
        config["vte_quantization"] = new JsonObject
        {
            ["format"] = type.Name(),
            ["block_size"] = BlockQuant.BlockElements,
            ["modules"] = vision ? "language model, vision tower, projector: matrices" : "language model: attention and FFN projections, LM head",
            ["layout"] = "safetensors U8 [rows, bytes per row] of ggml blocks; __metadata__ vte.quant.<tensor> names the format",
        };
        File.WriteAllText(dst, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
    }
}
