// What one call of the decoder layer loop (TextDecoder.Run) works with: the rows' positions, the cache, what
// to capture, and the methods in effect (visual-token exit, NAAViT, EAS attention skipping with its PIA
// adapters, visual rows a model family re-derives per layer). Nothing here knows the model family.
using VteKernels.Backends;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Engine.Vision;

namespace VteKernels.Engine;

internal sealed class DecoderPass
{
    /// <summary>Absolute positions of the current rows (shrinks with them when visual rows leave).</summary>
    public required int[] Positions { get; set; }

    /// <summary>The per-layer key/value cache the rows' K/V go to.</summary>
    public required KvCache Cache { get; init; }

    /// <summary>Hidden states captured per layer (null: none).</summary>
    public List<float[]>? HiddenStates { get; init; }

    /// <summary>The prefill's exit state (null in decode steps).</summary>
    public ExitRun? Exit { get; init; }

    /// <summary>Prompt row of each current row (null: not tracked).</summary>
    public List<int>? RowMap { get; init; }

    /// <summary>NAAViT: the visual rows issue no queries and skip the FFN.</summary>
    public bool Naavit { get; init; }

    /// <summary>EAS: skipped attention blocks and PIA adapters (null: none).</summary>
    public EasAdapters? Eas { get; init; }

    /// <summary>How PIA adapters run.</summary>
    public PiaMode PiaMode { get; init; }

    /// <summary>The sequence's resolved adapters (null when there are none).</summary>
    public PiaSequence? Pia { get; init; }

    /// <summary>Multiply-adds each layer executed (null: not counted).</summary>
    public long[]? LayerMacs { get; init; }

    /// <summary>Visual rows the model's family writes before each layer while the image spans are present (SAISA); null: none.</summary>
    public ILayerVisualRows? LayerVisualRows { get; init; }

    /// <summary>Multiply-adds spent by <see cref="LayerVisualRows"/>.</summary>
    public long VisualRowMacs { get; set; }

    /// <summary>Checked before every layer: a cancelled prefill stops between layers.</summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>Told (layers done, layers) before every layer (null: nobody listens).</summary>
    public IProgress<(int Done, int Total)>? Progress { get; init; }

    /// <summary>The research observer's side of the loop (null: none).</summary>
    public Observers.DecoderObservation? Observer { get; init; }

    public bool Skips(int layer) => Eas?.Skips(layer) == true;

    /// <summary>The point between layers: throws when cancelled, reports progress.</summary>
    public void BeforeLayer(int layer, int layers)
    {
        Cancellation.ThrowIfCancellationRequested();
        Progress?.Report((layer, layers));
    }
}
