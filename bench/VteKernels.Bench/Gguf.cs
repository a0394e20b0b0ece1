// A GGUF (v3) writer, enough to hand llama.cpp the language model of a LLaVA checkpoint: the "llama"
// architecture's metadata, a SentencePiece-style vocabulary of placeholder pieces (the benchmark feeds token
// ids, never text), and the tensors under llama.cpp's names. Benchmark-only: the runtime neither reads nor
// writes GGUF.
//
// Layout (ggml's gguf.cpp): magic "GGUF", version 3, tensor count, key/value count, the key/value pairs, the
// tensor infos (name, dims innermost first, ggml type, offset into the data section), padding to the
// alignment (32), then each tensor's bytes, each padded to the alignment.
//
// Two conversions matter for equal results: HF's q_proj/k_proj rows are permuted per head as llama.cpp's
// convert_hf_to_gguf.py does (HF rotates the two halves of a head, llama.cpp's "llama" RoPE rotates adjacent
// pairs: row 2i + half of a head comes from row half * headDim/2 + i), and 1-D tensors (norms) are stored
// as F32, as the converter stores them. Matrix bytes are copied as they are: an [out, in] row-major weight
// is ggml's [ne0 = in, ne1 = out]; Q8_0 and Q4_0 blocks are ggml's own layout, so they copy as they are too.
using System.Text;
using VteKernels.Models;

namespace VteKernels.Bench;

/// <summary>Builds one GGUF file in memory order: metadata first, then tensors streamed in the order added.</summary>
internal sealed class GgufWriter
{
    private const uint Alignment = 32;

    /// <summary>ggml tensor types this writer emits (values from ggml.h).</summary>
    public enum TensorType : uint { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, BF16 = 30 }

    private enum ValueType : uint { U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9 }

    private readonly List<Action<BinaryWriter>> _kv = [];
    private readonly List<(string Name, long[] Dims, TensorType Type, long Bytes, Action<Stream> Write)> _tensors = [];

    public void Add(string key, uint value) => _kv.Add(w => { Key(w, key, ValueType.U32); w.Write(value); });

    public void Add(string key, float value) => _kv.Add(w => { Key(w, key, ValueType.F32); w.Write(value); });

    public void Add(string key, bool value) => _kv.Add(w => { Key(w, key, ValueType.Bool); w.Write((byte)(value ? 1 : 0)); });

    public void Add(string key, string value) => _kv.Add(w => { Key(w, key, ValueType.String); Str(w, value); });

    public void Add(string key, IReadOnlyList<string> values) => _kv.Add(w =>
    {
        Key(w, key, ValueType.Array);
        w.Write((uint)ValueType.String);
        w.Write((ulong)values.Count);
        foreach (var v in values) Str(w, v);
    });

    public void Add(string key, IReadOnlyList<float> values) => _kv.Add(w =>
    {
        Key(w, key, ValueType.Array);
        w.Write((uint)ValueType.F32);
        w.Write((ulong)values.Count);
        foreach (var v in values) w.Write(v);
    });

    public void Add(string key, IReadOnlyList<int> values) => _kv.Add(w =>
    {
        Key(w, key, ValueType.Array);
        w.Write((uint)ValueType.I32);
        w.Write((ulong)values.Count);
        foreach (var v in values) w.Write(v);
    });

    /// <summary>A tensor of <paramref name="bytes"/> bytes with dims innermost first; <paramref name="write"/> streams them.</summary>
    public void AddTensor(string name, long[] dims, TensorType type, long bytes, Action<Stream> write) =>
        _tensors.Add((name, dims, type, bytes, write));

    public void Write(string path)
    {
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        using var w = new BinaryWriter(file, Encoding.UTF8, leaveOpen: true);
        w.Write(Encoding.ASCII.GetBytes("GGUF"));
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_kv.Count);
        foreach (var kv in _kv) kv(w);
        long offset = 0;
        foreach (var t in _tensors)
        {
            Str(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (var d in t.Dims) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offset = Align(offset + t.Bytes);
        }
        w.Flush();
        Pad(file);
        foreach (var t in _tensors)
        {
            long start = file.Position;
            t.Write(file);
            if (file.Position - start != t.Bytes)
                throw new InvalidOperationException($"tensor {t.Name}: wrote {file.Position - start} bytes, declared {t.Bytes}");
            Pad(file);
        }
    }

