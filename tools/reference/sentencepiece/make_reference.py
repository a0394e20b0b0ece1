#!/usr/bin/python3
# Makes the SentencePiece tokenizer.model test vectors in tests/VteKernels.Tests/Data/Tokenizers/spm-llama:
#   tokenizer.model  a LLaMA-style BPE model with byte fallback, trained here by Debian's `spm_train` (sentencepiece
#                    0.1.97: apt-get install sentencepiece python3-sentencepiece python3-protobuf) on a generated corpus;
#   plain.json       the reference library's ids for plain strings (`spm_encode --output_format=id`, the command-line
#                    tool, no BOS) and its decode of them;
#   cases.json       strings with special tokens written in the text, tokenized by the rules of HF transformers'
#                    slow LlamaTokenizer (tokenization_llama.py + PreTrainedTokenizer.tokenize: added/special tokens
#                    split out first, `legacy` changes what follows them, BOS per add_bos_token), and prompts split at
#                    <image> as LLaVA's tokenizer_image_token does. transformers itself is not installable here, so
#                    those rules are restated below over the real SentencePiece library (the pieces it returns are
#                    the reference's; only the splitting around special tokens is this script's reading of HF's code);
#   tokenizer.json   the same vocabulary converted as transformers' LlamaConverter does (BPE with byte fallback,
#                    merges from the SentencePieceExtractor, Prepend/Replace normalizer, legacy), for the check that
#                    our tokenizer.json path and our tokenizer.model path agree.
# Run from anywhere: /usr/bin/python3 tools/reference/sentencepiece/make_reference.py
import json, os, random, subprocess, tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "..", "tests", "VteKernels.Tests", "Data", "Tokenizers", "spm-llama")
SPIECE = "\u2581"

WORDS = ("the of and to in is it that for on with as this was are be at by an or from what image picture photo "
         "color describe there man woman dog cat car red blue green white black sky tree water people table street "
         "question answer left right top bottom many how where who which yes no one two three small large sitting "
         "standing holding wearing front behind next near background shown can you see does do has have not they "
         "he she his her their we a I running jumping beautiful mountain river ocean bicycle kitchen window").split()
EXTRA = ["café", "naïve", "日本語", "中文", "Ελληνικά", "русский", "😀", "🚀", "—", "…", "ß", "1234", "3.14", "2024-05-01",
         "x=y+z", "foo_bar()", "#include", "C++", "e-mail", "don't", "It's"]


def corpus(rng, n):
    lines = []
    for _ in range(n):
        k = rng.randint(3, 18)
        words = [rng.choice(WORDS) if rng.random() > 0.12 else rng.choice(EXTRA) for _ in range(k)]
        s = " ".join(words)
        if rng.random() < 0.5: s = s[0].upper() + s[1:]
        s += rng.choice([".", "?", "!", ",", "", ":"])
        lines.append(s)
    return lines


def test_strings(rng):
    fixed = ["Hello world", " Hello", "  two leading spaces", "trailing space ", "tabs\tand\nnewlines\n", "",
             "a", "日本語のテキスト", "emoji 😀🚀 here", "numbers 0123456789", "   ", "\n", "mixed  double  spaces",
             "UPPER lower MiXeD", "ünïcödé äöü", "piece" + SPIECE + "underline", SPIECE + "leading underline"]
    return fixed + corpus(rng, 120)


def special_strings():
    return ["<s>Hello", "<s> Hello", "Hello</s>", "Hello </s> world", "</s>", "<s>", "a<unk>b", "<unk> x",
            "USER: <s>what</s> ASSISTANT:", "<s>\nline", "text <s><s> double", " <s> spaced ", "</s></s>", "x</s>y",
            "A chat. USER: hi</s>ASSISTANT: hello</s>", "<image>not special here"]


def image_prompts():
    return ["USER: <image>\nWhat is in the picture? ASSISTANT:",
            "<image>\nDescribe it.",
            "A chat between a curious human and an artificial intelligence assistant. USER: <image>\nWhat colour is the sky? ASSISTANT:",
            "two <image> images <image> here",
            "no image at all"]


def train(work, lines):
    text = os.path.join(work, "train.txt")
    with open(text, "w", encoding="utf-8") as f: f.write("\n".join(lines) + "\n")
    prefix = os.path.join(work, "m")
    # LLaMA's settings: BPE, byte fallback, digits split, dummy prefix, whitespace kept as is, identity normalization.
    subprocess.run(["spm_train", f"--input={text}", f"--model_prefix={prefix}", "--model_type=bpe", "--vocab_size=700",
                    "--byte_fallback=true", "--split_digits=true", "--add_dummy_prefix=true", "--remove_extra_whitespaces=false",
                    "--normalization_rule_name=identity", "--allow_whitespace_only_pieces=true", "--character_coverage=0.9995",
                    "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1", "--num_threads=1", "--minloglevel=2",
                    "--max_sentence_length=4192"], check=True)
    return prefix + ".model"


def spm_encode_cli(model, strings, work):
    # One string per line: spm_encode reads lines, so only strings without a newline go through the tool; the
    # others are encoded by the same library through its Python binding.
    path = os.path.join(work, "in.txt")
    plain = [s for s in strings if "\n" not in s and s != ""]
    with open(path, "w", encoding="utf-8") as f: f.write("\n".join(plain) + "\n")
    out = subprocess.run(["spm_encode", f"--model={model}", "--output_format=id", f"--input={path}"], check=True,
                         capture_output=True, text=True, encoding="utf-8").stdout.split("\n")
    return {s: [int(x) for x in line.split()] for s, line in zip(plain, out)}


