// GPU: the device key/value cache against the CPU one: appends of odd sizes that cross the growth
// boundary (256 tokens, then doubling) keep every earlier row, layers keep their own lengths (a layer may
// hold fewer tokens, as after a visual-token exit), views are invalid after a growth, Clear keeps storage;
// RemoveRows and RemoveRanges (several ranges, one compaction) leave what the CPU cache leaves and give storage back.
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Cuda.Tests;

[Trait("Category", "Gpu")]
public sealed class CudaKvCacheTests
{
    [Theory]
    [InlineData(DType.BF16, 33)]
    [InlineData(DType.F32, 64)]
    public void AppendsAcrossGrowthKeepEveryRow(DType dtype, int kvDim)
    {
        using var b = Gpu.Backend(dtype);
        using var cpu = new CpuBackend();
        using var cache = b.CreateKvCache(layers: 3, kvDim);
        using var reference = cpu.CreateKvCache(layers: 3, kvDim);
        int seed = 0;
        foreach (var (layer, n) in new[] { (0, 7), (1, 1), (0, 250), (0, 1), (2, 577), (0, 300), (1, 33) })
        {
            var k = CudaOpTests.Random(n * kvDim, ++seed, dtype);
            var v = CudaOpTests.Random(n * kvDim, ++seed, dtype);
            using var kd = CudaOpTests.Put(b, k, n, kvDim);
            using var vd = CudaOpTests.Put(b, v, n, kvDim);
            cache.Append(layer, kd, vd);
            using var kc = cpu.Allocate(n, kvDim);
            using var vc = cpu.Allocate(n, kvDim);
            cpu.CopyFromHost(k, kc);
            cpu.CopyFromHost(v, vc);
            reference.Append(layer, kc, vc);
        }
        for (int l = 0; l < 3; l++)
        {
            Assert.Equal(reference.Length(l), cache.Length(l));
            var (kv, vv) = cache.View(l);
            var (kr, vr) = reference.View(l);
            using (kv) using (vv) using (kr) using (vr)
            {
                Assert.Equal(((CpuTensor)kr).Span.ToArray(), CudaOpTests.Get(b, kv));
                Assert.Equal(((CpuTensor)vr).Span.ToArray(), CudaOpTests.Get(b, vv));
            }
        }
        Assert.Equal(558, cache.Length(0));
        Assert.True(cache.BytesHeld >= (558 + 34 + 577) * 2L * kvDim * dtype.Size());
    }

    [Theory]
    [InlineData(DType.BF16, 0, 576)]
    [InlineData(DType.BF16, 35, 576)]
    [InlineData(DType.F32, 600, 41)]
    public void RemoveRowsCompactsLikeTheCpuCacheAndGivesStorageBack(DType dtype, int start, int count)
    {
        using var b = Gpu.Backend(dtype);
        using var cpu = new CpuBackend();
        const int kvDim = 40, n = 641;
        using var cache = b.CreateKvCache(1, kvDim);
        using var reference = cpu.CreateKvCache(1, kvDim);
        var k = CudaOpTests.Random(n * kvDim, 1, dtype);
        var v = CudaOpTests.Random(n * kvDim, 2, dtype);
        using (var kd = CudaOpTests.Put(b, k, n, kvDim)) using (var vd = CudaOpTests.Put(b, v, n, kvDim)) cache.Append(0, kd, vd);
        using (var kc = cpu.Allocate(n, kvDim)) using (var vc = cpu.Allocate(n, kvDim))
        {
            cpu.CopyFromHost(k, kc);
            cpu.CopyFromHost(v, vc);
            reference.Append(0, kc, vc);
        }
        long before = cache.BytesHeld;
        cache.RemoveRows(0, start, count);
        reference.RemoveRows(0, start, count);
        Assert.Equal(n - count, cache.Length(0));
        Assert.True(cache.BytesHeld < before, $"{cache.BytesHeld} bytes held after compaction, {before} before");
        var (kv, vv) = cache.View(0);
        var (kr, vr) = reference.View(0);
        using (kv) using (vv) using (kr) using (vr)
        {
            Assert.Equal(((CpuTensor)kr).Span.ToArray(), CudaOpTests.Get(b, kv));
            Assert.Equal(((CpuTensor)vr).Span.ToArray(), CudaOpTests.Get(b, vv));
        }
    }

    public static TheoryData<DType, (int Start, int Count)[]> RangeCases() => new()
    {
        { DType.BF16, [(35, 576)] },
        { DType.BF16, [(0, 7), (7, 100), (300, 1), (600, 41)] },
        { DType.F32, [(1, 0), (35, 200), (400, 240)] },
    };

