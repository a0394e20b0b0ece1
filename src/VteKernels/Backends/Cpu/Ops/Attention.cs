// CpuOps.Attention: scaled dot-product attention with grouped-query heads, one query row at a time:
// scores against the visible keys, a float32 softmax with max subtraction, then the weighted sum of
// values. Only one score row per thread exists at any time (nk floats), so memory does not grow with
// nq · nk. Work items are (query head, block of query rows); a causal query i sees keys
// j <= nk - nq + i, i.e. the queries are the last nq of the nk positions (prefill with a cache, decode).
//
// The two inner loops are written out with Vector256 rather than calling TensorPrimitives per key: scores
// take four keys per pass (each q vector loaded once for four FMAs), and the value mix keeps a 64-wide
// slice of the output row in eight registers across all keys instead of loading and storing it per key.
// With keys and values of a head packed contiguously per work item (see Item), CLIP's shape (577 × 577,
// 16 heads of 64) takes 31 ms on two Zen 3 cores, against 108 ms with a TensorPrimitives call per key on
// the unpacked layout.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace VteKernels.Backends.Cpu;

public static unsafe partial class CpuOps
{
    /// <summary>Query rows per attention work item.</summary>
    private const int AttentionRowBlock = 16;

    /// <summary>
    /// output = softmax(q·kᵀ / √headDim + mask) · v per query head, where query head h reads key/value head
    /// h / (qHeads / kvHeads). Float32 throughout.
    /// </summary>
    /// <param name="q">Queries, [nq, qHeads, headDim].</param>
    /// <param name="nq">Number of query rows.</param>
    /// <param name="qHeads">Query heads; a multiple of <paramref name="kvHeads"/>.</param>
    /// <param name="k">Keys, [nk, kvHeads, headDim].</param>
    /// <param name="v">Values, [nk, kvHeads, headDim].</param>
    /// <param name="nk">Number of key rows; at least nq for a causal mask, at least 1 when nq &gt; 0.</param>
    /// <param name="kvHeads">Key/value heads.</param>
    /// <param name="headDim">Elements per head.</param>
    /// <param name="mask">Which keys each query sees.</param>
    /// <param name="output">Result, [nq, qHeads, headDim]; must not overlap the inputs.</param>
    /// <param name="threads">Threads to use (0: all cores).</param>
    /// <exception cref="ArgumentException">A length or count disagrees, or the output overlaps an input.</exception>
    public static void Attention(ReadOnlySpan<float> q, int nq, int qHeads, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        int nk, int kvHeads, int headDim, AttentionMask mask, Span<float> output, int threads = 0)
    {
        CheckAttentionShapes(nq, qHeads, nk, kvHeads, headDim, mask, q.Length, k.Length, v.Length, output.Length);
        if (output.Overlaps(q) || output.Overlaps(k) || output.Overlaps(v))
            throw new ArgumentException("output must not overlap q, k or v", nameof(output));
        if (nq == 0) return;
        fixed (float* pq = q)
        fixed (float* pk = k)
        fixed (float* pv = v)
        fixed (float* po = output)
            AttentionStored(pq, nq, qHeads, new KvRows((byte*)pk, DType.F32, kvHeads * headDim), new KvRows((byte*)pv, DType.F32, kvHeads * headDim), nk, kvHeads, headDim, mask, po, threads);
    }

