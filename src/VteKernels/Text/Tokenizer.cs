// A tokenizer read from HF tokenizer.json, token-exact with HF tokenizers (checked against the Rust
// library's own output on four real vocabularies: tests/VteKernels.Tests/Text). Encode runs HF's pipeline:
// added tokens split out, normalizer, pre-tokenizer, BPE model, post-processor (BOS/EOS). Decode maps
// ids to tokens and runs the decoder.
//
// From a model directory it also reads tokenizer_config.json (BOS/EOS/PAD/UNK strings, add_bos_token /
// add_eos_token, chat_template, clean_up_tokenization_spaces), special_tokens_map.json and
// generation_config.json (extra EOS ids), as transformers does. add_bos_token / add_eos_token, when given
// and different from what the post-processor does, replace its template with [BOS] $A [EOS] as
// transformers' update_post_processor does, so Encode equals transformers' tokenizer.encode(text).
//
// Thread safety: a Tokenizer is immutable after Load; Encode and Decode may run on many threads at once
// (the word cache is concurrent). A StreamingDecoder is for one sequence on one thread.
using System.Text;
using System.Text.Json;

namespace VteKernels.Text;

/// <summary>
/// A tokenizer loaded from HF tokenizer.json (BPE models: SentencePiece-style with byte fallback, and
/// byte-level): <see cref="Encode"/> and <see cref="Decode(ReadOnlySpan{int}, bool)"/> give the ids and text HF tokenizers gives.
/// </summary>
public sealed class Tokenizer
{
    private readonly TokenizerPipeline _p;
    private readonly PostProcessor? _post;
    private readonly SentencePieceModel? _spm;   // tokenizer.model instead of tokenizer.json

    private Tokenizer(TokenizerPipeline? pipeline, PostProcessor? post, SentencePieceModel? spm, TokenizerConfig config)
    {
        _p = pipeline!;
        _post = post;
        _spm = spm;
        VocabSize = spm?.VocabSize ?? Math.Max(pipeline!.Model.IdLimit, pipeline.Added.Tokens.Count == 0 ? 0 : pipeline.Added.Tokens.Max(t => t.Id) + 1);
        BosToken = config.BosToken;
        EosToken = config.EosToken;
        PadToken = config.PadToken;
        ChatTemplate = config.ChatTemplate;
        CleanUpTokenizationSpaces = config.CleanUpTokenizationSpaces;
        BosId = BosToken is null ? null : TokenToId(BosToken);
        EosId = EosToken is null ? null : TokenToId(EosToken);
        PadId = PadToken is null ? null : TokenToId(PadToken);
        var eos = new List<int>();
        if (EosId is { } e) eos.Add(e);
        foreach (var id in config.ExtraEosIds) if (!eos.Contains(id) && id >= 0 && id < VocabSize) eos.Add(id);
        EosIds = eos;
    }

    /// <summary>One more than the highest token id (model vocabulary and added tokens): the embedding rows a model needs at least.</summary>
    public int VocabSize { get; }

    /// <summary>The beginning-of-sequence token (tokenizer_config.json), if any.</summary>
    public string? BosToken { get; }

    /// <summary>The end-of-sequence token (tokenizer_config.json), if any.</summary>
    public string? EosToken { get; }

    /// <summary>The padding token (tokenizer_config.json), if any.</summary>
    public string? PadToken { get; }

    /// <summary>Id of <see cref="BosToken"/>.</summary>
    public int? BosId { get; }

    /// <summary>Id of <see cref="EosToken"/>.</summary>
    public int? EosId { get; }

    /// <summary>Id of <see cref="PadToken"/>.</summary>
    public int? PadId { get; }

    /// <summary>Ids that end generation: <see cref="EosId"/> and the eos_token_id(s) of generation_config.json.</summary>
    public IReadOnlyList<int> EosIds { get; }

    /// <summary>The Jinja chat template (tokenizer_config.json's chat_template, the "default" one of a list, or chat_template.jinja / chat_template.json).</summary>
    public string? ChatTemplate { get; }

    /// <summary>tokenizer_config.json's clean_up_tokenization_spaces: whether transformers' decode tidies spaces before punctuation.</summary>
    public bool CleanUpTokenizationSpaces { get; }

    /// <summary>The SentencePiece model file of the original LLaVA layout, read when a directory has no tokenizer.json.</summary>
    public const string SentencePieceModelFileName = "tokenizer.model";

