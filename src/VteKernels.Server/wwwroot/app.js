// vte serve's page. Sends the question and image to /v1/chat/completions with "stream": true, shows the text
// as the server-sent events arrive, and draws the request's report: the layer-by-layer text-to-image
// attention mass (the "vte" trace of the final chunk) with the exit marked, and the cost of the prefill.
// "Compare" asks the same question under policy A, then B (the server runs one request at a time). Every
// request is prefilled from scratch ("reuse_cache": false) so that each report covers the whole prompt.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, modelId: null, busy: false };
const SVG = "http://www.w3.org/2000/svg";

$("api-key").value = localStorage.getItem("vte-api-key") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("vte-api-key", $("api-key").value));

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function refreshHealth() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    state.modelId = h.model;
    $("model").textContent = `model ${h.model} on ${h.device} - ${h.decoder_layers} decoder layers, ${h.tokens_per_image} tokens per image, context ${h.context_tokens}`;
    $("queue").textContent = `queue: ${h.queue.running} running, ${h.queue.waiting} waiting (one at a time)`;
  } catch (e) {
    $("model").textContent = "server not reachable";
  }
}

// --- the image -------------------------------------------------------------------------------------------
function setImage(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    state.image = reader.result;
    $("preview").src = state.image;
    $("preview").hidden = false;
    $("clear-image").hidden = false;
    $("drop-text").hidden = true;
  };
  reader.readAsDataURL(file);
}
$("image-input").addEventListener("change", (e) => setImage(e.target.files[0]));
$("clear-image").addEventListener("click", () => {
  state.image = null;
  $("preview").hidden = true;
  $("clear-image").hidden = true;
  $("drop-text").hidden = false;
  $("image-input").value = "";
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setImage(e.dataTransfer.files[0]); });

// --- the two policies: the same fields, filled from one template ---------------------------------------------
for (const pane of ["a", "b"]) {
  const fieldset = $("policy-" + pane);
  fieldset.appendChild($("policy-fields").content.cloneNode(true));
  fieldset.querySelector(".exit").value = fieldset.dataset.exit;
}

// --- a request ---------------------------------------------------------------------------------------------
function methodsOf(pane) {
  const p = $("policy-" + pane);
  const m = { exit: p.querySelector(".exit").value.trim() || "none", exit_kv: p.querySelector(".exit-kv").value, naavit: p.querySelector(".naavit").checked, trace: true, reuse_cache: false };
  const skip = p.querySelector(".skip-attn").value.trim();
  if (skip) m.skip_attn = skip;
  return m;
}

function describe(m) {
  return [m.exit, m.exit_kv === "drop" ? "drop K/V" : "", m.naavit ? "NAAViT" : "", m.skip_attn ? "skip " + m.skip_attn : ""].filter(Boolean).join(", ");
}

async function ask(pane) {
  const methods = methodsOf(pane);
  const result = $("result-" + pane);
  result.querySelector(".policy-label").textContent = "(" + describe(methods) + ")";
  const answer = $("answer-" + pane);
  answer.textContent = "";
  $("chart-" + pane).textContent = "";
  $("report-" + pane).textContent = "";
  const content = [];
  if (state.image) content.push({ type: "image_url", image_url: { url: state.image } });
  content.push({ type: "text", text: $("question").value });
  const body = {
    model: state.modelId || undefined,
    messages: [{ role: "user", content }],
    stream: true,
    max_tokens: parseInt($("max-tokens").value, 10) || 48,
    temperature: parseFloat($("temperature").value) || 0,
    vte: methods,
  };
  const started = performance.now();
  const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { message = `${r.status}: ${(await r.json()).error.message}`; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", report = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const c of chunk.choices || []) if (c.delta && c.delta.content) answer.textContent += c.delta.content;
        if (chunk.vte) report = chunk.vte;
      }
    }
  }
  if (report) {
    report.wall_ms = performance.now() - started;
    drawChart($("chart-" + pane), report);
    fillReport($("report-" + pane), report);
  }
  result.dataset.done = "1";
  return { methods, report };
}

// --- the report --------------------------------------------------------------------------------------------
const fmt = {
  pct: (x) => (100 * x).toFixed(1) + "%",
  ms: (x) => x.toFixed(0) + " ms",
  mib: (x) => (x / 1048576).toFixed(2) + " MiB",
  gmac: (x) => (x / 1e9).toFixed(3) + " G",
};

function rowsOf(report) {
  const t = report.time_ms;
  return [
    ["exit", report.exit_layer === null ? (report.visual_rows ? "no exit" : "no image") : `after ${report.exit_layer} of ${report.num_layers} layers`],
    ["rows per layer", report.layers.map((l) => l.rows).join(" ")],
    ["multiply-adds", `${fmt.gmac(report.macs_executed.total)} of ${fmt.gmac(report.macs_full.total)} (${fmt.pct(report.mac_ratio)})`],
    ["KV cache", fmt.mib(report.kv_bytes)],
    ["prefill", `vision ${fmt.ms(t.vision)}, decoder ${fmt.ms(t.decoder)}, head ${fmt.ms(t.head)}`],
    ["first token", fmt.ms(report.time_to_first_token_ms)],
    ["decode", report.decode_tokens_per_second.toFixed(1) + " tok/s"],
    ["tokens", `${report.prompt_tokens} prompt (${report.cached_tokens} cached), ${report.completion_tokens} generated, ${report.finish_reason}`],
  ];
}