    /// <summary>The argument checks of <see cref="Attention"/>, on counts and lengths.</summary>
    internal static void CheckAttentionShapes(int nq, int qHeads, int nk, int kvHeads, int headDim, AttentionMask mask,
        long qLength, long kLength, long vLength, long outputLength)
    {
        CheckNonNegative(nq, nameof(nq));
        CheckNonNegative(nk, nameof(nk));
        CheckPositive(qHeads, nameof(qHeads));
        CheckPositive(kvHeads, nameof(kvHeads));
        CheckPositive(headDim, nameof(headDim));
        if (qHeads % kvHeads != 0) throw new ArgumentException($"qHeads ({qHeads}) must be a multiple of kvHeads ({kvHeads})", nameof(qHeads));
        if (mask is not (AttentionMask.None or AttentionMask.Causal)) throw new ArgumentOutOfRangeException(nameof(mask));
        CheckLength((int)qLength, (long)nq * qHeads * headDim, "q", $"[{nq}, {qHeads}, {headDim}]");
        CheckLength((int)kLength, (long)nk * kvHeads * headDim, "k", $"[{nk}, {kvHeads}, {headDim}]");
        CheckLength((int)vLength, (long)nk * kvHeads * headDim, "v", $"[{nk}, {kvHeads}, {headDim}]");
        CheckLength((int)outputLength, (long)nq * qHeads * headDim, "output", $"[{nq}, {qHeads}, {headDim}]");
        if (mask == AttentionMask.Causal && nk < nq)
            throw new ArgumentException($"a causal mask needs at least as many keys as queries (nk = {nk}, nq = {nq})", nameof(nk));
        if (nq > 0 && nk == 0) throw new ArgumentException("queries need at least one key", nameof(nk));
    }

    /// <summary>
    /// Keys or values as stored: elements of <see cref="Type"/> from <see cref="Data"/>, row-major [nk, kvHeads, headDim]
    /// or in parts of <see cref="PartWidth"/> columns (a 16-bit CpuKvCache stores each head's rows together): column c
    /// of row j at Data + (c / PartWidth) · PartStride + j · RowStride + c % PartWidth elements.
    /// </summary>
    internal readonly struct KvRows
    {
        /// <summary>Row-major rows of <paramref name="width"/> elements.</summary>
        public KvRows(byte* data, DType type, int width) : this(data, type, width, 0, width) { }

        public KvRows(byte* data, DType type, long rowStride, long partStride, int partWidth)
        {
            Data = data;
            Type = type;
            RowStride = rowStride;
            PartStride = partStride;
            PartWidth = partWidth;
        }

        public byte* Data { get; }

        public DType Type { get; }

        /// <summary>Elements between consecutive rows of one part (a part's rows lie together when it is narrower than a row).</summary>
        public long RowStride { get; }

        /// <summary>Elements between a part's start and the next one's.</summary>
        public long PartStride { get; }

        /// <summary>Columns per part.</summary>
        public int PartWidth { get; }

        /// <summary>Row 0 of kv head <paramref name="kvh"/>, whose <paramref name="headDim"/> columns lie in one part.</summary>
        public byte* Head(int kvh, int headDim)
        {
            long c = (long)kvh * headDim;
            return Data + (c / PartWidth * PartStride + c % PartWidth) * Type.Size();
        }
    }

