// KvCache.RemoveRanges on the CPU cache: one compaction equals RemoveRows per range (last first) and equals a
// cache that was only ever given the kept rows, for one range, several (touching, at the ends, empty ones),
// on a layer that others share with different lengths; the base-class default (RemoveRows per range) agrees
// too; bad ranges (unsorted, overlapping, outside the rows, negative, not a layer, null) are rejected with
// typed exceptions and leave the cache as it was.
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class KvCacheRemoveRangesTests
{
    private const int KvDim = 13;
    private static readonly CpuBackend Cpu = new();

    public static TheoryData<string, int, (int Start, int Count)[]> Cases() => new()
    {
        { "one image span, 671 rows", 671, [(35, 576)] },
        { "two spans, 1200 rows", 1200, [(35, 576), (620, 500)] },
        { "at both ends and touching", 97, [(0, 5), (5, 3), (40, 1), (90, 7)] },
        { "with empty ranges", 33, [(0, 0), (4, 9), (13, 0), (20, 2)] },
        { "everything", 17, [(0, 17)] },
        { "nothing", 17, [] },
        { "one row", 1, [(0, 1)] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void OneCompactionEqualsRepeatedRemoveRowsAndAFreshCompactCache(string name, int rows, (int Start, int Count)[] ranges)
    {
        _ = name;
        var (k, v) = (Rows(rows, seed: rows), Rows(rows, seed: rows + 1));
        using var once = Filled(k, v, rows);
        using var repeated = Filled(k, v, rows);
        using var byDefault = new DefaultRemoveRanges(Filled(k, v, rows));
        once.RemoveRanges(1, ranges);
        for (int i = ranges.Length - 1; i >= 0; i--) repeated.RemoveRows(1, ranges[i].Start, ranges[i].Count);
        byDefault.RemoveRanges(1, ranges);

        var kept = Enumerable.Range(0, rows).Where(r => !ranges.Any(x => r >= x.Start && r < x.Start + x.Count)).ToArray();
        using var fresh = Filled(Pick(k, kept), Pick(v, kept), kept.Length);
        foreach (var other in new KvCache[] { repeated, byDefault, fresh })
            for (int l = 0; l < 3; l++)
            {
                if (other == fresh && l == 0) continue; // there layer 0 holds only the kept rows too
                Assert.Equal(other.Length(l), once.Length(l));
                Assert.Equal(Host(other, l).Keys, Host(once, l).Keys);
                Assert.Equal(Host(other, l).Values, Host(once, l).Values);
            }
        Assert.Equal(kept.Length, once.Length(1));
        Assert.Equal(rows, once.Length(0)); // the other layers are untouched
        Assert.Equal(5, once.Length(2));
    }

    [Fact]
    public void CompactionGivesStorageBackAndAppendsStillWork()
    {
        var (k, v) = (Rows(671, 1), Rows(671, 2));
        using var cache = Filled(k, v, 671);
        long before = cache.BytesHeld;
        cache.RemoveRanges(1, [(35, 576)]);
        Assert.True(cache.BytesHeld < before, $"{cache.BytesHeld} bytes held after compaction, {before} before");
        using var one = Tensor(Rows(1, 3), 1);
        cache.Append(1, one, one);
        Assert.Equal(96, cache.Length(1));
        Assert.Equal(Rows(1, 3), Host(cache, 1).Keys[(95 * KvDim)..]);
    }

    public static TheoryData<string, (int Start, int Count)[], Type> BadRanges() => new()
    {
        { "unsorted", [(10, 2), (3, 2)], typeof(ArgumentException) },
        { "overlapping", [(3, 5), (7, 2)], typeof(ArgumentException) },
        { "past the end", [(15, 3)], typeof(ArgumentOutOfRangeException) },
        { "negative start", [(-1, 2)], typeof(ArgumentOutOfRangeException) },
        { "negative count", [(2, -1)], typeof(ArgumentOutOfRangeException) },
        { "count overflows", [(2, int.MaxValue)], typeof(ArgumentOutOfRangeException) },
    };

    [Theory]
    [MemberData(nameof(BadRanges))]
    public void BadRangesAreRejectedAndLeaveTheCacheAsItWas(string name, (int Start, int Count)[] ranges, Type expected)
    {
        _ = name;
        var (k, v) = (Rows(17, 1), Rows(17, 2));
        using var cache = Filled(k, v, 17);
        using var byDefault = new DefaultRemoveRanges(Filled(k, v, 17));
        foreach (var c in new KvCache[] { cache, byDefault })
        {
            var e = Assert.Throws(expected, () => c.RemoveRanges(1, ranges));
            Assert.Equal("ranges", ((ArgumentException)e).ParamName);
            Assert.Contains("range", e.Message);
            Assert.Equal(17, c.Length(1));
            Assert.Equal(k, Host(c, 1).Keys);
        }
    }

    [Fact]
    public void NotALayerOrNoRangesAreRejected()
    {
        using var cache = Filled(Rows(3, 1), Rows(3, 2), 3);
        Assert.Throws<ArgumentOutOfRangeException>("layer", () => cache.RemoveRanges(3, [(0, 1)]));
        Assert.Throws<ArgumentOutOfRangeException>("layer", () => cache.RemoveRanges(-1, [(0, 1)]));
        Assert.Throws<ArgumentNullException>("ranges", () => cache.RemoveRanges(0, null!));
    }

    /// <summary>Three layers: layer 0 and 1 hold <paramref name="rows"/> rows, layer 2 holds 5 other rows.</summary>
    private static CpuKvCache Filled(float[] k, float[] v, int rows)
    {
        var cache = new CpuKvCache(3, KvDim);
        using var kt = Tensor(k, rows);
        using var vt = Tensor(v, rows);
        cache.Append(0, kt, vt);
        cache.Append(1, kt, vt);
        using var small = Tensor(Rows(5, 99), 5);
        cache.Append(2, small, small);
        return cache;
    }

    private static Tensor Tensor(float[] values, int rows)
    {
        var t = Cpu.Allocate(rows, KvDim);
        Cpu.CopyFromHost(values, t);
        return t;
    }

    private static float[] Rows(int rows, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, rows * KvDim).Select(_ => rng.NextSingle() * 2 - 1).ToArray();
    }

    private static float[] Pick(float[] values, int[] rows) => rows.SelectMany(r => values.AsSpan(r * KvDim, KvDim).ToArray()).ToArray();

    private static (float[] Keys, float[] Values) Host(KvCache cache, int layer)
    {
        var (k, v) = cache.View(layer);
        using (k) using (v) return (((CpuTensor)k).Span.ToArray(), ((CpuTensor)v).Span.ToArray());
    }

    /// <summary>A cache that keeps KvCache's default RemoveRanges (RemoveRows per range, last first).</summary>
    private sealed class DefaultRemoveRanges(CpuKvCache inner) : KvCache
    {
        public override int Layers => inner.Layers;
        public override int Length(int layer) => inner.Length(layer);
        public override void Append(int layer, Tensor keys, Tensor values) => inner.Append(layer, keys, values);
        public override (Tensor Keys, Tensor Values) View(int layer) => inner.View(layer);
        public override long BytesHeld => inner.BytesHeld;
        public override void RemoveRows(int layer, int start, int count) => inner.RemoveRows(layer, start, count);
        public override void Clear() => inner.Clear();
        public override void Dispose() => inner.Dispose();
    }
}
