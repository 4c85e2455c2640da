// "Failure clusters" tab (#tab-clusters): the ranked cluster table (with each cluster's common trait),
// the banner when the analysis is older than the data (GET /clusters' `freshness`: rows whose labels or
// predictions changed, new rows), and one cluster opened (highlighted and focused on the map, its
// facts, worst failures and typical members); its rows can be selected or used as seeds of "Find
// similar" (request "mine"). "Analyze again" in the banner is the request "analyze" (summary.js).

import { ApiError, getJSON } from "../api.js";
import { clusterName, commonTrait, dsPath } from "../data.js";
import { $, $$, h, pct } from "../dom.js";
import { clusterIndices, emit, on, setActiveCluster, setAnalysis, setClusters, setSelection, state } from "../state.js";
import { fillGrid } from "../tiles.js";

const HINT = "Clusters of the map ranked by how often the model is wrong in them. Click one to see it.";
const COLS = 6;
let emptyNote = ""; // the table's text when the dataset has no analysis (the API's sentence)

export function init() {
  on("dataset", () => {
    // nothing of the previous dataset stays while the next one loads
    $("#cluster-view").hidden = true;
    $("#cluster-hint").textContent = HINT;
    $("#cluster-table tbody").replaceChildren();
    $("#cluster-table tfoot").replaceChildren();
    renderBanner(null);
  });
  on("clusters", renderClusters);
  on("analysis", renderBanner);
  on("cluster", (cid) =>
    $$("#cluster-table tbody tr").forEach((tr) =>
      cid === null ? tr.classList.remove("on") : tr.classList.toggle("on", Number(tr.dataset.cluster) === cid)
    )
  );
  $("#cluster-select").addEventListener("click", () => {
    if (state.activeCluster === null) return;
    setSelection(clusterIndices(state.activeCluster), `cluster #${state.activeCluster}`);
  });
  $("#cluster-mine").addEventListener("click", () => {
    if (state.activeCluster === null) return;
    emit("mine", { seeds: { cluster: state.activeCluster, failures: true }, label: `the failures of cluster #${state.activeCluster}` });
  });
}