function fillReport(table, report) {
  table.textContent = "";
  for (const [k, v] of rowsOf(report)) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Text-to-image attention mass per decoder layer, as `vte plot` draws it: the mean over heads (blue), each
// head faintly, the gates' exit probability where gates ran (orange), and a red dashed line where the image left.
function drawChart(box, report) {
  const W = 520, H = 250, L = 48, R = 16, T = 26, B = 38;
  const layers = report.layers, n = layers.length;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "attention mass on the image per layer" });
  const x = (i) => L + (n <= 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
  const y = (v) => T + (1 - v) * (H - T - B);
  svg.appendChild(el("text", { x: L, y: 16, "font-size": 12, fill: "#1d2330" }, "text-to-image attention mass per layer"));
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb" }));
    svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "font-size": 10, "text-anchor": "end", fill: "#6b7280" }, v.toFixed(2)));
  }
  for (let i = 0; i < n; i++) {
    if (n <= 16 || i % Math.ceil(n / 16) === 0)
      svg.appendChild(el("text", { x: x(i), y: H - B + 14, "font-size": 10, "text-anchor": "middle", fill: "#6b7280" }, String(i)));
  }
  svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 6, "font-size": 11, "text-anchor": "middle", fill: "#6b7280" }, "decoder layer"));
  const line = (values, attrs) => {
    let d = "";
    values.forEach((v, i) => { if (v !== null && v !== undefined) d += (d && values[i - 1] != null ? " L" : " M") + x(i).toFixed(1) + " " + y(v).toFixed(1); });
    if (d) svg.appendChild(el("path", Object.assign({ d, fill: "none" }, attrs)));
  };
  const heads = layers[0] && layers.find((l) => l.visual_mass_per_head) ? layers.find((l) => l.visual_mass_per_head).visual_mass_per_head.length : 0;
  for (let h = 0; h < heads; h++) line(layers.map((l) => (l.visual_mass_per_head ? l.visual_mass_per_head[h] : null)), { stroke: "#93c5fd", "stroke-width": 1, opacity: 0.6 });
  const mass = layers.map((l) => l.visual_mass);
  line(mass, { stroke: "#2563eb", "stroke-width": 2.5, class: "mass" });
  mass.forEach((v, i) => { if (v !== null) svg.appendChild(el("circle", { cx: x(i), cy: y(v), r: 3.5, fill: "#2563eb", class: "mass-point" })); });
  line(layers.map((l) => (l.gate_exit_probability === undefined ? null : l.gate_exit_probability)), { stroke: "#ea580c", "stroke-width": 1.5, "stroke-dasharray": "4 3" });
  if (report.exit_layer !== null) {
    const k = report.exit_layer;
    const xe = k <= 0 ? x(0) : k >= n ? x(n - 1) : (x(k - 1) + x(k)) / 2;
    svg.appendChild(el("line", { x1: xe, x2: xe, y1: T, y2: H - B, stroke: "#dc2626", "stroke-width": 2, "stroke-dasharray": "6 4", class: "exit-marker" }));
    svg.appendChild(el("text", { x: xe + 4, y: T + 12, "font-size": 11, fill: "#dc2626" }, `image leaves after ${k} layer${k === 1 ? "" : "s"}`));
  }
  if (mass.every((v) => v === null)) svg.appendChild(el("text", { x: (L + W) / 2, y: H / 2, "font-size": 12, "text-anchor": "middle", fill: "#6b7280" }, report.visual_rows ? "no attention mass measured" : "no image in this prompt"));
  box.textContent = "";
  box.appendChild(svg);
}

function fillCompare(a, b) {
  const table = $("compare-table");
  table.textContent = "";
  const head = table.insertRow();
  for (const t of ["", "A: " + describe(a.methods), "B: " + describe(b.methods), "B / A"]) head.appendChild(document.createElement("th")).textContent = t;
  const ra = a.report, rb = b.report;
  const ratio = (x, y) => (x > 0 ? (y / x).toFixed(2) : "-");
  const rows = [
    ["exit layer", ra.exit_layer ?? "none", rb.exit_layer ?? "none", ""],
    ["multiply-adds", fmt.gmac(ra.macs_executed.total), fmt.gmac(rb.macs_executed.total), ratio(ra.macs_executed.total, rb.macs_executed.total)],
    ["of the full model", fmt.pct(ra.mac_ratio), fmt.pct(rb.mac_ratio), ""],
    ["KV cache", fmt.mib(ra.kv_bytes), fmt.mib(rb.kv_bytes), ratio(ra.kv_bytes, rb.kv_bytes)],
    ["decoder prefill", fmt.ms(ra.time_ms.decoder), fmt.ms(rb.time_ms.decoder), ratio(ra.time_ms.decoder, rb.time_ms.decoder)],
    ["first token", fmt.ms(ra.time_to_first_token_ms), fmt.ms(rb.time_to_first_token_ms), ratio(ra.time_to_first_token_ms, rb.time_to_first_token_ms)],
    ["decode", ra.decode_tokens_per_second.toFixed(1) + " tok/s", rb.decode_tokens_per_second.toFixed(1) + " tok/s", ""],
  ];
  for (const r of rows) {
    const tr = table.insertRow();
    r.forEach((v, i) => { const td = tr.insertCell(); td.textContent = String(v); if (i > 0) td.className = "num"; });
  }
}

async function run(fn) {
  if (state.busy) return;
  state.busy = true;
  $("ask").disabled = $("compare").disabled = true;
  $("error").hidden = true;
  $("status").textContent = "answering...";
  try {
    await fn();
    $("status").textContent = "done";
  } catch (e) {
    $("error").textContent = e.message;
    $("error").hidden = false;
    $("status").textContent = "";
  } finally {
    state.busy = false;
    $("ask").disabled = $("compare").disabled = false;
    refreshHealth();
  }
}

$("ask").addEventListener("click", () => run(() => ask("a")));
$("compare").addEventListener("click", () => run(async () => {
  const a = await ask("a");
  const b = await ask("b");
  if (a.report && b.report) fillCompare(a, b);
}));

refreshHealth();
