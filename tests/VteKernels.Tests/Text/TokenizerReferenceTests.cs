// Token-exactness against HF tokenizers itself: for each fixture (Mistral 32k SentencePiece BPE with byte
// fallback, LLaMA-3 128k and Qwen3 151k byte-level BPE with Split regexes, GPT-2 50k byte-level with its
// built-in regex), every line of the hand-written corpus and of the 300 random strings must encode to the
// reference ids (with and without special tokens) and decode to the reference text (with and without
// skipping special tokens). A failure lists the first mismatching lines.
using System.Text;
using VteKernels.Text;
using Xunit;

namespace VteKernels.Tests.Text;

public sealed class TokenizerReferenceTests
{
    public static TheoryData<string, string> Files()
    {
        var d = new TheoryData<string, string>();
        foreach (var n in TokenizerFixtures.Names)
            foreach (var f in new[] { "corpus.jsonl", "random.jsonl.gz" }) d.Add(n, f);
        return d;
    }

    public static TheoryData<string> Variants() => new(TokenizerFixtures.VariantNames());

    private static void Check(string name, string file, Func<TokenizerCase, string?> compare) =>
        Check(name, file, TokenizerFixtures.Cases(name, file), compare);

    private static void Check(string name, string file, IReadOnlyList<TokenizerCase> cases, Func<TokenizerCase, string?> compare)
    {
        Assert.NotEmpty(cases);
        var failures = new StringBuilder();
        int failed = 0;
        foreach (var c in cases)
        {
            string? problem = compare(c);
            if (problem is null) continue;
            if (++failed <= 6) failures.AppendLine($"  line {c.Line} {TokenizerFixtures.Show(c.Text)}: {problem}");
        }
        Assert.True(failed == 0, $"{name}/{file}: {failed} of {cases.Count} lines differ from HF tokenizers\n{failures}");
    }

    [Theory, MemberData(nameof(Files))]
    public void EncodeMatchesHf(string name, string file)
    {
        var tok = TokenizerFixtures.Json(name);
        Check(name, file, c =>
        {
            var ids = tok.Encode(c.Text);
            return ids.AsSpan().SequenceEqual(c.Ids) ? null : $"got {TokenizerFixtures.Show(ids)}, want {TokenizerFixtures.Show(c.Ids)}";
        });
    }

    [Theory, MemberData(nameof(Files))]
    public void EncodeWithoutSpecialTokensMatchesHf(string name, string file)
    {
        var tok = TokenizerFixtures.Json(name);
        Check(name, file, c =>
        {
            var ids = tok.Encode(c.Text, addSpecialTokens: false);
            return ids.AsSpan().SequenceEqual(c.IdsPlain) ? null : $"got {TokenizerFixtures.Show(ids)}, want {TokenizerFixtures.Show(c.IdsPlain)}";
        });
    }

    [Theory, MemberData(nameof(Files))]
    public void DecodeMatchesHf(string name, string file)
    {
        var tok = TokenizerFixtures.Json(name);
        Check(name, file, c =>
        {
            string all = tok.Decode(c.Ids);
            if (all != c.Decoded) return $"decode: got {TokenizerFixtures.Show(all)}, want {TokenizerFixtures.Show(c.Decoded)}";
            string skip = tok.Decode(c.Ids, skipSpecialTokens: true);
            return skip == c.DecodedSkip ? null : $"decode skipping specials: got {TokenizerFixtures.Show(skip)}, want {TokenizerFixtures.Show(c.DecodedSkip)}";
        });
    }

    // transformers' decode = tokenizers' decode + clean_up_tokenization_spaces from tokenizer_config.json;
    // the reference is Tokenizers.js, which applies it the same way.
    [Theory, MemberData(nameof(Files))]
    public void DecodeWithConfigCleanUpMatchesTokenizersJs(string name, string file)
    {
        var tok = TokenizerFixtures.Directory(name);
        Check(name, file, c =>
        {
            if (c.DecodedClean is null) return null;
            string got = tok.Decode(c.Ids, skipSpecialTokens: false, tok.CleanUpTokenizationSpaces);
            return got == c.DecodedClean ? null : $"got {TokenizerFixtures.Show(got)}, want {TokenizerFixtures.Show(c.DecodedClean)}";
        });
    }

