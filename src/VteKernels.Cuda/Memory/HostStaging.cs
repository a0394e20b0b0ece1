// Pinned host memory for the backend's uploads of host data (token ids, positions, key limits, pixels).
// A stream-ordered copy from pageable memory is staged by the driver and cannot be captured into a CUDA
// graph; from pinned memory it is a true asynchronous copy that a graph records and replays. Chunks of
// pinned memory (1 MiB, or one upload's size when larger) are filled front to back, 256-byte aligned.
// A chunk is refilled only after the stream has passed every copy from it: when no chunk is free, the
// backend waits for the stream and recycles all of them (rare: a decode step uploads a few bytes). A
// chunk filled during a graph capture belongs to the graph until it is disposed, because every replay
// copies from it again; a capture starts on an empty chunk so that no later upload writes into it.
using static VteKernels.Cuda.Interop.CudaDriver;

namespace VteKernels.Cuda;

/// <summary>The pinned chunks a captured graph copies from.</summary>
internal sealed class StagingMemory
{
    /// <summary>The chunks.</summary>
    internal List<HostStaging.Chunk> Chunks { get; } = [];
}

/// <summary>A ring of pinned host chunks for host-to-device uploads in one context.</summary>
internal sealed class HostStaging : IDisposable
{
    /// <summary>Smallest chunk allocated.</summary>
    public const long ChunkBytes = 1L << 20;

    internal sealed class Chunk
    {
        public nint Pointer;
        public long Size;
        public long Used;
    }

    private readonly CudaContext _context;
    private readonly List<Chunk> _free = [];
    private readonly List<Chunk> _busy = []; // filled since the stream was last waited for
    private readonly List<StagingMemory> _graphs = [];
    private Chunk? _current;
    private StagingMemory? _capture;
    private bool _disposed;

    public HostStaging(CudaContext context) => _context = context;

    /// <summary>Copies <paramref name="values"/> into pinned memory and returns its address (valid until the stream passes the copy that reads it).</summary>
    /// <exception cref="InvalidOperationException">A graph capture is running and its chunk is full.</exception>
    public unsafe nint Stage<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long bytes = (long)values.Length * sizeof(T);
        long need = Math.Max(256, (bytes + 255) & ~255L);
        if (_current is null || _current.Used + need > _current.Size) Next(need);
        var chunk = _current!;
        nint at = chunk.Pointer + (nint)chunk.Used;
        chunk.Used += need;
        fixed (T* src = values) Buffer.MemoryCopy(src, (void*)at, bytes, bytes);
        return at;
    }

    private void Next(long need)
    {
        if (_capture is not null)
        {
            // A new chunk now would need cuMemAllocHost or a wait, neither of which a capture allows.
            if (_current is not null) _capture.Chunks.Add(_current);
            _current = TakeFree(need) ?? throw new InvalidOperationException(
                $"a CUDA graph capture uploads more host data ({need} more bytes) than the pinned staging chunk it began with holds");
            return;
        }
        if (_current is not null) _busy.Add(_current);
        _current = TakeFree(need);
        if (_current is not null) return;
        if (_busy.Count > 0)
        {
            _context.Synchronize(); // every copy from the busy chunks has run
            foreach (var c in _busy) c.Used = 0;
            _free.AddRange(_busy);
            _busy.Clear();
            _current = TakeFree(need);
            if (_current is not null) return;
        }
        _current = Allocate(Math.Max(ChunkBytes, need));
    }

    private Chunk? TakeFree(long need)
    {
        int i = _free.FindIndex(c => c.Size >= need);
        if (i < 0) return null;
        var c = _free[i];
        _free.RemoveAt(i);
        c.Used = 0;
        return c;
    }

    private Chunk Allocate(long bytes)
    {
        _context.MakeCurrent();
        CudaCheck.Driver(cuMemAllocHost_v2(out var p, (nuint)bytes), nameof(cuMemAllocHost_v2), $"{bytes} bytes of pinned staging");
        return new Chunk { Pointer = p, Size = bytes };
    }

    /// <summary>Starts a capture on an empty chunk (allocated or recycled now, while that is still allowed).</summary>
    public void BeginCapture()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_capture is not null) throw new InvalidOperationException("a graph capture is already running");
        Next(ChunkBytes); // the chunk in use (if any) keeps what was staged before the capture
        _current!.Used = 0;
        _capture = new StagingMemory();
    }

    /// <summary>Ends the capture: the chunks filled during it belong to the graph.</summary>
    public StagingMemory EndCapture()
    {
        var memory = _capture ?? throw new InvalidOperationException("no graph capture is running");
        if (_current is not null) memory.Chunks.Add(_current);
        _current = null;
        _capture = null;
        _graphs.Add(memory);
        return memory;
    }

    /// <summary>The graph is gone: its chunks are reused once the stream has passed its last replay.</summary>
    public void Release(StagingMemory memory)
    {
        if (_disposed || !_graphs.Remove(memory)) return;
        _busy.AddRange(memory.Chunks);
        memory.Chunks.Clear();
    }

    /// <summary>Frees every chunk (the caller has waited for the stream).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        var all = _free.Concat(_busy).Concat(_graphs.SelectMany(g => g.Chunks)).Concat(_capture?.Chunks ?? []).ToList();
        if (_current is not null) all.Add(_current);
        _context.MakeCurrent();
        foreach (var c in all) cuMemFreeHost(c.Pointer); // nobody to report a failure to
        _free.Clear();
        _busy.Clear();
        _graphs.Clear();
    }
}
