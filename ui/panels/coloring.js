// Coloring of the map and its legend: the topbar's #color-by and #legend. Loads the per-point column
// a choice needs (data.js), computes one RGBA per point and sends it to the map (event "colors").
// "outcome (compare)" (offered with >= 2 model versions) paints what the pair of the Compare tab
// changed (GET /compare/points): it follows the pair ("compare") and the request "color-by".

import { busy, $, h, num, showError } from "../dom.js";
import { clusterName, loadComparePoints, loadPointColumn, metadataFields, scoreFields } from "../data.js";
import { CATEGORICAL, COMPARE_ALPHA, COMPARE_COLORS, COMPARE_NAMES, NULL_COLOR } from "../palette.js";
import { OUTCOME_ALPHA, OUTCOME_COLORS, OUTCOME_NAMES, RAMP, hexRGB, rampRGB } from "../palette.js";
import { emit, on, state } from "../state.js";

export function init() {
  on("opened", () => {
    fillColorOptions();
    recolor();
    if (colorField(state.colorBy)) setColorBy(state.colorBy).catch((err) => showError(err, "Coloring"));
  });
  const choose = (value) => setColorBy(value).catch((err) => showError(err, "Coloring"));
  $("#color-by").addEventListener("change", (e) => choose(e.target.value));
  on("versions", () => state.pts && fillColorOptions());
  on("compare", () => {
    fillColorOptions();
    if (state.colorBy === "compare") choose("compare");
  });
  on("color-by", (value) => {
    fillColorOptions();
    $("#color-by").value = value;
    if ($("#color-by").value === value) choose(value);
  });
}

/** the compare option when the dataset has two versions and a pair is chosen */
function compareOption() {
  const versions = (state.versions && state.versions.versions) || [];
  const cmp = state.compare;
  if (versions.length < 2 || !cmp.base || !cmp.new || cmp.base === cmp.new) return null;
  return ["compare", `outcome (compare ${cmp.base} → ${cmp.new})`];
}

function fillColorOptions() {
  const sel = $("#color-by");
  const opts = [
    ["outcome", "outcome (correct / wrong / unlabeled)"],
    ["cluster", "cluster"],
    ["label", "class (ground truth)"],
    ["pred_label", "predicted class"],
  ];
  for (const s of scoreFields()) opts.push([`score:${s}`, `score: ${s.replace("_", " ")}`]);
  for (const f of metadataFields()) opts.push([`meta:${f}`, `metadata: ${f}`]);
  const cmp = compareOption();
  if (cmp) opts.splice(1, 0, cmp);
  sel.replaceChildren(...opts.map(([v, t]) => h("option", { value: v, text: t })));
  if (!opts.some(([v]) => v === state.colorBy)) state.colorBy = "outcome";
  sel.value = state.colorBy;
}