    [Theory]
    [MemberData(nameof(RangeCases))]
    public void RemoveRangesCompactsLikeTheCpuCacheInOneBlockAndGivesStorageBack(DType dtype, (int Start, int Count)[] ranges)
    {
        using var b = Gpu.Backend(dtype);
        using var cpu = new CpuBackend();
        const int kvDim = 40, n = 641;
        using var cache = b.CreateKvCache(2, kvDim);
        using var reference = cpu.CreateKvCache(2, kvDim);
        var k = CudaOpTests.Random(n * kvDim, 3, dtype);
        var v = CudaOpTests.Random(n * kvDim, 4, dtype);
        using (var kd = CudaOpTests.Put(b, k, n, kvDim)) using (var vd = CudaOpTests.Put(b, v, n, kvDim))
        {
            cache.Append(0, kd, vd);
            cache.Append(1, kd, vd);
        }
        using (var kc = cpu.Allocate(n, kvDim)) using (var vc = cpu.Allocate(n, kvDim))
        {
            cpu.CopyFromHost(k, kc);
            cpu.CopyFromHost(v, vc);
            reference.Append(0, kc, vc);
            reference.Append(1, kc, vc);
        }
        b.Synchronize();
        long before = cache.BytesHeld;
        var pool = b.Pool.Stats;
        cache.RemoveRanges(1, ranges);
        reference.RemoveRanges(1, ranges);
        b.Synchronize();
        var after = b.Pool.Stats;
        int removed = ranges.Sum(r => r.Count), keep = n - removed;
        Assert.Equal(keep, cache.Length(1));
        Assert.Equal(n, cache.Length(0));
        // One new block per tensor, the two old ones back to the pool: as many buffers out as before, fewer bytes.
        Assert.Equal(pool.Rents + 2, after.Rents);
        Assert.Equal(pool.Outstanding, after.Outstanding);
        long rowBytes = (long)kvDim * dtype.Size();
        long freed = 2 * (DevicePool.SizeClass(n * rowBytes) - DevicePool.SizeClass(Math.Max(keep, CudaKvCache.InitialCapacity) * rowBytes));
        Assert.True(freed > 0);
        Assert.Equal(pool.InUseBytes - freed, after.InUseBytes);
        Assert.True(cache.BytesHeld < before, $"{cache.BytesHeld} bytes held after compaction, {before} before");
        for (int l = 0; l < 2; l++)
        {
            var (kv, vv) = cache.View(l);
            var (kr, vr) = reference.View(l);
            using (kv) using (vv) using (kr) using (vr)
            {
                Assert.Equal(((CpuTensor)kr).Span.ToArray(), CudaOpTests.Get(b, kv));
                Assert.Equal(((CpuTensor)vr).Span.ToArray(), CudaOpTests.Get(b, vv));
            }
        }
        Assert.Throws<ArgumentException>(() => cache.RemoveRanges(1, [(5, 3), (2, 1)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.RemoveRanges(1, [(keep, 1)]));
    }

    [Fact]
    public void ViewsDieWithTheStorageTheyView()
    {
        using var b = Gpu.Backend(DType.BF16);
        using var cache = b.CreateKvCache(1, 8);
        using (var k = b.Allocate(200, 8)) using (var v = b.Allocate(200, 8)) cache.Append(0, k, v);
        var (oldK, _) = cache.View(0);
        using (var k = b.Allocate(100, 8)) using (var v = b.Allocate(100, 8)) cache.Append(0, k, v); // 300 > 256: grows
        Assert.Throws<ObjectDisposedException>(() => b.CopyToHost(oldK, new float[200 * 8]));
    }

    [Fact]
    public void ClearForgetsTokensButKeepsStorage()
    {
        using var b = Gpu.Backend(DType.BF16);
        using var cache = b.CreateKvCache(2, 16);
        using (var k = b.Allocate(5, 16)) using (var v = b.Allocate(5, 16)) cache.Append(1, k, v);
        long held = cache.BytesHeld;
        cache.Clear();
        Assert.Equal(0, cache.Length(1));
        Assert.Equal(held, cache.BytesHeld);
        var (kv, vv) = cache.View(0);
        Assert.Equal(0, kv.Rows);
        Assert.Equal(0, vv.Rows);
        Assert.Throws<ArgumentException>(() =>
        {
            using var wrong = b.Allocate(1, 15);
            cache.Append(0, wrong, wrong);
        });
    }
}
