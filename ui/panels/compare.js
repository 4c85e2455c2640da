// "Compare" tab (#tab-compare): two model versions of the open dataset (GET /versions, /compare): the
// overall line, the failure clusters' table (regressions first, as the API orders them), per class, per
// slice and per metadata value (collapsible); a click on a row lists its fixed and broken rows as tiles
// (GET /compare/rows). The pair chosen is shared state (setComparePair → "compare"): the map's coloring
// "outcome (compare)" follows it; "Color the map" is the request "color-by". Loaded when shown.

import { describeError, getJSON } from "../api.js";
import { clusterName, dsPath, loadVersions } from "../data.js";
import { $, $$, busy, h, num, option, pct, showError } from "../dom.js";
import { emit, on, setComparePair, state } from "../state.js";
import { fillGrid } from "../tiles.js";

const EXAMPLES = 40; // tiles per outcome
const VERDICTS = { regression: "regression", improvement: "improvement", no_change: "no change", no_data: "no data" };
let shown = null; // the key (dataset, pair, split) of the report on screen

export function init() {
  on("dataset", () => {
    shown = null;
    $("#compare-body").hidden = true;
    $("#compare-status").textContent = "";
  });
  on("opened", () => loadVersions().catch((err) => showError(err, "Loading the model versions")));
  on("versions", fillVersions);
  on("tab", (name) => name === "compare" && ensureReport());
  const form = $("#compare-form");
  form.addEventListener("change", () => {
    const f = form.elements;
    setComparePair(f.base.value, f.new.value, f.split.value);
    ensureReport();
  });
  $("#compare-color").addEventListener("click", () => emit("color-by", "compare"));
}

/** the versions' names, oldest first */
const versionNames = () =>
  [...((state.versions && state.versions.versions) || [])]
    .sort((a, b) => String(a.created_at || "").localeCompare(String(b.created_at || "")))
    .map((v) => v.name);

/** Fill the selectors (split: val when there is one, as including the rows a model trained on flatters it). */
function fillVersions(versions) {
  const names = versionNames();
  const form = $("#compare-form");
  const enough = names.length >= 2;
  form.hidden = !enough;
  renderHint(names);
  if (!enough) {
    $("#compare-body").hidden = true;
    return;
  }
  // the version before the current one → the current one (current first: it → the latest)
  const current = names.includes(versions.current) ? versions.current : names[names.length - 1];
  const at = names.indexOf(current);
  const base = at > 0 ? names[at - 1] : current;
  const newer = at > 0 ? current : names[names.length - 1];
  const f = form.elements;
  f.base.replaceChildren(...names.map((n) => option(n, n === versions.current ? `${n} (current)` : n)));
  f.new.replaceChildren(...names.map((n) => option(n, n === versions.current ? `${n} (current)` : n)));
  const splits = Object.keys((state.info && state.info.counts && state.info.counts.by_split) || {}).filter(
    (s) => s !== "(none)" && s !== "unlabeled"
  );
  f.split.replaceChildren(option("", "all labeled rows"), ...splits.map((s) => option(s)));
  f.base.value = base;
  f.new.value = newer;
  f.split.value = splits.includes("val") ? "val" : "";
  setComparePair(base, newer, f.split.value);
  if (!$("#tab-compare").hidden) ensureReport();
}

function renderHint(names) {
  const hint = $("#compare-hint");
  if (names.length >= 2) {
    hint.textContent = "What the new model version fixed (wrong → right) and broke (right → wrong), with 95% bootstrap intervals.";
    return;
  }
  const ds = state.ds || "NAME";
  const one = names.length ? `Only one model version (${names[0]}).` : "No model versions recorded yet.";
  hint.replaceChildren(
    `${one} To compare, add a new model's predictions: `,
    h("code", { class: "cmd", text: `edgeminer ingest preds.jsonl --dataset ${ds} --model-version v2` })
  );
}

