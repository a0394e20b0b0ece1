// Reads HF tokenizer.json into the pipeline components. Supported: model BPE (merges as "a b" strings or
// [a, b] pairs; dropout null or 0; no subword prefix/suffix); normalizers Sequence, Prepend, Replace,
// NFC/NFD/NFKC/NFKD, Lowercase, Strip; pre-tokenizers Sequence, Split, ByteLevel, Metaspace, Digits;
// post-processors TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing; decoders
// Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel. Anything else is a TokenizerException
// naming the file and the component, never a silent approximation. "truncation" and "padding" are ignored
// (they do not change the ids of a single encode without a length limit).
// Every JSON value is checked for its kind before it is read and every string is decoded through
// JsonStrings (an escaped lone surrogate is a TokenizerException, not the InvalidOperationException
// System.Text.Json throws), so nothing but a TokenizerException leaves the reader for a bad file.
using System.Text.Json;

namespace VteKernels.Text;

/// <summary>The components of one tokenizer.json.</summary>
internal sealed record TokenizerPipeline(
    BpeModel Model,
    AddedVocabulary Added,
    Normalizer? Normalizer,
    PreTokenizer? PreTokenizer,
    PostProcessor? PostProcessor,
    Decoder? Decoder);

/// <summary>Parses tokenizer.json.</summary>
internal static class TokenizerJsonReader
{
    /// <summary>Builds the pipeline from the JSON root; <paramref name="path"/> names the file in errors.</summary>
    public static TokenizerPipeline Read(JsonElement root, string path)
    {
        if (root.ValueKind != JsonValueKind.Object) throw Fail(path, "the top level is not a JSON object");
        var ctx = new Context(path);

        var normalizer = ReadNormalizer(Get(root, "normalizer"), ctx, "normalizer");
        var preTokenizer = ReadPreTokenizer(Get(root, "pre_tokenizer"), ctx, "pre_tokenizer", out bool byteLevel);
        var model = ReadModel(Get(root, "model") ?? throw Fail(path, "no \"model\""), ctx, byteLevel);
        var added = ReadAddedTokens(Get(root, "added_tokens"), ctx, normalizer);
        var post = ReadPostProcessor(Get(root, "post_processor"), ctx, "post_processor", added, model);
        var decoder = ReadDecoder(Get(root, "decoder"), ctx, "decoder");
        return new TokenizerPipeline(model, added, normalizer, preTokenizer, post, decoder);
    }

    private sealed record Context(string Path);

    private static TokenizerException Fail(string path, string problem, Exception? inner = null) => new(path, problem, inner);

