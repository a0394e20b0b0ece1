// The inference settings an evaluation compares, in one notation:
//   none | layer:K | gate:FILE | attn:TAU[:M]     visual-token exit policies (ExitPolicy's notation)
//   naavit                                         no queries and no FFN for visual rows
//   skip-attn:LAYERS                               EAS attention skipping, training-free (e.g. 20-31, 3,5,7-9)
//   eas:FILE                                       EAS with a checkpoint's PIA adapters and its skip list
// joined by '+' into one setting ("layer:8+naavit"), and listed with ',' ("none,layer:8,skip-attn:20-31").
// Inside a skip-attn layer list a comma followed by layer numbers continues the list, so layer lists keep
// their commas ("skip-attn:3,5,7-9,none" is two settings); every other comma starts a new setting. At most one exit policy and one EAS part per setting.
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;

namespace VteKernels.Evaluation;

/// <summary>One configuration of the methods under which every question is answered.</summary>
/// <param name="Name">The setting in the notation above (how it is named in reports).</param>
/// <param name="Exit">Visual-token exit policy.</param>
/// <param name="Naavit">NAAViT on or off.</param>
/// <param name="Session">Sequence-wide methods (EAS skipping and adapters).</param>
public sealed record EvalSetting(string Name, ExitPolicy Exit, bool Naavit, SessionOptions Session)
{
    /// <summary>The full model.</summary>
    public static EvalSetting None { get; } = new("none", ExitPolicy.None, false, new SessionOptions());

    /// <summary>The prefill options of this setting.</summary>
    public PrefillOptions PrefillOptions(ExitKvMode kvMode) => new() { Exit = Exit, ExitKvMode = kvMode, Naavit = Naavit };

    /// <summary>A file-name-safe form of <see cref="Name"/> ("layer:8+naavit" -> "layer-8+naavit"; gate and EAS files by their base name).</summary>
    public string Slug
    {
        get
        {
            var parts = Name.Split('+').Select(p =>
            {
                int colon = p.IndexOf(':');
                if (colon < 0) return p;
                string kind = p[..colon], arg = p[(colon + 1)..];
                if (kind is "gate" or "eas") arg = Path.GetFileNameWithoutExtension(arg.TrimEnd('/', '\\'));
                return kind + "-" + arg;
            });
            var slug = string.Join('+', parts);
            return new string([.. slug.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '+' or '_' ? c : '_')]);
        }
    }

    /// <summary>Splits a comma-separated list of settings (see the file header) and parses each.</summary>
    /// <exception cref="FormatException">A setting is malformed, two settings share a name, or the list is empty.</exception>
    public static IReadOnlyList<EvalSetting> ParseList(string text, Func<string, ExitGates> loadGates, Func<string, IReadOnlyList<int>?, EasAdapters> loadEas)
    {
        ArgumentNullException.ThrowIfNull(text);
        var specs = new List<string>();
        foreach (var raw in text.Split(','))
        {
            var token = raw.Trim();
            bool layerListGoesOn = specs.Count > 0 && specs[^1].Split('+')[^1].StartsWith("skip-attn:", StringComparison.Ordinal)
                && token.Length > 0 && token.All(c => char.IsAsciiDigit(c) || c == '-');
            if (layerListGoesOn) specs[^1] += "," + token;
            else specs.Add(token);
        }
        if (specs.Count == 0 || specs.All(s => s.Length == 0)) throw new FormatException("--compare needs at least one setting");
        var settings = specs.Select(s => Parse(s, loadGates, loadEas)).ToList();
        var twice = settings.GroupBy(s => s.Slug).FirstOrDefault(g => g.Count() > 1);
        if (twice is not null) throw new FormatException($"setting '{twice.First().Name}' is listed twice (or two settings have the same file name '{twice.Key}')");
        return settings;
    }

    /// <summary>Parses one setting, parts joined by '+'.</summary>
    /// <exception cref="FormatException">A part is not one of the kinds, or the setting has two exit policies or two EAS parts.</exception>
    public static EvalSetting Parse(string text, Func<string, ExitGates> loadGates, Func<string, IReadOnlyList<int>?, EasAdapters> loadEas)
    {
        ArgumentNullException.ThrowIfNull(text);
        ExitPolicy? exit = null;
        bool naavit = false;
        EasAdapters? eas = null;
        var parts = text.Split('+').Select(p => p.Trim()).ToList();
        if (parts.Any(p => p.Length == 0)) throw new FormatException($"setting '{text}' has an empty part");
        foreach (var part in parts)
        {
            if (part == "naavit")
            {
                naavit = true;
            }
            else if (part.StartsWith("skip-attn:", StringComparison.Ordinal) || part.StartsWith("eas:", StringComparison.Ordinal))
            {
                if (eas is not null) throw new FormatException($"setting '{text}' has two attention-skipping parts");
                string arg = part[(part.IndexOf(':') + 1)..];
                eas = part.StartsWith("eas:", StringComparison.Ordinal)
                    ? loadEas(arg, null)
                    : new EasAdapters(EasAdapters.ParseLayers(arg), source: part);
            }
            else if (part == "none" || part.StartsWith("layer:", StringComparison.Ordinal) || part.StartsWith("gate:", StringComparison.Ordinal)
                     || part.StartsWith("attn:", StringComparison.Ordinal))
            {
                if (exit is not null) throw new FormatException($"setting '{text}' has two exit policies");
                exit = ExitPolicy.Parse(part, loadGates);
            }
            else
            {
                throw new FormatException($"setting part '{part}' is not one of none, layer:K, gate:FILE, attn:TAU[:M], naavit, skip-attn:LAYERS, eas:FILE");
            }
        }
        return new EvalSetting(string.Join('+', parts), exit ?? ExitPolicy.None, naavit, new SessionOptions { Eas = eas });
    }
}