/** GET /compare for the chosen pair unless it is on screen already. */
function ensureReport() {
  const cmp = state.compare;
  if (!state.ds || versionNames().length < 2 || !cmp.base || !cmp.new) return;
  const key = `${state.ds}|${cmp.base}|${cmp.new}|${cmp.split}`;
  if (shown === key) return;
  shown = key;
  $("#compare-view").hidden = true;
  if (cmp.base === cmp.new) {
    $("#compare-body").hidden = true;
    $("#compare-status").textContent = "Choose two different versions.";
    return;
  }
  $("#compare-status").textContent = `comparing ${cmp.base} → ${cmp.new}…`;
  const query = { base: cmp.base, new: cmp.new };
  if (cmp.split) query.split = cmp.split;
  busy(getJSON(dsPath("/compare"), { query }))
    .then((body) => {
      if (shown !== key) return;
      $("#compare-status").textContent = "";
      renderReport(body);
    })
    .catch((err) => {
      if (shown === key) shown = null;
      $("#compare-body").hidden = true;
      $("#compare-status").textContent = describeError(err);
      showError(err, "Comparing the versions");
    });
}

function renderReport(rep) {
  const view = $("#compare-view"); // back to its place before the tables it may follow are replaced
  view.hidden = true;
  $("#compare-body").append(view);
  $("#compare-body").hidden = false;
  $("#compare-overall").replaceChildren(...overallLine(rep));
  const note = $("#compare-note");
  note.hidden = true;
  if (!rep.analysis) {
    note.hidden = false;
    note.textContent = "No analysis yet: run `edgeminer analyze` (or Analyze now) for the per-cluster table.";
  } else if (rep.analysis.stale) {
    note.hidden = false;
    note.textContent = "The clusters are from an analysis older than the data: analyze again to re-rank them.";
  }
  fillTable($("#compare-clusters"), rep.clusters, "cluster");
  fillTable($("#compare-classes"), rep.classes, "class");
  fillTable($("#compare-slices"), rep.slices, "slice");
  $("#compare-slices-box").hidden = !rep.slices.length;
  const metaFields = Object.keys(rep.metadata).filter((f) => f !== "slice");
  $("#compare-meta-box").hidden = !metaFields.length;
  $("#compare-meta").replaceChildren(
    ...metaFields.flatMap((f) => {
      const table = h("table", { class: "table cmp-table", "data-field": f });
      fillTable(table, rep.metadata[f], f);
      return [h("h4", { text: f }), table];
    })
  );
}

function overallLine(rep) {
  const o = rep.overall;
  const where = rep.split ? `split ${rep.split}` : "all labeled rows";
  const regressions = rep.regressions.length;
  return [
    h("strong", { text: `${rep.base} → ${rep.new}` }),
    ` on ${where}, ${o.n.toLocaleString()} rows judged: accuracy `,
    h("span", { class: "acc", text: `${pct(o.accuracy_base.value)} → ${pct(o.accuracy_new.value)}` }),
    ` (Δ ${points(o.delta.value)}, ${Math.round(100 * rep.confidence)}% interval ${interval(o.delta, points)}), `,
    h("span", { class: "fixed", text: `${o.fixed} fixed` }),
    ", ",
    h("span", { class: "broken", text: `${o.broken} broken` }),
    ", ",
    verdictChip(o.verdict),
    regressions
      ? h("strong", {
          class: "regressions",
          title: "clusters, classes and metadata values where the new version is significantly worse",
          text: ` · ${regressions} significant regression${regressions > 1 ? "s" : ""}`,
        })
      : "",
  ];
}

/** a difference in accuracy as signed percentage points */
function points(x) {
  if (x === null || x === undefined) return "–";
  const v = 100 * x;
  return `${v > 0 ? "+" : v < 0 ? "−" : "±"}${Math.abs(v).toFixed(1)} pt`;
}

/** compact forms for the table's interval lines: whole percents, "lo–hi" */
const pct0 = (x) => `${Math.round(100 * x)}`;
const points0 = (x) => {
  const v = Math.round(100 * x);
  return v > 0 ? `+${v}` : v < 0 ? `−${-v}` : "0";
};
const span = (iv, fmt) => (iv.low === null || iv.low === undefined ? "–" : `${fmt(iv.low)}…${fmt(iv.high)}`);
const interval = (iv, fmt) => (iv.low === null || iv.low === undefined ? "–" : `${fmt(iv.low)} to ${fmt(iv.high)}`);
const verdictChip = (v) => h("span", { class: `verdict ${v}`, text: VERDICTS[v] || v });

