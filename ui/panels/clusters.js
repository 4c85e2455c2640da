// "Failure clusters" tab (#tab-clusters): the ranked cluster table, and one cluster opened (highlighted
// and focused on the map, its facts, worst failures and typical members); its rows can be selected or
// used as seeds of "Find similar" (request "mine").

import { ApiError, getJSON } from "../api.js";
import { dsPath } from "../data.js";
import { $, $$, h, pct } from "../dom.js";
import { clusterIndices, emit, on, setActiveCluster, setClusters, setSelection, state } from "../state.js";
import { fillGrid } from "../tiles.js";

export function init() {
  on("dataset", () => ($("#cluster-view").hidden = true));
  on("clusters", renderClusters);
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

/** GET the clusters (a dataset not analyzed yet: the API's sentence in the table). */
export async function loadClusters() {
  const tbody = $("#cluster-table tbody");
  let body;
  try {
    body = await getJSON(dsPath("/clusters"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && /analy/i.test(err.detail || err.title)) {
      // no setClusters (no "clusters" event): as before the split, Find similar keeps its options
      state.clusters = [];
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted", text: err.detail })));
      return;
    }
    throw err;
  }
  const clusters = body.clusters || [];
  $("#cluster-hint").textContent =
    `${body.n_failure_clusters ?? 0} failure clusters among ${body.n_clusters ?? clusters.length} ` +
    `(overall error rate ${pct(body.base_error_rate)}). Click one to see it on the map with its images.`;
  setClusters(clusters, body.base_error_rate);
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
  for (const c of shown) tbody.append(clusterRow(c, maxRate));
  const foot = $("#cluster-table tfoot");
  foot.replaceChildren();
  if (failing.length && failing.length < clusters.length) {
    const label = state.showAllClusters
      ? "Show only the failure clusters"
      : `Show all ${clusters.length} clusters (${clusters.length - failing.length} more)`;
    const toggle = () => {
      state.showAllClusters = !state.showAllClusters;
      renderClusters();
    };
    foot.append(h("tr", {}, h("td", { colspan: 5 }, h("button", { type: "button", class: "link", text: label, onclick: toggle }))));
  }
}

function clusterRow(c, maxRate) {
  const name = c.id === -1 ? "noise" : c.failure_rank ? `#${c.id} ⚑${c.failure_rank}` : `#${c.id}`;
  return h(
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
  if (c.unlabeled) facts.push(`${c.unlabeled} unlabeled rows in it`);
  $("#cluster-facts").textContent = facts.join(" · ");
}
