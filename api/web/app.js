// The Batcomputer web client: predict with any model, score Parquet files, browse models. Plain JS against
// the gateway's own API (same origin); nothing is loaded from anywhere else.
"use strict";

const FINAL = ["succeeded", "failed", "cancelled", "dead"];
const KEY_STORAGE = "batcomputer-api-key";
const models = { list: [], details: new Map() };

class Problem extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

function headers(extra) {
  const found = { ...(extra || {}) };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) found.Authorization = `Bearer ${key}`;
  return found;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Problem(response.status, body);
  return body;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function figure(value, digits = 4) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

function percent(value) {
  return `${(value * 100).toFixed(1)}%`;
}

function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

// -- models ---------------------------------------------------------------------------------------------

async function loadModels() {
  const found = await api("/api/models");
  models.list = found.models.filter((m) => !m.error && m.current && m.current.version);
  for (const select of document.querySelectorAll(".model-select")) {
    select.replaceChildren(...models.list.map((m) => element("option", { value: m.name, text: m.name })));
  }
}

async function modelDetail(name) {
  if (!models.details.has(name)) models.details.set(name, await api(`/api/models/${encodeURIComponent(name)}`));
  return models.details.get(name);
}

// -- predict --------------------------------------------------------------------------------------------

function seenRange(profile) {
  const quantiles = (profile && profile.quantiles) || {};
  const low = quantiles["0.0"];
  const high = quantiles["1.0"];
  return typeof low === "number" && typeof high === "number" ? [low, high] : null;
}

function defaultValue(field, profile) {
  if (field.kind === "categorical") {
    const frequencies = (profile && profile.frequencies) || {};
    const ranked = [...field.categories].sort((a, b) => (frequencies[b] || 0) - (frequencies[a] || 0));
    return field.required ? ranked[0] : "";
  }
  const median = profile && profile.quantiles ? profile.quantiles["0.5"] : undefined;
  if (typeof median !== "number") return "";
  return String(field.integer ? Math.round(median) : median);
}

function fieldControl(field, profile) {
  const id = `field-${field.name}`;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const label = element("label", { for: id }, field.name,
    field.required ? null : element("span", { class: "optional", text: " (optional)" }));
  let control;
  const notes = [];
  if (field.kind === "categorical") {
    const frequencies = (profile && profile.frequencies) || {};
    control = element("select", { id, name: field.name, "aria-describedby": `${hintId} ${errorId}` });
    if (!field.required) control.append(element("option", { value: "", text: "(not given: imputed)" }));
    for (const category of field.categories) {
      const unseen = profile && profile.frequencies && !frequencies[category];
      control.append(element("option", { value: category, text: unseen ? `${category} (never seen in training)` : category }));
    }
    const unseen = field.categories.filter((c) => profile && profile.frequencies && !frequencies[c]);
    if (unseen.length) notes.push(`Never seen in the training data: ${unseen.join(", ")}.`);
  } else {
    control = element("input", {
      id, name: field.name, type: "number", inputmode: field.integer ? "numeric" : "decimal",
      step: field.integer ? "1" : "any", min: field.minimum, max: field.maximum,
      "aria-describedby": `${hintId} ${errorId}`,
    });
    const seen = seenRange(profile);
    if (seen && seen[0] === seen[1]) {
      notes.push(`The training data saw only ${field.name} = ${seen[0]}: other values are extrapolation.`);
    } else if (seen && (seen[0] > (field.minimum ?? -Infinity) || seen[1] < (field.maximum ?? Infinity))) {
      notes.push(`The training data saw ${seen[0]} to ${seen[1]}.`);
    }
  }
  control.value = defaultValue(field, profile);
  const range = field.kind === "numeric" ? ` Allowed: ${field.minimum ?? "−∞"} to ${field.maximum ?? "∞"}.` : "";
  return element("div", { class: "field" }, label, control,
    element("p", { class: "hint", id: hintId, text: `${field.description}.${range}`.replace("..", ".") }),
    notes.length ? element("p", { class: "unseen", text: notes.join(" ") }) : null,
    element("p", { class: "error", id: errorId, role: "alert", hidden: true }));
}

async function renderPredictForm() {
  const name = document.getElementById("predict-model").value;
  const info = document.getElementById("predict-model-info");
  const holder = document.getElementById("predict-fields");
  if (!name) {
    info.textContent = "No model is served yet: train one with `batcomputer train crime --promote`.";
    holder.replaceChildren();
    return;
  }
  const detail = await modelDetail(name);
  const profile = detail.schema.profile || {};
  info.textContent = `Version ${detail.current.version}` +
    (detail.current.alias ? ` (${detail.current.alias})` : "") + `; outputs ${detail.schema.outputs.join(", ")}.`;
  holder.replaceChildren(...detail.schema.fields.map((f) => fieldControl(f, profile[f.name])));
}

