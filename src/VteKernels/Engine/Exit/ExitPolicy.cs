// When the visual tokens leave the language model during a prefill. Four policies, chosen per request:
//   none          every layer sees the visual tokens;
//   layer:K       the first K decoder layers see them, layers K.. do not (0 <= K <= L; K = L is no exit);
//   gate:FILE     DyVTE: one router per layer reads the text and decides "the image has been read";
//   attn:TAU[:M]  exit once the text rows' softmax mass on visual keys stays under TAU for M consecutive layers.
// An exit "after layer l" means layers 0..l saw the visual rows; the report counts it as K = l + 1 layers.
// What happens to the visual keys and values of layers 0..l is the separate ExitKvMode.
using System.Globalization;

namespace VteKernels.Engine.Exit;

/// <summary>How the visual tokens leave the decoder during a prefill.</summary>
public abstract record ExitPolicy
{
    private protected ExitPolicy() { }

    /// <summary>No exit: the full model.</summary>
    public static ExitPolicy None { get; } = new NoExit();

    /// <summary>The first <paramref name="layers"/> decoder layers see the visual tokens, the rest do not.</summary>
    public static ExitPolicy AtLayer(int layers) => new FixedLayerExit(layers);

    /// <summary>DyVTE's learned gates decide after each layer.</summary>
    public static ExitPolicy FromGates(ExitGates gates) => new GateExit(gates);

    /// <summary>Exit once the text-to-image attention mass stays below <paramref name="threshold"/> for <paramref name="consecutive"/> layers.</summary>
    public static ExitPolicy OnAttentionMass(float threshold, int consecutive = 1) => new AttentionMassExit(threshold, consecutive);

    /// <summary>The policy in the command-line notation (none, layer:K, gate:FILE, attn:TAU:M).</summary>
    public abstract override string ToString();

    /// <summary>Checks that the policy fits <paramref name="config"/> (needs only the config, not the weights).</summary>
    /// <exception cref="InvalidInputException">An exit layer lies beyond the model's depth.</exception>
    /// <exception cref="ModelFormatException">The gates do not fit the model.</exception>
    public void Validate(Models.LlavaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (this is FixedLayerExit f && f.Layers > config.Text.NumLayers)
            throw new InvalidInputException($"exit layer:{f.Layers} is beyond the model's {config.Text.NumLayers} decoder layers (0 <= K <= {config.Text.NumLayers})");
        if (this is GateExit g) g.Gates.Validate(config);
    }

    /// <summary>
    /// Parses "none", "layer:K", "gate:FILE" or "attn:TAU[:M]". Gate files are opened through
    /// <paramref name="loadGates"/> so the caller decides how (and for which model) they load.
    /// </summary>
    /// <exception cref="FormatException">The text is not one of the forms above.</exception>
    public static ExitPolicy Parse(string text, Func<string, ExitGates> loadGates)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(loadGates);
        var t = text.Trim();
        if (t == "none") return None;
        int colon = t.IndexOf(':');
        string kind = colon < 0 ? t : t[..colon], arg = colon < 0 ? "" : t[(colon + 1)..];
        switch (kind)
        {
            case "layer":
                if (!int.TryParse(arg, NumberStyles.None, CultureInfo.InvariantCulture, out int k))
                    throw new FormatException($"exit policy '{text}': layer:K needs a non-negative integer K");
                return AtLayer(k);
            case "gate":
                if (arg.Length == 0) throw new FormatException($"exit policy '{text}': gate:FILE needs the gate weights file");
                return FromGates(loadGates(arg));
            case "attn":
                var parts = arg.Split(':');
                if (parts.Length is < 1 or > 2 || !float.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out float tau))
                    throw new FormatException($"exit policy '{text}': attn:TAU[:M] needs a threshold TAU in [0, 1] and optionally M >= 1 layers");
                int m = 1;
                if (parts.Length == 2 && (!int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out m) || m < 1))
                    throw new FormatException($"exit policy '{text}': M in attn:TAU:M must be an integer >= 1");
                if (!(tau >= 0 && tau <= 1)) throw new FormatException($"exit policy '{text}': TAU must lie in [0, 1]");
                return OnAttentionMass(tau, m);
            default:
                throw new FormatException($"exit policy '{text}' is not one of none, layer:K, gate:FILE, attn:TAU[:M]");
        }
    }
}

/// <summary>The full model.</summary>
public sealed record NoExit : ExitPolicy
{
    /// <inheritdoc/>
    public override string ToString() => "none";
}

/// <summary>The first <see cref="Layers"/> decoder layers see the visual tokens.</summary>
public sealed record FixedLayerExit : ExitPolicy
{
    /// <summary>Number of decoder layers that see the visual tokens (0 = none of them).</summary>
    public int Layers { get; }

    /// <summary>Creates the policy.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="layers"/> is negative.</exception>
    public FixedLayerExit(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layers);
        Layers = layers;
    }

    /// <inheritdoc/>
    public override string ToString() => $"layer:{Layers}";
}

/// <summary>DyVTE: the gate of layer l decides after layer l.</summary>
public sealed record GateExit(ExitGates Gates) : ExitPolicy
{
    /// <inheritdoc/>
    public override string ToString() => $"gate:{Gates.Source}";
}

/// <summary>Exit once the text rows' mean softmax mass on visual keys is below <see cref="Threshold"/> for <see cref="Consecutive"/> layers in a row.</summary>
public sealed record AttentionMassExit : ExitPolicy
{
    /// <summary>The mass threshold in [0, 1].</summary>
    public float Threshold { get; }

    /// <summary>Layers in a row that must fall below the threshold.</summary>
    public int Consecutive { get; }

    /// <summary>Creates the policy.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The threshold is outside [0, 1] or <paramref name="consecutive"/> is below 1.</exception>
    public AttentionMassExit(float threshold, int consecutive = 1)
    {
        if (!(threshold >= 0 && threshold <= 1)) throw new ArgumentOutOfRangeException(nameof(threshold), threshold, "must lie in [0, 1]");
        ArgumentOutOfRangeException.ThrowIfLessThan(consecutive, 1);
        Threshold = threshold;
        Consecutive = consecutive;
    }

    /// <inheritdoc/>
    public override string ToString() => FormattableString.Invariant($"attn:{Threshold}:{Consecutive}");
}

/// <summary>What happens to the visual keys and values of the layers that ran before the exit.</summary>
public enum ExitKvMode
{
    /// <summary>
    /// DyVTE: layers 0..k keep their visual K/V, so decode steps there still attend to the image; layers
    /// after the exit never hold any.
    /// </summary>
    KeepEarly,

    /// <summary>
    /// Memory-lean variant (a different method from DyVTE): the visual K/V of layers 0..k are removed too,
    /// so no layer holds visual K/V once the exit has fired and decode steps never see the image.
    /// </summary>
    DropAll,
}