    /// <summary>
    /// Loads a tokenizer from a model directory (tokenizer.json, or tokenizer.json.gz, or else a SentencePiece
    /// tokenizer.model used by the rules of HF's slow LlamaTokenizer, with its legacy flag; plus the optional
    /// tokenizer_config.json, special_tokens_map.json, generation_config.json) or from a tokenizer.json
    /// file (".gz" is decompressed).
    /// </summary>
    /// <exception cref="TokenizerException">The file is missing, malformed (not JSON, not UTF-8, values of the wrong kind or
    /// range, ids above <see cref="MaxTokenId"/>, more than 512 MiB), or uses a model or component this runtime does not implement.</exception>
    /// <exception cref="IOException">A file cannot be read.</exception>
    public static Tokenizer Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string jsonPath;
        TokenizerConfig config;
        if (Directory.Exists(path))
        {
            jsonPath = Path.Combine(path, "tokenizer.json");
            if (!File.Exists(jsonPath) && File.Exists(jsonPath + ".gz")) jsonPath += ".gz";
            config = TokenizerConfig.Read(path);
            var modelPath = Path.Combine(path, SentencePieceModelFileName);
            if (!File.Exists(jsonPath) && File.Exists(modelPath))
            {
                // LlamaTokenizer's own defaults when tokenizer_config.json names no special tokens.
                config = config with { BosToken = config.BosToken ?? "<s>", EosToken = config.EosToken ?? "</s>" };
                return new Tokenizer(null, null, SentencePieceModel.Load(modelPath, path, config.BosToken, config.EosToken, config.AddBosToken, config.AddEosToken), config);
            }
            if (!File.Exists(jsonPath)) throw new TokenizerException(path, "the directory holds no tokenizer.json or tokenizer.model");
        }
        else if (File.Exists(path))
        {
            jsonPath = path;
            config = TokenizerConfig.Empty;
        }
        else throw new TokenizerException(path, "no such file or directory");