/** GET the clusters (a dataset not analyzed yet: the API's sentence in the table, no clusters). */
export async function loadClusters() {
  const ds = state.ds;
  let body;
  try {
    body = await getJSON(dsPath("/clusters"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && /analy/i.test(err.detail || err.title)) {
      if (state.ds !== ds) return;
      emptyNote = err.detail || err.title;
      setAnalysis(null);
      setClusters([], null); // Find similar and the map drop the previous dataset's clusters too
      return;
    }
    throw err;
  }
  if (state.ds !== ds) return; // another dataset was opened meanwhile
  emptyNote = "";
  const clusters = body.clusters || [];
  $("#cluster-hint").textContent =
    `${body.n_failure_clusters ?? 0} failure clusters among ${body.n_clusters ?? clusters.length} ` +
    `(overall error rate ${pct(body.base_error_rate)}). Click one to see it on the map with its images.`;
  const { clusters: _, ...analysis } = body;
  setAnalysis(analysis);
  setClusters(clusters, body.base_error_rate);
}

/** #analysis-banner: shown when the analysis' figures are older than the data */
function renderBanner(analysis) {
  const banner = $("#analysis-banner");
  const f = analysis && analysis.freshness;
  banner.hidden = !(f && f.stale);
  if (banner.hidden) return banner.replaceChildren();
  const changes = [];
  if (f.changed_rows) changes.push(`${f.changed_rows.toLocaleString()} rows changed label or prediction`);
  if (f.new_rows) changes.push(`${f.new_rows.toLocaleString()} new rows are not on the map`);
  if (f.removed_rows) changes.push(`${f.removed_rows.toLocaleString()} rows of the map were removed`);
  const when = (f.analyzed_at || "").slice(0, 16).replace("T", " ");
  const text =
    `The analysis is older than the data: since it ran${when ? ` (${when} UTC)` : ""}, ${changes.join(", ")}. ` +
    "The error rates and clusters below are from before; analyze again to update them.";
  const button = h("button", { type: "button", class: "primary", text: "Analyze again", onclick: () => emit("analyze") });
  banner.replaceChildren(h("p", { text }), button);
}

function traitText(t) {
  return t ? `${t.field}=${t.value} ${pct(t.share)} (dataset ${pct(t.datasetShare)})` : "–";
}

function renderClusters() {
  const clusters = state.clusters;
  const tbody = $("#cluster-table tbody");
  const failing = clusters.filter((c) => c.failure_rank);
  const shown = state.showAllClusters || !failing.length ? clusters : failing;
  tbody.replaceChildren();
  if (!clusters.length) {
    const text = emptyNote || "No clusters: run the analysis again.";
    tbody.append(h("tr", {}, h("td", { colspan: COLS, class: "muted", text })));
  }
  const maxRate = Math.max(0.01, ...clusters.map((c) => c.error_rate || 0));
  for (const c of shown) tbody.append(clusterRow(c, maxRate));
  const foot = $("#cluster-table tfoot");
  foot.replaceChildren();
  if (failing.length && failing.length < clusters.length) {
    // the noise row (id -1) is listed but is not a cluster: the hint above counts clusters only
    const real = clusters.filter((c) => c.id !== -1).length;
    const noise = real < clusters.length ? " and noise" : "";
    const label = state.showAllClusters
      ? "Show only the failure clusters"
      : `Show all ${real} clusters${noise} (${clusters.length - failing.length} more)`;
    const toggle = () => {
      state.showAllClusters = !state.showAllClusters;
      renderClusters();
    };
    foot.append(h("tr", {}, h("td", { colspan: COLS }, h("button", { type: "button", class: "link", text: label, onclick: toggle }))));
  }
}

function clusterRow(c, maxRate) {
  const name = clusterName(c.id) + (c.failure_rank ? ` ⚑${c.failure_rank}` : "");
  return h(
    "tr",
    {
      "data-cluster": c.id,
      class: [c.failure_rank ? "failure" : c.id === -1 ? "noise" : "other", c.id === state.activeCluster ? "on" : ""].join(" "),
      title: c.failure_rank ? `failure cluster, rank ${c.failure_rank}` : "",
      onclick: () => openCluster(c),
    },
    h("td", { class: "nowrap", text: name }),
    h("td", { text: (c.size ?? 0).toLocaleString() }),
    h(
      "td",
      { class: "rate", title: c.error_rate === null || c.error_rate === undefined ? "" : `${c.errors} wrong of ${c.judged} judged` },
      h("span", { class: "bar", style: `width:${Math.round((40 * (c.error_rate || 0)) / maxRate)}px` }),
      c.error_rate === null || c.error_rate === undefined ? "–" : pct(c.error_rate),
      c.error_rate === null || c.error_rate === undefined ? null : h("span", { class: "muted", text: ` ${c.errors}/${c.judged}` })
    ),
    h("td", { text: c.lift === null || c.lift === undefined ? "–" : `${Number(c.lift).toFixed(1)}×` }),
    h("td", { text: topPair(c) }),
    traitCell(commonTrait(c))
  );
}

function traitCell(t) {
  if (!t) return h("td", { class: "trait muted", text: "–" });
  const share = (x) => `${Math.round(100 * x)}%`;
  return h(
    "td",
    { class: "trait", title: `${traitText(t)}: held by ${pct(t.share)} of the cluster, ${pct(t.datasetShare)} of the dataset` },
    h("span", { class: "tv", text: `${t.field}=${t.value}` }),
    h("span", { class: "muted", text: `${share(t.share)} vs ${share(t.datasetShare)} overall` })
  );
}

function topPair(c) {
  const p = (c.top_confusions || [])[0];
  return p ? `${p.label} → ${p.pred} (${p.count})` : "–";
}

async function openCluster(c) {
  const cid = Number(c.id);
  setActiveCluster(cid);
  const idx = clusterIndices(cid);
  emit("highlight", { indices: idx, focus: true, status: `cluster #${cid}: ${idx.length.toLocaleString()} points highlighted` });
  $("#cluster-view").hidden = false;
  describeCluster(c, cid, idx.length);
  $("#cluster-view").scrollIntoView({ block: "start", behavior: "instant" });
  const worst = c.worst_failures || [];
  const typical = c.typical || [];
  await Promise.all([fillGrid($("#cluster-worst"), worst.slice(0, 24)), fillGrid($("#cluster-typical"), typical.slice(0, 24))]);
  if (!worst.length) $("#cluster-worst").append(h("p", { class: "muted", text: "No labeled failures in this cluster." }));
}

/** #cluster-title and #cluster-facts */
function describeCluster(c, cid, points) {
  const parts = [`Cluster #${cid}: ${(c.size ?? points).toLocaleString()} rows`];
  if (c.error_rate !== null && c.error_rate !== undefined) parts.push(`${pct(c.error_rate)} wrong`);
  if (c.lift) parts.push(`${Number(c.lift).toFixed(1)}× the overall error rate`);
  $("#cluster-title").textContent = parts.join(", ");
  const facts = [];
  if (c.dominant_label) facts.push(`ground truth mostly ${c.dominant_label.value} (${pct(c.dominant_label.share)})`);
  if (c.dominant_pred) facts.push(`predicted mostly ${c.dominant_pred.value} (${pct(c.dominant_pred.share)})`);
  if ((c.top_confusions || []).length) {
    facts.push(`confusions: ${c.top_confusions.map((p) => `${p.label}→${p.pred} ×${p.count}`).join(", ")}`);
  }
  const trait = commonTrait(c);
  if (trait) facts.push(`common trait ${traitText(trait)}`);
  if (c.unlabeled) facts.push(`${c.unlabeled} unlabeled rows in it`);
  $("#cluster-facts").textContent = facts.join(" · ");
}
