// The options that change how the decoder computes, shared by `vte generate`, `vte forward` and `vte chat`:
// --naavit (visual tokens issue no queries and skip the FFN), --skip-attn LAYERS (EAS-style attention
// skipping, training-free unless --eas gives PIA adapters), --pia explicit|fold, and --vision-tower DIR
// (the CLIP folder of an original-layout checkpoint).
using System.CommandLine;
using VteKernels.Engine;
using VteKernels.Engine.Eas;

namespace VteKernels.Cli;

internal sealed class MethodOptions
{
    public Option<bool> Naavit { get; } = new("--naavit")
    {
        Description = "NAAViT, training-free: visual tokens issue no queries and skip the FFN; text attends to them (forward: logits for the non-visual rows only)",
    };

    public Option<string> SkipAttention { get; } = new("--skip-attn")
    {
        Description = "Skip the attention block of these decoder layers, e.g. 20-31 or 3,5,7-9 (EAS; no K/V cache there). Training-free unless --eas gives adapters",
    };

    public Option<string> Eas { get; } = new("--eas")
    {
        Description = "EAS checkpoint with PIA adapters (safetensors file or folder; public LLaVA-EAS names or vte-eas/1). Its skip list, or --skip-attn when it has none",
    };

    public Option<string> VisionTower { get; } = new("--vision-tower")
    {
        Description = "CLIP folder for an original-layout LLaVA checkpoint (llava_llama config; DyVTE, SAISA) whose mm_vision_tower is not a local folder",
    };

    public Option<string> Pia { get; } = new("--pia")
    {
        Description = "How PIA adapters run: explicit (low-rank ops beside the weights) or fold (folded into the weights once per prompt)",
        DefaultValueFactory = _ => "explicit",
    };

    public MethodOptions() => Pia.AcceptOnlyFromAmong("explicit", "fold");

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Naavit, SkipAttention, Eas, Pia, VisionTower }) command.Options.Add(o);
    }

    /// <summary>The --vision-tower folder, or null.</summary>
    public string? VisionTowerDir(ParseResult p) => p.GetValue(VisionTower);

    /// <summary>NAAViT on or off, and the session options (EAS).</summary>
    public (bool Naavit, SessionOptions Session) Read(ParseResult p)
    {
        IReadOnlyList<int>? skipped = null;
        if (p.GetValue(SkipAttention) is { } text)
        {
            try
            {
                skipped = EasAdapters.ParseLayers(text);
            }
            catch (FormatException e)
            {
                throw new UsageException($"--skip-attn: {e.Message}");
            }
        }
        EasAdapters? eas = null;
        if (p.GetValue(Eas) is { } file)
            eas = LoadAdapters(file, skipped);
        else if (skipped is { Count: > 0 })
            eas = new EasAdapters(skipped, source: "--skip-attn");
        var mode = p.GetValue(Pia) == "fold" ? PiaMode.Folded : PiaMode.Explicit;
        return (p.GetValue(Naavit), new SessionOptions { Eas = eas, PiaMode = mode });
    }

    private static EasAdapters LoadAdapters(string path, IReadOnlyList<int>? skipped)
    {
        if (!File.Exists(path) && !Directory.Exists(path)) throw new UsageException($"--eas '{path}' does not exist");
        return EasCheckpoint.Load(path, skipped);
    }
}