        TokenizerPipeline pipeline;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(JsonStrings.ReadFile(jsonPath), new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new TokenizerException(jsonPath, $"not valid JSON: {e.Message}", e);
        }
        // Every value is kind-checked by the reader: anything but a TokenizerException from here is a bug.
        using (doc) pipeline = TokenizerJsonReader.Read(doc.RootElement, jsonPath);
        var post = ApplyBosEosFlags(pipeline, config);
        return new Tokenizer(pipeline, post, null, config);
    }

    /// <summary>Largest token id a tokenizer.json may use (2^24 - 1).</summary>
    public const int MaxTokenId = BpeModel.MaxTokenId;

    // transformers' update_post_processor: add_bos_token / add_eos_token decide the single template.
    private static PostProcessor? ApplyBosEosFlags(TokenizerPipeline p, TokenizerConfig config)
    {
        if (config.AddBosToken is null && config.AddEosToken is null) return p.PostProcessor;
        int? Id(string? token, string flag)
        {
            if (token is null) return null;
            int id = p.Added.TokenToId(token);
            if (id < 0) id = p.Model.TokenToId(token);
            return id >= 0 ? id : throw new TokenizerException(config.ConfigPath, $"{flag} is set but its token '{token}' is not in the vocabulary");
        }
        int? bos = Id(config.BosToken, "add_bos_token");
        int? eos = Id(config.EosToken, "add_eos_token");
        var (prefix, suffix) = p.PostProcessor?.SingleSpecials ?? ([], []);
        bool hasBos = bos is { } b && prefix.Count > 0 && prefix[0] == b;
        bool hasEos = eos is { } e && suffix.Count > 0 && suffix[^1] == e;
        bool wantBos = config.AddBosToken ?? hasBos;
        bool wantEos = config.AddEosToken ?? hasEos;
        if (wantBos == hasBos && wantEos == hasEos) return p.PostProcessor;
        if (wantBos && bos is null) throw new TokenizerException(config.ConfigPath, "add_bos_token is true but there is no bos_token");
        if (wantEos && eos is null) throw new TokenizerException(config.ConfigPath, "add_eos_token is true but there is no eos_token");
        return new TemplatePostProcessor(wantBos ? [bos!.Value] : [], wantEos ? [eos!.Value] : []);
    }

    /// <summary>
    /// Encodes <paramref name="text"/> as HF's <c>tokenizer.encode(text)</c> does: added tokens, normalizer,
    /// pre-tokenizer, BPE and, when <paramref name="addSpecialTokens"/>, the post-processor's special tokens.
    /// </summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = ReplaceLoneSurrogates(text);
        if (_spm is not null) return [.. _spm.Encode(text, addSpecialTokens)];
        var pieces = new List<Piece>();
        var scratch = new List<Piece>();
        _p.Added.SplitRaw(new Piece(text, 0, text.Length, AtOrigin: true), pieces);

        if (_p.Normalizer is not null || _p.Added.HasNormalizedTokens)
        {
            scratch.Clear();
            foreach (var piece in pieces)
            {
                if (piece.IsToken)
                {
                    scratch.Add(piece);
                    continue;
                }
                string normalized = _p.Normalizer?.Normalize(piece.Span.ToString()) ?? piece.Span.ToString();
                if (normalized.Length == 0) continue;
                _p.Added.SplitNormalized(new Piece(normalized, 0, normalized.Length, piece.AtOrigin), scratch);
            }
            (pieces, scratch) = (scratch, pieces);
        }

        _p.PreTokenizer?.PreTokenize(pieces, scratch);

        var ids = new List<int>(text.Length / 3 + 4);
        foreach (var piece in pieces)
        {
            if (piece.IsToken) ids.Add(piece.TokenId);
            else _p.Model.Tokenize(piece.Span, ids);
        }
        if (addSpecialTokens && _post is not null) ids = _post.Process(ids);
        return ids.ToArray();
    }

    /// <summary>
    /// Decodes ids as HF tokenizers' <c>decode</c> does: each id's token (unknown ids are skipped; special
    /// tokens too when <paramref name="skipSpecialTokens"/>), then the decoder; without a decoder the tokens are
    /// joined with spaces. Spaces are not tidied (see the overload with cleanUpTokenizationSpaces).
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        if (_spm is not null) return _spm.Decode(ids, skipSpecialTokens);
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            string? t = _p.Added.DecodeForm(id) ?? _p.Model.IdToToken(id);
            if (t is null) continue;
            if (skipSpecialTokens && _p.Added.IsSpecialId(id)) continue;
            tokens.Add(t);
        }
        if (_p.Decoder is null) return string.Join(' ', tokens);
        _p.Decoder.DecodeChain(tokens);
        return string.Concat(tokens);
    }

    /// <summary>
    /// <see cref="Decode(ReadOnlySpan{int}, bool)"/>, then, when <paramref name="cleanUpTokenizationSpaces"/>,
    /// transformers' clean-up (" ." -&gt; ".", " n't" -&gt; "n't", ...): transformers' <c>decode</c> is this overload
    /// with <see cref="CleanUpTokenizationSpaces"/>.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens, bool cleanUpTokenizationSpaces)
    {
        string text = Decode(ids, skipSpecialTokens);
        return cleanUpTokenizationSpaces ? CleanUp(text) : text;
    }

    /// <summary>transformers' clean_up_tokenization.</summary>
    internal static string CleanUp(string s) => s
        .Replace(" .", ".", StringComparison.Ordinal).Replace(" ?", "?", StringComparison.Ordinal)
        .Replace(" !", "!", StringComparison.Ordinal).Replace(" ,", ",", StringComparison.Ordinal)
        .Replace(" ' ", "'", StringComparison.Ordinal).Replace(" n't", "n't", StringComparison.Ordinal)
        .Replace(" 'm", "'m", StringComparison.Ordinal).Replace(" 's", "'s", StringComparison.Ordinal)
        .Replace(" 've", "'ve", StringComparison.Ordinal).Replace(" 're", "'re", StringComparison.Ordinal);

    /// <summary>The id of a token (added tokens first, then the model's vocabulary), or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_spm is not null) return _spm.TokenToId(token);
        int id = _p.Added.TokenToId(token);
        if (id < 0) id = _p.Model.TokenToId(token);
        return id >= 0 ? id : null;
    }

    /// <summary>The token string of an id (as stored in the vocabulary, e.g. "▁the" or "Ġthe"), or null.</summary>
    public string? IdToToken(int id) => _spm is not null ? _spm.IdToToken(id) : _p.Added.IdToToken(id) ?? _p.Model.IdToToken(id);

    /// <summary>True when the id is a special added token (what Decode skips with skipSpecialTokens).</summary>
    public bool IsSpecialToken(int id) => _spm is not null ? _spm.IsSpecial(id) : _p.Added.IsSpecialId(id);

    /// <summary>True when this tokenizer came from a SentencePiece tokenizer.model (the original LLaVA layout).</summary>
    public bool IsSentencePieceModel => _spm is not null;

    /// <summary>A decoder for a stream of generated ids that returns text only once it is final.</summary>
    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) => new(this, skipSpecialTokens);

    internal TokenizerPipeline Pipeline => _p;

    // Rust strings cannot hold lone surrogates: text arriving there has them as U+FFFD.
    private static string ReplaceLoneSurrogates(string text)
    {
        int i = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (i < 0) return text;
        StringBuilder? sb = null;
        for (; i < text.Length; i++)
        {
            char c = text[i];
            if (!char.IsSurrogate(c)) continue;
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            sb ??= new StringBuilder(text);
            sb[i] = '\uFFFD';
        }
        return sb?.ToString() ?? text;
    }
}

