// What prefill and decode steps return to research code: logits, and optionally every layer's hidden states.
namespace VteKernels.Engine;

/// <summary>What a prefill should capture besides the last row's logits.</summary>
public sealed record PrefillOptions
{
    /// <summary>Logits for every prompt row rather than the last one only.</summary>
    public bool AllLogits { get; init; }

    /// <summary>Capture the language model's hidden states (as HF's output_hidden_states returns them).</summary>
    public bool OutputHiddenStates { get; init; }

    /// <summary>Capture the vision tower's hidden states and the projected image features.</summary>
    public bool OutputVisionStates { get; init; }

    /// <summary>When the visual tokens leave the decoder (default: never).</summary>
    public Exit.ExitPolicy Exit { get; init; } = VteKernels.Engine.Exit.ExitPolicy.None;

    /// <summary>What happens to the visual K/V of the layers before the exit (default: DyVTE's, they stay).</summary>
    public Exit.ExitKvMode ExitKvMode { get; init; } = VteKernels.Engine.Exit.ExitKvMode.KeepEarly;

    /// <summary>Measure every layer's text-to-image attention mass for the report (costs one extra score pass per layer).</summary>
    public bool Trace { get; init; }

    /// <summary>
    /// NAAViT, training-free: the visual rows issue no queries and skip the FFN in every layer (their keys and
    /// values come from their input state), text queries see every visual key. The logits then cover the
    /// non-visual rows only (see <see cref="StepResult.Rows"/>). Decode steps are unaffected.
    /// </summary>
    public bool Naavit { get; init; }

    /// <summary>Told (decoder layers done, decoder layers) before each decoder layer runs; null: no reports.</summary>
    public IProgress<(int Done, int Total)>? Progress { get; init; }

    /// <summary>Checked before each image and each decoder layer: a cancelled prefill stops between layers and leaves the sequence as it was.</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>
    /// Sees every decoder layer of the prefill: its input rows, the rows that query, the exit decision and, when its
    /// <see cref="Observers.IDecoderObserver.Capture"/> asks, the hidden states and attention probabilities (null: none).
    /// </summary>
    public Observers.IDecoderObserver? Observer { get; init; }
}

/// <summary>Methods that hold for a whole sequence.</summary>
public sealed record SessionOptions
{
    /// <summary>EAS: the decoder layers whose attention is skipped, with their PIA adapters (null: none).</summary>
    public Eas.EasAdapters? Eas { get; init; }

    /// <summary>How PIA adapters run: explicit low-rank operations (default) or folded into the weights per sequence.</summary>
    public Eas.PiaMode PiaMode { get; init; } = VteKernels.Engine.Eas.PiaMode.Explicit;
}

/// <summary>Logits of one or more rows: a row-major [Rows, Vocab] matrix.</summary>
public sealed record Logits(float[] Values, int Rows, int Vocab)
{
    /// <summary>Row <paramref name="i"/>.</summary>
    public ReadOnlySpan<float> Row(int i) => Values.AsSpan(i * Vocab, Vocab);

    /// <summary>The last row: the next-token distribution.</summary>
    public ReadOnlySpan<float> Last => Row(Rows - 1);
}

/// <summary>The outcome of a forward step.</summary>
public sealed record StepResult(Logits Logits)
{
    /// <summary>
    /// Language-model hidden states, each [rows, hidden]: index 0 is the input embeddings (images merged),
    /// index i the output of decoder layer i for i &lt; L, and index L the final-norm output of layer L - 1
    /// (the same convention as HF transformers' hidden_states). After a visual-token exit following layer l,
    /// indices l + 1 and later hold only the remaining rows. Null unless requested.
    /// </summary>
    public IReadOnlyList<float[]>? HiddenStates { get; init; }

    /// <summary>Vision hidden states per image, each [tokens, vision hidden] (index 0 after the pre-LN). Only the layers that run are present.</summary>
    public IReadOnlyList<IReadOnlyList<float[]>>? VisionHiddenStates { get; init; }

    /// <summary>Projected image features per image, each [tokens per image, hidden].</summary>
    public IReadOnlyList<float[]>? ImageFeatures { get; init; }

    /// <summary>
    /// For each logits row, its position in the step's input (0 = the step's first token; after a visual-token
    /// exit the visual rows are absent). For a decode step, the token's absolute position.
    /// </summary>
    public IReadOnlyList<int> Rows { get; init; } = [];

    /// <summary>What the prefill did (null for decode steps).</summary>
    public Exit.PrefillReport? Report { get; init; }
}
