// The 16-bit KV cache (bf16 and f16) end to end: the engine's logits in prefill and in decode steps against
// the float64 naive forward pass, held to twice the error that the same rounding of keys and values causes in
// the float64 pass (plus the float32 engine's own budget); the default storage follows the model's dtype;
// the cache holds half the bytes; compaction keeps the stored values.
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Tests.Reference;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class KvCache16Tests(ITestOutputHelper output)
{
    private static double Round(DType storage, double x) => storage switch
    {
        DType.BF16 => DTypes.FromBFloat16Bits(DTypes.ToBFloat16Bits((float)x)),
        DType.F16 => (double)(float)(Half)(float)x,
        _ => (float)x,
    };

    /// <summary>max |ours − exact| ≤ 2 · max |rounded − exact| + 2e-5 · scale, the float32 engine's own budget.</summary>
    private void AssertWithinRoundingError(string what, ReadOnlySpan<float> ours, double[] exact, double[] rounded)
    {
        double scale = Math.Max(1, exact.Max(Math.Abs)), e = 0, naive = 0;
        for (int i = 0; i < exact.Length; i++)
        {
            Assert.False(float.IsNaN(ours[i]), $"{what}: NaN at {i}");
            e = Math.Max(e, Math.Abs(ours[i] - exact[i]));
            naive = Math.Max(naive, Math.Abs(rounded[i] - exact[i]));
        }
        double bound = 2 * naive + 2e-5 * scale;
        output.WriteLine($"{what}: max |error| {e:E2}, float64 pass with the same KV rounding {naive:E2}, bound {bound:E2}");
        Assert.True(naive > 0, $"{what}: the rounding changed nothing, so this test would not see it");
        Assert.True(e <= bound, $"{what}: max |error| {e:E3} exceeds {bound:E3}");
    }

    [Theory]
    [InlineData(DType.BF16, DType.BF16)]
    [InlineData(DType.F16, DType.F16)]
    [InlineData(DType.F32, DType.BF16)]
    public void PrefillAndDecodeMatchTheFloat64PassWithTheSameRounding(DType weights, DType storage)
    {
        var dir = TestModels.Tiny(weights, seed: 21);
        using var model = LlavaModel.Load(dir, new CpuBackend(new CpuBackendOptions { KvCache = storage }));
        var cfg = model.Config;
        var ids = TestModels.PromptIds(cfg, 21);
        var pixels = TestModels.Pixels(cfg, 21);
        using var session = model.CreateSession();
        Assert.Equal(2, session.Cache.ElementBytes);
        var r = session.Prefill(new PromptInput(ids, [ImageInput.Square(pixels, cfg.Vision.ImageSize)]), new PrefillOptions { AllLogits = true });
        var naive = new NaiveLlava(dir);
        var rounded = new NaiveLlava.Variant { RoundKv = x => Round(storage, x) };
        AssertWithinRoundingError($"{weights} weights, {storage} cache: prefill logits", r.Logits.Values,
            naive.Forward(ids, [pixels]).Logits, naive.Forward(ids, [pixels], rounded).Logits);

        var seq = ids.ToList();
        var step = r;
        for (int t = 0; t < 3; t++)
        {
            int next = Sampler.ArgMax(step.Logits.Last);
            seq.Add(next);
            step = session.Decode(next);
            int vocab = cfg.Text.VocabSize;
            double[] Last(double[] all) => all[^vocab..];
            AssertWithinRoundingError($"{weights} weights, {storage} cache: decode step {t}", step.Logits.Last,
                Last(naive.Forward([.. seq], [pixels]).Logits), Last(naive.Forward([.. seq], [pixels], rounded).Logits));
        }
    }

    [Theory]
    [InlineData(DType.F32, DType.F32)]
    [InlineData(DType.BF16, DType.BF16)]
    [InlineData(DType.F16, DType.F16)]
    public void DefaultStorageFollowsTheModel(DType weights, DType expected)
    {
        var backend = new CpuBackend();
        using var model = LlavaModel.Load(TestModels.Tiny(weights), backend);
        Assert.Equal(expected, backend.KvCacheType);
        using var session = model.CreateSession();
        Assert.Equal(expected.Size(), session.Cache.ElementBytes);
        var forced = new CpuBackend(new CpuBackendOptions { KvCache = DType.F32 });
        using var m32 = LlavaModel.Load(TestModels.Tiny(weights), forced);
        Assert.Equal(DType.F32, forced.KvCacheType);
    }

    [Theory]
    [InlineData(DType.BF16, 12)]
    [InlineData(DType.F16, 12)]
    [InlineData(DType.BF16, 4)]    // each 4-column head's rows stored together
    [InlineData(DType.F16, 6)]
    public void StoresRoundedValuesAndCompactsThem(DType storage, int headDim)
    {
        const int kvDim = 12, rows = 40;
        var backend = new CpuBackend();
        using var cache = new CpuKvCache(2, kvDim, storage, headDim);
        using var wide = new CpuKvCache(2, kvDim);
        var k = OpsTestData(rows * kvDim, 1);
        var v = OpsTestData(rows * kvDim, 2);
        using var kt = backend.Allocate(rows, kvDim);
        using var vt = backend.Allocate(rows, kvDim);
        backend.CopyFromHost(k, kt);
        backend.CopyFromHost(v, vt);
        cache.Append(1, kt, vt);
        wide.Append(1, kt, vt);
        Assert.Equal(wide.BytesHeld / 2, cache.BytesHeld);
        // Rows appended one at a time grow the layer (a copy into arrays of twice the rows) more than once.
        for (int r = 0; r < 30; r++)
        {
            using var k1 = kt.Slice(r, 1);
            using var v1 = vt.Slice(r, 1);
            cache.Append(1, k1, v1);
            wide.Append(1, k1, v1);
        }
        Assert.Equal(wide.BytesHeld / 2, cache.BytesHeld);
        cache.RemoveRanges(1, [(3, 5), (20, 11)]);
        wide.RemoveRanges(1, [(3, 5), (20, 11)]);
        Assert.Equal(wide.Length(1), cache.Length(1));
        var (ck, cv) = cache.View(1);
        var (wk, wv) = wide.View(1);
        var got = new float[ck.Rows * kvDim];
        var want = new float[ck.Rows * kvDim];
        foreach (var (c, w) in new[] { (ck, wk), (cv, wv) })
        {
            backend.CopyToHost(c, got);
            backend.CopyToHost(w, want);
            for (int i = 0; i < got.Length; i++) Assert.Equal((float)Round(storage, want[i]), got[i]);
        }
    }

    [Theory]
    [InlineData(DType.BF16, 1, 40, 8, 2, 64)]
    [InlineData(DType.F16, 1, 40, 8, 2, 64)]
    [InlineData(DType.BF16, 1, 17, 4, 4, 130)]    // head dim past 128 and not a multiple of 16
    [InlineData(DType.F16, 1, 3, 2, 1, 7)]
    [InlineData(DType.BF16, 5, 33, 4, 2, 33)]     // several query rows: widened into scratch
    [InlineData(DType.F16, 1, 1, 1, 1, 1)]
    [InlineData(DType.BF16, 1, 40, 8, 2, 64, true)]   // each head's rows stored together
    [InlineData(DType.F16, 1, 37, 4, 4, 130, true)]
    [InlineData(DType.F16, 1, 3, 2, 1, 7, true)]
    [InlineData(DType.BF16, 5, 33, 4, 2, 33, true)]
    public void AttentionReadsTheStoredRows(DType storage, int nq, int nk, int qHeads, int kvHeads, int headDim, bool headMajor = false)
    {
        var backend = new CpuBackend();
        using var cache = new CpuKvCache(1, kvHeads * headDim, storage, headMajor ? headDim : kvHeads * headDim);
        using var kt = backend.Allocate(nk, kvHeads * headDim);
        using var vt = backend.Allocate(nk, kvHeads * headDim);
        backend.CopyFromHost(OpsTestData(nk * kvHeads * headDim, 3, 2f), kt);
        backend.CopyFromHost(OpsTestData(nk * kvHeads * headDim, 4), vt);
        // Two appends: past 16 rows the second grows the layer, so each head's part has room for more rows than it holds.
        if (nk > 1)
        {
            using (var k0 = kt.Slice(0, nk - 1)) using (var v0 = vt.Slice(0, nk - 1)) cache.Append(0, k0, v0);
            using (var k1 = kt.Slice(nk - 1, 1)) using (var v1 = vt.Slice(nk - 1, 1)) cache.Append(0, k1, v1);
        }
        else cache.Append(0, kt, vt);
        var (k, v) = cache.View(0);
        var kw = new float[nk * kvHeads * headDim];
        var vw = new float[nk * kvHeads * headDim];
        backend.CopyToHost(k, kw);
        backend.CopyToHost(v, vw);
        var q = OpsTestData(nq * qHeads * headDim, 5, 2f);
        using var qt = backend.Allocate(nq, qHeads * headDim);
        backend.CopyFromHost(q, qt);
        using var o = backend.Allocate(nq, qHeads * headDim);
        backend.CopyFromHost(Ops.OpsTestData.Poisoned(nq * qHeads * headDim), o);
        backend.Attention(qt, qHeads, k, v, kvHeads, headDim, AttentionMask.Causal, o);
        var got = new float[nq * qHeads * headDim];
        backend.CopyToHost(o, got);
        // The float32 kernel over the widened rows, and the float64 reference over them.
        var f32 = new float[got.Length];
        CpuOps.Attention(q, nq, qHeads, kw, vw, nk, kvHeads, headDim, AttentionMask.Causal, f32);
        var reference = Ops.AttentionTests.Reference(q, nq, qHeads, kw, vw, nk, kvHeads, headDim, AttentionMask.Causal);
        Tolerance.AssertWithinNaiveError(got, f32, reference, $"{storage} cache attention nq={nq} nk={nk} heads={qHeads}/{kvHeads} hd={headDim}", floor: 1e-6, log: output);
    }

    /// <summary>
    /// The two f16 decode-attention forms (exact widening; positioned bits as w · 2^-112 against q and p scaled by 2^112)
    /// give the same scores and outputs bit for bit: tiny keys and values make f16 subnormals, odd head dims leave tails.
    /// </summary>
    [Theory]
    [InlineData(1, 7, 1f)]
    [InlineData(3, 130, 1e-4f)]
    [InlineData(40, 128, 1e-3f)]
    [InlineData(17, 33, 1f)]
    public unsafe void HalfDecodeAttentionFormsAreTheSame(int count, int headDim, float kvScale)
    {
        var rng = new Random(count * 31 + headDim);
        var k = new Half[count * headDim];
        var v = new Half[count * headDim];
        for (int i = 0; i < k.Length; i++)
        {
            k[i] = (Half)((rng.NextSingle() * 2 - 1) * kvScale * (i % 5 == 0 ? 1e-3f : 1f));
            v[i] = (Half)((rng.NextSingle() * 2 - 1) * kvScale * (i % 7 == 0 ? 1e-3f : 1f));
        }
        var q = OpsTestData(headDim, 6, 3f);
        if (count == 1) q[0] = 60000f; // near the limit of the scaled form (one key: the softmax cannot saturate)
        float scale = 1f / MathF.Sqrt(headDim);
        var (exactScores, exact) = Run<CpuOps.F16Kv>();
        var (scaledScores, scaled) = Run<CpuOps.F16ScaledKv>();
        for (int j = 0; j < count; j++)
            Assert.True(BitConverter.SingleToInt32Bits(exactScores[j]) == BitConverter.SingleToInt32Bits(scaledScores[j] / CpuOps.F16ScaledKv.Up),
                $"probability {j}: {exactScores[j]:R} vs {scaledScores[j]:R} / 2^112");
        for (int e = 0; e < headDim; e++)
            Assert.True(BitConverter.SingleToInt32Bits(exact[e]) == BitConverter.SingleToInt32Bits(scaled[e]), $"output {e}: {exact[e]:R} vs {scaled[e]:R}");
        Assert.Equal(MathF.ScaleB(1f, 112), CpuOps.F16ScaledKv.Up);

        (float[] Scores, float[] Output) Run<T>() where T : struct, CpuOps.IKvFormat
        {
            var scores = Ops.OpsTestData.Poisoned(count);
            var o = Ops.OpsTestData.Poisoned(headDim);
            var scaledQ = new float[headDim];
            fixed (float* pq = q, ps = scores, po = o, psq = scaledQ)
            fixed (Half* pk = k, pv = v)
                CpuOps.DecodeHead16<T>(pq, (byte*)pk, (byte*)pv, headDim, count, headDim, scale, ps, po, psq);
            return (scores, o);
        }
    }

    private static float[] OpsTestData(int count, int seed, float scale = 1f) => Ops.OpsTestData.RandomFloats(count, seed, scale);
}
