// The web client's monitoring page: drift per field over time, live quality against the holdout, calibration
// and the label mix, drawn from GET /api/models/{model}/monitoring. Each plot has a table with its figures.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#4fc3f7", "#ffb300", "#81c784", "#e57373", "#ba68c8", "#a1887f", "#90a4ae", "#f06292"];
const PLOT = { width: 640, height: 220, left: 44, right: 12, top: 10, bottom: 26 };

function shape(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function plot(label, xs, series, options = {}) {
  // Lines over [0, 1] x [0, top] (top: the series' highest value, or the caller's floor); thresholds as dashes.
  const top = Math.max(options.top || 0, ...series.flatMap((s) => s.values.filter((v) => typeof v === "number")));
  const width = PLOT.width - PLOT.left - PLOT.right;
  const height = PLOT.height - PLOT.top - PLOT.bottom;
  const x = (t) => PLOT.left + t * width;
  const y = (v) => PLOT.top + height - (top ? (v / top) * height : 0);
  const svg = shape("svg", { viewBox: `0 0 ${PLOT.width} ${PLOT.height}`, role: "img", "aria-label": label,
    class: "plot" });
  svg.append(shape("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(0), stroke: "#607d8b" }));
  for (const tick of [0, top / 2, top]) {
    svg.append(shape("text", { x: PLOT.left - 6, y: y(tick) + 4, "text-anchor": "end", fill: "#b0bec5",
      "font-size": "11" }, document.createTextNode(tick.toFixed(2))));
  }
  for (const [value, colour] of options.thresholds || []) {
    if (value <= top) svg.append(shape("line", { x1: x(0), y1: y(value), x2: x(1), y2: y(value), stroke: colour,
      "stroke-dasharray": "4 4", class: "threshold" }));
  }
  for (const [t, text, anchor] of [[0, (options.xlabels || [])[0], "start"], [1, (options.xlabels || [])[1], "end"]]) {
    if (text) svg.append(shape("text", { x: x(t), y: PLOT.height - 8, "text-anchor": anchor, fill: "#b0bec5",
      "font-size": "11" }, document.createTextNode(text)));
  }
  if (options.diagonal) svg.append(shape("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(top), stroke: "#607d8b",
    "stroke-dasharray": "2 3" }));
  series.forEach((s, index) => {
    const points = s.values.map((v, i) => (typeof v === "number" ? `${x(xs[i])},${y(v)}` : null)).filter(Boolean);
    const colour = COLOURS[index % COLOURS.length];
    if (points.length > 1) svg.append(shape("polyline", { points: points.join(" "), fill: "none", stroke: colour,
      "stroke-width": "2", class: "series", "data-name": s.name }));
    for (const point of points.length === 1 || options.dots ? points : []) {
      const [px, py] = point.split(",");
      svg.append(shape("circle", { cx: px, cy: py, r: "3.5", fill: colour, class: "dot", "data-name": s.name }));
    }
  });
  const legend = element("ul", { class: "legend", "aria-hidden": "true" }, ...series.map((s, index) =>
    element("li", {}, element("span", { class: `swatch c${index % COLOURS.length}` }), s.name)));
  return element("figure", { class: "chart" }, svg, legend);
}

function driftOverTime(model, found) {
  // the newest version seen in the latest look, and its PSI per field in each look of the last day
  const history = found.history || [];
  const latest = history.length ? history[history.length - 1] : null;
  const versions = latest ? Object.keys(latest.versions) : [];
  if (!versions.length) return element("p", { class: "hint", text: "No captured records in the last hour yet." });
  const version = versions.sort((a, b) => Number(b) - Number(a))[0];
  const fields = Object.keys(latest.versions[version].psi);
  const looks = history.filter((h) => h.versions[version]);
  const times = looks.map((h) => Date.parse(h.at));
  const first = Math.min(...times);
  const span = Math.max(...times) - first || 1;
  const xs = times.map((t) => (looks.length > 1 ? (t - first) / span : 0.5));
  const series = fields.map((f) => ({ name: f, values: looks.map((h) => h.versions[version].psi[f]) }));
  const thresholds = found.thresholds || { warn: 0.1, alert: 0.25 };
  return element("div", { id: "monitoring-drift" },
    element("h4", { text: `Drift of version ${version}: PSI per field, each look of the last day` }),
    plot(`PSI per field of ${model} version ${version} over time`, xs, series,
      { top: thresholds.alert * 1.2, thresholds: [[thresholds.warn, "#ffb300"], [thresholds.alert, "#e57373"]],
        dots: looks.length < 3, xlabels: [when(looks[0].at), when(looks[looks.length - 1].at)] }),
    table(`PSI per field of ${model} version ${version} in the latest look (warn above ${thresholds.warn}, alert above ${thresholds.alert})`,
      ["Field", "PSI", "Level"], fields.map((f) => {
        const psi = latest.versions[version].psi[f];
        return [f, psi, psi > thresholds.alert ? "alert" : psi > thresholds.warn ? "warn" : "ok"];
      })));
}

function qualitySection(model, windows) {
  const rows = [];
  let calibrated = null;
  for (const [window, versions] of Object.entries(windows || {})) {
    for (const [version, seen] of Object.entries(versions)) {
      const q = seen.quality;
      if (!q || !q.records) continue;
      const h = q.holdout || {};
      rows.push([window, version, `${q.records}`, q.log_loss, h.log_loss ?? null, q.accuracy, h.accuracy ?? null,
        q.roc_auc ?? null, q.brier ?? null, q.calibration ? q.calibration.error : null]);
      if (window === "hour" && q.calibration && !calibrated) calibrated = { version, calibration: q.calibration };
    }
  }
  if (!rows.length) return element("p", { class: "hint", text: "No outcomes have come back yet: POST them to /api/models/{model}/outcomes." });
  const parts = [element("h4", { text: "Live quality against the holdout" }),
    table(`Live quality of ${model} per window and version, beside the holdout`, ["Window", "Version", "Records",
      "Log loss", "Holdout log loss", "Accuracy", "Holdout accuracy", "ROC AUC", "Brier", "Calibration error"], rows)];
  if (calibrated) {
    const bins = calibrated.calibration.bins;
    parts.push(element("h4", { text: `Calibration of version ${calibrated.version}, last hour` }),
      plot(`Observed rate against predicted probability, ${model} version ${calibrated.version}`,
        bins.map((b) => b.predicted), [{ name: "observed rate", values: bins.map((b) => b.observed) }],
        { top: 1, diagonal: true, dots: true, xlabels: ["predicted 0", "1"] }),
      table(`Calibration bins of ${model} version ${calibrated.version}`, ["Predicted from", "to", "Records",
        "Mean prediction", "Observed rate"], bins.map((b) => [b.from.toFixed(1), b.to.toFixed(1), `${b.records}`,
        b.predicted, b.observed])));
  }
  return element("div", { id: "monitoring-quality" }, ...parts);
}

function labelSection(model, windows) {
  const hour = (windows || {}).hour || {};
  const rows = [];
  for (const [version, seen] of Object.entries(hour)) {
    for (const [label, share] of Object.entries(seen.labels || {})) {
      rows.push([version, label, percent(share), seen.holdout_labels && label in seen.holdout_labels
        ? percent(seen.holdout_labels[label]) : "–"]);
    }
  }
  return rows.length ? table(`Label mix of ${model} in the last hour, beside the holdout's`,
    ["Version", "Label", "Live share", "Holdout share"], rows) : null;
}

async function renderMonitoring() {
  const select = document.getElementById("monitoring-model");
  const holder = document.getElementById("monitoring-body");
  const model = select.value;
  if (!model) {
    holder.replaceChildren(element("p", { text: "No models yet." }));
    return;
  }
  holder.replaceChildren(element("p", { class: "hint", text: "Loading…" }));
  let found;
  try {
    found = await api(`/api/models/${encodeURIComponent(model)}/monitoring`);
  } catch (error) {
    holder.replaceChildren(element("p", { class: "hint", role: "status", text: error.message }));
    return;
  }
  holder.replaceChildren(
    element("p", { id: "monitoring-state", class: `state ${found.state}`, role: "status",
      text: `State: ${found.state} (latest look ${when(found.at)}${found.alerts.length ? `; alerts on ${found.alerts.map((a) => a.field || `live ${a.metric}`).join(", ")}` : ""}).` }),
    driftOverTime(model, found), qualitySection(model, found.windows), labelSection(model, found.windows));
}