    private static long Align(long x) => (x + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream s)
    {
        long pad = Align(s.Position) - s.Position;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    private static void Key(BinaryWriter w, string key, ValueType type)
    {
        Str(w, key);
        w.Write((uint)type);
    }

    private static void Str(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }
}

/// <summary>Writes the language model of a LLaVA checkpoint as a llama.cpp "llama" GGUF.</summary>
internal static class LlavaGguf
{
    /// <summary>
    /// Writes <paramref name="weights"/>' language model to <paramref name="path"/>. Matrices keep their stored
    /// type (BF16, F16, F32, or the Q8_0/Q4_0 blocks, which are ggml's own layout); 1-D tensors become F32.
    /// </summary>
    public static void Write(LlavaConfig config, LlavaWeights weights, string path, string name, Func<Weight, Weight>? matrices = null)
    {
        // Matrices multiplied by (not the embedding table) go through `matrices` first: a quantizer, so that
        // llama.cpp gets the very blocks our backend computes with.
        Weight M(Weight w) => matrices?.Invoke(w) ?? w;
        var t = config.Text;
        var g = new GgufWriter();
        g.Add("general.architecture", "llama");
        g.Add("general.name", name);
        g.Add("general.alignment", 32u);
        g.Add("llama.context_length", (uint)t.MaxPositionEmbeddings);
        g.Add("llama.embedding_length", (uint)t.HiddenSize);
        g.Add("llama.block_count", (uint)t.NumLayers);
        g.Add("llama.feed_forward_length", (uint)t.IntermediateSize);
        g.Add("llama.rope.dimension_count", (uint)t.HeadDim);
        g.Add("llama.attention.head_count", (uint)t.NumHeads);
        g.Add("llama.attention.head_count_kv", (uint)t.NumKvHeads);
        g.Add("llama.attention.layer_norm_rms_epsilon", t.RmsNormEps);
        g.Add("llama.rope.freq_base", t.RopeTheta);
        g.Add("llama.vocab_size", (uint)t.VocabSize);
        AddVocabulary(g, t.VocabSize, t.BosTokenId ?? 1, t.EosTokenId ?? 2);

        var lm = weights.Text;
        Matrix(g, "token_embd.weight", lm.EmbedTokens, null);
        for (int l = 0; l < t.NumLayers; l++)
        {
            var layer = lm.Layers[l];
            string b = $"blk.{l}.";
            Vector(g, b + "attn_norm.weight", layer.InputNorm);
            Matrix(g, b + "attn_q.weight", M(layer.QProj!), t.NumHeads);
            Matrix(g, b + "attn_k.weight", M(layer.KProj!), t.NumKvHeads);
            Matrix(g, b + "attn_v.weight", M(layer.VProj!), null);
            Matrix(g, b + "attn_output.weight", M(layer.OProj!), null);
            Vector(g, b + "ffn_norm.weight", layer.PostAttentionNorm);
            Matrix(g, b + "ffn_gate.weight", M(layer.GateProj), null);
            Matrix(g, b + "ffn_up.weight", M(layer.UpProj), null);
            Matrix(g, b + "ffn_down.weight", M(layer.DownProj), null);
        }
        Vector(g, "output_norm.weight", lm.Norm);
        Matrix(g, "output.weight", M(lm.LmHead), null);
        g.Write(path);
    }

    /// <summary>
    /// Pieces "&lt;unk&gt;", "&lt;s&gt;", "&lt;/s&gt;", the 256 byte pieces "&lt;0xNN&gt;" that a SentencePiece vocabulary
    /// needs (llama.cpp looks up the newline byte), then "▁tN" for every other id.
    /// </summary>
    private static void AddVocabulary(GgufWriter g, int vocab, int bos, int eos)
    {
        var tokens = new List<string>(vocab);
        var scores = new List<float>(vocab);
        var types = new List<int>(vocab);
        for (int i = 0; i < vocab; i++)
        {
            (string piece, int type) = i switch
            {
                0 => ("<unk>", 2),
                _ when i == bos => ("<s>", 3),
                _ when i == eos => ("</s>", 3),
                >= 3 and < 259 => ($"<0x{i - 3:X2}>", 6),
                _ => ($"\u2581t{i}", 1),
            };
            tokens.Add(piece);
            scores.Add(-i);
            types.Add(type);
        }
        g.Add("tokenizer.ggml.model", "llama");
        g.Add("tokenizer.ggml.tokens", tokens);
        g.Add("tokenizer.ggml.scores", scores);
        g.Add("tokenizer.ggml.token_type", types);
        g.Add("tokenizer.ggml.bos_token_id", (uint)bos);
        g.Add("tokenizer.ggml.eos_token_id", (uint)eos);
        g.Add("tokenizer.ggml.unknown_token_id", 0u);
        g.Add("tokenizer.ggml.add_bos_token", false);
    }

    private static void Vector(GgufWriter g, string name, Weight w)
    {
        var values = w.ToFloatArray();
        g.AddTensor(name, [values.Length], GgufWriter.TensorType.F32, values.Length * 4L,
            s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())));
    }

    /// <summary>A matrix [rows, cols] as ggml [cols, rows]; with <paramref name="ropeHeads"/>, rows permuted per head.</summary>
    private static void Matrix(GgufWriter g, string name, Weight w, int? ropeHeads)
    {
        var type = w.DType switch
        {
            DType.F32 => GgufWriter.TensorType.F32,
            DType.F16 => GgufWriter.TensorType.F16,
            DType.BF16 => GgufWriter.TensorType.BF16,
            DType.Q8_0 => GgufWriter.TensorType.Q8_0,
            DType.Q4_0 => GgufWriter.TensorType.Q4_0,
            _ => throw new NotSupportedException($"{w}: no GGUF type for {w.DType}"),
        };
        int rows = w.Rows, cols = w.Cols;
        g.AddTensor(name, [cols, rows], type, w.ByteLength, s =>
        {
            for (int r = 0; r < rows; r++) s.Write(w.RowBytes(SourceRow(r, rows, ropeHeads), 1));
        });
    }

    /// <summary>The HF row that GGUF row <paramref name="r"/> holds (the identity unless RoPE-permuted).</summary>
    private static int SourceRow(int r, int rows, int? heads)
    {
        if (heads is not { } h) return r;
        int headDim = rows / h, head = r / headDim, within = r % headDim;
        return head * headDim + within % 2 * (headDim / 2) + within / 2;
    }
}
