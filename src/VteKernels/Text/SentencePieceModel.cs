// A SentencePiece tokenizer.model (the original LLaVA layout, DyVTE and SAISA checkpoints ship one instead of
// tokenizer.json) read with Microsoft.ML.Tokenizers, and used by the rules of HF transformers' slow
// LlamaTokenizer (tokenization_llama.py), which is what LLaVA's own code tokenizes with:
//   1. special and added tokens written in the text (<unk>, <s>, </s>, tokenizer_config.json's added_tokens_decoder)
//      are split out first (PreTrainedTokenizer.tokenize; no stripping around them);
//   2. legacy (tokenizer_config.json "legacy", HF's default true): every other chunk is encoded by SentencePiece as
//      is, so each chunk, also one right after a special token, gets the dummy-prefix "▁";
//      non-legacy: the text gets one "▁" in front (add_prefix_space) with "▁" in it read as spaces, chunks are
//      encoded without a dummy prefix (a chunk after a special token keeps no invented space), and a lone
//      leading "▁" before a special token is dropped;
//   3. BOS in front per add_bos_token (default true), EOS at the end per add_eos_token (default false).
// SentencePiece itself runs in Microsoft.ML.Tokenizers' SentencePieceTokenizer (BPE with byte fallback) on text
// normalized here as LLaMA's model spec says (identity rules: spaces become "▁", optional dummy prefix), so that
// the dummy prefix can be switched per chunk. Models whose normalizer does more (a precompiled character map,
// removal of extra whitespace) are refused with a TokenizerException rather than tokenized differently.
// Decode: pieces to text (byte-fallback pieces to UTF-8 bytes, "▁" to space), one leading space dropped per run
// of ordinary pieces, special tokens as their text (legacy: a space before one), as convert_tokens_to_string.
using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace VteKernels.Text;

internal sealed class SentencePieceModel
{
    private const char Underline = '\u2581';

    private readonly SentencePieceTokenizer _sp;
    private readonly string[] _pieces;
    private readonly Dictionary<string, int> _ids;
    private readonly HashSet<int> _special = [];
    private readonly (string Content, int Id)[] _split;   // longest first

    public bool Legacy { get; }

    public bool AddBos { get; }

    public bool AddEos { get; }

    public int VocabSize { get; }

    private SentencePieceModel(SentencePieceTokenizer sp, bool legacy, bool addBos, bool addEos, IReadOnlyList<(string Content, int Id, bool Special)> added,
        string? bos, string? eos, string? unk)
    {
        _sp = sp;
        Legacy = legacy;
        AddBos = addBos;
        AddEos = addEos;
        int n = sp.Vocabulary.Values.Max() + 1;
        _pieces = new string[n];
        foreach (var (piece, id) in sp.Vocabulary) _pieces[id] = piece;
        _ids = new Dictionary<string, int>(sp.Vocabulary, StringComparer.Ordinal);
        var split = new List<(string, int)>();
        foreach (var token in new[] { unk ?? sp.UnknownToken, bos ?? sp.BeginningOfSentenceToken, eos ?? sp.EndOfSentenceToken })
            if (token is not null && _ids.TryGetValue(token, out int id) && !split.Any(s => s.Item1 == token))
            {
                split.Add((token, id));
                _special.Add(id);
            }
        foreach (var (content, id, special) in added)
        {
            if (id >= _pieces.Length) Array.Resize(ref _pieces, id + 1);
            _pieces[id] ??= content;
            _ids[content] = id;
            if (!split.Any(s => s.Item1 == content)) split.Add((content, id));
            if (special) _special.Add(id);
        }
        _split = [.. split.OrderByDescending(s => s.Item1.Length)];
        VocabSize = _pieces.Length;
    }

    /// <summary>Reads tokenizer.model and, from <paramref name="dir"/>, tokenizer_config.json's legacy, add_bos_token, add_eos_token and added tokens.</summary>
    public static SentencePieceModel Load(string modelPath, string dir, string? bos, string? eos, bool? addBos, bool? addEos)
    {
        SentencePieceTokenizer sp;
        try
        {
            using var stream = File.OpenRead(modelPath);
            sp = SentencePieceTokenizer.Create(stream, false, false);
        }
        catch (Exception e) when (e is not IOException and not UnauthorizedAccessException)
        {
            throw new TokenizerException(modelPath, $"not a SentencePiece model this runtime reads: {e.Message}", e);
        }
        if (sp.Normalizer is SentencePieceNormalizer { RemoveExtraWhiteSpaces: true })
            throw new TokenizerException(modelPath, "the model's normalizer removes extra whitespace; only LLaMA-style models (identity normalization, whitespace kept) are read");
        if (!sp.EscapeWhiteSpaces || sp.TreatWhitespaceAsSuffix)
            throw new TokenizerException(modelPath, "the model does not mark whitespace as a '▁' prefix; only LLaMA-style models are read");

        var config = ReadConfig(Path.Combine(dir, "tokenizer_config.json"));
        bool legacy = config?.TryGetProperty("legacy", out var l) == true && l.ValueKind is JsonValueKind.False ? false : true;
        var added = new List<(string, int, bool)>();
        if (config?.TryGetProperty("added_tokens_decoder", out var dec) == true && dec.ValueKind == JsonValueKind.Object)
            foreach (var e in dec.EnumerateObject())
                if (int.TryParse(e.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) && id >= 0
                    && e.Value.ValueKind == JsonValueKind.Object && e.Value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String
                    && c.GetString() is { Length: > 0 } content)
                    added.Add((content, id, e.Value.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True));
        string? unk = config is { } cfg && cfg.TryGetProperty("unk_token", out var u) ? TokenText(u) : null;
        return new SentencePieceModel(sp, legacy, addBos ?? true, addEos ?? false, added, bos, eos, unk ?? sp.UnknownToken);
    }