    /// <summary>
    /// <see cref="Attention"/> over keys and values stored as float32, bf16 or f16 (a 16-bit KV cache, read
    /// where it is). The caller has checked the shapes. <paramref name="kvFinite"/>: no stored f16 element is
    /// Inf or NaN (what the f16 register path needs; see RowFormats.cs).
    /// </summary>
    internal static void AttentionStored(float* q, int nq, int qHeads, KvRows k, KvRows v, int nk, int kvHeads, int headDim,
        AttentionMask mask, float* output, int threads, bool kvFinite = true)
    {
        int group = qHeads / kvHeads;
        float scale = 1f / MathF.Sqrt(headDim);
        int rowBlocks = (nq + AttentionRowBlock - 1) / AttentionRowBlock;
        int items = qHeads * rowBlocks;
        if (k.PartWidth % headDim != 0 || v.PartWidth % headDim != 0)
            throw new ArgumentException($"heads of {headDim} columns straddle the stored parts of {k.PartWidth} and {v.PartWidth}", nameof(headDim));
        if (k.RowStride != v.RowStride) throw new ArgumentException("keys and values are laid out differently", nameof(v));
        long qStride = (long)qHeads * headDim, kvStride = k.RowStride;
        int elem = k.Type.Size();
        // One query row reads 16-bit keys and values in place, widened in registers; several rows (or a
        // machine without 512-bit vectors) widen the head's rows into scratch first.
        bool inPlace16 = nq == 1 && k.Type != DType.F32 && Vector512.IsHardwareAccelerated && (k.Type == DType.BF16 || kvFinite);
        // Per-thread scratch: one score row, then this head's keys and values packed [nk, headDim].
        long scratchFloats = nk + (nq > 1 || (k.Type != DType.F32 && !inPlace16) ? 2L * nk * headDim : 0) + headDim;
        bool f16Scaled = inPlace16 && k.Type == DType.F16 && SubnormalInputsAreFree;
        nint qp = (nint)q, op = (nint)output;
        void Item(int item, float* scratch)
        {
            int h = item / rowBlocks, i0 = item % rowBlocks * AttentionRowBlock;
            int i1 = Math.Min(nq, i0 + AttentionRowBlock);
            int keys = mask == AttentionMask.Causal ? nk - nq + i1 : nk; // keys any row of the block sees
            float* scores = scratch;
            int kvh = h / group;
            byte* kHead = k.Head(kvh, headDim), vHead = v.Head(kvh, headDim);
            if (inPlace16)
            {
                int visible = mask == AttentionMask.Causal ? nk - nq + 1 : nk;
                float* qRow = (float*)qp + (long)h * headDim, oRow = (float*)op + (long)h * headDim;
                float* scaledQ = scratch + scratchFloats - headDim;
                if (k.Type == DType.BF16) DecodeHead16<Bf16Kv>(qRow, kHead, vHead, kvStride, visible, headDim, scale, scores, oRow, scaledQ);
                else if (f16Scaled && TensorPrimitives.MaxMagnitude(new ReadOnlySpan<float>(qRow, headDim)) < F16ScaledInputLimit)
                    DecodeHead16<F16ScaledKv>(qRow, kHead, vHead, kvStride, visible, headDim, scale, scores, oRow, scaledQ);
                else DecodeHead16<F16Kv>(qRow, kHead, vHead, kvStride, visible, headDim, scale, scores, oRow, scaledQ);
                return;
            }
            float* kf = (float*)kHead, vf = (float*)vHead;
            long stride = kvStride;
            if (i1 - i0 > 1 || k.Type != DType.F32)
            {
                // Pack this head's keys and values contiguously (widened to float32): in [nk, kvHeads, headDim]
                // consecutive keys of one head lie kvHeads·headDim elements apart (4 KiB for CLIP), so all of
                // them map to the same few cache sets and every query row re-reads them from far away. A single
                // float32 query row (decode) reads each key once, so it uses them where they are.
                float* kPacked = scratch + nk, vPacked = kPacked + (long)nk * headDim;
                for (int j = 0; j < keys; j++)
                {
                    Widen(kHead + j * kvStride * elem, k.Type, kPacked + (long)j * headDim, headDim);
                    Widen(vHead + j * kvStride * elem, v.Type, vPacked + (long)j * headDim, headDim);
                }
                kf = kPacked;
                vf = vPacked;
                stride = headDim;
            }
            for (int i = i0; i < i1; i++)
            {
                int visible = mask == AttentionMask.Causal ? nk - nq + i + 1 : nk;
                float* qRow = (float*)qp + i * qStride + (long)h * headDim;
                AttentionScores(qRow, kf, stride, visible, headDim, scale, scores);
                SoftmaxInPlace(new Span<float>(scores, visible));
                MixValues(scores, vf, stride, visible, headDim, (float*)op + i * qStride + (long)h * headDim);
            }
        }
        long work = (long)nq * qHeads * nk * headDim * 2;
        threads = WorthParallel(work, items, threads) ? threads : 1;
        using var scratch = new ThreadScratch(CpuWorkers.Resolve(threads), scratchFloats);
        CpuWorkers.For(items, threads, (item, worker) => Item(item, scratch.For(worker)));
    }

