// `vte inspect`: what a model directory holds: architecture, parameter count, dtypes, the tensor table,
// and every problem found (each check runs and reports instead of stopping at the first).
using System.CommandLine;
using VteKernels.Formats;
using VteKernels.Models;

namespace VteKernels.Cli;

internal static class InspectCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model", "-m") { Description = "Model directory (config.json + safetensors)", Required = true };
        var tensors = new Option<bool>("--tensors") { Description = "List every tensor (default: a summary by group)" };
        var visionTower = new Option<string>("--vision-tower") { Description = "CLIP folder of an original-layout checkpoint whose mm_vision_tower is not a local folder" };
        var cmd = new Command("inspect", "Describe a model directory and report problems") { model, tensors, visionTower };
        cmd.SetAction(p => Run(p.GetValue(model)!, p.GetValue(tensors), p.GetValue(visionTower), stdout));
        return cmd;
    }

    private static int Run(string dir, bool allTensors, string? visionTower, TextWriter o)
    {
        if (!Directory.Exists(dir)) throw new UsageException($"model directory '{dir}' does not exist");
        var problems = new List<string>();
        LlavaConfig? cfg = null;
        string? originalLayout = null;   // the binding result of an original-layout checkpoint (config + CLIP folder)
        if (IsOriginalLayout(dir))
        {
            try
            {
                using var checkpoint = LlavaCheckpoint.Open(dir, visionTower);
                cfg = checkpoint.Config;
                originalLayout = $"original LLaVA layout, vision tower {checkpoint.VisionTowerDir ?? "inside the checkpoint"}{(cfg.Saisa ? ", SAISA per-layer projectors" : "")}"
                    + (checkpoint.Weights.Text.Layers.Any(l => !l.HasAttention) ? $", no attention weights in layers {string.Join(",", Enumerable.Range(0, cfg.Text.NumLayers).Where(i => !checkpoint.Weights.Text.Layers[i].HasAttention))} (EAS)" : "");
            }
            catch (ModelFormatException e) { problems.Add(e.Message); }
        }
        else
        {
            try { cfg = LlavaConfig.Load(Path.Combine(dir, "config.json")); }
            catch (ModelConfigException e) { problems.Add(e.Message); }
        }

        if (cfg is not null)
        {
            var v = cfg.Vision;
            var t = cfg.Text;
            o.WriteLine($"model         {Path.GetFullPath(dir)}");
            o.WriteLine($"architecture  LLaVA: CLIP ViT ({v.NumLayers} layers, hidden {v.HiddenSize}, {v.NumHeads} heads, {v.ImageSize}px / patch {v.PatchSize}, {v.HiddenAct})");
            o.WriteLine($"              -> projector {cfg.ProjectorInputSize} -> {t.HiddenSize} ({cfg.ProjectorHiddenAct}, bias {cfg.ProjectorBias})");
            o.WriteLine($"              -> LLaMA ({t.NumLayers} layers, hidden {t.HiddenSize}, {t.NumHeads} heads / {t.NumKvHeads} KV heads, head dim {t.HeadDim}, FFN {t.IntermediateSize})");
            o.WriteLine($"image         {cfg.TokensPerImage} tokens per image (token {cfg.ImageTokenIndex}), feature layer(s) {string.Join(",", cfg.VisionFeatureLayers)}, strategy {cfg.VisionFeatureSelectStrategy}; tower runs {cfg.VisionLayersNeeded} of {v.NumLayers} layers");
            o.WriteLine($"text          vocab {t.VocabSize}, context {t.MaxPositionEmbeddings}, rope theta {t.RopeTheta}, rms eps {t.RmsNormEps}, tied head {t.TieWordEmbeddings}, bos {t.BosTokenId?.ToString() ?? "-"}, eos {t.EosTokenId?.ToString() ?? "-"}");
        }

        WeightStore? store = null;
        try { store = WeightStore.Open(dir); }
        catch (ModelFormatException e) { problems.Add(e.Message); }

        if (store is not null)
        {
            using (store)
            {
                var entries = store.Names.Select(n => (Name: n, Entry: store.GetEntry(n))).OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
                long parameters = entries.Sum(e => e.Entry.Shape.Aggregate(1L, (a, d) => a * d));
                var dtypes = entries.GroupBy(e => e.Entry.DType).Select(g => $"{g.Key.DisplayName()} x{g.Count()}");
                o.WriteLine($"weights       {store.Files.Count} file(s), {entries.Count} tensors, {parameters:N0} parameters ({parameters / 1e9:F2} B), {store.TotalBytes / 1e9:F2} GB, dtypes {string.Join(", ", dtypes)}");
                if (originalLayout is not null)
                {
                    o.WriteLine($"layout        {originalLayout}");
                }
                else if (cfg is not null)
                {
                    try
                    {
                        var w = LlavaWeights.Bind(cfg, store);
                        o.WriteLine($"layout        {w.Layout} tensor names");
                    }
                    catch (ModelFormatException e) { problems.Add(e.Message); }
                }
                o.WriteLine();
                if (allTensors)
                {
                    o.WriteLine($"{"tensor",-72} {"dtype",-5} shape");
                    foreach (var (name, e) in entries)
                        o.WriteLine($"{name,-72} {e.DType.DisplayName(),-5} [{string.Join(", ", e.Shape)}]");
                }
                else
                {
                    // Group layer-indexed names (layers.N.) so a 7B model's 600 tensors fit on a screen.
                    var groups = entries.GroupBy(e => System.Text.RegularExpressions.Regex.Replace(e.Name, @"\.layers\.\d+\.", ".layers.*."));
                    o.WriteLine($"{"tensor group",-72} {"count",5} {"dtype",-5} shape");
                    foreach (var g in groups)
                    {
                        var f = g.First().Entry;
                        o.WriteLine($"{g.Key,-72} {g.Count(),5} {f.DType.DisplayName(),-5} [{string.Join(", ", f.Shape)}]");
                    }
                }
            }
        }

        o.WriteLine();
        if (problems.Count == 0)
        {
            o.WriteLine("problems      none");
            return 0;
        }
        o.WriteLine($"problems      {problems.Count}");
        foreach (var p in problems) o.WriteLine($"  - {p}");
        throw new ModelFormatException(null, null, $"{problems.Count} problem(s) found; first: {problems[0]}");
    }

    private static bool IsOriginalLayout(string dir)
    {
        try
        {
            return System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json"))) is System.Text.Json.Nodes.JsonObject root
                && OriginalLayoutSettings.Describes(root);
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or UnauthorizedAccessException)
        {
            return false;   // the llava-hf path reports the problem
        }
    }
}