/// <summary>What tokenizer_config.json and its neighbours say about a tokenizer.</summary>
internal sealed record TokenizerConfig(
    string? ConfigPath,
    string? BosToken,
    string? EosToken,
    string? PadToken,
    bool? AddBosToken,
    bool? AddEosToken,
    string? ChatTemplate,
    bool CleanUpTokenizationSpaces,
    IReadOnlyList<int> ExtraEosIds)
{
    public static readonly TokenizerConfig Empty = new(null, null, null, null, null, null, null, false, []);

    /// <summary>Reads the optional config files of a model directory.</summary>
    public static TokenizerConfig Read(string dir)
    {
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        JsonElement? cfg = ReadJson(configPath);
        JsonElement? map = ReadJson(Path.Combine(dir, "special_tokens_map.json"));
        JsonElement? gen = ReadJson(Path.Combine(dir, "generation_config.json"));

        string mapPath = Path.Combine(dir, "special_tokens_map.json");
        string? Token(string name) => TokenString(cfg, name, configPath) ?? TokenString(map, name, mapPath);
        bool? Flag(string name) =>
            cfg is { } c && c.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

        string? template = null;
        if (cfg is { } c && c.TryGetProperty("chat_template", out var t)) template = ChatTemplateOf(t, configPath);
        string jinjaPath = Path.Combine(dir, "chat_template.jinja"), ctPath = Path.Combine(dir, "chat_template.json");
        if (template is null && File.Exists(jinjaPath)) template = System.Text.Encoding.UTF8.GetString(JsonStrings.ReadFile(jinjaPath) is var b && b.AsSpan().StartsWith("\uFEFF"u8) ? b[3..] : b);
        if (template is null && ReadJson(ctPath) is { } ct && ct.TryGetProperty("chat_template", out var t2))
            template = ChatTemplateOf(t2, ctPath);

        var extraEos = new List<int>();
        if (gen is { } g && g.TryGetProperty("eos_token_id", out var eosEl))
        {
            if (eosEl.ValueKind == JsonValueKind.Number && eosEl.TryGetInt32(out int one)) extraEos.Add(one);
            else if (eosEl.ValueKind == JsonValueKind.Array)
                foreach (var x in eosEl.EnumerateArray()) if (x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int id)) extraEos.Add(id);
        }

        return new TokenizerConfig(File.Exists(configPath) ? configPath : null, Token("bos_token"), Token("eos_token"), Token("pad_token"),
            Flag("add_bos_token"), Flag("add_eos_token"), template, Flag("clean_up_tokenization_spaces") ?? false, extraEos);
    }

    private static JsonElement? ReadJson(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(JsonStrings.ReadFile(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            return doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.Clone() : throw new TokenizerException(path, "the top level is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new TokenizerException(path, $"not valid JSON: {e.Message}", e);
        }
    }

    // A special token is written as a string or as an AddedToken object {"content": ...}.
    private static string? TokenString(JsonElement? obj, string name, string path)
    {
        if (obj is not { } o || !o.TryGetProperty(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => JsonStrings.Value(v, path, name),
            JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => JsonStrings.Value(c, path, name),
            _ => null,
        };
    }

    // chat_template: a string, or a list of {name, template} whose "default" entry (else the first) is used.
    private static string? ChatTemplateOf(JsonElement t, string path)
    {
        if (t.ValueKind == JsonValueKind.String) return JsonStrings.Value(t, path, "chat_template");
        if (t.ValueKind != JsonValueKind.Array) return null;
        string? first = null;
        foreach (var e in t.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("template", out var tpl) || tpl.ValueKind != JsonValueKind.String) continue;
            first ??= JsonStrings.Value(tpl, path, "chat_template");
            if (e.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String && JsonStrings.Value(n, path, "chat_template") == "default")
                return JsonStrings.Value(tpl, path, "chat_template");
        }
        return first;
    }
}
