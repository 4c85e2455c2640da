// edgeminer dashboard: the map, failure clusters, selection, mining, export and insights.
// Plain ES modules served as static files; everything goes through api.js.

import {
  API,
  ApiError,
  apiKey,
  describeError,
  getBinary,
  getJSON,
  postJSON,
  request,
  setApiKey,
  setKeyPrompt,
  waitForJob,
} from "./api.js";
import { stackedBars } from "./charts.js";
import { decodePoints } from "./points.js";
import { PointMap } from "./map.js";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

// ---------------------------------------------------------------------------------------------
// state
// ---------------------------------------------------------------------------------------------

const state = {
  datasets: [],
  ds: null, // dataset name
  info: null, // dataset info (classes, metadata fields, ...)
  pts: null, // decoded points (points.js)
  idIndex: null, // Map id -> point index (built on first use)
  colorBy: "outcome",
  selection: { indices: new Uint32Array(0), source: "" },
  selPage: 0,
  clusters: [],
  activeCluster: null,
  issues: [],
  mined: [], // [{id, distance, ...}] results of find-similar / label-next
  minedLabel: "",
  readsNeedKey: false,
  ready: false,
};

const ui = {
  map: null,
};

// exposed for tests and the bench (read-only use)
window.edgeminer = { state, ui, ready: false, timings: {} };

// ---------------------------------------------------------------------------------------------
// palettes
// ---------------------------------------------------------------------------------------------

const CATEGORICAL = [
  "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
  "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf",
];
const OUTCOME_COLORS = {
  correct: "#3fae7a",
  wrong_class: "#e0453a",
  false_positive: "#f08c00",
  false_negative: "#8e44ad",
  unlabeled: "#a7b0bd",
  no_prediction: "#7aa6d6",
};
const OUTCOME_NAMES = {
  correct: "correct",
  wrong_class: "wrong",
  false_positive: "false positive",
  false_negative: "false negative",
  unlabeled: "unlabeled",
  no_prediction: "labeled, not judged",
};
const NULL_COLOR = "#d0d5dd";
// viridis, 9 stops
const RAMP = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];

function hexRGB(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}
const RAMP_RGB = RAMP.map(hexRGB);
function rampRGB(t) {
  const x = Math.max(0, Math.min(1, t)) * (RAMP_RGB.length - 1);
  const i = Math.min(RAMP_RGB.length - 2, Math.floor(x));
  const f = x - i;
  const a = RAMP_RGB[i];
  const b = RAMP_RGB[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

// ---------------------------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function toast(message, kind = "info", ms = 6000) {
  const t = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  $("#toasts").append(t);
  setTimeout(() => t.remove(), kind === "error" ? Math.max(ms, 12000) : ms);
}

function showError(err, what) {
  if (err && err.name === "AbortError") return;
  console.error(err);
  toast(`${what ? `${what} failed. ` : ""}${describeError(err)}`, "error");
}

let busyCount = 0;
async function busy(promise) {
  busyCount++;
  $("#busy").hidden = false;
  try {
    return await promise;
  } finally {
    busyCount--;
    if (!busyCount) $("#busy").hidden = true;
  }
}

function pct(x) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : `${(100 * x).toFixed(1)}%`;
}
function num(x, d = 3) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d);
}

const dsPath = (suffix = "") => `${API}/datasets/${encodeURIComponent(state.ds)}${suffix}`;

// ---------------------------------------------------------------------------------------------
// API key prompt
// ---------------------------------------------------------------------------------------------

setKeyPrompt(
  (message) =>
    new Promise((resolve) => {
      const dlg = $("#key-dialog");
      const form = $("#key-form");
      $("#key-message").textContent = message;
      form.key.value = "";
      const done = (value) => {
        form.removeEventListener("submit", onSubmit);
        $("#key-cancel").removeEventListener("click", onCancel);
        dlg.close();
        resolve(value);
      };
      const onSubmit = (e) => {
        e.preventDefault();
        done(form.key.value.trim() || null);
      };
      const onCancel = () => done(null);
      form.addEventListener("submit", onSubmit);
      $("#key-cancel").addEventListener("click", onCancel);
      dlg.showModal();
      form.key.focus();
    })
);

// ---------------------------------------------------------------------------------------------
// thumbnails (plain <img> unless reads need the key: then fetched with the header)
// ---------------------------------------------------------------------------------------------

function mediaURL(id, size = "thumb") {
  return `${dsPath(`/media/${encodeURIComponent(id)}`)}?size=${size}`;
}

function setImage(img, id, size = "thumb", onFail = null) {
  const fail = () => {
    if (onFail) return onFail();
    img.alt = "image unavailable";
    img.title = `could not load the image of ${id}`;
  };
  if (!state.readsNeedKey) {
    img.onerror = () => {
      img.onerror = null;
      fail();
    };
    img.src = mediaURL(id, size);
    return;
  }
  request(mediaURL(id, size))
    .then((r) => r.blob())
    .then((b) => {
      const url = URL.createObjectURL(b);
      img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      img.src = url;
    })
    .catch(fail);
}

// ---------------------------------------------------------------------------------------------
// datasets and points
// ---------------------------------------------------------------------------------------------

async function loadDatasets() {
  // /health needs no key and says whether reads do: then images are fetched with the key too
  try {
    const health = await getJSON(`${API}/health`);
    state.readsNeedKey = health.auth === "reads_and_writes";
  } catch (err) {
    state.readsNeedKey = false;
  }
  state.datasets = await getJSON(`${API}/datasets`);
  const sel = $("#dataset");
  sel.replaceChildren(...state.datasets.map((d) => h("option", { value: d.name, text: d.name })));
  if (!state.datasets.length) {
    mapMessage("No dataset yet. Ingest one with `edgeminer ingest`, or build the demo with `make demo`.");
    return null;
  }
  const wanted = new URLSearchParams(location.search).get("dataset");
  const pick = state.datasets.find((d) => d.name === wanted) || state.datasets[0];
  sel.value = pick.name;
  return pick.name;
}

function mapMessage(text, ...extra) {
  const m = $("#map-message");
  m.replaceChildren(h("div", {}, h("p", { text: text || "" }), ...extra));
  m.hidden = !text;
}

function analyzeButton(label) {
  return h("button", { type: "button", class: "primary", id: "analyze-now", text: label, onclick: runAnalysis });
}

/** POST /analyze as a job, show its progress, then reload the dataset's map and panels. */
async function runAnalysis() {
  const ds = state.ds;
  const status = h("span", { class: "muted", text: " starting the analysis…" });
  const bar = h("progress", { max: 1, value: 0 });
  $("#summary").replaceChildren("analysis: ", bar, status);
  $$("#analyze-now").forEach((b) => (b.disabled = true));
  try {
    const job = await busy(postJSON(dsPath("/analyze"), {}));
    await waitForJob(`${API}/jobs/${encodeURIComponent(job.id)}`, (j) => {
      const p = j.progress || {};
      bar.max = p.total || 1;
      bar.value = p.done || 0;
      status.textContent = ` ${j.status}${p.message ? `: ${p.message}` : ""}`;
    });
    toast("Analysis done: the map and the clusters are up to date.", "ok");
    if (state.ds === ds) await busy(openDataset(ds));
  } catch (err) {
    showError(err, "The analysis");
    describeCounts();
  }
}

