// The decoder observer sees exactly the rows each method computes (full model, visual-token exit in both
// K/V modes, NAAViT, EAS skipping, and combinations), the hidden states it copies are the engine's own
// (bit-identical to OutputHiddenStates), and its attention probabilities equal the independent float64
// forward pass's (NaiveLlava's probe, with each method's mask or frozen rows) in prefill and decode.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Engine.Eas;
using VteKernels.Engine.Exit;
using VteKernels.Engine.Observers;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class DecoderObserverTests
{
    private const int Prefix = 3, Suffix = 5;

    public sealed record Method(string Name, ExitPolicy Exit, ExitKvMode Kv, bool Naavit, int[] Skipped)
    {
        public override string ToString() => Name;
    }

    public static TheoryData<Method> Methods() => new()
    {
        new Method("none", ExitPolicy.None, ExitKvMode.KeepEarly, false, []),
        new Method("layer:2 keep", ExitPolicy.AtLayer(2), ExitKvMode.KeepEarly, false, []),
        new Method("layer:1 drop", ExitPolicy.AtLayer(1), ExitKvMode.DropAll, false, []),
        new Method("layer:0", ExitPolicy.AtLayer(0), ExitKvMode.KeepEarly, false, []),
        new Method("naavit", ExitPolicy.None, ExitKvMode.KeepEarly, true, []),
        new Method("skip 1,3", ExitPolicy.None, ExitKvMode.KeepEarly, false, [1, 3]),
        new Method("layer:3 + naavit + skip 1", ExitPolicy.AtLayer(3), ExitKvMode.KeepEarly, true, [1]),
    };

    private static (LlavaModel Model, InferenceSession Session, PromptInput Prompt, int Visual) Setup(Method m)
    {
        var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, 31, prefix: Prefix, suffix: Suffix);
        var session = model.CreateSession(new SessionOptions { Eas = m.Skipped.Length > 0 ? new EasAdapters(m.Skipped) : null });
        return (model, session, new PromptInput(ids, [ImageInput.Square(TestModels.Pixels(cfg, 31), cfg.Vision.ImageSize)]), cfg.TokensPerImage);
    }

    [Theory, MemberData(nameof(Methods))]
    public void ObserverSeesTheRowsEachMethodComputes(Method m)
    {
        var (model, session, prompt, visual) = Setup(m);
        using (model)
        using (session)
        {
            var recorder = new DecoderRecorder(new DecoderCapture { InputRows = true });
            var r = session.Prefill(prompt, new PrefillOptions { Exit = m.Exit, ExitKvMode = m.Kv, Naavit = m.Naavit, Observer = recorder, OutputHiddenStates = true });
            int n = prompt.TokenIds.Length, layers = model.Config.Text.NumLayers;
            int[] all = [.. Enumerable.Range(0, n)], image = [.. Enumerable.Range(Prefix, visual)], text = [.. all.Except(image)];
            int exitAfter = m.Exit is FixedLayerExit f ? f.Layers : layers;   // layers that see the image
            Assert.Equal(Enumerable.Range(0, layers), recorder.Layers.Select(o => o.Layer));
            foreach (var o in recorder.Layers)
            {
                bool seesImage = o.Layer < exitAfter;
                int[] rows = seesImage ? all : text;
                Assert.Equal(rows, o.Rows);
                Assert.Equal(rows, o.Positions);   // a fresh session: positions are prompt rows, with the image's gap after an exit
                Assert.Equal(seesImage ? image : [], o.VisualRows);
                bool skipped = m.Skipped.Contains(o.Layer);
                Assert.Equal(skipped, o.AttentionSkipped);
                int[] queries = skipped ? [] : m.Naavit && seesImage ? [.. rows.Select((row, i) => (row, i)).Where(p => !image.Contains(p.row)).Select(p => p.i)] : [.. Enumerable.Range(0, rows.Length)];
                Assert.Equal(queries, o.QueryRows);
                Assert.Equal(0, o.CachedKeys);
                Assert.Equal(o.Layer == exitAfter - 1 && exitAfter < layers || m.Naavit && o.Layer == layers - 1 && exitAfter == layers, o.ExitAfter);
                Assert.Equal(r.Report!.TokensPerLayer[o.Layer], o.Rows.Length);
                Assert.Equal(DecoderStep.Prefill, o.Step);
                Assert.Same(r.Report.Layers[o.Layer], o.Trace);
                Assert.Equal(r.HiddenStates![o.Layer], o.Input);   // the engine's own states, bit for bit
            }
        }
    }

    [Theory, MemberData(nameof(Methods))]
    public void AttentionProbabilitiesEqualTheFloat64Reference(Method m)
    {
        var (model, session, prompt, visual) = Setup(m);
        using (model)
        using (session)
        {
            var cfg = model.Config;
            int[] heads = [3, 0];
            var recorder = new DecoderRecorder(new DecoderCapture { AttentionProbabilities = true, Heads = heads, Layers = new HashSet<int> { 0, 1, 3 } });
            var r = session.Prefill(prompt, new PrefillOptions { Exit = m.Exit, ExitKvMode = m.Kv, Naavit = m.Naavit, Observer = recorder });
            int n = prompt.TokenIds.Length, exitAfter = m.Exit is FixedLayerExit f ? f.Layers : cfg.Text.NumLayers;
            bool Visual(int row) => row >= Prefix && row < Prefix + visual;
            var want = new Dictionary<(int, int, int), double[]>();
            var naive = new NaiveLlava(TestModels.Tiny());
            naive.Forward(prompt.TokenIds, [prompt.Images[0].Pixels], new NaiveLlava.Variant
            {
                Visible = (l, q, k) => !(Visual(k) && !Visual(q) && l >= exitAfter),
                Frozen = m.Naavit ? (_, row) => Visual(row) : null,
                SkipAttention = l => m.Skipped.Contains(l),
                Probe = (l, h, q, p) => want[(l, h, q)] = p,
            });

            double worst = 0;
            foreach (var o in recorder.Layers)
            {
                if (o.Layer == 2 || o.AttentionSkipped)
                {
                    Assert.Null(o.Attention);
                    continue;
                }
                Assert.Equal(heads, o.AttentionHeads);
                int keys = o.CachedKeys + o.Rows.Length;
                Assert.Equal(heads.Length * o.QueryRows.Length * keys, o.Attention!.Length);
                for (int hi = 0; hi < heads.Length; hi++)
                    for (int i = 0; i < o.QueryRows.Length; i++)
                    {
                        int row = o.Rows[o.QueryRows[i]];
                        var p = want[(o.Layer, heads[hi], row)];
                        double seen = 0;
                        for (int j = 0; j < keys; j++)
                        {
                            double got = o.Attention[((long)hi * o.QueryRows.Length + i) * keys + j];
                            worst = Math.Max(worst, Math.Abs(got - p[o.Rows[j]]));   // key j is row j of this step (empty cache before)
                            seen += p[o.Rows[j]];
                        }
                        Assert.True(Math.Abs(seen - 1) < 1e-9, $"layer {o.Layer} query row {row}: the reference puts mass {1 - seen} on keys the layer does not hold");
                    }
            }
            Assert.True(worst < 2e-6, $"{m.Name}: max |p - p_ref| = {worst}");
            Assert.Contains(recorder.Layers, o => o.Attention is not null);
            _ = r;
        }
    }

    [Fact]
    public void DecodeStepsAreObservedWithTheirCachedKeys()
    {
        var (model, session, prompt, _) = Setup(new Method("layer:2", ExitPolicy.AtLayer(2), ExitKvMode.KeepEarly, false, []));
        using (model)
        using (session)
        {
            var cfg = model.Config;
            var r = session.Prefill(prompt, new PrefillOptions { Exit = ExitPolicy.AtLayer(2) });
            int next = Sampler.ArgMax(r.Logits.Last);
            var recorder = new DecoderRecorder(new DecoderCapture { AttentionProbabilities = true, InputRows = true });
            var step = session.Decode(next, recorder, outputHiddenStates: true);
            int n = prompt.TokenIds.Length, text = n - cfg.TokensPerImage;
            foreach (var o in recorder.Layers)
            {
                Assert.Equal(DecoderStep.Decode, o.Step);
                Assert.Equal([0], o.Rows);
                Assert.Equal([n], o.Positions);
                Assert.Equal([0], o.QueryRows);
                Assert.Equal(o.Layer < 2 ? n : text, o.CachedKeys);   // later layers never held the image
                Assert.Null(o.Trace);
                Assert.Equal(step.HiddenStates![o.Layer], o.Input);
                var p = o.Attention!;
                Assert.Equal(cfg.Text.NumHeads * (o.CachedKeys + 1), p.Length);
                for (int h = 0; h < cfg.Text.NumHeads; h++)
                    Assert.Equal(1.0, p.Skip(h * (o.CachedKeys + 1)).Take(o.CachedKeys + 1).Sum(x => (double)x), 5);
            }

            // Against the float64 reference on the prompt plus the token: its last row sees what the decode step saw.
            bool Visual(int row) => row >= Prefix && row < Prefix + cfg.TokensPerImage;
            var want = new Dictionary<(int, int), double[]>();
            new NaiveLlava(TestModels.Tiny()).Forward([.. prompt.TokenIds, next], [prompt.Images[0].Pixels], new NaiveLlava.Variant
            {
                Visible = (l, q, k) => !(Visual(k) && !Visual(q) && l >= 2),
                Probe = (l, h, q, pr) => { if (q == n) want[(l, h)] = pr; },
            });
            foreach (var o in recorder.Layers)
            {
                var keyRows = o.Layer < 2 ? Enumerable.Range(0, n + 1).ToArray() : [.. Enumerable.Range(0, n + 1).Where(k => !Visual(k))];
                for (int h = 0; h < cfg.Text.NumHeads; h++)
                    for (int j = 0; j < keyRows.Length; j++)
                        Assert.True(Math.Abs(o.Attention![h * keyRows.Length + j] - want[(o.Layer, h)][keyRows[j]]) < 2e-6, $"layer {o.Layer} head {h} key {j}");
            }
        }
    }

    [Fact]
    public void NoCaptureCopiesNothingAndAskingForAMissingHeadIsAnError()
    {
        var (model, session, prompt, _) = Setup(new Method("none", ExitPolicy.None, ExitKvMode.KeepEarly, false, []));
        using (model)
        using (session)
        {
            var bare = new DecoderRecorder(new DecoderCapture());
            var plain = session.Prefill(prompt);
            session.Reset();
            var observed = session.Prefill(prompt, new PrefillOptions { Observer = bare });
            Assert.All(bare.Layers, o => { Assert.Null(o.Input); Assert.Null(o.Attention); });
            Assert.Equal(plain.Logits.Values, observed.Logits.Values);   // observing changes nothing
            session.Reset();
            var bad = new DecoderRecorder(new DecoderCapture { AttentionProbabilities = true, Heads = [model.Config.Text.NumHeads] });
            Assert.Throws<InvalidInputException>(() => session.Prefill(prompt, new PrefillOptions { Observer = bad }));
        }
    }
}