class SlowLlama:
    """HF's slow LlamaTokenizer rules (special tokens <unk> <s> </s>, add_prefix_space default True)."""

    def __init__(self, model, legacy):
        self.legacy = legacy
        proto = model_pb2.ModelProto()
        with open(model, "rb") as f: proto.ParseFromString(f.read())
        if not legacy:   # get_spm_processor: the dummy prefix is added by tokenize() instead
            proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.specials = ["<unk>", "<s>", "</s>"]
        self.unk_len = len(self.sp.encode("<unk>", out_type=str))

    def split(self, text):
        # PreTrainedTokenizer.tokenize: the added-tokens trie splits at every special token (no lstrip/rstrip: LlamaTokenizer's
        # special tokens are AddedToken(normalized=False, lstrip=False, rstrip=False)); empty chunks are dropped.
        out, i, start = [], 0, 0
        while i < len(text):
            hit = next((t for t in sorted(self.specials, key=len, reverse=True) if text.startswith(t, i)), None)
            if hit:
                if i > start: out.append(text[start:i])
                out.append(hit)
                i += len(hit)
                start = i
            else:
                i += 1
        if start < len(text): out.append(text[start:])
        return out

    def _tokenize(self, text):
        if self.legacy or not text.startswith((SPIECE, " ")):
            return self.sp.encode(text, out_type=str)
        tokens = self.sp.encode("<unk>" + text, out_type=str)
        return tokens[self.unk_len:] if len(tokens) >= self.unk_len else tokens

    def tokenize(self, text):
        if not self.legacy and len(text) > 0:
            text = SPIECE + text.replace(SPIECE, " ")
        tokens = []
        for chunk in self.split(text):
            tokens.extend([chunk] if chunk in self.specials else self._tokenize(chunk))
        if not self.legacy and len(tokens) > 1 and tokens[0] == SPIECE and tokens[1] in self.specials:
            tokens = tokens[1:]
        return tokens

    def encode(self, text, add_bos):
        ids = [self.sp.piece_to_id(t) for t in self.tokenize(text)]
        return ([1] if add_bos else []) + ids


def tokenizer_image_token(tok, prompt, image_id):
    # LLaVA's mm_utils.tokenizer_image_token: tokenize each piece between <image> (BOS each), keep the first
    # chunk's BOS once, drop the others', and put the image id between them.
    chunks = [tok.encode(c, add_bos=True) for c in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == 1:
        offset = 1
        ids.append(1)
    for k, c in enumerate(chunks):
        if k > 0: ids.append(image_id)
        ids.extend(c[offset:])
    return ids


def llama_converter(model):
    # transformers' convert_slow_tokenizer.LlamaConverter (legacy), BPE with the SentencePieceExtractor's merges.
    proto = model_pb2.ModelProto()
    with open(model, "rb") as f: proto.ParseFromString(f.read())
    pieces = [(p.piece, p.score) for p in proto.pieces]
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    merges = []
    for merge, score in pieces:
        local = []
        for k in range(1, len(merge)):
            l, r = merge[:k], merge[k:]
            if l in vocab and r in vocab: local.append((l, r, score))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2], reverse=True)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for i, t in enumerate(["<unk>", "<s>", "</s>"])]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPIECE},
                                                          {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": SPIECE}, "content": " "},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{l} {r}" for l, r, _ in merges]},
    }


def main():
    rng = random.Random(17)
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        model = train(work, corpus(rng, 4000))
        with open(model, "rb") as f: data = f.read()
        with open(os.path.join(OUT, "tokenizer.model"), "wb") as f: f.write(data)
        strings = test_strings(rng)
        cli = spm_encode_cli(model, strings, work)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, "tokenizer.model"))
    plain = []
    for s in strings:
        ids = sp.encode(s)
        if s in cli: assert cli[s] == ids, (s, cli[s], ids)
        plain.append({"text": s, "ids": ids, "decoded": sp.decode(ids), "from": "spm_encode" if s in cli else "python"})
    cases = []
    for legacy in (True, False):
        tok = SlowLlama(os.path.join(OUT, "tokenizer.model"), legacy)
        for add_bos in (True, False):
            for s in special_strings() + strings[:20]:
                cases.append({"text": s, "legacy": legacy, "add_bos_token": add_bos, "ids": tok.encode(s, add_bos)})
        for p in image_prompts():
            cases.append({"text": p, "legacy": legacy, "add_bos_token": True, "image_token_id": sp.get_piece_size(),
                          "ids": tokenizer_image_token(tok, p, sp.get_piece_size())})
    with open(os.path.join(OUT, "plain.json"), "w", encoding="utf-8") as f: json.dump(plain, f, ensure_ascii=False, indent=0)
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f: json.dump(cases, f, ensure_ascii=False, indent=0)
    with open(os.path.join(OUT, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(llama_converter(os.path.join(OUT, "tokenizer.model")), f, ensure_ascii=False)
    legacy_diff = sum(1 for c in cases if c["legacy"] and "image_token_id" not in c
                      and c["ids"] != ([1] if c["add_bos_token"] else []) + sp.encode(c["text"]))
    print(f"{len(plain)} plain strings ({sum(p['from'] == 'spm_encode' for p in plain)} through spm_encode), {len(cases)} cases; "
          f"legacy cases that differ from raw SentencePiece: {legacy_diff}")


if __name__ == "__main__":
    main()