async function setColorBy(value) {
  state.colorBy = value;
  if (value === "compare") {
    emit("map-status", "loading the comparison's outcome of each point…");
    try {
      await busy(loadComparePoints());
    } finally {
      emit("map-status", "");
    }
    if (state.colorBy === value) recolor();
    return;
  }
  const field = colorField(value);
  if (field && !state.pts.columns[field]) {
    emit("map-status", `loading ${field} for ${state.pts.n.toLocaleString()} points…`);
    try {
      await busy(loadPointColumn(field));
    } finally {
      emit("map-status", "");
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

function recolor() {
  const pts = state.pts;
  if (!pts) return;
  const rgba = new Uint8Array(pts.n * 4);
  const put = (i, rgb, a = 215) => {
    rgba[4 * i] = rgb[0];
    rgba[4 * i + 1] = rgb[1];
    rgba[4 * i + 2] = rgb[2];
    rgba[4 * i + 3] = a;
  };
  const by = state.colorBy;
  const field = colorField(by);
  const col = field ? pts.columns[field] : null;
  const cmp = by === "compare" ? state.compare.points : null;
  let legend;
  if (cmp) legend = colorCompare(pts, cmp, put);
  else if (by === "outcome" || by === "compare" || (field && !col)) legend = colorOutcomes(pts, put);
  else if (by === "cluster") legend = colorClusters(pts, put);
  else if (col.kind === "number") legend = colorNumbers(pts.n, col, field, put);
  else legend = colorCategories(pts.n, col, field, put);
  emit("colors", rgba);
  renderLegend(legend);
  $("#legend").dataset.colorBy = cmp || (by !== "compare" && (col || !field)) ? by : "outcome";
}

// each colorX(…, put) calls put(i, rgb, alpha) for every point and returns the legend's items

function colorOutcomes(pts, put) {
  const names = pts.outcomeNames;
  const rgbs = names.map((nm) => hexRGB(OUTCOME_COLORS[nm] || NULL_COLOR));
  const alphas = names.map((nm) => OUTCOME_ALPHA[nm] || 230);
  const counts = new Array(names.length).fill(0);
  for (let i = 0; i < pts.n; i++) {
    const c = pts.outcome[i];
    counts[c]++;
    put(i, rgbs[c], alphas[c]);
  }
  const legend = [];
  names.forEach(
    (nm, c) => counts[c] && legend.push({ color: OUTCOME_COLORS[nm] || NULL_COLOR, name: OUTCOME_NAMES[nm] || nm, count: counts[c] })
  );
  return legend;
}

const COMPARE_ORDER = ["fixed", "broken", "still_wrong", "still_right", "unlabeled", "no_prediction"];

/** compare outcomes (codes of GET /compare/points); the legend in COMPARE_ORDER, each with data-outcome */
function colorCompare(pts, cmp, put) {
  const names = cmp.outcomes;
  const rgbs = names.map((nm) => hexRGB(COMPARE_COLORS[nm] || NULL_COLOR));
  const alphas = names.map((nm) => COMPARE_ALPHA[nm] || 200);
  const counts = new Array(names.length).fill(0);
  for (let i = 0; i < pts.n; i++) {
    const c = cmp.codes[i];
    counts[c]++;
    put(i, rgbs[c], alphas[c]);
  }
  const at = (nm) => names.indexOf(nm);
  return COMPARE_ORDER.filter((nm) => at(nm) >= 0 && counts[at(nm)]).map((nm) => ({
    color: COMPARE_COLORS[nm],
    name: COMPARE_NAMES[nm],
    count: counts[at(nm)],
    outcome: nm,
  }));
}

function colorClusters(pts, put) {
  const counts = new Map();
  for (let i = 0; i < pts.n; i++) {
    const c = pts.cluster[i];
    counts.set(c, (counts.get(c) || 0) + 1);
    put(i, c < 0 ? hexRGB(NULL_COLOR) : hexRGB(CATEGORICAL[c % CATEGORICAL.length]), c < 0 ? 120 : 215);
  }
  const keys = [...counts.keys()].sort((a, b) => a - b);
  const legend = keys.slice(0, 24).map((c) => ({
    color: c < 0 ? NULL_COLOR : CATEGORICAL[c % CATEGORICAL.length],
    name: c < -1 ? "not clustered" : clusterName(c),
    count: counts.get(c),
  }));
  if (keys.length > 24) legend.push({ color: "#ffffff", name: `… ${keys.length - 24} more clusters`, count: null });
  return legend;
}

function colorNumbers(n, col, field, put) {
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
  const legend = [];
  if (Number.isFinite(lo)) legend.push({ ramp: true, lo, hi, name: field.replace(/_/g, " ") });
  if (missing) legend.push({ color: NULL_COLOR, name: "no value", count: missing });
  return legend;
}

function colorCategories(n, col, field, put) {
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
  const legend = [];
  cats.forEach((nm, c) => counts[c] && legend.push({ color: CATEGORICAL[c % CATEGORICAL.length], name: String(nm), count: counts[c] }));
  if (counts[cats.length]) legend.push({ color: "#7f7f7f", name: "other", count: counts[cats.length] });
  if (counts[cats.length + 1]) {
    const none = field === "label" ? "unlabeled" : "no value";
    legend.push({ color: NULL_COLOR, name: none, count: counts[cats.length + 1] });
  }
  return legend;
}

function renderLegend(items) {
  $("#legend").replaceChildren(...items.map(legendItem));
}

function legendItem(it) {
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
    { class: "item", "data-outcome": it.outcome },
    h("span", { class: "sw", style: `background:${it.color}` }),
    h("span", { text: it.name }),
    it.count !== null && it.count !== undefined ? h("span", { class: "muted", text: it.count.toLocaleString() }) : null
  );
}