    // The fixtures' tokenizer_config.json files agree with their post-processors, so loading the directory
    // (which applies add_bos_token / add_eos_token) must give the same ids.
    [Theory, MemberData(nameof(Files))]
    public void DirectoryLoadEncodesTheSame(string name, string file)
    {
        var tok = TokenizerFixtures.Directory(name);
        Check(name, file, c =>
        {
            var ids = tok.Encode(c.Text);
            return ids.AsSpan().SequenceEqual(c.Ids) ? null : $"got {TokenizerFixtures.Show(ids)}, want {TokenizerFixtures.Show(c.Ids)}";
        });
    }

    // The stream's pieces concatenate to the full decode, and no piece ends inside a character.
    [Theory, MemberData(nameof(Files))]
    public void StreamingDecodeConcatenatesToDecode(string name, string file)
    {
        var tok = TokenizerFixtures.Json(name);
        Check(name, file, c =>
        {
            var stream = tok.CreateStreamingDecoder(skipSpecialTokens: false);
            var sb = new StringBuilder();
            foreach (int id in c.IdsPlain)
            {
                string piece = stream.Push(id);
                if (piece.Length > 0 && char.IsHighSurrogate(piece[^1])) return $"piece ends inside a surrogate pair after id {id}";
                sb.Append(piece);
            }
            sb.Append(stream.Flush());
            string want = tok.Decode(c.IdsPlain);
            return sb.ToString() == want ? null : $"stream gave {TokenizerFixtures.Show(sb.ToString())}, decode {TokenizerFixtures.Show(want)}";
        });
    }

    // Components the four files do not use (Metaspace schemes, added-token flags, Split behaviours, Digits,
    // NFKC/NFD/Lowercase/Strip/regex Replace, Strip decoder), each patched into a real vocabulary.
    [Theory, MemberData(nameof(Variants))]
    public void VariantMatchesHf(string variant)
    {
        var tok = TokenizerFixtures.Variant(variant);
        var cases = TokenizerFixtures.ReadCases(Path.Combine(TokenizerFixtures.Dir("variants"), variant + ".jsonl.gz"));
        Check(variant, "jsonl", cases, c =>
        {
            var ids = tok.Encode(c.Text);
            if (!ids.AsSpan().SequenceEqual(c.Ids)) return $"encode: got {TokenizerFixtures.Show(ids)}, want {TokenizerFixtures.Show(c.Ids)}";
            var plain = tok.Encode(c.Text, addSpecialTokens: false);
            if (!plain.AsSpan().SequenceEqual(c.IdsPlain)) return $"encode plain: got {TokenizerFixtures.Show(plain)}, want {TokenizerFixtures.Show(c.IdsPlain)}";
            string all = tok.Decode(c.Ids);
            if (all != c.Decoded) return $"decode: got {TokenizerFixtures.Show(all)}, want {TokenizerFixtures.Show(c.Decoded)}";
            string skip = tok.Decode(c.Ids, skipSpecialTokens: true);
            return skip == c.DecodedSkip ? null : $"decode skipping specials: got {TokenizerFixtures.Show(skip)}, want {TokenizerFixtures.Show(c.DecodedSkip)}";
        });
    }

    // Long inputs (a piece repeated up to 200k times): one huge BPE word, long runs, long prose; HF's id
    // count and the SHA-256 of its ids joined with commas.
    [Theory, MemberData(nameof(Names))]
    public void LongInputsMatchHf(string name)
    {
        var tok = TokenizerFixtures.Json(name);
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Dir(name), "long.json")));
        foreach (var c in doc.RootElement.EnumerateArray())
        {
            string piece = c.GetProperty("piece").GetString()!;
            int times = c.GetProperty("times").GetInt32();
            var ids = tok.Encode(new StringBuilder(piece.Length * times).Insert(0, piece, times).ToString());
            string hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(string.Join(",", ids))));
            Assert.True(c.GetProperty("count").GetInt32() == ids.Length && c.GetProperty("sha256").GetString() == hash,
                $"{name}: {TokenizerFixtures.Show(piece)} x {times}: {ids.Length} ids (HF {c.GetProperty("count").GetInt32()}), hash {hash[..12]} (HF {c.GetProperty("sha256").GetString()![..12]})");
        }
    }

    public static TheoryData<string> Names() => new(TokenizerFixtures.Names);
}
