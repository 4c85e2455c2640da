// "Selection" tab (#tab-selection): the filter form, the selection's count and source, its tiles (wrong
// predictions first, 48 a page), and what to do with it: flag it as an issue, find similar rows
// (request "mine"), export it (request "export-source"). Also answers the request "filter".

import { busy, $, showError, toast, option } from "../dom.js";
import { fetchIds, flagIssue, metadataFields, scoreFields } from "../data.js";
import { emit, indicesOf, on, selectedIds, setSelection, state } from "../state.js";
import { fillGrid } from "../tiles.js";

const PAGE = 48;

export function init() {
  on("opened", () => {
    fillFilterOptions();
    renderSelection();
  });
  on("selection", ({ switchTab }) => {
    renderSelection();
    if (switchTab && state.selection.indices.length) emit("tab", "selection");
  });
  on("filter", ({ filters, label }) => selectByFilters(filters, label));
  wireForms();
}

function wireForms() {
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
    emit("mine", { seeds: { ids }, label: `the ${ids.length} selected rows` });
  });
  $("#sel-export").addEventListener("click", () => emit("export-source", "selection"));
}

function renderSelection() {
  const n = state.selection.indices.length;
  $("#sel-badge").textContent = n ? n.toLocaleString() : "";
  $("#sel-count").textContent = n ? `${n.toLocaleString()} rows selected` : "Nothing selected.";
  $("#sel-source").textContent = n ? `from ${state.selection.source}` : "Use lasso or box on the map, or the filters.";
  emit("map-status", n ? `${n.toLocaleString()} selected` : "");
  const grid = $("#sel-grid");
  grid.replaceChildren();
  if (!n) {
    $("#sel-more").hidden = true;
    return;
  }
  const shown = firstToShow(state.selPage * PAGE);
  fillGrid(grid, shown.map((i) => state.pts.ids[i]));
  $("#sel-more").hidden = shown.length >= n;
  $("#sel-more").textContent = `Show more (${(n - shown.length).toLocaleString()} left)`;
}

/** wrong predictions first (they are what the person is looking for), then unlabeled, then correct */
function firstToShow(want) {
  const pts = state.pts;
  const buckets = [[], [], []];
  for (const i of state.selection.indices) {
    const o = pts.outcomeNames[pts.outcome[i]];
    const b = o === "correct" ? 2 : o === "unlabeled" || o === "no_prediction" ? 1 : 0;
    if (buckets[b].length < want) buckets[b].push(i);
  }
  return buckets.flat().slice(0, want);
}

async function applyFilters(e) {
  e.preventDefault();
  const filters = formFilters($("#filters"));
  await selectByFilters(filters, describeFilters(filters));
}

/** the filter form as API filters */
function formFilters(form) {
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
  return filters;
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

function fillFilterOptions() {
  const form = $("#filters");
  const info = state.info;
  const classes = info.classes || [];
  const splits = Object.keys((info.counts && info.counts.by_split) || {}).filter((s) => s !== "(none)");
  form.elements.split.replaceChildren(option("", "any"), ...splits.map((s) => option(s)));
  form.elements.label.replaceChildren(option("", "any"), ...classes.map((c) => option(c)));
  form.elements.pred_label.replaceChildren(option("", "any"), ...classes.map((c) => option(c)));
  form.elements.score.replaceChildren(option("", "none"), ...scoreFields().map((s) => option(s, s.replace("_", " "))));
  const metas = metadataFields();
  form.elements.meta_field.replaceChildren(option("", "none"), ...metas.map((m) => option(m)));
}
