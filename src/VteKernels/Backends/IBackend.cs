// The seam between the orchestrator and the hardware. The orchestrator (LlavaModel) is written once against
// this interface; the CPU backend implements it in plain C# and is the reference oracle, a CUDA backend
// implements the same ops with kernels. Activations are 2-D row-major matrices [rows, cols] owned by the
// backend (float32 on the CPU); weights are uploaded once and referenced through DeviceWeight handles.
// Ops write into caller-provided destinations (destination last), so the orchestrator decides lifetimes.
namespace VteKernels.Backends;

/// <summary>Which keys a query may see in <see cref="IBackend.Attention"/>.</summary>
public enum AttentionMask
{
    /// <summary>Every query sees every key (the vision tower).</summary>
    None,

    /// <summary>The queries are the last rows of the keys: query i of nq sees keys j &lt;= nk - nq + i.</summary>
    Causal,
}

/// <summary>What a matrix uploaded with <see cref="IBackend.UploadLinear"/> belongs to.</summary>
public enum LinearRole
{
    /// <summary>The language model's projections (attention, FFN) and its LM head.</summary>
    LanguageModel,

    /// <summary>The vision tower's and the projector's matrices.</summary>
    Vision,
}

/// <summary>
/// A weight as a backend holds it (on the CPU, the memory-mapped view itself). A model's weights live as long
/// as the backend; weights made for one request (folded adapters) are disposed when it ends, which gives a
/// device copy back.
/// </summary>
public abstract class DeviceWeight : IDisposable
{
    /// <summary>The stored tensor this was made from.</summary>
    public abstract Weight Source { get; }

    /// <summary>Gives the backend's copy back (the CPU holds none: nothing happens).</summary>
    public virtual void Dispose() => GC.SuppressFinalize(this);
}

/// <summary>An activation matrix [Rows, Cols] held by a backend. Views made by <see cref="Slice"/> share storage.</summary>
public abstract class Tensor : IDisposable
{
    /// <summary>Number of rows (tokens).</summary>
    public int Rows { get; }

    /// <summary>Number of columns (features).</summary>
    public int Cols { get; }

    /// <summary>Creates the shape record.</summary>
    protected Tensor(int rows, int cols)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        Rows = rows;
        Cols = cols;
    }

    /// <summary>A view of rows [row, row + count) sharing this tensor's storage; disposing the view frees nothing.</summary>
    public abstract Tensor Slice(int row, int count);

    /// <summary>Returns the storage (views: nothing).</summary>
    public abstract void Dispose();

    /// <inheritdoc/>
    public override string ToString() => $"[{Rows}, {Cols}]";
}

/// <summary>
/// Per-layer key/value cache. Each layer has its own length (a layer may hold fewer tokens than another),
/// rows are [kvHeads * headDim] with RoPE already applied to keys.
/// </summary>
public abstract class KvCache : IDisposable
{
    /// <summary>Number of layers.</summary>
    public abstract int Layers { get; }

    /// <summary>Tokens held by <paramref name="layer"/>.</summary>
    public abstract int Length(int layer);

    /// <summary>Appends rows of keys and values (each [n, kvDim]) to <paramref name="layer"/>.</summary>
    public abstract void Append(int layer, Tensor keys, Tensor values);

    /// <summary>Views of the keys and values held by <paramref name="layer"/>, valid until the next append.</summary>
    public abstract (Tensor Keys, Tensor Values) View(int layer);

    /// <summary>Bytes per stored element (4 for float32 storage, 2 for bf16).</summary>
    public virtual int ElementBytes => sizeof(float);

    /// <summary>Bytes of key/value storage currently held (capacity, not only length).</summary>
    public abstract long BytesHeld { get; }

    /// <summary>
    /// Removes rows [<paramref name="start"/>, <paramref name="start"/> + <paramref name="count"/>) of
    /// <paramref name="layer"/>: later rows move down, and storage no longer needed is given back (the
    /// physical compaction behind visual-token exit).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the layer's rows.</exception>
    public abstract void RemoveRows(int layer, int start, int count);

    /// <summary>
    /// Removes several row ranges of <paramref name="layer"/> in one compaction: effectively
    /// <see cref="RemoveRows"/> for each range, last range first (so the earlier offsets stay valid). Keys keep
    /// the rotation of their original positions: nothing is recomputed. The default does exactly that; caches
    /// override it with one pass over the kept rows.
    /// </summary>
    /// <param name="layer">The layer to compact.</param>
    /// <param name="ranges">(Start, Count) row ranges in the layer's current numbering, sorted by start and
    /// non-overlapping (touching is allowed, empty ranges are ignored).</param>
    /// <exception cref="ArgumentNullException"><paramref name="ranges"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="layer"/> is not a layer, or a range is not
    /// inside the layer's rows.</exception>
    /// <exception cref="ArgumentException">The ranges are not sorted or overlap.</exception>
    public virtual void RemoveRanges(int layer, IReadOnlyList<(int Start, int Count)> ranges)
    {
        if (CheckRanges(layer, ranges) == 0) return;
        for (int i = ranges.Count - 1; i >= 0; i--)
            if (ranges[i].Count > 0) RemoveRows(layer, ranges[i].Start, ranges[i].Count);
    }