async function openDataset(name) {
  const t0 = performance.now();
  state.ds = name;
  state.selection = { indices: new Uint32Array(0), source: "" };
  state.mined = [];
  state.activeCluster = null;
  state.idIndex = null;
  const url = new URL(location.href);
  url.searchParams.set("dataset", name);
  history.replaceState(null, "", url);
  rowCache.clear();
  $("#cluster-view").hidden = true;
  // the map, the dataset's detail and the cluster / issue lists load in parallel
  const side = Promise.allSettled([loadClusters(), loadIssues()]);
  const [info] = await Promise.all([getJSON(dsPath()), loadPoints()]);
  state.info = info;
  describeCounts();
  fillColorOptions();
  fillFilterOptions();
  recolor();
  renderSelection();
  window.edgeminer.timings.points = performance.now() - t0;
  window.edgeminer.timings.firstDraw = performance.now(); // since navigation start
  if (colorField(state.colorBy)) setColorBy(state.colorBy).catch((err) => showError(err, "Coloring"));
  // the insights are computed over every row: fetched when their tab is first opened
  state.insightsLoaded = null;
  if (!$("#tab-insights").hidden) ensureInsights();
  const results = await side;
  results.forEach((r) => r.status === "rejected" && showError(r.reason, "Loading a panel"));
  window.edgeminer.timings.panels = performance.now() - t0;
}

async function loadPoints() {
  const t0 = performance.now();
  // the blob and the ids in parallel; the ids are re-read at the blob's version if a write came between
  const [{ buffer }, idsBody] = await Promise.all([getBinary(dsPath("/points")), getJSON(dsPath("/points/ids"))]);
  const pts = decodePoints(buffer);
  let ids = idsBody.ids;
  if (idsBody.version !== pts.version || ids.length !== pts.n) {
    ids = (await getJSON(dsPath("/points/ids"), { query: { version: pts.version } })).ids;
  }
  pts.ids = ids;
  pts.columns = {}; // lazily loaded per-point columns (label, pred_label, scores, metadata)
  state.pts = pts;
  state.idIndex = null;
  window.edgeminer.timings.pointsFetch = performance.now() - t0;
  ui.map.setPositions(pts.xy);
}

function idIndex() {
  if (!state.idIndex) {
    const m = new Map();
    const ids = state.pts.ids;
    for (let i = 0; i < ids.length; i++) m.set(ids[i], i);
    state.idIndex = m;
  }
  return state.idIndex;
}

function indicesOf(ids) {
  const m = idIndex();
  const out = [];
  for (const id of ids) {
    const i = m.get(id);
    if (i !== undefined) out.push(i);
  }
  out.sort((a, b) => a - b);
  return Uint32Array.from(out);
}

function describeCounts() {
  const pts = state.pts;
  const total = state.info ? state.info.rows ?? pts.n : pts.n;
  const missing = total - pts.n;
  const summary = $("#summary");
  summary.replaceChildren(`${total.toLocaleString()} rows`);
  if (missing > 0 && pts.n) {
    summary.append(
      ` (${missing.toLocaleString()} not on the map: not analyzed yet or failed to index) `,
      h("button", { type: "button", class: "link", id: "analyze-now", text: "update the map", onclick: runAnalysis })
    );
  }
  if (!total) mapMessage("This dataset has no rows yet: ingest images with `edgeminer ingest`.");
  else if (!pts.n) {
    mapMessage(
      "No row has map coordinates yet: run `edgeminer analyze --dataset " + state.ds + "`, or start it here.",
      analyzeButton("Analyze now")
    );
  } else mapMessage("");
}

/** Rows (dicts) for some ids, fetched with a read-only GET; order follows `ids`. */
async function fetchRows(ids, columns) {
  const out = new Map();
  for (let k = 0; k < ids.length; k += 500) {
    const chunk = ids.slice(k, k + 500);
    const page = await getJSON(dsPath("/samples"), {
      query: {
        filters: JSON.stringify([{ field: "id", op: "in", value: chunk }]),
        columns: columns.join(","),
        limit: chunk.length,
      },
    });
    for (const r of page.items) out.set(r.id, r);
  }
  return out;
}

/** One column for every point on the map, aligned with the points (paged GET /samples, sorted by id). */
async function loadPointColumn(field) {
  const pts = state.pts;
  if (pts.columns[field]) return pts.columns[field];
  const m = idIndex();
  const filters = [
    { field: "status", op: "eq", value: "ok" },
    { field: "x", op: "is_null", value: false },
    { field: "y", op: "is_null", value: false },
  ];
  const values = new Array(pts.n).fill(null);
  const limit = 10000;
  for (let offset = 0; ; offset += limit) {
    const page = await getJSON(dsPath("/samples"), {
      query: { filters: JSON.stringify(filters), columns: `id,${field}`, sort: "id", limit, offset },
    });
    for (const r of page.items) {
      const i = m.get(r.id);
      if (i !== undefined) values[i] = r[field] ?? r[`meta_${field}`] ?? null;
    }
    if (page.items.length < limit || offset + limit >= page.total) break;
  }
  const numeric = values.every((v) => v === null || typeof v === "number");
  let col;
  if (numeric) {
    const arr = new Float32Array(pts.n);
    values.forEach((v, i) => (arr[i] = v === null ? NaN : v));
    col = { kind: "number", values: arr };
  } else {
    let cats;
    if (field === "label" || field === "pred_label") cats = [...(state.info.classes || [])];
    else {
      const counts = new Map();
      for (const v of values) if (v !== null) counts.set(String(v), (counts.get(String(v)) || 0) + 1);
      cats = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a)).slice(0, 19);
    }
    const pos = new Map(cats.map((c, k) => [c, k]));
    const codes = new Uint16Array(pts.n);
    let other = false;
    values.forEach((v, i) => {
      if (v === null) codes[i] = 65535;
      else {
        const c = pos.get(String(v));
        if (c === undefined) {
          other = true;
          codes[i] = cats.length; // "other"
        } else codes[i] = c;
      }
    });
    col = { kind: "category", values: codes, categories: cats, other };
  }
  pts.columns[field] = col;
  return col;
}

// ---------------------------------------------------------------------------------------------
// coloring and legend
// ---------------------------------------------------------------------------------------------

function fillColorOptions() {
  const sel = $("#color-by");
  const opts = [
    ["outcome", "outcome (correct / wrong / unlabeled)"],
    ["cluster", "cluster"],
    ["label", "class (ground truth)"],
    ["pred_label", "predicted class"],
  ];
  for (const s of scoreFields()) opts.push([`score:${s}`, `score: ${s.replace("_", " ")}`]);
  for (const f of Object.keys(state.info.metadata_fields || {})) opts.push([`meta:${f}`, `metadata: ${f}`]);
  sel.replaceChildren(...opts.map(([v, t]) => h("option", { value: v, text: t })));
  if (!opts.some(([v]) => v === state.colorBy)) state.colorBy = "outcome";
  sel.value = state.colorBy;
}

function scoreFields() {
  return ["confidence", "least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald"];
}

async function setColorBy(value) {
  state.colorBy = value;
  const field = colorField(value);
  if (field && !state.pts.columns[field]) {
    $("#map-status").textContent = `loading ${field} for ${state.pts.n.toLocaleString()} points…`;
    try {
      await busy(loadPointColumn(field));
    } finally {
      $("#map-status").textContent = "";
    }
  }
  if (state.colorBy === value) recolor();
}

/** the per-point column a color choice needs (null: outcome / cluster come with the points) */
function colorField(value) {
  if (value === "label" || value === "pred_label") return value;
  if (value.startsWith("score:")) return value.slice(6);
  if (value.startsWith("meta:")) return value.slice(5);
  return null;
}

const OUTCOME_ALPHA = { unlabeled: 150, no_prediction: 150 };