    private static JsonElement? Get(JsonElement obj, string name) =>
        obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string TypeOf(JsonElement e, Context ctx, string where)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Fail(ctx.Path, $"{where} is not a JSON object");
        if (Get(e, "type") is { ValueKind: JsonValueKind.String } t) return Text(t, ctx, where);
        throw Fail(ctx.Path, $"{where} has no \"type\"");
    }

    private static string Str(JsonElement e, string name, Context ctx, string where) =>
        Get(e, name) is { ValueKind: JsonValueKind.String } v ? Text(v, ctx, $"{where}.{name}") : throw Fail(ctx.Path, $"{where}: \"{name}\" is missing or not a string");

    private static string? OptStr(JsonElement e, string name, Context ctx) =>
        Get(e, name) is { ValueKind: JsonValueKind.String } v ? Text(v, ctx, name) : null;

    private static string Text(JsonElement v, Context ctx, string where) => JsonStrings.Value(v, ctx.Path, where);

    // The items of a JSON array, or a TokenizerException naming where it was expected.
    private static JsonElement.ArrayEnumerator Items(JsonElement e, Context ctx, string where) =>
        e.ValueKind == JsonValueKind.Array ? e.EnumerateArray() : throw Fail(ctx.Path, $"{where} is not a JSON array");

    private static bool Bool(JsonElement e, string name, bool fallback) =>
        Get(e, name) is { } v && (v.ValueKind is JsonValueKind.True or JsonValueKind.False) ? v.GetBoolean() : fallback;

    private static int Int(JsonElement e, string name, int fallback) =>
        Get(e, name) is { ValueKind: JsonValueKind.Number } v && v.TryGetInt32(out int i) ? i : fallback;

    private static char OneChar(string s, Context ctx, string where)
    {
        if (s.Length == 1) return s[0];
        throw Fail(ctx.Path, $"{where}: '{s}' must be a single character");
    }

    private static OnigurumaRegex Regex(string pattern, Context ctx, string where)
    {
        try { return OnigurumaRegex.Create(pattern); }
        catch (NotSupportedException e) { throw Fail(ctx.Path, $"{where}: {e.Message}", e); }
    }

    // A "pattern" object: {"String": "..."} or {"Regex": "..."}.
    private static (string? Literal, OnigurumaRegex? Regex) Pattern(JsonElement e, Context ctx, string where)
    {
        var p = Get(e, "pattern") ?? throw Fail(ctx.Path, $"{where}: no \"pattern\"");
        if (OptStr(p, "String", ctx) is { } lit) return (lit, null);
        if (OptStr(p, "Regex", ctx) is { } re) return (null, Regex(re, ctx, where));
        throw Fail(ctx.Path, $"{where}: \"pattern\" must hold \"String\" or \"Regex\"");
    }

    // ------------------------------------------------------------------------------------------ model

    private static BpeModel ReadModel(JsonElement m, Context ctx, bool byteLevel)
    {
        string type = Get(m, "type") is { ValueKind: JsonValueKind.String } t ? Text(t, ctx, "model.type") : (Get(m, "merges") is not null ? "BPE" : "?");
        if (type != "BPE")
            throw Fail(ctx.Path, $"unsupported model type '{type}' (supported: BPE)");
        if (Get(m, "dropout") is { ValueKind: JsonValueKind.Number } d && (!d.TryGetDouble(out double dropout) || dropout != 0))
            throw Fail(ctx.Path, $"model: BPE dropout {d.GetRawText()} is not supported (only null or 0)");
        if (OptStr(m, "continuing_subword_prefix", ctx) is { Length: > 0 } pre)
            throw Fail(ctx.Path, $"model: continuing_subword_prefix '{pre}' is not supported");
        if (OptStr(m, "end_of_word_suffix", ctx) is { Length: > 0 } suf)
            throw Fail(ctx.Path, $"model: end_of_word_suffix '{suf}' is not supported");

        var vocabEl = Get(m, "vocab") ?? throw Fail(ctx.Path, "model: no \"vocab\"");
        if (vocabEl.ValueKind != JsonValueKind.Object) throw Fail(ctx.Path, "model: \"vocab\" is not an object");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabEl.EnumerateObject())
        {
            string token = JsonStrings.Name(p, ctx.Path, "model.vocab");
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw Fail(ctx.Path, $"model: vocabulary entry '{token}' has no valid id");
            if (id > BpeModel.MaxTokenId)
                throw Fail(ctx.Path, $"model: vocabulary entry '{token}' has the id {id}, above the largest supported id {BpeModel.MaxTokenId}");
            vocab[token] = id;
        }

        var merges = new List<(string, string)>();
        if (Get(m, "merges") is { } mergesEl)
        {
            if (mergesEl.ValueKind != JsonValueKind.Array) throw Fail(ctx.Path, "model: \"merges\" is not an array");
            int rank = 0;
            foreach (var e in mergesEl.EnumerateArray())
            {
                if (e.ValueKind == JsonValueKind.String)
                {
                    var s = Text(e, ctx, $"model.merges[{rank}]");
                    var parts = s.Split(' ');
                    if (parts.Length != 2) throw Fail(ctx.Path, $"model: merge {rank} ('{s}') is not two tokens separated by one space");
                    merges.Add((parts[0], parts[1]));
                }
                else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2
                         && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
                {
                    merges.Add((Text(e[0], ctx, $"model.merges[{rank}]"), Text(e[1], ctx, $"model.merges[{rank}]")));
                }
                else throw Fail(ctx.Path, $"model: merge {rank} is neither \"a b\" nor [\"a\", \"b\"]");
                rank++;
            }
        }

        try
        {
            return new BpeModel(vocab, merges, OptStr(m, "unk_token", ctx), Bool(m, "fuse_unk", false), Bool(m, "byte_fallback", false),
                Bool(m, "ignore_merges", false), byteLevel);
        }
        catch (FormatException e)
        {
            throw Fail(ctx.Path, $"model: {e.Message}", e);
        }
    }

    // ----------------------------------------------------------------------------------- added tokens

    private static AddedVocabulary ReadAddedTokens(JsonElement? e, Context ctx, Normalizer? normalizer)
    {
        var list = new List<AddedToken>();
        if (e is { } arr)
        {
            if (arr.ValueKind != JsonValueKind.Array) throw Fail(ctx.Path, "\"added_tokens\" is not an array");
            foreach (var t in arr.EnumerateArray())
            {
                if (Get(t, "id") is not { ValueKind: JsonValueKind.Number } idEl || !idEl.TryGetInt32(out int id) || id < 0)
                    throw Fail(ctx.Path, "added_tokens: an entry has no valid \"id\"");
                if (id > BpeModel.MaxTokenId)
                    throw Fail(ctx.Path, $"added_tokens: the id {id} is above the largest supported id {BpeModel.MaxTokenId}");
                string content = Str(t, "content", ctx, $"added_tokens[id {id}]");
                bool special = Bool(t, "special", false);
                list.Add(new AddedToken(id, content, Bool(t, "single_word", false), Bool(t, "lstrip", false), Bool(t, "rstrip", false),
                    Bool(t, "normalized", !special), special));
            }
        }
        return new AddedVocabulary(list, normalizer);
    }

    // ------------------------------------------------------------------------------------- normalizer

    private static Normalizer? ReadNormalizer(JsonElement? e, Context ctx, string where)
    {
        if (e is not { } n) return null;
        string type = TypeOf(n, ctx, where);
        switch (type)
        {
            case "Sequence":
                {
                    var items = Get(n, "normalizers") ?? throw Fail(ctx.Path, $"{where}: Sequence without \"normalizers\"");
                    var list = new List<Normalizer>();
                    int i = 0;
                    foreach (var x in Items(items, ctx, $"{where}.normalizers"))
                        if (ReadNormalizer(x, ctx, $"{where}.normalizers[{i++}]") is { } item) list.Add(item);
                    return new SequenceNormalizer(list);
                }
            case "Prepend":
                return new PrependNormalizer(Str(n, "prepend", ctx, where));
            case "Replace":
                {
                    var (lit, re) = Pattern(n, ctx, where);
                    return new ReplaceNormalizer(lit, re, Str(n, "content", ctx, where));
                }
            case "NFC": return new UnicodeFormNormalizer(NormalizationKind.Nfc);
            case "NFD": return new UnicodeFormNormalizer(NormalizationKind.Nfd);
            case "NFKC": return new UnicodeFormNormalizer(NormalizationKind.Nfkc);
            case "NFKD": return new UnicodeFormNormalizer(NormalizationKind.Nfkd);
            case "Lowercase": return new LowercaseNormalizer();
            case "Strip": return new StripNormalizer(Bool(n, "strip_left", true), Bool(n, "strip_right", true));
            default:
                throw Fail(ctx.Path, $"unsupported {where} type '{type}' (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)");
        }
    }

    // ---------------------------------------------------------------------------------- pre-tokenizer

    private static PreTokenizer? ReadPreTokenizer(JsonElement? e, Context ctx, string where, out bool byteLevel)
    {
        byteLevel = false;
        if (e is not { } p) return null;
        string type = TypeOf(p, ctx, where);
        switch (type)
        {
            case "Sequence":
                {
                    var items = Get(p, "pretokenizers") ?? throw Fail(ctx.Path, $"{where}: Sequence without \"pretokenizers\"");
                    var list = new List<PreTokenizer>();
                    int i = 0;
                    foreach (var x in Items(items, ctx, $"{where}.pretokenizers"))
                    {
                        string at = $"{where}.pretokenizers[{i}]";
                        if (byteLevel) throw Fail(ctx.Path, $"{at}: a pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
                        if (ReadPreTokenizer(x, ctx, at, out bool itemByteLevel) is { } item) list.Add(item);
                        byteLevel |= itemByteLevel;
                        i++;
                    }
                    return list.Count == 1 ? list[0] : new SequencePreTokenizer(list);
                }
            case "Split":
                {
                    var (lit, re) = Pattern(p, ctx, where);
                    return new SplitPreTokenizer(re, lit, Behavior(Str(p, "behavior", ctx, where), ctx, where), Bool(p, "invert", false));
                }
            case "ByteLevel":
                byteLevel = true;
                return new ByteLevelPreTokenizer(Bool(p, "add_prefix_space", true), Bool(p, "use_regex", true));
            case "Metaspace":
                return new MetaspacePreTokenizer(OneChar(Str(p, "replacement", ctx, where), ctx, where), Scheme(p, ctx, where), Bool(p, "split", true));
            case "Digits":
                return new DigitsPreTokenizer(Bool(p, "individual_digits", false));
            default:
                throw Fail(ctx.Path, $"unsupported {where} type '{type}' (supported: Sequence, Split, ByteLevel, Metaspace, Digits)");
        }
    }

    private static SplitBehavior Behavior(string s, Context ctx, string where) => s switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw Fail(ctx.Path, $"{where}: unknown split behavior '{s}'"),
    };

    // Metaspace's prepend_scheme, or the older add_prefix_space (false means never).
    private static PrependScheme Scheme(JsonElement p, Context ctx, string where)
    {
        var scheme = OptStr(p, "prepend_scheme", ctx) switch
        {
            null or "always" => PrependScheme.Always,
            "first" => PrependScheme.First,
            "never" => PrependScheme.Never,
            var s => throw Fail(ctx.Path, $"{where}: unknown prepend_scheme '{s}'"),
        };
        if (Get(p, "add_prefix_space") is { ValueKind: JsonValueKind.False })
        {
            if (OptStr(p, "prepend_scheme", ctx) is { } s && s != "never")
                throw Fail(ctx.Path, $"{where}: add_prefix_space false contradicts prepend_scheme '{s}'");
            scheme = PrependScheme.Never;
        }
        return scheme;
    }

    // --------------------------------------------------------------------------------- post-processor

    private static PostProcessor? ReadPostProcessor(JsonElement? e, Context ctx, string where, AddedVocabulary added, BpeModel model)
    {
        if (e is not { } p) return null;
        string type = TypeOf(p, ctx, where);
        switch (type)
        {
            case "TemplateProcessing":
                return ReadTemplate(p, ctx, where);
            case "ByteLevel":
                return new TemplatePostProcessor([], []);
            case "Sequence":
                {
                    var items = Get(p, "processors") ?? throw Fail(ctx.Path, $"{where}: Sequence without \"processors\"");
                    var list = new List<PostProcessor>();
                    int i = 0;
                    foreach (var x in Items(items, ctx, $"{where}.processors"))
                        if (ReadPostProcessor(x, ctx, $"{where}.processors[{i++}]", added, model) is { } item) list.Add(item);
                    return new SequencePostProcessor(list);
                }
            case "BertProcessing" or "RobertaProcessing":
                {
                    int First(string name)
                    {
                        var pair = Get(p, name) ?? throw Fail(ctx.Path, $"{where}: no \"{name}\"");
                        if (pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2 || pair[1].ValueKind != JsonValueKind.Number
                            || !pair[1].TryGetInt32(out int id))
                            throw Fail(ctx.Path, $"{where}: \"{name}\" is not [token, id]");
                        return id;
                    }
                    return new TemplatePostProcessor([First("cls")], [First("sep")]);
                }
            default:
                throw Fail(ctx.Path, $"unsupported {where} type '{type}' (supported: TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing)");
        }
    }

    private static TemplatePostProcessor ReadTemplate(JsonElement p, Context ctx, string where)
    {
        var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
        if (Get(p, "special_tokens") is { ValueKind: JsonValueKind.Object } st)
        {
            foreach (var s in st.EnumerateObject())
            {
                string name = JsonStrings.Name(s, ctx.Path, $"{where}.special_tokens");
                var ids = Get(s.Value, "ids") ?? throw Fail(ctx.Path, $"{where}: special token '{name}' has no \"ids\"");
                specials[name] = Items(ids, ctx, $"{where}: special token '{name}' ids").Select(x =>
                    x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int id) && id >= 0 ? id
                        : throw Fail(ctx.Path, $"{where}: special token '{name}' has an id that is not a non-negative integer")).ToArray();
            }
        }
        var single = Get(p, "single") ?? throw Fail(ctx.Path, $"{where}: TemplateProcessing without \"single\"");
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (var item in Items(single, ctx, $"{where}.single"))
        {
            if (Get(item, "Sequence") is not null)
            {
                if (seenSequence) throw Fail(ctx.Path, $"{where}: a single template with the sequence twice is not supported");
                seenSequence = true;
            }
            else if (Get(item, "SpecialToken") is { } sp)
            {
                string id = Str(sp, "id", ctx, where);
                if (!specials.TryGetValue(id, out var ids)) throw Fail(ctx.Path, $"{where}: template names special token '{id}' that \"special_tokens\" does not define");
                (seenSequence ? suffix : prefix).AddRange(ids);
            }
            else throw Fail(ctx.Path, $"{where}: template item is neither Sequence nor SpecialToken");
        }
        if (!seenSequence) throw Fail(ctx.Path, $"{where}: the single template has no $A");
        return new TemplatePostProcessor(prefix, suffix);
    }

    // ---------------------------------------------------------------------------------------- decoder

    private static Decoder? ReadDecoder(JsonElement? e, Context ctx, string where)
    {
        if (e is not { } d) return null;
        string type = TypeOf(d, ctx, where);
        switch (type)
        {
            case "Sequence":
                {
                    var items = Get(d, "decoders") ?? throw Fail(ctx.Path, $"{where}: Sequence without \"decoders\"");
                    var list = new List<Decoder>();
                    int i = 0;
                    foreach (var x in Items(items, ctx, $"{where}.decoders"))
                        if (ReadDecoder(x, ctx, $"{where}.decoders[{i++}]") is { } item) list.Add(item);
                    return new SequenceDecoder(list);
                }
            case "Replace":
                {
                    var (lit, re) = Pattern(d, ctx, where);
                    return new ReplaceDecoder(lit, re, Str(d, "content", ctx, where));
                }
            case "ByteFallback": return new ByteFallbackDecoder();
            case "Fuse": return new FuseDecoder();
            case "Strip":
                return new StripDecoder(OneChar(Str(d, "content", ctx, where), ctx, where), Int(d, "start", 0), Int(d, "stop", 0));
            case "Metaspace":
                return new MetaspaceDecoder(OneChar(Str(d, "replacement", ctx, where), ctx, where), Scheme(d, ctx, where));
            case "ByteLevel": return new ByteLevelDecoder();
            default:
                throw Fail(ctx.Path, $"unsupported {where} type '{type}' (supported: Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel)");
        }
    }
}