    /// <summary>scores[j] = scale · q · k_j for j &lt; count, key j at k + j·stride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttentionScores(float* q, float* k, long stride, int count, int headDim, float scale, float* scores)
    {
        int j = 0;
        if (Vector256.IsHardwareAccelerated && headDim >= Vector256<float>.Count)
        {
            for (; j + 4 <= count; j += 4)
            {
                float* k0 = k + j * stride, k1 = k0 + stride, k2 = k1 + stride, k3 = k2 + stride;
                var a0 = Vector256<float>.Zero; var a1 = Vector256<float>.Zero;
                var a2 = Vector256<float>.Zero; var a3 = Vector256<float>.Zero;
                int d = 0;
                for (; d + 8 <= headDim; d += 8)
                {
                    var qv = Vector256.Load(q + d);
                    a0 = MulAdd(qv, Vector256.Load(k0 + d), a0);
                    a1 = MulAdd(qv, Vector256.Load(k1 + d), a1);
                    a2 = MulAdd(qv, Vector256.Load(k2 + d), a2);
                    a3 = MulAdd(qv, Vector256.Load(k3 + d), a3);
                }
                float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
                for (; d < headDim; d++)
                {
                    s0 += q[d] * k0[d]; s1 += q[d] * k1[d]; s2 += q[d] * k2[d]; s3 += q[d] * k3[d];
                }
                scores[j] = s0 * scale; scores[j + 1] = s1 * scale; scores[j + 2] = s2 * scale; scores[j + 3] = s3 * scale;
            }
        }
        for (; j < count; j++)
            scores[j] = TensorPrimitives.Dot(new ReadOnlySpan<float>(q, headDim), new ReadOnlySpan<float>(k + j * stride, headDim)) * scale;
    }

    /// <summary>output[d] = Σ_j p[j] · v_j[d] for j &lt; count, value row j at v + j·stride; each element sums in key order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MixValues(float* p, float* v, long stride, int count, int headDim, float* output)
    {
        int d = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // Eight independent accumulators cover the FMA latency (4 cycles, 2 per cycle).
            for (; d + 64 <= headDim; d += 64)
            {
                var a0 = Vector256<float>.Zero; var a1 = Vector256<float>.Zero; var a2 = Vector256<float>.Zero; var a3 = Vector256<float>.Zero;
                var a4 = Vector256<float>.Zero; var a5 = Vector256<float>.Zero; var a6 = Vector256<float>.Zero; var a7 = Vector256<float>.Zero;
                float* vj = v + d;
                for (int j = 0; j < count; j++, vj += stride)
                {
                    var w = Vector256.Create(p[j]);
                    a0 = MulAdd(Vector256.Load(vj), w, a0); a1 = MulAdd(Vector256.Load(vj + 8), w, a1);
                    a2 = MulAdd(Vector256.Load(vj + 16), w, a2); a3 = MulAdd(Vector256.Load(vj + 24), w, a3);
                    a4 = MulAdd(Vector256.Load(vj + 32), w, a4); a5 = MulAdd(Vector256.Load(vj + 40), w, a5);
                    a6 = MulAdd(Vector256.Load(vj + 48), w, a6); a7 = MulAdd(Vector256.Load(vj + 56), w, a7);
                }
                a0.Store(output + d); a1.Store(output + d + 8); a2.Store(output + d + 16); a3.Store(output + d + 24);
                a4.Store(output + d + 32); a5.Store(output + d + 40); a6.Store(output + d + 48); a7.Store(output + d + 56);
            }
            for (; d + 8 <= headDim; d += 8)
            {
                var a = Vector256<float>.Zero;
                float* vj = v + d;
                for (int j = 0; j < count; j++, vj += stride) a = MulAdd(Vector256.Load(vj), Vector256.Create(p[j]), a);
                a.Store(output + d);
            }
        }
        for (; d < headDim; d++)
        {
            float a = 0;
            float* vj = v + d;
            for (int j = 0; j < count; j++, vj += stride) a += p[j] * *vj;
            output[d] = a;
        }
    }

    /// <summary>
    /// Softmax of <paramref name="row"/> in place, in float32: exp(x − max) / Σ exp(x − max). Subtracting the
    /// maximum keeps exp from overflowing. An empty row is left as it is.
    /// </summary>
    /// <param name="row">Logits in, probabilities out.</param>
    public static void SoftmaxInPlace(Span<float> row)
    {
        if (row.IsEmpty) return;
        float max = TensorPrimitives.Max(row);
        TensorPrimitives.Subtract(row, max, row);
        TensorPrimitives.Exp(row, row);
        float sum = TensorPrimitives.Sum(row);
        TensorPrimitives.Divide(row, sum, row);
    }
}
