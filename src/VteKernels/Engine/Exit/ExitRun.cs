// The state of the exit policy during one prefill: where the visual rows are now, what each layer measured,
// and the decision after each layer. TextDecoder's layer loop asks it two explicit questions per layer
// ("measure the visual mass here?" and "exit after this layer?") and does the dropping itself.
using VteKernels.Backends;
using VteKernels.Models;

namespace VteKernels.Engine.Exit;

internal sealed class ExitRun
{
    private readonly LlavaConfig _config;
    private readonly bool _trace;
    private readonly List<LayerTrace> _layers = [];
    private int _belowThreshold;
    private int _rows, _visualRows;
    private float? _mass;
    private float[]? _massPerHead;

    public ExitRun(LlavaConfig config, ExitPolicy policy, ExitKvMode kvMode, bool trace, IReadOnlyList<ImageSpan> spans, int[] cacheBase)
    {
        _config = config;
        Policy = policy;
        KvMode = kvMode;
        _trace = trace;
        Spans = [.. spans];
        CacheBase = cacheBase;
    }

    public ExitPolicy Policy { get; }

    public ExitKvMode KvMode { get; }

    /// <summary>Visual spans in the current rows' coordinates; empty once the exit has fired.</summary>
    public List<ImageSpan> Spans { get; private set; }

    /// <summary>Each layer's cache length before this prefill: where this prefill's rows start in that layer's cache.</summary>
    public int[] CacheBase { get; }

    /// <summary>Number of layers that saw the visual rows, once the exit fired.</summary>
    public int? ExitLayer { get; private set; }

    public IReadOnlyList<LayerTrace> Layers => _layers;

    private int VisualRowCount => Spans.Sum(s => s.Length);

    /// <summary>The visual rows leave before layer 0 (layer:0): the caller builds the rows without them.</summary>
    public void ExitBeforeFirstLayer()
    {
        Spans = [];
        ExitLayer = 0;
    }

    public void BeginLayer(int rows)
    {
        _rows = rows;
        _visualRows = VisualRowCount;
        _mass = null;
        _massPerHead = null;
    }

    /// <summary>Whether layer attention should also measure the text rows' mass on the visual keys.</summary>
    public bool WantsMass => Spans.Count > 0 && (_trace || Policy is AttentionMassExit);

    /// <summary>Text rows in current coordinates: rows after the first image that are not visual.</summary>
    public int[] TextRows(int rows) =>
        Spans.Count == 0 ? [] : TextDecoder.Keep(Enumerable.Range(0, rows).ToArray(), Spans).Where(i => i > Spans[0].Start).ToArray();

    /// <summary>Visual key ranges in layer <paramref name="layer"/>'s cache coordinates.</summary>
    public (int Start, int Length)[] VisualKeys(int layer) => Spans.Select(s => (CacheBase[layer] + s.Start, s.Length)).ToArray();

    /// <summary>Stores the measured mass, [textRows, heads] row-major.</summary>
    public void RecordMass(ReadOnlySpan<float> mass, int textRows, int heads)
    {
        if (textRows == 0) return;
        var perHead = new float[heads];
        double total = 0;
        for (int h = 0; h < heads; h++)
        {
            double s = 0;
            for (int r = 0; r < textRows; r++) s += mass[r * heads + h];
            perHead[h] = (float)(s / textRows);
            total += s;
        }
        _massPerHead = perHead;
        _mass = (float)(total / (textRows * (double)heads));
    }

    /// <summary>
    /// Decides after layer <paramref name="layer"/> whether the visual rows leave now. <paramref name="gateInput"/>
    /// produces the DyVTE gate feature when a gate needs it (null when it cannot be formed).
    /// </summary>
    public bool EndLayer(int layer, Func<float[]?> gateInput)
    {
        bool exit = false;
        float[]? gateLogits = null;
        float? gateP = null;
        bool last = layer + 1 >= _config.Text.NumLayers;
        if (Spans.Count > 0 && !last)
        {
            switch (Policy)
            {
                case FixedLayerExit f:
                    exit = layer + 1 == f.Layers;
                    break;
                case AttentionMassExit a when _mass is float m:   // a layer without attention (EAS-skipped) measures nothing and changes nothing
                    _belowThreshold = m < a.Threshold ? _belowThreshold + 1 : 0;
                    exit = _belowThreshold >= a.Consecutive;
                    break;
                case GateExit g when g.Gates.ForLayer(layer) is { } gate:
                    if (gateInput() is { } feature)
                    {
                        var (stay, go) = gate.Evaluate(feature);
                        gateLogits = [stay, go];
                        gateP = 1f / (1f + MathF.Exp(stay - go));
                        exit = go > stay;
                    }
                    break;
            }
        }
        _layers.Add(new LayerTrace
        {
            Layer = layer, Rows = _rows, VisualRows = _visualRows, VisualMass = _mass, VisualMassPerHead = _massPerHead,
            GateLogits = gateLogits, GateExitProbability = gateP, ExitAfter = exit,
        });
        if (exit) ExitLayer = layer + 1;
        return exit;
    }

    /// <summary>After the rows were dropped: no visual rows remain.</summary>
    public void Exited() => Spans = [];
}