function fillTable(table, groups, kind) {
  const head = h(
    "tr",
    {},
    h("th", { text: kind }),
    h("th", { class: "num", text: "n" }),
    h("th", { text: "accuracy", title: "accuracy of base → new; below: the 95% intervals (%)" }),
    h("th", { text: "Δ", title: "accuracy new − base in points; below: its 95% interval" }),
    h("th", { class: "num", text: "fixed" }),
    h("th", { class: "num", text: "broken" }),
    h("th", { text: "verdict" })
  );
  const body = groups.length
    ? groups.map((g) => groupRow(g, kind))
    : [h("tr", { class: "other" }, h("td", { colspan: 7, text: "nothing to compare" }))];
  table.replaceChildren(h("thead", {}, head), h("tbody", {}, ...body));
}

function groupRow(g, kind) {
  const name = g.key === "cluster" ? clusterName(g.value) : String(g.value ?? "(none)");
  const rank = g.failure_rank ? h("small", { title: "failure rank", text: `⚑${g.failure_rank}` }) : null;
  const acc = `${pct(g.accuracy_base.value)} → ${pct(g.accuracy_new.value)}`;
  const accIv = `${span(g.accuracy_base, pct0)} → ${span(g.accuracy_new, pct0)}`;
  return h(
    "tr",
    { "data-key": g.key, "data-value": g.value ?? "", class: g.verdict, onclick: (e) => openGroup(g, e.currentTarget) },
    h("td", { class: "name" }, name, rank),
    h("td", { class: "num n", text: g.n }),
    h("td", { class: "acc" }, acc, h("small", { text: accIv })),
    h("td", { class: "delta" }, points(g.delta.value), h("small", { text: span(g.delta, points0) })),
    h("td", { class: "num fixed", text: g.fixed }),
    h("td", { class: "num broken", text: g.broken }),
    h("td", { class: "verdict-cell", title: g.p_value === null ? "" : `McNemar p = ${num(g.p_value, 4)}` }, verdictChip(g.verdict))
  );
}

/** A group's fixed and broken rows as tiles, under the table the row is in. */
async function openGroup(g, tr) {
  $$("#tab-compare tbody tr.on").forEach((r) => r.classList.remove("on"));
  tr.classList.add("on");
  const view = $("#compare-view");
  tr.closest("table").after(view);
  view.hidden = false;
  const what = g.key === "cluster" ? `cluster #${g.value}` : g.key === "label" ? `class ${g.value}` : `${g.key} = ${g.value}`;
  $("#compare-title").textContent = `${what}: ${g.fixed} fixed, ${g.broken} broken`;
  view.dataset.group = `${g.key}:${g.value}`;
  const cmp = state.compare;
  const query = { base: cmp.base, new: cmp.new, limit: EXAMPLES };
  if (cmp.split) query.split = cmp.split;
  if (g.key === "cluster") query.cluster = g.value;
  else {
    query.field = g.key; // without a value: the rows where the field is empty
    if (g.value !== null && g.value !== undefined) query.value = String(g.value);
  }
  try {
    await busy(Promise.all(["fixed", "broken"].map((outcome) => showExamples(outcome, { ...query, outcome }))));
  } catch (err) {
    showError(err, "Loading the examples");
  }
  view.scrollIntoView({ block: "nearest" });
}

async function showExamples(outcome, query) {
  const page = await getJSON(dsPath("/compare/rows"), { query });
  const more = page.total > page.items.length ? ` (the first ${page.items.length})` : "";
  $(`#compare-${outcome}-count`).textContent = `${page.total.toLocaleString()}${more}`;
  const byId = new Map(page.items.map((r) => [r.id, r]));
  const grid = $(`#compare-${outcome}`);
  await fillGrid(grid, page.items.map((r) => r.id), {
    ownCaptions: true,
    tileOptions: (id) => {
      const r = byId.get(id);
      const caption = `${r.label ?? "?"}: ${r.base_pred ?? "?"} → ${r.new_pred ?? "?"}`;
      const conf = `${num(r.base_confidence, 2)} → ${num(r.new_confidence, 2)}`;
      return { caption, kind: outcome, title: `${id}: label ${r.label}, ${state.compare.base} predicted ${r.base_pred}, ${state.compare.new} ${r.new_pred} (confidence ${conf})` };
    },
  });
  if (!page.items.length) grid.replaceChildren(h("p", { class: "muted wide", text: `no ${outcome} rows here` }));
}
