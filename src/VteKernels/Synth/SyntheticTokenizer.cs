// A small but valid LLaMA-style (SentencePiece BPE with byte fallback) tokenizer.json for synthetic models.
// Vocabulary: <unk> <s> </s>, the 256 byte-fallback tokens <0x00>..<0xFF>, "▁" and the printable ASCII
// characters, then merged pieces built by merges in rank order: common English words (as "▁word" and
// "word"), then all two- and three-letter lowercase strings, until the regular vocabulary is full.
// Every merged piece's two halves are in the vocabulary before its merge, so every piece is reachable.
// <image> and <pad> follow at image_token_index and image_token_index + 1, as in llava-hf's tokenizers.
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VteKernels.Synth;

/// <summary>Builds tokenizer.json and tokenizer_config.json for a synthetic model.</summary>
public static class SyntheticTokenizer
{
    private const string Space = "\u2581"; // SentencePiece's visible space

    private static readonly string[] Words =
    [
        "the", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "this", "was", "are", "be",
        "at", "by", "an", "or", "from", "what", "image", "picture", "photo", "color", "describe", "there", "man",
        "woman", "dog", "cat", "car", "red", "blue", "green", "white", "black", "sky", "tree", "water", "people",
        "table", "street", "question", "answer", "USER", "ASSISTANT", "left", "right", "top", "bottom", "many",
        "how", "where", "who", "which", "yes", "no", "one", "two", "three", "small", "large", "sitting", "standing",
        "holding", "wearing", "front", "behind", "next", "near", "background", "shown", "can", "you", "see", "does",
        "do", "has", "have", "not", "they", "he", "she", "his", "her", "their", "we", "a", "I",
    ];

    /// <summary>The vocabulary in id order and the merges in rank order.</summary>
    public static (IReadOnlyList<string> Vocab, IReadOnlyList<(string Left, string Right)> Merges) BuildVocabulary(int regularSize)
    {
        var vocab = new List<string> { "<unk>", "<s>", "</s>" };
        for (int b = 0; b < 256; b++) vocab.Add($"<0x{b:X2}>");
        vocab.Add(Space);
        for (char c = '!'; c <= '~'; c++) vocab.Add(c.ToString());
        if (regularSize < vocab.Count)
            throw new ArgumentOutOfRangeException(nameof(regularSize), regularSize, $"a byte-fallback vocabulary needs at least {vocab.Count} regular tokens");
        var known = new HashSet<string>(vocab, StringComparer.Ordinal);
        var merges = new List<(string, string)>();

        // Adds every prefix of s (longer than one piece) by merging the previous prefix with the next character.
        bool AddChain(string s)
        {
            for (int end = 2; end <= s.Length; end++)
            {
                if (vocab.Count >= regularSize) return false;
                string piece = s[..end];
                if (known.Add(piece))
                {
                    merges.Add((s[..(end - 1)], s[(end - 1)..end]));
                    vocab.Add(piece);
                }
            }
            return true;
        }

        IEnumerable<string> Candidates()
        {
            foreach (var w in Words) { yield return Space + w; yield return w; }
            const string letters = "abcdefghijklmnopqrstuvwxyz";
            foreach (var a in letters)
                foreach (var b in letters) { yield return Space + a + b; yield return $"{a}{b}"; }
            foreach (var a in letters)
                foreach (var b in letters)
                    foreach (var c in letters) { yield return Space + a + b + c; yield return $"{a}{b}{c}"; }
        }

        foreach (var s in Candidates())
            if (!AddChain(s)) break;
        for (int i = 0; vocab.Count < regularSize; i++) vocab.Add($"<unused{i}>");
        return (vocab, merges);
    }

    /// <summary>tokenizer.json text: BPE with byte fallback, Llama normalizer, BOS template, Llama decoder.</summary>
    /// <param name="vocabSize">The model's vocabulary (embedding rows); ids past the special tokens are left unused.</param>
    /// <param name="imageTokenIndex">Id of &lt;image&gt;; &lt;pad&gt; gets the next id.</param>
    public static string TokenizerJson(int vocabSize, int imageTokenIndex)
    {
        if (imageTokenIndex + 2 > vocabSize)
            throw new ArgumentOutOfRangeException(nameof(imageTokenIndex), $"<image> at {imageTokenIndex} and <pad> after it do not fit a vocabulary of {vocabSize}");
        var (vocab, merges) = BuildVocabulary(imageTokenIndex);
        var vocabObj = new JsonObject();
        for (int i = 0; i < vocab.Count; i++) vocabObj[vocab[i]] = i;
        vocabObj["<image>"] = imageTokenIndex;
        vocabObj["<pad>"] = imageTokenIndex + 1;
        var mergeArr = new JsonArray();
        foreach (var (l, r) in merges) mergeArr.Add($"{l} {r}");

        JsonObject Added(int id, string content) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false,
            ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        };
        JsonObject Replace(string from, string to) => new() { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = from }, ["content"] = to };

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Added(0, "<unk>"), Added(1, "<s>"), Added(2, "</s>"), Added(imageTokenIndex, "<image>"), Added(imageTokenIndex + 1, "<pad>")),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = Space }, Replace(" ", Space)),
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special("<s>"), Seq("A")),
                ["pair"] = new JsonArray(Special("<s>"), Seq("A"), Special("<s>", 1), Seq("B", 1)),
                ["special_tokens"] = new JsonObject
                {
                    ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") },
                },
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    Replace(Space, " "),
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = "<unk>",
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = true,
                ["byte_fallback"] = true,
                ["ignore_merges"] = false,
                ["vocab"] = vocabObj,
                ["merges"] = mergeArr,
            },
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });

        static JsonObject Special(string id, int type = 0) => new() { ["SpecialToken"] = new JsonObject { ["id"] = id, ["type_id"] = type } };
        static JsonObject Seq(string id, int type = 0) => new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = type } };
    }

    /// <summary>tokenizer_config.json text, with LLaVA-1.5's chat template.</summary>
    public static string TokenizerConfigJson(int imageTokenIndex, int maxLength)
    {
        JsonObject Dec(string content) => new()
        {
            ["content"] = content, ["lstrip"] = false, ["normalized"] = false, ["rstrip"] = false, ["single_word"] = false, ["special"] = true,
        };
        var root = new JsonObject
        {
            ["add_bos_token"] = true,
            ["add_eos_token"] = false,
            ["added_tokens_decoder"] = new JsonObject
            {
                ["0"] = Dec("<unk>"), ["1"] = Dec("<s>"), ["2"] = Dec("</s>"),
                [imageTokenIndex.ToString(System.Globalization.CultureInfo.InvariantCulture)] = Dec("<image>"),
                [(imageTokenIndex + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)] = Dec("<pad>"),
            },
            ["bos_token"] = "<s>",
            ["eos_token"] = "</s>",
            ["unk_token"] = "<unk>",
            ["pad_token"] = "<pad>",
            ["clean_up_tokenization_spaces"] = false,
            ["legacy"] = false,
            ["model_max_length"] = maxLength,
            ["padding_side"] = "left",
            ["tokenizer_class"] = "LlamaTokenizer",
            ["chat_template"] =
                "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}" +
                "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% elif item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}" +
                "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}",
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