function clearFieldErrors(form) {
  for (const node of form.querySelectorAll(".field .error")) showError(node, "");
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

function readRecord(detail) {
  const record = {};
  for (const field of detail.schema.fields) {
    const control = document.getElementById(`field-${field.name}`);
    const raw = control.value.trim();
    if (raw === "") continue;
    const number = Number(raw);
    record[field.name] = field.kind === "numeric" && Number.isFinite(number) ? number : raw;
  }
  return record;
}

function showProblems(form, problem, formError) {
  const problems = problem.body.problems || [];
  let placed = 0;
  for (const item of problems) {
    const control = item.field ? document.getElementById(`field-${item.field}`) : null;
    const target = item.field ? document.getElementById(`field-${item.field}-error`) : null;
    if (control && target) {
      control.setAttribute("aria-invalid", "true");
      showError(target, item.message);
      placed += 1;
    }
  }
  if (placed < problems.length || !problems.length) showError(formError, problem.message);
  const first = form.querySelector("[aria-invalid='true']");
  if (first) first.focus();
}

async function follow(jobId, onUpdate, waitSeconds = 5) {
  for (;;) {
    const job = await api(`/api/jobs/${encodeURIComponent(jobId)}?wait=${waitSeconds}`);
    onUpdate(job);
    if (FINAL.includes(job.state)) return job;
  }
}

function renderResult(detail, job) {
  const holder = document.getElementById("predict-result");
  if (job.state !== "succeeded") {
    const reason = job.error ? `${job.error.code}: ${job.error.detail}` : job.state;
    holder.replaceChildren(element("p", { class: "error", text: `The job ${job.state}: ${reason}` }));
    return;
  }
  const result = job.results[0];
  const rows = detail.schema.outputs.map((output, index) => {
    const label = detail.schema.labels[index];
    const value = Number(result[output]);
    const fill = element("span");
    fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
    return element("div", { class: `bar-row${label === result.label ? " predicted" : ""}` },
      element("span", { text: `${label} (${output})` }),
      element("div", { class: "bar", role: "img", "aria-label": `${label}: ${percent(value)}` }, fill),
      element("span", { class: "value", text: percent(value) }));
  });
  holder.replaceChildren(
    element("p", { class: "verdict", text: `Predicted: ${result.label}` }),
    element("div", { class: "bars" }, ...rows),
    element("p", { class: "provenance",
      text: `Answered by ${job.model} version ${job.version}, bundle ${job.bundle_sha256.slice(0, 12)}…; job ${job.id}.` }),
    ...(result.explanation ? [renderContributions(detail, result)] : []));
}

function signedPercent(value) {
  return `${value >= 0 ? "+" : "−"}${Math.abs(value * 100).toFixed(1)} pts`;
}

function renderContributions(detail, result) {
  // Why: each field's Shapley contribution to the last output (bars to the right raise it), then the same
  // figures as a table for screen readers and for copying.
  const output = detail.schema.outputs[detail.schema.outputs.length - 1];
  const label = detail.schema.labels[detail.schema.outputs.length - 1];
  const baseline = result.explanation.baseline[output];
  const entries = Object.entries(result.explanation.contributions[output])
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  const largest = Math.max(1e-9, ...entries.map(([, value]) => Math.abs(value)));
  const rows = entries.map(([field, value]) => {
    const fill = element("span", { class: value >= 0 ? "raises" : "lowers" });
    const share = (Math.abs(value) / largest) * 50;
    fill.style.width = `${share}%`;
    fill.style.marginLeft = value >= 0 ? "50%" : `${50 - share}%`;
    return element("div", { class: "contribution-row" }, element("span", { text: field }),
      element("div", { class: "diverging" }, fill), element("span", { class: "amount", text: signedPercent(value) }));
  });
  return element("section", { class: "explanation", "aria-labelledby": "why-heading" },
    element("h3", { id: "why-heading", text: `Why ${label}: ${percent(result[output])}` }),
    element("p", { class: "hint", text: `From the baseline ${percent(baseline)} (the mean over training rows), each ` +
      "field moves the probability by its contribution; they add up to the prediction." }),
    element("div", { class: "contributions", "aria-hidden": "true" }, ...rows),
    table(`Each field's contribution to ${label} (${output}), largest first`, ["Field", "Contribution"],
      entries.map(([field, value]) => [field, signedPercent(value)])));
}

async function submitPredict(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const formError = document.getElementById("predict-form-error");
  const state = document.getElementById("predict-state");
  const button = document.getElementById("predict-submit");
  clearFieldErrors(form);
  showError(formError, "");
  const name = document.getElementById("predict-model").value;
  const detail = await modelDetail(name);
  button.disabled = true;
  document.getElementById("predict-result").replaceChildren();
  state.textContent = "Sending…";
  try {
    const current = detail.versions.find((v) => v.version === detail.current.version);
    const explain = current && current.explainable ? "?explain=true" : "";
    const job = await api(`/api/models/${encodeURIComponent(name)}/jobs${explain}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(readRecord(detail)),
    });
    const seen = [job.state];
    state.textContent = `Job ${job.id}: ${job.state}`;
    const done = await follow(job.id, (current) => {
      if (seen[seen.length - 1] !== current.state) seen.push(current.state);
      state.textContent = `Job ${current.id}: ${seen.join(" → ")}`;
    });
    renderResult(detail, done);
  } catch (error) {
    if (error instanceof Problem && error.status === 422) {
      state.textContent = "The record was refused: see the fields marked.";
      showProblems(form, error, formError);
    } else {
      state.textContent = "No answer.";
      showError(formError, error.message);
    }
  } finally {
    button.disabled = false;
  }
}

// -- batch files ----------------------------------------------------------------------------------------

const batch = { job: null };

function showBatch(job) {
  const total = job.rows_total || 0;
  const done = job.rows_done || 0;
  const progress = document.getElementById("batch-progress");
  progress.value = job.state === "succeeded" ? 100 : total ? Math.floor((100 * done) / total) : 0;
  progress.setAttribute("aria-valuetext", `${progress.value}%`);
  const phase = job.phase ? ` (${job.phase})` : "";
  document.getElementById("batch-state").textContent = `Batch ${job.id}: ${job.state}${phase}, ${progress.value}%`;
  const figures = [
    ["Rows", total ? `${done.toLocaleString("en")} of ${total.toLocaleString("en")}` : "counting…"],
    ["Rows failed", (job.rows_failed || 0).toLocaleString("en")],
    ["Chunks", job.chunks_total ? `${job.chunks_done || 0} of ${job.chunks_total}` : "–"],
    ["Rate", job.rows_per_second ? `${Math.round(job.rows_per_second).toLocaleString("en")} rows/s` : "–"],
    ["Time left", typeof job.eta_seconds === "number" ? `${job.eta_seconds.toFixed(1)} s` : "–"],
  ];
  if (job.error) figures.push(["Error", `${job.error.code}: ${job.error.detail}`]);
  document.getElementById("batch-figures").replaceChildren(
    ...figures.flatMap(([term, value]) => [element("dt", { text: term }), element("dd", { text: value })]));
  document.getElementById("batch-cancel").hidden = FINAL.includes(job.state);
}

async function offerDownload(job) {
  const link = document.getElementById("batch-download");
  const path = `/api/jobs/${encodeURIComponent(job.id)}/output`;
  link.setAttribute("download", `scored-${job.id}.parquet`);
  if (sessionStorage.getItem(KEY_STORAGE)) {  // a bearer key cannot ride on a plain link: fetch it first
    const response = await fetch(path, { headers: headers() });
    link.href = URL.createObjectURL(await response.blob());
  } else {
    link.href = path;
  }
  link.hidden = false;
}

async function submitBatch(event) {
  event.preventDefault();
  const formError = document.getElementById("batch-form-error");
  showError(formError, "");
  const file = document.getElementById("batch-file").files[0];
  if (!file) {
    showError(formError, "Choose a Parquet file first.");
    document.getElementById("batch-file").focus();
    return;
  }
  const name = document.getElementById("batch-model").value;
  const button = document.getElementById("batch-submit");
  document.getElementById("batch-download").hidden = true;
  button.disabled = true;
  try {
    const job = await api(`/api/models/${encodeURIComponent(name)}/batches`, {
      method: "POST", headers: { "Content-Type": "application/vnd.apache.parquet" }, body: file,
    });
    batch.job = job.id;
    showBatch(job);
    const done = await follow(job.id, showBatch, 1);
    if (done.state === "succeeded") await offerDownload(done);
  } catch (error) {
    showError(formError, error.message);
  } finally {
    button.disabled = false;
  }
}

async function cancelBatch() {
  if (!batch.job) return;
  try {
    showBatch(await api(`/api/jobs/${encodeURIComponent(batch.job)}`, { method: "DELETE" }));
  } catch (error) {
    showError(document.getElementById("batch-form-error"), error.message);
  }
}

// -- models ---------------------------------------------------------------------------------------------

function table(caption, head, rows) {
  // a table wider than a phone scrolls: its region takes the keyboard focus so that it can be scrolled
  return element("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    element("table", {},
    element("caption", { class: "hint", text: caption }),
    element("thead", {}, element("tr", {}, ...head.map((h) => element("th", { scope: "col", text: h })))),
    element("tbody", {}, ...rows.map((cells) => element("tr", {}, ...cells.map((c) =>
      c instanceof Node ? element("td", {}, c) : element("td", { class: typeof c === "number" ? "number" : null,
        text: typeof c === "number" ? figure(c) : c })))))));
}

function when(text) {
  return text ? text.replace("T", " ").slice(0, 19) : "–";
}

async function retrainSection(name) {
  try {
    const found = await api(`/api/models/${encodeURIComponent(name)}/retrains`);
    if (!found.runs.length) return element("p", { class: "hint", text: "No retrain runs yet." });
    return table(`Latest retrain runs of ${name}`, ["Started", "State", "Policy", "Decision"],
      found.runs.map((run) => [when(run.started), run.state || "–", run.policy,
        run.decision ? `${run.decision.headline}${run.decision.rule ? ` (rule ${run.decision.rule})` : ""}${run.decision.reasons.length ? ": " + run.decision.reasons.join("; ") : ""}` : "–"]));
  } catch (error) {
    return element("p", { class: "hint", text: `Retrain runs: ${error.message}` });
  }
}

async function renderModels() {
  const holder = document.getElementById("models-list");
  holder.replaceChildren(element("p", { class: "hint", text: "Loading…" }));
  const sections = [];
  for (const summary of models.list) {
    models.details.delete(summary.name);  // aliases move: read afresh
    const detail = await modelDetail(summary.name);
    const aliases = Object.entries(detail.aliases).map(([alias, version]) => `${alias} → version ${version}`);
    const versions = [...detail.versions].reverse().map((v) => [
      `${v.version}`, when(v.created), v.metrics ? v.metrics.log_loss : null, v.metrics ? v.metrics.roc_auc : null,
      v.metrics ? v.metrics.accuracy : null,
      v.importance ? Object.entries(v.importance).sort((a, b) => b[1] - a[1]).slice(0, 3)
        .map(([f, x]) => `${f} ${figure(x, 3)}`).join(", ") : "–",
      element("span", {}, ...v.aliases.map((a) => element("span", { class: "tag", text: a }))),
      v.run ? `${v.run.flow || "flow"} (${v.run.policy || "–"})` : "CLI"]);
    const history = (detail.history || []).map((move) => [when(move.at), move.alias, `${move.from ?? "–"} → ${move.to}`,
      move.by || "–", move.reason || "–"]);
    sections.push(element("section", { class: "panel", "aria-labelledby": `model-${summary.name}` },
      element("h3", { id: `model-${summary.name}`, text: summary.name }),
      element("p", { text: aliases.length ? `Aliases: ${aliases.join(", ")}.` : "No aliases." }),
      table(`Versions of ${summary.name}, newest first, with holdout metrics`,
        ["Version", "Published", "Log loss", "ROC AUC", "Accuracy", "Importance (top 3)", "Aliases", "Published by"],
        versions),
      history.length ? table(`Alias history of ${summary.name}, newest first`, ["When", "Alias", "Move", "By", "Reason"],
        history) : element("p", { class: "hint", text: "No alias moves yet." }),
      await retrainSection(summary.name)));
  }
  holder.replaceChildren(...(sections.length ? sections : [element("p", { text: "No models yet." })]));
}

// -- pages ----------------------------------------------------------------------------------------------

async function route() {
  const page = (location.hash.match(/^#\/(\w+)/) || [null, "predict"])[1];
  const known = ["predict", "batch", "models", "monitoring"].includes(page) ? page : "predict";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${known}`;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === known) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (known === "models") await renderModels();
  if (known === "monitoring") await renderMonitoring();  // monitoring.js
}

async function start() {
  const keyInput = document.getElementById("api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("change", async () => {
    if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value.trim());
    else sessionStorage.removeItem(KEY_STORAGE);
    await boot();
  });
  document.getElementById("predict-model").addEventListener("change", renderPredictForm);
  document.getElementById("predict-form").addEventListener("submit", submitPredict);
  document.getElementById("batch-form").addEventListener("submit", submitBatch);
  document.getElementById("batch-cancel").addEventListener("click", cancelBatch);
  document.getElementById("monitoring-model").addEventListener("change", renderMonitoring);
  window.addEventListener("hashchange", route);
  await boot();
}

async function boot() {
  try {
    await loadModels();
    await renderPredictForm();
    document.body.dataset.ready = "true";
  } catch (error) {
    const message = error.status === 401 ? "This gateway needs an API key: open “API key” above." : error.message;
    showError(document.getElementById("predict-form-error"), message);
  }
  await route();
}

document.addEventListener("DOMContentLoaded", start);