function recolor() {
  const pts = state.pts;
  if (!pts) return;
  const n = pts.n;
  const rgba = new Uint8Array(n * 4);
  const legend = [];
  const put = (i, rgb, a = 215) => {
    rgba[4 * i] = rgb[0];
    rgba[4 * i + 1] = rgb[1];
    rgba[4 * i + 2] = rgb[2];
    rgba[4 * i + 3] = a;
  };
  const by = state.colorBy;
  const field = colorField(by);
  const col = field ? pts.columns[field] : null;
  if (by === "outcome" || (field && !col)) {
    const names = pts.outcomeNames;
    const rgbs = names.map((nm) => hexRGB(OUTCOME_COLORS[nm] || NULL_COLOR));
    const alphas = names.map((nm) => OUTCOME_ALPHA[nm] || 230);
    const counts = new Array(names.length).fill(0);
    for (let i = 0; i < n; i++) {
      const c = pts.outcome[i];
      counts[c]++;
      put(i, rgbs[c], alphas[c]);
    }
    names.forEach(
      (nm, c) => counts[c] && legend.push({ color: OUTCOME_COLORS[nm] || NULL_COLOR, name: OUTCOME_NAMES[nm] || nm, count: counts[c] })
    );
  } else if (by === "cluster") {
    const counts = new Map();
    for (let i = 0; i < n; i++) {
      const c = pts.cluster[i];
      counts.set(c, (counts.get(c) || 0) + 1);
      put(i, c < 0 ? hexRGB(NULL_COLOR) : hexRGB(CATEGORICAL[c % CATEGORICAL.length]), c < 0 ? 120 : 215);
    }
    const keys = [...counts.keys()].sort((a, b) => a - b);
    for (const c of keys.slice(0, 24)) {
      legend.push({
        color: c < 0 ? NULL_COLOR : CATEGORICAL[c % CATEGORICAL.length],
        name: c === -1 ? "noise" : c < -1 ? "not clustered" : `#${c}`,
        count: counts.get(c),
      });
    }
    if (keys.length > 24) legend.push({ color: "#ffffff", name: `… ${keys.length - 24} more clusters`, count: null });
  } else if (col.kind === "number") {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = col.values[i];
      if (Number.isFinite(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    const span = hi > lo ? hi - lo : 1;
    let missing = 0;
    for (let i = 0; i < n; i++) {
      const v = col.values[i];
      if (Number.isFinite(v)) put(i, rampRGB((v - lo) / span), 225);
      else {
        missing++;
        put(i, hexRGB(NULL_COLOR), 90);
      }
    }
    if (Number.isFinite(lo)) legend.push({ ramp: true, lo, hi, name: field.replace(/_/g, " ") });
    if (missing) legend.push({ color: NULL_COLOR, name: "no value", count: missing });
  } else {
    const cats = col.categories;
    const counts = new Array(cats.length + 2).fill(0);
    const otherColor = hexRGB("#7f7f7f");
    for (let i = 0; i < n; i++) {
      const c = col.values[i];
      if (c === 65535) {
        counts[cats.length + 1]++;
        put(i, hexRGB(NULL_COLOR), 100);
      } else if (c >= cats.length) {
        counts[cats.length]++;
        put(i, otherColor, 180);
      } else {
        counts[c]++;
        put(i, hexRGB(CATEGORICAL[c % CATEGORICAL.length]), 225);
      }
    }
    cats.forEach((nm, c) => counts[c] && legend.push({ color: CATEGORICAL[c % CATEGORICAL.length], name: String(nm), count: counts[c] }));
    if (counts[cats.length]) legend.push({ color: "#7f7f7f", name: "other", count: counts[cats.length] });
    if (counts[cats.length + 1]) {
      const none = field === "label" ? "unlabeled" : "no value";
      legend.push({ color: NULL_COLOR, name: none, count: counts[cats.length + 1] });
    }
  }
  ui.map.setColors(rgba);
  renderLegend(legend);
  $("#legend").dataset.colorBy = col || !field ? by : "outcome";
}

function renderLegend(items) {
  const box = $("#legend");
  box.replaceChildren(
    ...items.map((it) => {
      if (it.ramp) {
        const grad = `linear-gradient(to right, ${RAMP.join(",")})`;
        return h(
          "span",
          { class: "item" },
          h("span", { text: num(it.lo, 2) }),
          h("span", { class: "ramp", style: `background:${grad}` }),
          h("span", { text: num(it.hi, 2) }),
          h("span", { class: "muted", text: ` ${it.name}` })
        );
      }
      return h(
        "span",
        { class: "item" },
        h("span", { class: "sw", style: `background:${it.color}` }),
        h("span", { text: it.name }),
        it.count !== null && it.count !== undefined ? h("span", { class: "muted", text: it.count.toLocaleString() }) : null
      );
    })
  );
}

// ---------------------------------------------------------------------------------------------
// hover tooltip and detail view
// ---------------------------------------------------------------------------------------------

let hoverTimer = null;
let hoverIndex = -1;

const rowCache = new Map(); // id -> row (label, pred_label, confidence...) for tooltips and captions
const ROW_COLUMNS = ["id", "label", "pred_label", "labeled", "outcome", "confidence", "split", "cluster"];

function outcomeOf(i) {
  return state.pts.outcomeNames[state.pts.outcome[i]];
}

function onHover(i, cx, cy) {
  const tip = $("#tooltip");
  if (i < 0) {
    tip.hidden = true;
    hoverIndex = -1;
    clearTimeout(hoverTimer);
    return;
  }
  tip.style.left = `${Math.min(cx + 14, window.innerWidth - 330)}px`;
  tip.style.top = `${Math.min(cy + 14, window.innerHeight - 130)}px`;
  if (i === hoverIndex) return;
  hoverIndex = i;
  clearTimeout(hoverTimer);
  const pts = state.pts;
  const id = pts.ids[i];
  const img = h("img", { alt: "" });
  const outcome = outcomeOf(i);
  const lab = h("span", { text: "…" });
  const pred = h("span", { text: "…" });
  const conf = h("span", { text: "…" });
  const kv = h(
    "div",
    { class: "kv" },
    h("span", { class: "muted", text: "id" }), h("span", { text: id }),
    h("span", { class: "muted", text: "label" }), lab,
    h("span", { class: "muted", text: "predicted" }), pred,
    h("span", { class: "muted", text: "confidence" }), conf,
    h("span", { class: "muted", text: "outcome" }), h("span", { text: OUTCOME_NAMES[outcome] || outcome }),
    h("span", { class: "muted", text: "cluster" }), h("span", { text: pts.cluster[i] === -1 ? "noise" : String(pts.cluster[i]) })
  );
  tip.replaceChildren(img, kv);
  tip.hidden = false;
  const fill = (row) => {
    lab.textContent = row.label ?? (row.labeled ? "–" : "unlabeled");
    pred.textContent = row.pred_label ?? "–";
    conf.textContent = num(row.confidence, 3);
  };
  // wait until the pointer rests a moment: sweeping over points must not fire a request per point
  hoverTimer = setTimeout(async () => {
    if (hoverIndex !== i) return;
    setImage(img, id);
    try {
      let row = rowCache.get(id);
      if (!row) {
        row = (await fetchRows([id], ROW_COLUMNS)).get(id);
        if (row) rowCache.set(id, row);
      }
      if (row && hoverIndex === i) fill(row);
    } catch (err) {
      lab.textContent = pred.textContent = conf.textContent = "?";
    }
  }, 80);
}

async function showDetail(id) {
  const dlg = $("#detail");
  const info = $("#detail-info");
  info.replaceChildren(h("p", { class: "muted", text: "loading…" }));
  const img = $("#detail-img");
  img.removeAttribute("src");
  img.classList.remove("crop");
  $("#detail-box").replaceChildren();
  if (!dlg.open) dlg.showModal();
  try {
    const row = await getJSON(dsPath(`/samples/${encodeURIComponent(id)}`));
    const isObject = !!row.parent_id && Array.isArray(row.bbox);
    const note = h("p", { class: "muted" });
    img.onload = null;
    if (isObject) {
      // object rows: the parent image with the box drawn on it, when the parent is a row too;
      // otherwise the object's own crop (the media route cuts it out by the box)
      img.onload = () => drawBox(img, row);
      setImage(img, row.parent_id, "full", () => {
        img.onload = null;
        $("#detail-box").replaceChildren();
        note.textContent = "The image shows the object's box, cut out of its image.";
        img.classList.add("crop");
        setImage(img, id, "full");
      });
    } else {
      setImage(img, id, "full");
    }
    const kv = h("div", { class: "kv" });
    const add = (k, v) => kv.append(h("span", { class: "muted", text: k }), h("span", { text: v ?? "–" }));
    add("id", row.id);
    add("split", row.split);
    add("ground truth", row.label ?? (row.outcome === "false_positive" ? "nothing there (false positive)" : row.labeled ? "–" : "unlabeled"));
    add("prediction", row.pred_label);
    add("outcome", OUTCOME_NAMES[row.outcome] || row.outcome || (row.labeled ? "–" : "unlabeled"));
    add("cluster", row.cluster === null || row.cluster === undefined ? "–" : row.cluster === -1 ? "noise" : String(row.cluster));
    for (const s of scoreFields()) if (row[s] !== null && row[s] !== undefined) add(s.replace("_", " "), num(row[s]));
    if (row.bbox) add("box", row.bbox.map((v) => Math.round(v)).join(", "));
    for (const [k, v] of Object.entries(row)) {
      if (k.startsWith("meta_") && v !== null) add(k.slice(5), String(v));
    }
    if (row.metadata && typeof row.metadata === "object") {
      for (const [k, v] of Object.entries(row.metadata)) if (v !== null) add(k, String(v));
    }
    if (row.tags && row.tags.length) add("tags", row.tags.join(", "));
    if (row.uri) add("file", row.uri);
    const parts = [h("h3", { text: `Sample ${row.id}` }), kv, note];
    const classes = (state.info && state.info.classes) || [];
    if (Array.isArray(row.probs) && row.probs.length) {
      const order = row.probs.map((p, k) => [p, k]).sort((a, b) => b[0] - a[0]).slice(0, 8);
      const probs = h("div", { class: "probs" });
      for (const [p, k] of order) {
        probs.append(
          h("span", { text: classes[k] ?? String(k) }),
          h("span", {}, h("div", { class: "pbar", style: `width:${Math.max(1, 100 * p)}%` })),
          h("span", { class: "muted", text: p.toFixed(3) })
        );
      }
      parts.push(h("h4", { text: "Probabilities" }), probs);
    }
    info.replaceChildren(...parts);
  } catch (err) {
    info.replaceChildren(h("p", { class: "error", text: describeError(err) }));
  }
}

function drawBox(img, row) {
  const svg = $("#detail-box");
  const W = row.width || img.naturalWidth;
  const H = row.height || img.naturalHeight;
  if (!W || !H) return;
  const s = Math.min(320 / W, 320 / H);
  const ox = (320 - W * s) / 2;
  const oy = (320 - H * s) / 2;
  const [x, y, w, hh] = row.bbox;
  const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  r.setAttribute("x", ox + x * s);
  r.setAttribute("y", oy + y * s);
  r.setAttribute("width", w * s);
  r.setAttribute("height", hh * s);
  r.setAttribute("fill", "none");
  r.setAttribute("stroke", "#e0453a");
  r.setAttribute("stroke-width", "2");
  svg.replaceChildren(r);
}

// ---------------------------------------------------------------------------------------------
// thumbnail grids
// ---------------------------------------------------------------------------------------------

function tile(id, { caption, onDrop, index } = {}) {
  const i = index !== undefined ? index : idIndex().get(id);
  const outcome = i !== undefined ? outcomeOf(i) : null;
  let cls = "tile";
  if (outcome === "correct") cls += " correct";
  else if (outcome === "unlabeled") cls += " unlabeled";
  else if (outcome && outcome !== "no_prediction") cls += " wrong";
  const title = outcome ? `${id}: ${OUTCOME_NAMES[outcome] || outcome}` : id;
  const img = h("img", { alt: title, loading: "lazy" });
  setImage(img, id);
  const node = h("div", { class: cls, title, "data-id": id, onclick: () => showDetail(id) }, img);
  const cap = h("span", { class: "cap", text: caption || "" });
  cap.hidden = !caption;
  node.append(cap);
  node._fixedCaption = !!caption;
  if (onDrop) {
    node.append(
      h("button", {
        class: "drop",
        type: "button",
        title: "drop this result",
        "aria-label": `drop ${id}`,
        text: "×",
        onclick: (e) => {
          e.stopPropagation();
          onDrop(id);
        },
      })
    );
  }
  return node;
}

/** Put tiles for `ids` into `container`, then fill captions (label → prediction) from the rows. */
async function fillGrid(container, ids, opts = {}) {
  const tiles = ids.map((id) => tile(id, opts.tileOptions ? opts.tileOptions(id) : {}));
  container.replaceChildren(...tiles);
  const missing = ids.filter((id) => !rowCache.has(id));
  try {
    if (missing.length) for (const [id, row] of await fetchRows(missing, ROW_COLUMNS)) rowCache.set(id, row);
  } catch (err) {
    showError(err, "Loading the rows");
    return;
  }
  for (const t of tiles) {
    const row = rowCache.get(t.dataset.id);
    if (!row) continue;
    const lab = row.label ?? null;
    const pred = row.pred_label ?? "?";
    const text = row.labeled ? `${lab ?? "?"} → ${pred}` : t._fixedCaption ? `→ ${pred}` : `pred ${pred}`;
    t.title = `${t.dataset.id}: ${row.labeled ? `label ${lab}, ` : "unlabeled, "}predicted ${pred} (${num(row.confidence, 2)})`;
    const cap = t.querySelector(".cap");
    if (!t._fixedCaption) {
      cap.textContent = text;
      cap.hidden = false;
    } else if (!cap.dataset.filled) {
      cap.textContent = `${text} · d ${cap.textContent}`;
      cap.dataset.filled = "1";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// selection
// ---------------------------------------------------------------------------------------------

const PAGE = 48;

function setSelection(indices, source, { focus = false, switchTab = true } = {}) {
  state.selection = { indices: indices instanceof Uint32Array ? indices : Uint32Array.from(indices), source };
  state.selPage = 1;
  ui.map.setHighlight(state.selection.indices);
  if (focus) ui.map.focus(state.selection.indices);
  renderSelection();
  if (switchTab && indices.length) showTab("selection");
}

function selectedIds() {
  const ids = state.pts.ids;
  return Array.from(state.selection.indices, (i) => ids[i]);
}

function renderSelection() {
  const n = state.selection.indices.length;
  $("#sel-badge").textContent = n ? n.toLocaleString() : "";
  $("#sel-count").textContent = n ? `${n.toLocaleString()} rows selected` : "Nothing selected.";
  $("#sel-source").textContent = n ? `from ${state.selection.source}` : "Use lasso or box on the map, or the filters.";
  $("#map-status").textContent = n ? `${n.toLocaleString()} selected` : "";
  const grid = $("#sel-grid");
  grid.replaceChildren();
  if (!n) {
    $("#sel-more").hidden = true;
    return;
  }
  // wrong predictions first (they are what the person is looking for), then unlabeled, then correct
  const pts = state.pts;
  const want = state.selPage * PAGE;
  const buckets = [[], [], []];
  for (const i of state.selection.indices) {
    const o = pts.outcomeNames[pts.outcome[i]];
    const b = o === "correct" ? 2 : o === "unlabeled" || o === "no_prediction" ? 1 : 0;
    if (buckets[b].length < want) buckets[b].push(i);
  }
  const shown = buckets.flat().slice(0, want);
  fillGrid(grid, shown.map((i) => pts.ids[i]));
  $("#sel-more").hidden = shown.length >= n;
  $("#sel-more").textContent = `Show more (${(n - shown.length).toLocaleString()} left)`;
}

async function applyFilters(e) {
  e.preventDefault();
  const form = $("#filters");
  const filters = [];
  const v = (name) => form.elements[name].value;
  if (v("split")) filters.push({ field: "split", op: "eq", value: v("split") });
  if (v("label")) filters.push({ field: "label", op: "eq", value: v("label") });
  if (v("pred_label")) filters.push({ field: "pred_label", op: "eq", value: v("pred_label") });
  if (v("outcome") === "correct") filters.push({ field: "correct", op: "eq", value: true });
  if (v("outcome") === "wrong") filters.push({ field: "correct", op: "eq", value: false });
  if (v("outcome") === "unlabeled") filters.push({ field: "labeled", op: "eq", value: false });
  if (v("score")) {
    const lo = v("score_min");
    const hi = v("score_max");
    if (lo !== "" && hi !== "") filters.push({ field: v("score"), op: "between", value: [Number(lo), Number(hi)] });
    else if (lo !== "") filters.push({ field: v("score"), op: "ge", value: Number(lo) });
    else if (hi !== "") filters.push({ field: v("score"), op: "le", value: Number(hi) });
  }
  if (v("meta_field") && v("meta_value") !== "") {
    const field = v("meta_field");
    const type = (state.info.metadata_fields || {})[field];
    let value = v("meta_value");
    if (type === "int" || type === "float") value = Number(value);
    if (type === "bool") value = value === "true" || value === "1" || value === "yes";
    filters.push({ field, op: "eq", value });
  }
  await selectByFilters(filters, describeFilters(filters));
}

function describeFilters(filters) {
  if (!filters.length) return "all rows";
  return filters
    .map((f) => `${f.field.replace(/^meta_/, "")} ${f.op} ${Array.isArray(f.value) ? f.value.join("–") : f.value}`)
    .join(", ");
}

async function selectByFilters(filters, label) {
  try {
    const ids = await busy(fetchIds(filters));
    const idx = indicesOf(ids);
    setSelection(idx, `filter: ${label}`);
    if (!ids.length) toast("No row matches these filters.");
  } catch (err) {
    showError(err, "Filtering");
  }
}

/** ids of every row matching structured filters (paged). */
async function fetchIds(filters) {
  const ids = [];
  const limit = 10000;
  for (let offset = 0; ; offset += limit) {
    // GET, not POST /samples/query: reading must not need the API key
    const page = await getJSON(dsPath("/samples"), {
      query: { filters: JSON.stringify(filters), columns: "id", sort: "id", limit, offset },
    });
    for (const r of page.items) ids.push(r.id);
    if (page.items.length < limit || ids.length >= page.total) break;
  }
  return ids;
}

function fillFilterOptions() {
  const form = $("#filters");
  const info = state.info;
  const classes = info.classes || [];
  const opt = (v, t) => h("option", { value: v, text: t ?? v });
  const splits = Object.keys((info.counts && info.counts.by_split) || {}).filter((s) => s !== "(none)");
  form.elements.split.replaceChildren(opt("", "any"), ...splits.map((s) => opt(s)));
  form.elements.label.replaceChildren(opt("", "any"), ...classes.map((c) => opt(c)));
  form.elements.pred_label.replaceChildren(opt("", "any"), ...classes.map((c) => opt(c)));
  form.elements.score.replaceChildren(opt("", "none"), ...scoreFields().map((s) => opt(s, s.replace("_", " "))));
  const metas = Object.keys(info.metadata_fields || {});
  form.elements.meta_field.replaceChildren(opt("", "none"), ...metas.map((m) => opt(m)));
  $("#meta-field").replaceChildren(...metas.map((m) => opt(m)));
}

// ---------------------------------------------------------------------------------------------
// failure clusters
// ---------------------------------------------------------------------------------------------

async function loadClusters() {
  const tbody = $("#cluster-table tbody");
  let body;
  try {
    body = await getJSON(dsPath("/clusters"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && /analy/i.test(err.detail || err.title)) {
      state.clusters = [];
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted", text: err.detail })));
      return;
    }
    throw err;
  }
  const clusters = body.clusters || [];
  state.clusters = clusters;
  state.baseErrorRate = body.base_error_rate;
  $("#cluster-hint").textContent =
    `${body.n_failure_clusters ?? 0} failure clusters among ${body.n_clusters ?? clusters.length} ` +
    `(overall error rate ${pct(body.base_error_rate)}). Click one to see it on the map with its images.`;
  renderClusters();
  const mineSel = $("#mine-form").elements.cluster;
  mineSel.replaceChildren(
    ...clusters
      .filter((c) => c.id !== -1)
      .map((c) => h("option", { value: c.id, text: `#${c.id} (${pct(c.error_rate)} wrong, ${c.size} rows)` }))
  );
}

function renderClusters() {
  const clusters = state.clusters;
  const tbody = $("#cluster-table tbody");
  const failing = clusters.filter((c) => c.failure_rank);
  const shown = state.showAllClusters || !failing.length ? clusters : failing;
  tbody.replaceChildren();
  if (!clusters.length) {
    tbody.append(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "No clusters: run the analysis again." })));
  }
  const maxRate = Math.max(0.01, ...clusters.map((c) => c.error_rate || 0));
  for (const c of shown) {
    const name = c.id === -1 ? "noise" : c.failure_rank ? `#${c.id} ⚑${c.failure_rank}` : `#${c.id}`;
    tbody.append(
      h(
        "tr",
        {
          "data-cluster": c.id,
          class: [c.failure_rank ? "failure" : c.id === -1 ? "noise" : "other", c.id === state.activeCluster ? "on" : ""].join(" "),
          title: c.failure_rank ? `failure cluster, rank ${c.failure_rank}` : "",
          onclick: () => openCluster(c),
        },
        h("td", { text: name }),
        h("td", { text: (c.size ?? 0).toLocaleString() }),
        h(
          "td",
          {},
          h("span", { class: "bar", style: `width:${Math.round((40 * (c.error_rate || 0)) / maxRate)}px` }),
          c.error_rate === null || c.error_rate === undefined ? "–" : `${pct(c.error_rate)} (${c.errors}/${c.judged})`
        ),
        h("td", { text: c.lift === null || c.lift === undefined ? "–" : `${Number(c.lift).toFixed(1)}×` }),
        h("td", { text: topPair(c) })
      )
    );
  }
  const foot = $("#cluster-table tfoot");
  foot.replaceChildren();
  if (failing.length && failing.length < clusters.length) {
    const label = state.showAllClusters
      ? "Show only the failure clusters"
      : `Show all ${clusters.length} clusters (${clusters.length - failing.length} more)`;
    foot.append(
      h("tr", {}, h("td", { colspan: 5 }, h("button", {
        type: "button",
        class: "link",
        text: label,
        onclick: () => {
          state.showAllClusters = !state.showAllClusters;
          renderClusters();
        },
      })))
    );
  }
}

function topPair(c) {
  const p = (c.top_confusions || [])[0];
  return p ? `${p.label} → ${p.pred} (${p.count})` : "–";
}

function clusterIndices(cid) {
  const pts = state.pts;
  const out = [];
  for (let i = 0; i < pts.n; i++) if (pts.cluster[i] === cid) out.push(i);
  return Uint32Array.from(out);
}

async function openCluster(c) {
  const cid = Number(c.id);
  state.activeCluster = cid;
  $$("#cluster-table tbody tr").forEach((tr) => tr.classList.toggle("on", Number(tr.dataset.cluster) === cid));
  const idx = clusterIndices(cid);
  ui.map.setHighlight(idx);
  ui.map.focus(idx);
  $("#map-status").textContent = `cluster #${cid}: ${idx.length.toLocaleString()} points highlighted`;
  $("#cluster-view").hidden = false;
  const parts = [`Cluster #${cid}: ${(c.size ?? idx.length).toLocaleString()} rows`];
  if (c.error_rate !== null && c.error_rate !== undefined) parts.push(`${pct(c.error_rate)} wrong`);
  if (c.lift) parts.push(`${Number(c.lift).toFixed(1)}× the overall error rate`);
  $("#cluster-title").textContent = parts.join(", ");
  const facts = [];
  if (c.dominant_label) facts.push(`ground truth mostly ${c.dominant_label.value} (${pct(c.dominant_label.share)})`);
  if (c.dominant_pred) facts.push(`predicted mostly ${c.dominant_pred.value} (${pct(c.dominant_pred.share)})`);
  if ((c.top_confusions || []).length) {
    facts.push(`confusions: ${c.top_confusions.map((p) => `${p.label}→${p.pred} ×${p.count}`).join(", ")}`);
  }
  if (c.unlabeled) facts.push(`${c.unlabeled} unlabeled rows in it`);
  $("#cluster-facts").textContent = facts.join(" · ");
  $("#cluster-view").scrollIntoView({ block: "start", behavior: "instant" });
  const worst = c.worst_failures || [];
  const typical = c.typical || [];
  await Promise.all([fillGrid($("#cluster-worst"), worst.slice(0, 24)), fillGrid($("#cluster-typical"), typical.slice(0, 24))]);
  if (!worst.length) $("#cluster-worst").append(h("p", { class: "muted", text: "No labeled failures in this cluster." }));
}

// ---------------------------------------------------------------------------------------------
// issues
// ---------------------------------------------------------------------------------------------

async function loadIssues() {
  state.issues = await getJSON(dsPath("/issues"));
  const tbody = $("#issue-table tbody");
  tbody.replaceChildren();
  if (!state.issues.length) tbody.append(h("tr", {}, h("td", { colspan: 3, class: "muted", text: "No issues flagged yet." })));
  for (const is of [...state.issues].reverse()) {
    tbody.append(
      h(
        "tr",
        { "data-issue": is.id, onclick: () => openIssue(is) },
        h("td", { text: is.name }),
        h("td", { text: is.count.toLocaleString() }),
        h("td", { class: "muted", text: (is.created_at || "").slice(0, 16).replace("T", " ") })
      )
    );
  }
  const opts = () => [...state.issues].reverse().map((is) => h("option", { value: is.id, text: `${is.name} (${is.count})` }));
  $("#mine-form").elements.issue.replaceChildren(...opts());
  $("#export-form").elements.issue.replaceChildren(...opts());
}

function openIssue(issue) {
  $$("#issue-table tbody tr").forEach((tr) => tr.classList.toggle("on", tr.dataset.issue === issue.id));
  const idx = indicesOf(issue.sample_ids);
  setSelection(idx, `issue “${issue.name}”`, { focus: true });
  const off = issue.sample_ids.length - idx.length;
  if (off > 0) toast(`${off} of the issue's rows are not on the map (not analyzed yet).`);
}

async function flagIssue(name, ids) {
  if (!ids.length) {
    toast("Select some rows first (lasso, box, a cluster or the filters).", "error");
    return null;
  }
  const issue = await busy(postJSON(dsPath("/issues"), { name, sample_ids: ids }));
  const unknown = (issue.unknown_ids || []).length;
  toast(`Flagged ${issue.count.toLocaleString()} rows as “${issue.name}”${unknown ? ` (${unknown} unknown ids left out)` : ""}.`, "ok");
  await loadIssues();
  return issue;
}

// ---------------------------------------------------------------------------------------------
// find similar unlabeled (mine) and label next (select)
// ---------------------------------------------------------------------------------------------

async function runMine(seeds, label) {
  const form = $("#mine-form").elements;
  const budget = Number(form.budget.value) || 50;
  const includeExported = form.include_exported.checked;
  const status = $("#mine-status");
  status.textContent = `Searching the unlabeled pool near ${label}…`;
  showTab("mine");
  try {
    const res = await busy(postJSON(dsPath("/mine"), { seeds, budget, include_exported: includeExported }));
    setMined(res.items, `similar to ${label}`, res.selection_id);
    ui.map.focus(indicesOf(state.mined.map((r) => r.id)));
    if (!res.returned) {
      status.textContent =
        `No unlabeled row left to find near ${label}: every candidate is labeled` +
        (includeExported ? "." : " or already exported (tick “include rows already exported” to see those).");
      return;
    }
    status.textContent =
      `${res.returned} unlabeled rows found near ${res.seeds} seed${res.seeds === 1 ? "" : "s"} ` +
      `(${res.candidates.toLocaleString()} candidates, ${res.engine} search, ${Math.round(res.took_ms)} ms).`;
  } catch (err) {
    status.textContent = describeError(err);
    showError(err, "Finding similar rows");
  }
}

function setMined(rows, label, selectionId = null) {
  state.mined = rows.map((r) => (typeof r === "string" ? { id: r } : r));
  state.minedLabel = label;
  state.minedSelection = selectionId;
  renderMined();
  showMinedOnMap();
}

function renderMined() {
  const box = $("#mine-results");
  box.hidden = !state.mined.length;
  $("#mine-count").textContent = `${state.mined.length} results ${state.minedLabel}`;
  const byId = new Map(state.mined.map((r) => [r.id, r]));
  fillGrid(
    $("#mine-grid"),
    state.mined.map((r) => r.id),
    {
      tileOptions: (id) => {
        const r = byId.get(id);
        return {
          caption: r && r.distance !== undefined && r.distance !== null ? num(r.distance, 2) : undefined,
          onDrop: (dropId) => {
            state.mined = state.mined.filter((x) => x.id !== dropId);
            state.minedSelection = null; // the saved selection no longer matches
            $(`#mine-grid .tile[data-id="${CSS.escape(dropId)}"]`)?.remove();
            $("#mine-count").textContent = `${state.mined.length} results ${state.minedLabel}`;
            showMinedOnMap();
          },
        };
      },
    }
  );
}

function showMinedOnMap() {
  const idx = indicesOf(state.mined.map((r) => r.id));
  ui.map.setHighlight(idx);
  $("#map-status").textContent = `${idx.length} results highlighted`;
}

async function runSelect(e) {
  e.preventDefault();
  const f = $("#select-form").elements;
  const body = {
    strategy: f.strategy.value,
    budget: Number(f.budget.value) || 100,
    explore: Number(f.explore.value) || 0,
    include_exported: f.include_exported.checked,
  };
  $("#select-status").textContent = "Choosing rows…";
  try {
    const res = await busy(postJSON(dsPath("/select"), body));
    setMined(res.items, `chosen by ${body.strategy} (budget ${body.budget}, explore ${body.explore})`, res.selection_id);
    const parts = Object.entries(res.counts || {}).map(([k, v]) => `${v} by ${k}`).join(", ");
    $("#select-status").textContent =
      `${res.returned} of ${res.candidates.toLocaleString()} candidates chosen (${parts}). ` +
      `Review them in “Find similar”, drop any, then export.`;
    showTab("mine");
  } catch (err) {
    $("#select-status").textContent = describeError(err);
    showError(err, "Choosing rows");
  }
}

// ---------------------------------------------------------------------------------------------
// export
// ---------------------------------------------------------------------------------------------

const EXPORT_DONE = new Set(["done"]);
const EXPORT_FAILED = new Set(["failed", "interrupted", "cancelled"]);

async function startExport(e) {
  e.preventDefault();
  const f = $("#export-form").elements;
  const target = f.format.value;
  const body = { target, media: f.media.value };
  let what;
  if (f.source.value === "issue") {
    if (!f.issue.value) return toast("There is no issue to export yet: flag a selection first.", "error");
    body.issue = f.issue.value;
    what = `issue ${f.issue.selectedOptions[0].textContent}`;
  } else {
    const ids = f.source.value === "mined" ? state.mined.map((r) => r.id) : selectedIds();
    if (!ids.length) {
      return toast(`Nothing to export: the ${f.source.value === "mined" ? "result list is" : "selection is"} empty.`, "error");
    }
    body.ids = ids;
    what = `${ids.length.toLocaleString()} rows`;
  }
  const card = h("div", { class: "job" });
  const progress = h("progress", { max: 1, value: 0 });
  const line = h("div", { class: "muted", text: "starting…" });
  card.append(h("strong", { text: `${f.format.selectedOptions[0].textContent} export of ${what}` }), progress, line);
  $("#export-jobs").prepend(card);
  try {
    let doc = await postJSON(dsPath("/exports"), body);
    card.dataset.export = doc.id;
    const docPath = dsPath(`/exports/${encodeURIComponent(doc.id)}`);
    while (!EXPORT_DONE.has(doc.status) && !EXPORT_FAILED.has(doc.status)) {
      const total = doc.count || 0;
      progress.max = total || 1;
      progress.value = doc.rows_done || 0;
      const jp = (doc.job && doc.job.progress) || {};
      line.textContent = `${doc.status}: ${(doc.rows_done || 0).toLocaleString()} / ${total.toLocaleString()} rows${
        jp.message ? ` — ${jp.message}` : ""
      }`;
      await new Promise((r) => setTimeout(r, 400));
      doc = await getJSON(docPath);
    }
    if (EXPORT_FAILED.has(doc.status)) {
      const why = (doc.job && doc.job.error) || (doc.errors && doc.errors[0] && (doc.errors[0].message || doc.errors[0].detail)) || "no reason recorded";
      throw new ApiError(0, `Export ${doc.status}`, why, docPath);
    }
    progress.max = 1;
    progress.value = 1;
    const href = `${docPath}/download`;
    const link = h("a", { href, download: doc.zip || "", class: "download", text: `Download ${doc.zip || "zip"}` });
    link.addEventListener("click", async (ev) => {
      if (!apiKey() || !state.readsNeedKey) return; // a plain link works
      ev.preventDefault();
      try {
        const resp = await request(href);
        const a = h("a", { href: URL.createObjectURL(await resp.blob()), download: doc.zip || `export-${doc.id}.zip` });
        document.body.append(a);
        a.click();
        a.remove();
      } catch (err) {
        showError(err, "Download");
      }
    });
    const extra = [];
    if (doc.media_errors) extra.push(`${doc.media_errors} images could not be read`);
    if (doc.zip_bytes) extra.push(`${(doc.zip_bytes / 1024).toFixed(0)} KB`);
    line.replaceChildren(`done: ${(doc.rows_exported ?? doc.count).toLocaleString()} rows${extra.length ? ` (${extra.join(", ")})` : ""}. `, link);
    toast("Export ready to download.", "ok");
  } catch (err) {
    card.classList.add("failed");
    line.textContent = describeError(err);
    showError(err, "Export");
  }
}

// ---------------------------------------------------------------------------------------------
// insights
// ---------------------------------------------------------------------------------------------

const SPLIT_COLORS = ["#4e79a7", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"];

async function loadInsights() {
  const [labels, confusion] = await Promise.all([getJSON(dsPath("/stats/labels")), getJSON(dsPath("/stats/confusion"))]);
  renderLabelChart(labels);
  renderConfusion(confusion);
  const field = $("#meta-field").value;
  if (field) await loadMetaChart(field);
  else $("#chart-meta").textContent = "This dataset has no metadata fields.";
}

function renderLabelChart(stats) {
  const labeledSplits = stats.splits.filter((s) => s.labeled > 0);
  const pool = stats.splits.filter((s) => s.labeled === 0 && s.rows > 0);
  const legend = labeledSplits.map((s, k) => ({ name: `${s.split} (labels)`, color: SPLIT_COLORS[k % SPLIT_COLORS.length] }));
  if (pool.length) legend.push({ name: "unlabeled (predicted)", color: OUTCOME_COLORS.unlabeled });
  const rows = stats.classes.map((c) => ({
    label: c,
    parts: [
      ...labeledSplits.map((s, k) => ({ name: s.split, value: s.label[c] || 0, color: SPLIT_COLORS[k % SPLIT_COLORS.length] })),
      ...pool.map((s) => ({ name: `${s.split} predicted`, value: s.pred_label[c] || 0, color: OUTCOME_COLORS.unlabeled })),
    ],
  }));
  stackedBars($("#chart-labels"), rows, {
    legend,
    onClick: (row) => selectByFilters([{ field: "label", op: "eq", value: row.label }], `label = ${row.label}`),
  });
}

function renderConfusion(body) {
  const pairs = body.top_errors || [];
  const tbody = $("#confusion-table tbody");
  tbody.replaceChildren();
  if (!pairs.length) tbody.append(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No labeled errors." })));
  for (const p of pairs.slice(0, 8)) {
    tbody.append(
      h(
        "tr",
        {
          title: "select these rows",
          onclick: () =>
            selectByFilters(
              [
                { field: "label", op: "eq", value: p.label },
                { field: "pred_label", op: "eq", value: p.pred },
              ],
              `${p.label} predicted as ${p.pred}`
            ),
        },
        h("td", { text: p.label }),
        h("td", { text: p.pred }),
        h("td", { text: String(p.count) }),
        h("td", { text: body.errors ? pct(p.count / body.errors) : "–" })
      )
    );
  }
  $("#confusion-summary").textContent = body.judged
    ? `${body.errors} errors in ${body.judged} judged rows (accuracy ${pct(body.accuracy)}).`
    : "";
}

async function loadMetaChart(field) {
  try {
    const body = await getJSON(dsPath(`/stats/metadata/${encodeURIComponent(field)}`));
    const numeric = body.kind === "numeric";
    const rows = body.bins.map((b) => ({
      label: numeric ? `${num(b.lo, 2)}–${num(b.hi, 2)}` : String(b.value),
      bin: b,
      parts: [
        { name: "correct", value: b.correct, color: OUTCOME_COLORS.correct },
        { name: "wrong", value: b.wrong, color: OUTCOME_COLORS.wrong_class },
        { name: "unlabeled", value: b.unlabeled, color: OUTCOME_COLORS.unlabeled },
        { name: "no prediction", value: b.no_prediction || 0, color: OUTCOME_COLORS.no_prediction },
      ],
      note: b.error_rate === null || b.error_rate === undefined ? "" : `${pct(b.error_rate)} wrong`,
    }));
    stackedBars($("#chart-meta"), rows, {
      legend: [
        { name: "correct", color: OUTCOME_COLORS.correct },
        { name: "wrong", color: OUTCOME_COLORS.wrong_class },
        { name: "unlabeled", color: OUTCOME_COLORS.unlabeled },
      ],
      onClick: (row) => {
        const b = row.bin;
        const filters = numeric
          ? [{ field, op: "between", value: [b.lo, b.hi] }]
          : [{ field, op: "eq", value: b.value }];
        selectByFilters(filters, `${field} ${numeric ? `in ${row.label}` : `= ${b.value}`}`);
      },
    });
  } catch (err) {
    $("#chart-meta").textContent = describeError(err);
  }
}

// ---------------------------------------------------------------------------------------------
// tabs and wiring
// ---------------------------------------------------------------------------------------------

function showTab(name) {
  $$(".tabs button").forEach((b) => {
    b.classList.toggle("on", b.dataset.tab === name);
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
  });
  $$(".panel").forEach((p) => (p.hidden = p.id !== `tab-${name}`));
  if (name === "insights") ensureInsights();
}

function ensureInsights() {
  if (!state.ds || state.insightsLoaded === state.ds) return;
  state.insightsLoaded = state.ds;
  $("#insights-status").textContent = "computing the statistics…";
  busy(loadInsights())
    .then(() => ($("#insights-status").textContent = ""))
    .catch((err) => {
      state.insightsLoaded = null;
      $("#insights-status").textContent = describeError(err);
      showError(err, "Loading the insights");
    });
}

function toggleSourceFields(form) {
  const src = form.elements.source.value;
  $$("label[data-for]", form).forEach((l) => (l.hidden = l.dataset.for !== src));
}

function wire() {
  $$(".tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  $$("#modes button").forEach((b) =>
    b.addEventListener("click", () => {
      $$("#modes button").forEach((x) => x.classList.toggle("on", x === b));
      ui.map.setMode(b.dataset.mode);
    })
  );
  $("#reset-view").addEventListener("click", () => ui.map.resetView());
  $("#clear-sel").addEventListener("click", () => {
    setSelection(new Uint32Array(0), "", { switchTab: false });
    state.activeCluster = null;
    $$("#cluster-table tbody tr").forEach((tr) => tr.classList.remove("on"));
  });
  $("#dataset").addEventListener("change", (e) => busy(openDataset(e.target.value)).catch((err) => showError(err, "Opening the dataset")));
  $("#color-by").addEventListener("change", (e) => setColorBy(e.target.value).catch((err) => showError(err, "Coloring")));
  $("#filters").addEventListener("submit", applyFilters);
  $("#filters").addEventListener("reset", () => setTimeout(() => setSelection(new Uint32Array(0), "", { switchTab: false })));
  $("#sel-more").addEventListener("click", () => {
    state.selPage++;
    renderSelection();
  });
  $("#flag-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = e.target.elements.name.value.trim();
    try {
      if (await flagIssue(name, selectedIds())) e.target.reset();
    } catch (err) {
      showError(err, "Flagging");
    }
  });
  $("#sel-mine").addEventListener("click", () => {
    const ids = selectedIds();
    if (!ids.length) return toast("Select some rows first.", "error");
    runMine({ ids }, `the ${ids.length} selected rows`);
  });
  $("#sel-export").addEventListener("click", () => {
    $("#export-form").elements.source.value = "selection";
    toggleSourceFields($("#export-form"));
    showTab("export");
  });
  $("#cluster-select").addEventListener("click", () => {
    if (state.activeCluster === null) return;
    setSelection(clusterIndices(state.activeCluster), `cluster #${state.activeCluster}`);
  });
  $("#cluster-mine").addEventListener("click", () => {
    if (state.activeCluster === null) return;
    runMine({ cluster: state.activeCluster, failures: true }, `the failures of cluster #${state.activeCluster}`);
  });
  const mineForm = $("#mine-form");
  mineForm.elements.source.addEventListener("change", () => toggleSourceFields(mineForm));
  mineForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = mineForm.elements;
    const src = f.source.value;
    if (src === "selection") {
      const ids = selectedIds();
      if (!ids.length) return toast("The selection is empty: select rows on the map first.", "error");
      runMine({ ids }, `the ${ids.length} selected rows`);
    } else if (src === "issue") {
      if (!f.issue.value) return toast("No issue yet: flag a selection first.", "error");
      runMine({ issue: f.issue.value }, `issue ${f.issue.selectedOptions[0].textContent}`);
    } else if (src === "cluster") {
      if (f.cluster.value === "") return toast("No clusters yet: run the analysis first.", "error");
      runMine({ cluster: Number(f.cluster.value), failures: true }, `cluster #${f.cluster.value}`);
    } else {
      const text = f.text.value.trim();
      if (!text) return toast("Type what to look for.", "error");
      runMine({ text }, `“${text}”`);
    }
  });
  $("#mine-show").addEventListener("click", () => {
    showMinedOnMap();
    ui.map.focus(indicesOf(state.mined.map((r) => r.id)));
  });
  $("#mine-flag-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = e.target.elements.name.value.trim();
    try {
      if (await flagIssue(name, state.mined.map((r) => r.id))) e.target.reset();
    } catch (err) {
      showError(err, "Flagging");
    }
  });
  $("#mine-export").addEventListener("click", () => {
    $("#export-form").elements.source.value = "mined";
    toggleSourceFields($("#export-form"));
    showTab("export");
  });
  $("#select-form").addEventListener("submit", runSelect);
  const exportForm = $("#export-form");
  exportForm.elements.source.addEventListener("change", () => toggleSourceFields(exportForm));
  exportForm.addEventListener("submit", startExport);
  $("#meta-field").addEventListener("change", (e) => loadMetaChart(e.target.value));
  $("#key-button").addEventListener("click", async () => {
    const dlg = $("#key-dialog");
    const form = $("#key-form");
    $("#key-message").textContent = apiKey() ? "Replace the API key (empty: forget it)." : "API key for this server:";
    form.key.value = "";
    dlg.showModal();
    form.addEventListener(
      "submit",
      (e) => {
        e.preventDefault();
        setApiKey(form.key.value.trim());
        dlg.close();
        toast(apiKey() ? "API key saved for this tab." : "API key forgotten.", "ok");
      },
      { once: true }
    );
    $("#key-cancel").addEventListener("click", () => dlg.close(), { once: true });
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey) return;
    const modes = { p: "pan", b: "box", l: "lasso" };
    if (modes[e.key]) $(`#modes button[data-mode=${modes[e.key]}]`).click();
    if (e.key === "Escape") $("#clear-sel").click();
  });
}

async function main() {
  try {
    ui.map = new PointMap($("#map"), $("#overlay"));
  } catch (err) {
    mapMessage(describeError(err));
    return;
  }
  ui.map.onHover = onHover;
  ui.map.onClickPoint = (i) => showDetail(state.pts.ids[i]);
  ui.map.onSelect = (idx, kind) => setSelection(idx, `${kind} on the map`);
  wire();
  try {
    const name = await busy(loadDatasets());
    if (name) await busy(openDataset(name));
  } catch (err) {
    mapMessage(describeError(err));
    showError(err, "Loading");
  }
  state.ready = true;
  window.edgeminer.ready = true;
  window.edgeminer.timings.ready = performance.now();
  document.body.dataset.ready = "1";
}

main();