    private static string? TokenText(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => null,
    };

    private static JsonElement? ReadConfig(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            return doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.Clone() : null;
        }
        catch (JsonException e)
        {
            throw new TokenizerException(path, $"not valid JSON: {e.Message}", e);
        }
    }

    public int? BosId => _sp.BeginningOfSentenceId >= 0 ? _sp.BeginningOfSentenceId : null;

    public int? TokenToId(string token) => _ids.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)_pieces.Length ? _pieces[id] : null;

    public bool IsSpecial(int id) => _special.Contains(id);

    /// <summary>HF's slow LlamaTokenizer encode: the ids of <paramref name="text"/>, with BOS/EOS per the config when <paramref name="addSpecialTokens"/>.</summary>
    public List<int> Encode(string text, bool addSpecialTokens)
    {
        var ids = new List<int>();
        if (addSpecialTokens && AddBos && BosId is int bos) ids.Add(bos);
        if (!Legacy && text.Length > 0) text = Underline + text.Replace(Underline, ' ');
        int start = ids.Count;
        foreach (var (chunk, special) in Split(text))
        {
            if (special >= 0) ids.Add(special);
            else if (Legacy) ids.AddRange(Pieces(chunk, dummyPrefix: _sp.AddDummyPrefix));
            else ids.AddRange(Pieces(chunk, dummyPrefix: false));
        }
        // Non-legacy: "▁" followed by a special token loses the "▁" (tokenize's tokens[0] == SPIECE_UNDERLINE rule).
        if (!Legacy && ids.Count - start > 1 && _pieces[ids[start]] == Underline.ToString() && _special.Contains(ids[start + 1])) ids.RemoveAt(start);
        if (addSpecialTokens && AddEos && _sp.EndOfSentenceId >= 0) ids.Add(_sp.EndOfSentenceId);
        return ids;
    }

    /// <summary>The text between split tokens (id -1) and the split tokens themselves, in order; empty chunks dropped.</summary>
    private IEnumerable<(string Chunk, int Special)> Split(string text)
    {
        int start = 0, i = 0;
        while (i < text.Length)
        {
            var hit = _split.FirstOrDefault(s => string.CompareOrdinal(text, i, s.Content, 0, s.Content.Length) == 0 && i + s.Content.Length <= text.Length);
            if (hit.Content is null) { i++; continue; }
            if (i > start) yield return (text[start..i], -1);
            yield return (hit.Content, hit.Id);
            i += hit.Content.Length;
            start = i;
        }
        if (start < text.Length) yield return (text[start..], -1);
    }

    /// <summary>SentencePiece on one chunk: spaces to "▁", the dummy prefix when asked, then BPE with byte fallback.</summary>
    private IReadOnlyList<int> Pieces(string chunk, bool dummyPrefix)
    {
        var normalized = (dummyPrefix ? Underline.ToString() : "") + chunk.Replace(' ', Underline);
        if (normalized.Length == 0) return [];
        return _sp.EncodeToIds(normalized, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: false, considerNormalization: false);
    }

    /// <summary>convert_tokens_to_string: ordinary pieces decoded run by run (one leading space dropped each), special tokens as text.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens)
    {
        var text = new StringBuilder();
        var run = new List<byte>();
        bool prevSpecial = false, first = true;
        void Flush()
        {
            if (run.Count == 0) return;
            var s = Encoding.UTF8.GetString(run.ToArray());
            text.Append(s.StartsWith(' ') ? s[1..] : s);
            run.Clear();
        }
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_pieces.Length || _pieces[id] is not string piece) continue;
            if (_special.Contains(id) || _split.Any(s => s.Id == id))
            {
                if (skipSpecialTokens && _special.Contains(id)) continue;
                Flush();
                if (Legacy && !prevSpecial && !first) text.Append(' ');
                text.Append(piece);
                prevSpecial = true;
            }
            else
            {
                if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[^1] == '>' &&
                    byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
                    run.Add(b);
                else run.AddRange(Encoding.UTF8.GetBytes(piece.Replace(Underline, ' ')));
                prevSpecial = false;
            }
            first = false;
        }
        Flush();
        return text.ToString();
    }
}
