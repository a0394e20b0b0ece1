// The BPE model of tokenizer.json, in both flavours LLaVA's language models use:
//  - SentencePiece-style (LLaMA-2, Vicuna, Mistral): symbols are characters; a character missing from the
//    vocabulary becomes its UTF-8 bytes as <0xNN> tokens (byte_fallback) or the unknown token (fused
//    when fuse_unk);
//  - byte-level (GPT-2, LLaMA-3, Qwen): symbols are the UTF-8 bytes of the word, each standing for the
//    vocabulary entry of its byte-level character (ByteLevelAlphabet), so no mapped string is built.
// The merge loop is HF's: repeatedly merge the adjacent pair with the lowest merge rank (leftmost among
// equal ranks), with a binary heap of (rank, position) and a linked list over the symbols; a stale heap
// entry is skipped when its pair is no longer there. Pairs are looked up in one dictionary keyed by
// (left id, right id). ignore_merges: a word that is itself in the vocabulary is that one token.
//
// Speed: results are cached per word (words under 256 chars, up to 100k entries, shared across threads).
// SentencePiece tokenizer.json files have no pre-tokenizer, so the whole text would be one word; when no
// vocabulary entry has '▁' after another character (true of SentencePiece vocabularies, checked at load),
// no merge can cross the start of a '▁'-word, so the text is cut there first: same tokens, cacheable words.
//
// Ids: at most MaxTokenId; the id -> token table is an array when the ids are dense (the usual case) and a
// dictionary when they are sparse, so memory follows the number of entries, never the largest id (an
// 85-byte file with the id 2e9 once asked for a 16 GB array).
using System.Buffers;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Unicode;

namespace VteKernels.Text;

/// <summary>A byte-pair-encoding model: vocabulary, ranked merges, unknown and byte-fallback handling.</summary>
internal sealed class BpeModel
{
    private const int MaxCachedWordLength = 256;
    private const int CacheCapacity = 100_000;
    private const char SentencePieceSpace = '\u2581';

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    private readonly string?[]? _idToToken;            // dense ids
    private readonly Dictionary<int, string>? _sparseIds; // sparse ids
    private readonly int _idLimit;
    private readonly PairTable _merges; // (left, right) -> (rank << 32 | merged id)
    private readonly int _unkId;
    private readonly bool _fuseUnk;
    private readonly bool _ignoreMerges;
    private readonly int[]? _byteFallbackIds;
    private readonly int[] _bmpCharIds;
    private readonly Dictionary<int, int> _supplementaryCharIds = new();
    private readonly int[]? _byteLevelIds;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>>? _byteLevelWholeWords;
    private readonly bool _splitBeforeSpace;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheBySpan;
    private int _cacheCount;

    /// <summary>The vocabulary (token -&gt; id).</summary>
    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    /// <summary>One more than the highest id of the vocabulary.</summary>
    public int IdLimit => _idLimit;

    /// <summary>Largest token id a tokenizer may use (2^24 - 1; real vocabularies stay under 2^18).</summary>
    public const int MaxTokenId = (1 << 24) - 1;

    /// <summary>True when symbols are UTF-8 bytes (a ByteLevel pre-tokenizer feeds the model).</summary>
    public bool ByteLevel { get; }

    /// <summary>True when a text is cut before each '▁'-word ahead of merging (see the file header).</summary>
    internal bool SplitsBeforeSpace => _splitBeforeSpace;

