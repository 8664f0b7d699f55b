// The service's own page: pick, drop, paste or photograph images; one goes to POST /classify, several to
// POST /classify/batch. No framework, no build step, no outside request.
"use strict";

const $ = (id) => document.getElementById(id);
const modelSelect = $("model"), versionSelect = $("version"), topK = $("top-k");
let models = [];

function versionInfo(name, version) {
  const model = models.find((m) => m.name === name);
  return model && model.versions.find((v) => v.version === version);
}

async function loadModels() {
  const response = await fetch("/v1/models");
  models = (await response.json()).models;
  modelSelect.replaceChildren(...models.map((m) => new Option(m.name, m.name, m.default, m.default)));
  fillVersions();
}

function fillVersions() {
  const model = models.find((m) => m.name === modelSelect.value);
  versionSelect.replaceChildren(new Option("serving", ""));
  if (!model) return;
  for (const v of model.versions.filter((v) => v.state === "ready")) {
    versionSelect.append(new Option(`${v.version}`, `${v.version}`));
  }
  if (model.labels) topK.max = model.labels;
  if (Number(topK.value) > model.labels) topK.value = model.labels;
}

function query() {
  const params = new URLSearchParams({ top_k: topK.value || "5", model: modelSelect.value });
  if (versionSelect.value) params.set("version", versionSelect.value);
  return params.toString();
}

// An error body in plain words: what happened and what to do about it.
function explain(status, body, retryAfter) {
  const message = body && body.error ? body.error.message : "";
  switch (status) {
    case 400: return `The image could not be read: ${message}`;
    case 404: return `That model or version is not served: ${message}`;
    case 413: return `Too large: ${message}`;
    case 415: return `Unsupported file type: ${message}`;
    case 422: return `Invalid option: ${message}`;
    case 503: return `The server is busy (${message}); retry in ${retryAfter || 1} s.`;
    case 504: return `No answer in time: ${message}`;
    default: return `Error ${status}: ${message || "unexpected answer"}`;
  }
}

function card(file) {
  const element = document.createElement("article");
  element.className = "card";
  const img = document.createElement("img");
  img.alt = file.name || "pasted image";
  img.src = URL.createObjectURL(file);
  img.onerror = () => img.remove(); // a file the browser cannot show (e.g. TIFF) still gets its answer
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = file.name || "pasted image";
  element.append(img, name);
  return element;
}

function showResult(element, result) {
  const list = document.createElement("div");
  list.className = "predictions";
  result.predictions.forEach((p, i) => {
    const row = document.createElement("div");
    row.className = "pred" + (i === 0 ? " top" : "");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(p.score * 100).toFixed(1)}%`;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${(p.score * 100).toFixed(1)}%`;
    row.append(fill, label, score);
    list.append(row);
  });
  const info = versionInfo(result.model, result.version) || {};
  const t = result.timing_ms;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${result.model} v${result.version} · ${info.backend || "?"} (${info.precision || "?"}) · ` +
    `queue ${t.queue.toFixed(1)} ms, preprocess ${t.preprocess.toFixed(1)} ms, ` +
    `inference ${t.inference.toFixed(1)} ms, total ${t.total.toFixed(1)} ms`;
  element.append(list, meta);
}

function showError(element, text) {
  const error = document.createElement("p");
  error.className = "error";
  error.setAttribute("role", "alert");
  error.textContent = text;
  element.append(error);
}

async function classify(files) {
  files = [...files].filter((f) => f.size > 0 || f.type);
  if (!files.length) return;
  const cards = files.map(card);
  $("results").prepend(...cards); // newest first, a batch in its files' order
  $("status").textContent = `Classifying ${files.length} image${files.length > 1 ? "s" : ""}…`;
  try {
    let response;
    if (files.length === 1) {
      response = await fetch(`/classify?${query()}`, {
        method: "POST", body: files[0], headers: { "Content-Type": files[0].type || "application/octet-stream" },
      });
    } else {
      const form = new FormData();
      files.forEach((f) => form.append("file", f, f.name || "pasted"));
      response = await fetch(`/classify/batch?${query()}`, { method: "POST", body: form });
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const text = explain(response.status, body, response.headers.get("Retry-After"));
      cards.forEach((c) => showError(c, text));
    } else if (files.length === 1) {
      showResult(cards[0], body);
    } else {
      body.results.forEach((entry, i) => entry.result ? showResult(cards[i], entry.result)
        : showError(cards[i], explain(statusOf(entry.error.code), { error: entry.error })));
    }
    $("status").textContent = "";
  } catch (exc) {
    cards.forEach((c) => showError(c, `The server could not be reached: ${exc.message}`));
    $("status").textContent = "";
  }
}

const STATUS_BY_CODE = { invalid_input: 400, not_found: 404, payload_too_large: 413, unsupported_media_type: 415,
  invalid_parameter: 422, overloaded: 503, not_ready: 503, deadline_exceeded: 504 };
const statusOf = (code) => STATUS_BY_CODE[code] || 500;

async function refreshStats() {
  try {
    const s = await (await fetch("/v1/stats")).json();
    const ms = (v) => (v === null ? "-" : `${v.toFixed(1)} ms`);
    $("stat-rps").textContent = s.requests_per_s.toFixed(1);
    $("stat-p50").textContent = ms(s.p50_ms);
    $("stat-p99").textContent = ms(s.p99_ms);
    $("stat-batch").textContent = s.mean_batch_size === null ? "-" : s.mean_batch_size.toFixed(1);
    $("stat-queue").textContent = s.queue_depth;
    $("stat-inflight").textContent = s.inflight;
    $("stat-answered").textContent = s.answered;
  } catch (exc) {
    $("stat-rps").textContent = "offline";
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); classify(e.dataTransfer.files); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); } });
document.addEventListener("paste", (e) => classify(e.clipboardData.files));
for (const input of [$("files"), $("camera")]) {
  input.addEventListener("change", () => { classify(input.files); input.value = ""; });
}
modelSelect.addEventListener("change", fillVersions);

loadModels().catch((exc) => { $("status").textContent = `Could not list the models: ${exc.message}`; });
refreshStats();
setInterval(refreshStats, 2000);