    /// <summary>
    /// Validates the arguments of <see cref="RemoveRanges"/> against the layer's current length and returns
    /// the number of rows they remove.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="ranges"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Not a layer, or a range outside the layer's rows.</exception>
    /// <exception cref="ArgumentException">Ranges not sorted or overlapping.</exception>
    protected int CheckRanges(int layer, IReadOnlyList<(int Start, int Count)> ranges)
    {
        ArgumentNullException.ThrowIfNull(ranges);
        if (layer < 0 || layer >= Layers)
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"a cache of {Layers} layers has no layer {layer}");
        int len = Length(layer), end = 0, removed = 0;
        for (int i = 0; i < ranges.Count; i++)
        {
            var (start, count) = ranges[i];
            if (start < 0 || count < 0 || (long)start + count > len)
                throw new ArgumentOutOfRangeException(nameof(ranges), $"range {i}, rows [{start}, {(long)start + count}), is not inside layer {layer}'s {len} rows");
            if (count == 0) continue;
            if (start < end)
                throw new ArgumentException($"range {i}, rows [{start}, {start + count}), starts before the previous range ends (row {end}): ranges must be sorted and must not overlap", nameof(ranges));
            end = start + count;
            removed += count;
        }
        return removed;
    }

    /// <summary>The rows kept after removing <paramref name="ranges"/> (already checked) from <paramref name="length"/> rows, as (Start, Count) runs.</summary>
    protected static List<(int Start, int Count)> KeptRuns(int length, IReadOnlyList<(int Start, int Count)> ranges)
    {
        var runs = new List<(int Start, int Count)>(ranges.Count + 1);
        int next = 0;
        foreach (var (start, count) in ranges)
        {
            if (count == 0) continue;
            if (start > next) runs.Add((next, start - next));
            next = start + count;
        }
        if (length > next) runs.Add((next, length - next));
        return runs;
    }

    /// <summary>Forgets every token (storage is kept for reuse).</summary>
    public abstract void Clear();

    /// <summary>Frees the storage.</summary>
    public abstract void Dispose();
}

/// <summary>One output of <see cref="IBackend.LinearMany"/>: Output = x · Weightᵀ + Bias.</summary>
/// <param name="Weight">The weight, stored [out, in].</param>
/// <param name="Bias">Optional bias of out elements.</param>
/// <param name="Output">Where the result goes, [x.Rows, out].</param>
public readonly record struct LinearTarget(DeviceWeight Weight, DeviceWeight? Bias, Tensor Output);

/// <summary>The operations the orchestrator needs. All activations are [rows, cols] row-major.</summary>
public interface IBackend : IDisposable
{
    /// <summary>Short name: "cpu" or "cuda".</summary>
    string Name { get; }

    /// <summary>The device in words, for logs and benchmark results.</summary>
    string Device { get; }

    /// <summary>Makes a stored weight usable by this backend (the CPU keeps the view; a GPU copies it).</summary>
    DeviceWeight Upload(Weight weight);

    /// <summary>
    /// Makes a matrix that <see cref="Linear"/> multiplies by usable; the role lets a backend treat the language
    /// model's matrices differently (the CPU backend can quantize them, or copy them into huge pages). The
    /// default is <see cref="Upload"/>.
    /// </summary>
    DeviceWeight UploadLinear(Weight weight, LinearRole role) => Upload(weight);

    /// <summary>A new activation matrix. Contents are unspecified.</summary>
    Tensor Allocate(int rows, int cols);

    /// <summary>Copies host values into <paramref name="dst"/> (whole tensor).</summary>
    void CopyFromHost(ReadOnlySpan<float> src, Tensor dst);

    /// <summary>Copies the whole tensor to host memory.</summary>
    void CopyToHost(Tensor src, Span<float> dst);