    /// <summary>Builds the model; <paramref name="merges"/> are in rank order. Throws <see cref="FormatException"/> for inconsistent input.</summary>
    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string? unkToken,
        bool fuseUnk, bool byteFallback, bool ignoreMerges, bool byteLevel)
    {
        _vocab = vocab.Comparer == StringComparer.Ordinal ? vocab : new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        _vocabBySpan = _vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheBySpan = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        ByteLevel = byteLevel;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;

        int maxId = -1;
        foreach (var id in _vocab.Values)
        {
            if (id < 0) throw new FormatException($"vocabulary id {id} is negative");
            if (id > MaxTokenId) throw new FormatException($"vocabulary id {id} is above the largest supported id {MaxTokenId}");
            maxId = Math.Max(maxId, id);
        }
        _idLimit = maxId + 1;
        if (_idLimit <= 2L * _vocab.Count + 1024)
        {
            _idToToken = new string?[_idLimit];
            foreach (var (token, id) in _vocab) _idToToken[id] = token;
        }
        else
        {
            _sparseIds = new Dictionary<int, string>(_vocab.Count);
            foreach (var (token, id) in _vocab) _sparseIds[id] = token;
        }

        _unkId = -1;
        if (unkToken is not null)
        {
            if (!_vocab.TryGetValue(unkToken, out _unkId))
                throw new FormatException($"unk_token '{unkToken}' is not in the vocabulary");
        }

        _merges = new PairTable(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (l, r) = merges[rank];
            if (!_vocab.TryGetValue(l, out int a)) throw new FormatException($"merge {rank} ('{l} {r}'): '{l}' is not in the vocabulary");
            if (!_vocab.TryGetValue(r, out int b)) throw new FormatException($"merge {rank} ('{l} {r}'): '{r}' is not in the vocabulary");
            if (!_vocab.TryGetValue(l + r, out int m)) throw new FormatException($"merge {rank} ('{l} {r}'): '{l + r}' is not in the vocabulary");
            _merges.TryAdd(PairKey(a, b), ((long)rank << 32) | (uint)m);  // the first (lowest) rank of a repeated pair wins
        }

        _bmpCharIds = new int[0x10000];
        Array.Fill(_bmpCharIds, -1);
        foreach (var (token, id) in _vocab)
        {
            if (token.Length == 1) _bmpCharIds[token[0]] = id;
            else if (token.Length == 2 && char.IsSurrogatePair(token[0], token[1])) _supplementaryCharIds[char.ConvertToUtf32(token[0], token[1])] = id;
        }

        if (byteFallback)
        {
            _byteFallbackIds = new int[256];
            for (int b = 0; b < 256; b++) _byteFallbackIds[b] = _vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }

        if (byteLevel)
        {
            _byteLevelIds = new int[256];
            for (int b = 0; b < 256; b++) _byteLevelIds[b] = _bmpCharIds[ByteLevelAlphabet.ByteToChar[b]];
            if (ignoreMerges) _byteLevelWholeWords = BuildByteLevelWholeWords().GetAlternateLookup<ReadOnlySpan<char>>();
        }
        else
        {
            _splitBeforeSpace = _vocab.ContainsKey(SentencePieceSpace.ToString()) && !_vocab.Keys.Any(HasSpaceAfterOtherChar);
        }
    }

    private static bool HasSpaceAfterOtherChar(string token)
    {
        for (int i = 1; i < token.Length; i++)
            if (token[i] == SentencePieceSpace && token[i - 1] != SentencePieceSpace) return true;
        return false;
    }

    // For ignore_merges with byte-level symbols: vocabulary entries keyed by the text they spell, so a word
    // can be looked up without mapping it (entries that are not whole UTF-8 text can never equal a word).
    private Dictionary<string, int> BuildByteLevelWholeWords()
    {
        var words = new Dictionary<string, int>(_vocab.Count, StringComparer.Ordinal);
        var bytes = new List<byte>();
        foreach (var (token, id) in _vocab)
        {
            bytes.Clear();
            bool ok = true;
            foreach (char c in token)
            {
                int b = ByteLevelAlphabet.ByteOf(c);
                if (b < 0) { ok = false; break; }
                bytes.Add((byte)b);
            }
            if (!ok) continue;
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes);
            if (!Utf8.IsValid(span)) continue;
            words.TryAdd(Encoding.UTF8.GetString(span), id);
        }
        return words;
    }

    /// <summary>Empties the word cache (benchmarks time cold and warm encodes).</summary>
    internal void ClearCache()
    {
        _cache.Clear();
        Volatile.Write(ref _cacheCount, 0);
    }

    /// <summary>The id of <paramref name="token"/>, or -1.</summary>
    public int TokenToId(ReadOnlySpan<char> token) => _vocabBySpan.TryGetValue(token, out int id) ? id : -1;

    /// <summary>The token of <paramref name="id"/>, or null.</summary>
    public string? IdToToken(int id) => _idToToken is { } dense
        ? (uint)id < (uint)dense.Length ? dense[id] : null
        : _sparseIds!.GetValueOrDefault(id);

    /// <summary>Appends the ids of one pre-tokenized word.</summary>
    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.IsEmpty) return;
        if (_ignoreMerges)
        {
            int whole = -1;
            if (_byteLevelWholeWords is { } words) { if (words.TryGetValue(word, out int id)) whole = id; }
            else if (!ByteLevel) whole = TokenToId(word);
            if (whole >= 0)
            {
                output.Add(whole);
                return;
            }
        }
        if (!_splitBeforeSpace)
        {
            TokenizeCached(word, output);
            return;
        }
        int start = 0;
        for (int i = 1; i < word.Length; i++)
        {
            if (word[i] == SentencePieceSpace && word[i - 1] != SentencePieceSpace)
            {
                TokenizeCached(word[start..i], output);
                start = i;
            }
        }
        TokenizeCached(word[start..], output);
    }

    private void TokenizeCached(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.Length >= MaxCachedWordLength)
        {
            output.AddRange(Merge(word));
            return;
        }
        if (_cacheBySpan.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        var ids = Merge(word);
        output.AddRange(ids);
        if (Volatile.Read(ref _cacheCount) < CacheCapacity && _cache.TryAdd(word.ToString(), ids))
            Interlocked.Increment(ref _cacheCount);
    }

    private static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>
    /// Open-addressing hash table from a pair key to a value. A Dictionary&lt;long, long&gt; hashes a long as
    /// low ^ high, which for (left, right) id pairs collides massively (every pair with the same xor): that
    /// made merging ~20x slower. Here the key is mixed with a 64-bit multiplicative hash; linear probing.
    /// </summary>
    private sealed class PairTable
    {
        private readonly long[] _keys;
        private readonly long[] _values;
        private readonly int _shift;

        public PairTable(int count)
        {
            int capacity = 16;
            while (capacity < count * 2) capacity *= 2;
            _keys = new long[capacity];
            _values = new long[capacity];
            Array.Fill(_keys, -1L); // ids are non-negative, so no real key is -1
            _shift = 64 - System.Numerics.BitOperations.Log2((uint)capacity);
        }

        private int Slot(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> _shift);

        public bool TryAdd(long key, long value)
        {
            int mask = _keys.Length - 1;
            for (int i = Slot(key); ; i = (i + 1) & mask)
            {
                if (_keys[i] == key) return false;
                if (_keys[i] == -1L)
                {
                    _keys[i] = key;
                    _values[i] = value;
                    return true;
                }
            }
        }

        public bool TryGetValue(long key, out long value)
        {
            int mask = _keys.Length - 1;
            for (int i = Slot(key); ; i = (i + 1) & mask)
            {
                long k = _keys[i];
                if (k == key) { value = _values[i]; return true; }
                if (k == -1L) { value = 0; return false; }
            }
        }
    }

    [ThreadStatic] private static MergeScratch? t_scratch;

    private sealed class MergeScratch
    {
        public int[] Ids = new int[64], Prev = new int[64], Next = new int[64];
        public long[] Heap = new long[64];

        public void Ensure(int n)
        {
            if (Ids.Length >= n) return;
            int size = Math.Max(n, Ids.Length * 2);
            Ids = new int[size];
            Prev = new int[size];
            Next = new int[size];
            Heap = new long[size];
        }
    }

    /// <summary>Merges one word (no cache): the initial symbols, then the ranked merges.</summary>
    internal int[] Merge(ReadOnlySpan<char> word)
    {
        var s = t_scratch ??= new MergeScratch();
        int n = ByteLevel ? InitialByteSymbols(word, s) : InitialCharSymbols(word, s);
        var ids = s.Ids;
        var prev = s.Prev;
        var next = s.Next;
        for (int i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }

        if (n > 1)
        {
            var heap = s.Heap;
            if (heap.Length < n) heap = s.Heap = new long[Math.Max(n, heap.Length * 2)];
            int heapSize = 0;
            for (int i = 0; i + 1 < n; i++)
                if (_merges.TryGetValue(PairKey(ids[i], ids[i + 1]), out long v)) Push(ref heap, ref heapSize, (v & ~0xFFFFFFFFL) | (uint)i);
            while (heapSize > 0)
            {
                long top = Pop(heap, ref heapSize);
                int pos = (int)(top & 0xFFFFFFFF);
                if (ids[pos] < 0) continue;
                int right = next[pos];
                if (right < 0) continue;
                if (!_merges.TryGetValue(PairKey(ids[pos], ids[right]), out long m) || (m >> 32) != (top >> 32)) continue;
                ids[pos] = (int)(m & 0xFFFFFFFF);
                ids[right] = -1;
                int after = next[right];
                next[pos] = after;
                if (after >= 0) prev[after] = pos;
                int before = prev[pos];
                if (before >= 0 && _merges.TryGetValue(PairKey(ids[before], ids[pos]), out long vb))
                    Push(ref heap, ref heapSize, (vb & ~0xFFFFFFFFL) | (uint)before);
                if (after >= 0 && _merges.TryGetValue(PairKey(ids[pos], ids[after]), out long va))
                    Push(ref heap, ref heapSize, (va & ~0xFFFFFFFFL) | (uint)pos);
            }
            s.Heap = heap;
        }

        int count = 0;
        for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) count++;
        var result = new int[count];
        int k = 0;
        for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) result[k++] = ids[i];
        return result;
    }

    private int InitialByteSymbols(ReadOnlySpan<char> word, MergeScratch s)
    {
        int maxBytes = Encoding.UTF8.GetMaxByteCount(word.Length);
        byte[]? rented = null;
        Span<byte> bytes = maxBytes <= 1024 ? stackalloc byte[maxBytes] : (rented = ArrayPool<byte>.Shared.Rent(maxBytes));
        int len = Encoding.UTF8.GetBytes(word, bytes);
        s.Ensure(len);
        int n = 0;
        bool lastWasUnk = false;
        for (int i = 0; i < len; i++)
        {
            int id = _byteLevelIds![bytes[i]];
            if (id >= 0) { s.Ids[n++] = id; lastWasUnk = false; }
            else AddUnknown(s, ref n, ref lastWasUnk);
        }
        if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        return n;
    }

    private int InitialCharSymbols(ReadOnlySpan<char> word, MergeScratch s)
    {
        s.Ensure(word.Length * 4);
        int n = 0;
        bool lastWasUnk = false;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < word.Length;)
        {
            char c = word[i];
            int id;
            int used = 1;
            if (char.IsHighSurrogate(c) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]))
            {
                used = 2;
                id = _supplementaryCharIds.TryGetValue(char.ConvertToUtf32(c, word[i + 1]), out int sid) ? sid : -1;
            }
            else id = _bmpCharIds[c];
            if (id >= 0)
            {
                s.Ids[n++] = id;
                lastWasUnk = false;
            }
            else if (_byteFallbackIds is not null && TryByteFallback(word.Slice(i, used), utf8, s, ref n))
            {
                lastWasUnk = false;
            }
            else AddUnknown(s, ref n, ref lastWasUnk);
            i += used;
        }
        return n;
    }

    private bool TryByteFallback(ReadOnlySpan<char> ch, Span<byte> utf8, MergeScratch s, ref int n)
    {
        // A lone surrogate cannot be in a .NET string that came through UTF-8; encode it as U+FFFD like Rust would see it.
        int len = Encoding.UTF8.GetBytes(ch, utf8);
        for (int k = 0; k < len; k++) if (_byteFallbackIds![utf8[k]] < 0) return false;
        for (int k = 0; k < len; k++) s.Ids[n++] = _byteFallbackIds![utf8[k]];
        return true;
    }

    private void AddUnknown(MergeScratch s, ref int n, ref bool lastWasUnk)
    {
        if (_unkId < 0) return; // HF drops characters it can neither find nor replace
        if (_fuseUnk && lastWasUnk) return;
        s.Ids[n++] = _unkId;
        lastWasUnk = true;
    }

    private static void Push(ref long[] heap, ref int size, long key)
    {
        if (size == heap.Length) Array.Resize(ref heap, heap.Length * 2);
        int i = size++;
        while (i > 0)
        {
            int parent = (i - 1) >> 1;
            if (heap[parent] <= key) break;
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = key;
    }

    private static long Pop(long[] heap, ref int size)
    {
        long top = heap[0];
        long last = heap[--size];
        int i = 0;
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= size) break;
            if (child + 1 < size && heap[child + 1] < heap[child]) child++;
            if (heap[child] >= last) break;
            heap[i] = heap[child];
            i = child;
        }
        if (size > 0) heap[i] = last;
        return top;
    }
}
