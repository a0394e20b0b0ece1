// llama.cpp through LLamaSharp 0.30.0 (its CPU backend package) as the peer of the cpu-e2e benchmark. The
// model is a GGUF that GgufWriter made from the same checkpoint; token ids go in directly (no tokenizer),
// logits come out for the last row of each batch, and greedy decoding takes their argmax exactly as ours does.
using LLama;
using LLama.Common;
using LLama.Native;

namespace VteKernels.Bench;

/// <summary>One llama.cpp model and context, driven token by token.</summary>
internal sealed class LlamaCppPeer : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly LLamaBatch _batch = new();
    private int _position;

    /// <summary>The native library's own system line (which SIMD features it was built with).</summary>
    public static string SystemInfo()
    {
        Configure();
        return System.Runtime.InteropServices.Marshal.PtrToStringUTF8(NativeApi.llama_print_system_info()) ?? "";
    }

    private static bool _configured;

    private static void Configure()
    {
        if (_configured) return;
        _configured = true;
        // Quiet: llama.cpp logs every tensor at load. Errors still reach stderr.
        NativeLibraryConfig.All.WithLogCallback((level, message) =>
        {
            if (level == LLamaLogLevel.Error) Console.Error.Write($"llama.cpp: {message}");
        });
    }

    public LlamaCppPeer(string ggufPath, int threads, int contextSize, int batchSize, bool mmap)
    {
        Configure();
        var p = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextSize,
            BatchSize = (uint)batchSize,
            UBatchSize = (uint)batchSize,
            Threads = threads,
            BatchThreads = threads,
            GpuLayerCount = 0,
            LoadMode = mmap ? LLamaLoadMode.MemoryMap : LLamaLoadMode.None,
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
    }

    /// <summary>Forgets the sequence.</summary>
    public void Reset()
    {
        _context.NativeHandle.MemoryClear();
        _position = 0;
    }

    /// <summary>Feeds <paramref name="ids"/> (one batch) and returns the logits of the last one.</summary>
    public float[] Feed(ReadOnlySpan<int> ids)
    {
        _batch.Clear();
        for (int i = 0; i < ids.Length; i++) _batch.Add((LLamaToken)ids[i], _position + i, LLamaSeqId.Zero, i == ids.Length - 1);
        var r = _context.Decode(_batch);
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode returned {r}");
        _position += ids.Length;
        return _context.NativeHandle.GetLogitsIth(_batch.TokenCount - 1).ToArray();
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