    /// <summary>Copies a block of <paramref name="rows"/> x <paramref name="cols"/> between tensors.</summary>
    void CopyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols);

    /// <summary>dst[i] = table[ids[i]].</summary>
    void Embedding(DeviceWeight table, ReadOnlySpan<int> ids, Tensor dst);

    /// <summary>Non-overlapping patch convolution (kernel = stride = patch, no bias) of one host image [channels, height, width].</summary>
    void PatchEmbed(ReadOnlySpan<float> pixels, int channels, int height, int width, int patch, DeviceWeight conv, Tensor dst);

    /// <summary>y = x Wᵀ + bias, W stored [out, in].</summary>
    void Linear(Tensor x, DeviceWeight w, DeviceWeight? bias, Tensor y);

    /// <summary>
    /// Several linear maps of one input (a layer's Q, K and V): effectively <see cref="Linear"/> for each target
    /// in turn. The default does exactly that; a backend may read x once and run them as one pass.
    /// </summary>
    /// <param name="x">The shared input, [n, in].</param>
    /// <param name="targets">The weights, biases and outputs; no output may overlap x.</param>
    /// <exception cref="ArgumentException">A shape disagrees.</exception>
    void LinearMany(Tensor x, ReadOnlySpan<LinearTarget> targets)
    {
        foreach (var t in targets) Linear(x, t.Weight, t.Bias, t.Output);
    }

    /// <summary>
    /// SwiGLU's first half: y = silu(x · gateᵀ + gateBias) · (x · upᵀ + upBias). The default runs the two
    /// Linears and <see cref="SiluMul"/>; a backend may compute both projections in one pass.
    /// </summary>
    /// <param name="x">The input, [n, in].</param>
    /// <param name="gate">Gate projection [inner, in].</param>
    /// <param name="gateBias">Optional gate bias.</param>
    /// <param name="up">Up projection [inner, in].</param>
    /// <param name="upBias">Optional up bias.</param>
    /// <param name="y">Output [n, inner]; must not overlap x.</param>
    /// <exception cref="ArgumentException">A shape disagrees.</exception>
    void GatedLinear(Tensor x, DeviceWeight gate, DeviceWeight? gateBias, DeviceWeight up, DeviceWeight? upBias, Tensor y)
    {
        using var u = Allocate(y.Rows, y.Cols);
        Linear(x, gate, gateBias, y);
        Linear(x, up, upBias, u);
        SiluMul(y, u, y);
    }

    /// <summary>LLaMA RMSNorm per row; y may be x.</summary>
    void RmsNorm(Tensor x, DeviceWeight gamma, float eps, Tensor y);

    /// <summary>LayerNorm per row; y may be x.</summary>
    void LayerNorm(Tensor x, DeviceWeight gamma, DeviceWeight beta, float eps, Tensor y);

    /// <summary>y = a + b elementwise; y may be a or b.</summary>
    void Add(Tensor a, Tensor b, Tensor y);

    /// <summary>x += w elementwise, w a stored tensor of x's shape (position embeddings).</summary>
    void AddWeight(Tensor x, DeviceWeight w);

    /// <summary>In place: x * sigmoid(1.702 x).</summary>
    void QuickGelu(Tensor x);

    /// <summary>In place: exact (erf) GELU.</summary>
    void Gelu(Tensor x);

    /// <summary>y = silu(gate) * up; y may be gate.</summary>
    void SiluMul(Tensor gate, Tensor up, Tensor y);

    /// <summary>In-place rotary embedding of x [n, heads * headDim], one position per row.</summary>
    void Rope(Tensor x, int heads, int headDim, ReadOnlySpan<int> positions, float theta);

    /// <summary>Scaled dot-product attention with grouped-query heads; q [nq, qHeads*headDim], k and v [nk, kvHeads*headDim].</summary>
    void Attention(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim, AttentionMask mask, Tensor output);

    /// <summary>A new, empty per-layer key/value cache.</summary>
    KvCache CreateKvCache(int layers, int kvDim);

    /// <summary>
    /// A new, empty per-layer key/value cache for attention heads of <paramref name="headDim"/> columns, which a
    /// backend may use to lay it out for its attention (the CPU backend's 16-bit cache keeps each head's rows
    /// together); by default <see cref="CreateKvCache(int, int)"/>.
    /// </summary>
    KvCache CreateKvCache(int layers, int kvDim, int headDim) => CreateKvCache(layers, kvDim);

    /// <summary>
    /// For selected query rows of a causal attention (queries are the last rows of the keys), the softmax
    /// probability that falls on the given key ranges: mass[r * qHeads + h] for query row
    /// <paramref name="queryRows"/>[r] and head h. It measures how much text reads the image; it does not
    /// change the attention output. The default implementation copies q and k to the host and computes in
    /// float32 there, which any backend may replace with a kernel.
    /// </summary>
    void AttentionMass(Tensor q, int qHeads, Tensor k, int kvHeads, int headDim, ReadOnlySpan<int> queryRows,
        ReadOnlySpan<(int Start, int Length)> keyRanges, Span<float> mass)
    {
        var qh = new float[q.Rows * q.Cols];
        var kh = new float[k.Rows * k.Cols];
        CopyToHost(q, qh);
        CopyToHost(k, kh);
        Cpu.CpuOps.AttentionMass(qh, q.Rows, qHeads, kh, k.Rows, kvHeads, headDim, queryRows, keyRanges, mass);
    }
}
