// edgeminer dashboard: the entry module (index.html loads it). Only wiring: the API-key prompt, the
// panels' init in order, the tabs, the dataset list and switch, boot. The panels live in panels/,
// talk through state.js (state + events) and never import each other; see README.md.

import { API, apiKey, describeError, getJSON, setApiKey, setKeyPrompt } from "./api.js";
import { dsPath, loadIssues, loadPoints } from "./data.js";
import { $, $$, busy, h, showError, toast } from "./dom.js";
import { emit, on, resetDataset, setInfo, state } from "./state.js";
import * as clusters from "./panels/clusters.js";
import * as coloring from "./panels/coloring.js";
import * as compare from "./panels/compare.js";
import * as detail from "./panels/detail.js";
import * as exporting from "./panels/export.js";
import * as insights from "./panels/insights.js";
import * as issues from "./panels/issues.js";
import * as labelnext from "./panels/labelnext.js";
import * as mappane from "./panels/mappane.js";
import * as selection from "./panels/selection.js";
import * as slices from "./panels/slices.js";
import * as similar from "./panels/similar.js";
import * as summary from "./panels/summary.js";
import * as tooltip from "./panels/tooltip.js";

const ui = {
  map: null,
};

// exposed for tests and the bench (read-only use)
window.edgeminer = { state, ui, ready: false, timings: {} };

// ---------------------------------------------------------------------------------------------
// API key: asked on a 401 (api.js calls the prompt), or replaced with the topbar's button
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

function replaceKey() {
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
}

// ---------------------------------------------------------------------------------------------
// tabs
// ---------------------------------------------------------------------------------------------

function showTab(name) {
  $$(".tabs button").forEach((b) => {
    b.classList.toggle("on", b.dataset.tab === name);
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
  });
  $$(".panel").forEach((p) => (p.hidden = p.id !== `tab-${name}`));
}

// ---------------------------------------------------------------------------------------------
// datasets
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
    mappane.mapMessage("No dataset yet. Ingest one with `edgeminer ingest`, or build the demo with `make demo`.");
    return null;
  }
  const wanted = new URLSearchParams(location.search).get("dataset");
  const pick = state.datasets.find((d) => d.name === wanted) || state.datasets[0];
  sel.value = pick.name;
  return pick.name;
}

/** Open a dataset: its points and info first (the map), the cluster and issue lists alongside. */
async function openDataset(name) {
  const t0 = performance.now();
  resetDataset(name);
  const url = new URL(location.href);
  url.searchParams.set("dataset", name);
  history.replaceState(null, "", url);
  // the map, the dataset's detail and the cluster / issue lists load in parallel
  const side = Promise.allSettled([clusters.loadClusters(), loadIssues()]);
  const [info] = await Promise.all([getJSON(dsPath()), loadPoints()]);
  setInfo(info); // → every panel fills its options and draws ("opened")
  window.edgeminer.timings.points = performance.now() - t0;
  window.edgeminer.timings.firstDraw = performance.now(); // since navigation start
  const results = await side;
  results.forEach((r) => r.status === "rejected" && showError(r.reason, "Loading a panel"));
  window.edgeminer.timings.panels = performance.now() - t0;
}

// ---------------------------------------------------------------------------------------------
// boot
// ---------------------------------------------------------------------------------------------

/** Panels in this order: listeners of one event run in the order they were added (see README.md). */
function initPanels() {
  on("tab", showTab); // before the panels: insights loads once its tab is visible
  on("reload", (name) => busy(openDataset(name)));
  mappane.init(); // the map first: it highlights a selection before the panels render it
  tooltip.init();
  detail.init();
  summary.init();
  selection.init(); // before coloring: coloring's "loading…" map status follows the selection's
  coloring.init();
  clusters.init();
  slices.init();
  issues.init(); // issues → Find similar → Export: the order the issue lists are filled in
  similar.init();
  labelnext.init();
  exporting.init();
  insights.init();
  compare.init();
  $$(".tabs button").forEach((b) => b.addEventListener("click", () => emit("tab", b.dataset.tab)));
  $("#dataset").addEventListener("change", (e) => busy(openDataset(e.target.value)).catch((err) => showError(err, "Opening the dataset")));
  $("#key-button").addEventListener("click", replaceKey);
}

async function main() {
  try {
    ui.map = mappane.createMap();
  } catch (err) {
    mappane.mapMessage(describeError(err));
    return;
  }
  initPanels();
  try {
    const name = await busy(loadDatasets());
    if (name) await busy(openDataset(name));
  } catch (err) {
    mappane.mapMessage(describeError(err));
    showError(err, "Loading");
  }
  state.ready = true;
  window.edgeminer.ready = true;
  window.edgeminer.timings.ready = performance.now();
  document.body.dataset.ready = "1";
}

main();
