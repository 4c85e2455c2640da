// "Slices" tab (#tab-slices): where the model fails, two ways side by side. Left, the embedding slices:
// the failure clusters of the analysis (state.clusters, the same as the cluster table). Right, the
// metadata slices (GET /slices: conditions on metadata and image properties with high error rates),
// fetched when the tab is first shown for a dataset (the server computes them on demand). A card's
// "Select" selects its rows (a cluster's points; a slice through the request "filter"), "Find
// similar" mines unlabeled rows from it (request "mine"). Below, the likely label mistakes (GET
// /label-issues: confident learning, train rows judged by a cross-validated probe, never by the model
// that learnt them): a tile per row, given label -> the class it looks like; the same two actions.

import { describeError, getJSON } from "../api.js";
import { commonTrait, dsPath } from "../data.js";
import { $, busy, h, pct, showError } from "../dom.js";
import { clusterIndices, emit, on, setActiveCluster, setSelection, state } from "../state.js";
import { fillGrid } from "../tiles.js";

/** label mistakes shown as tiles (the rest: "Select all on the map") */
const ISSUE_TILES = 24;
const ISSUE_FILTER = [{ field: "label_issue", op: "eq", value: true }];

let loadedFor = null; // the dataset whose metadata slices are shown

export function init() {
  on("dataset", () => {
    loadedFor = null;
    $("#meta-slices").replaceChildren();
    $("#slices-status").textContent = "";
    $("#label-issues").replaceChildren();
    $("#label-issues-status").textContent = "";
    $("#label-issues-actions").hidden = true;
  });
  $("#label-issues-select").addEventListener("click", () =>
    emit("filter", { filters: ISSUE_FILTER, label: "likely label mistakes" })
  );
  $("#label-issues-mine").addEventListener("click", () =>
    emit("mine", { seeds: { label_issues: true }, label: "the likely label mistakes" })
  );
  on("clusters", renderClusterSlices);
  on("tab", (name) => name === "slices" && ensureSlices());
}

function ensureSlices() {
  if (!state.ds || loadedFor === state.ds) return;
  const ds = state.ds;
  loadedFor = ds;
  $("#slices-status").textContent = "finding metadata slices with high error rates…";
  busy(getJSON(dsPath("/slices")))
    .then((body) => state.ds === ds && renderMetaSlices(body))
    .catch((err) => {
      loadedFor = null;
      $("#slices-status").textContent = describeError(err);
      showError(err, "Loading the slices");
    });
  $("#label-issues-status").textContent = "looking for likely label mistakes…";
  getJSON(dsPath("/label-issues"), { query: { limit: ISSUE_TILES } })
    .then((body) => state.ds === ds && renderLabelIssues(body))
    .catch((err) => {
      if (state.ds !== ds) return;
      $("#label-issues-status").textContent = `Label mistakes: ${describeError(err)}`;
    });
}

function renderLabelIssues(body) {
  const judged = (body.counts.model || 0) + (body.counts.probe || 0);
  const by = body.counts.probe ? "a cross-validated probe on the embeddings" : "the model's probabilities";
  const stale = body.stale ? ` Computed on table version ${body.version}; the data has changed since.` : "";
  const shown = body.total > body.items.length ? ` The ${body.items.length} most likely:` : "";
  $("#label-issues-status").textContent = body.total
    ? `${body.total.toLocaleString()} of ${judged.toLocaleString()} judged labeled rows look mislabeled ` +
      `(confident learning; judged by ${by}).${stale}${shown}`
    : `No likely label mistake among ${judged.toLocaleString()} judged labeled rows.${stale}`;
  $("#label-issues-actions").hidden = !body.total;
  const byId = new Map(body.items.map((it) => [it.id, it]));
  fillGrid(
    $("#label-issues"),
    body.items.map((it) => it.id),
    {
      ownCaptions: true,
      tileOptions: (id) => {
        const it = byId.get(id);
        return {
          caption: `${it.label} → looks like ${it.suggested}`,
          title: `${id} (${it.split}): labeled ${it.label}, p(${it.label}) ${it.self_confidence.toFixed(2)}; ` +
            `looks like ${it.suggested}, p ${it.suggested_confidence.toFixed(2)} (judged by the ${it.judged_by})`,
        };
      },
    }
  );
}

function figures(s) {
  const parts = [`${pct(s.error_rate)} wrong`];
  if (s.lift) parts.push(`${Number(s.lift).toFixed(1)}×`);
  parts.push(`${(s.size ?? s.rows ?? 0).toLocaleString()} rows`);
  if (s.unlabeled) parts.push(`${s.unlabeled.toLocaleString()} unlabeled`);
  return parts.join(" · ");
}

function card(title, detail, actions, attrs = {}) {
  return h(
    "div",
    { class: "slice-card", ...attrs },
    h("div", { class: "slice-title", text: title }),
    h("div", { class: "muted", text: detail }),
    h("div", { class: "actions" }, ...actions.map(([text, onclick]) => h("button", { type: "button", text, onclick })))
  );
}

function renderClusterSlices(clusters) {
  const failing = clusters.filter((c) => c.failure_rank).sort((a, b) => a.failure_rank - b.failure_rank);
  const list = $("#cluster-slices");
  if (!failing.length) {
    list.replaceChildren(h("p", { class: "muted", text: clusters.length ? "No failure cluster." : "Not analyzed yet." }));
    return;
  }
  list.replaceChildren(
    ...failing.map((c) => {
      const conf = (c.top_confusions || [])[0];
      const title = `#${c.id} ⚑${c.failure_rank}${conf ? `: ${conf.label} → ${conf.pred}` : ""}`;
      const select = () => {
        setActiveCluster(c.id);
        setSelection(clusterIndices(c.id), `cluster #${c.id}`, { focus: true });
      };
      const mine = () => emit("mine", { seeds: { cluster: c.id, failures: true }, label: `the failures of cluster #${c.id}` });
      const trait = commonTrait(c);
      const detail = figures(c) + (trait ? ` · mostly ${trait.field}=${trait.value}` : "");
      return card(title, detail, [["Select", select], ["Find similar", mine]], { "data-cluster": c.id });
    })
  );
}

function renderMetaSlices(body) {
  const note = body.stale ? ` Computed on table version ${body.version}; the data has changed since.` : "";
  $("#slices-status").textContent =
    `${body.slices.length} metadata slices (overall error rate ${pct(body.base_error_rate)}, errors judged on ${body.judged_on}).${note}`;
  const list = $("#meta-slices");
  if (!body.slices.length) {
    list.replaceChildren(h("p", { class: "muted", text: "No metadata slice has a notably high error rate." }));
    return;
  }
  list.replaceChildren(
    ...body.slices.map((s) => {
      const select = () => emit("filter", { filters: s.filters, label: s.description });
      const mine = () => emit("mine", { seeds: { slice: s.id }, label: `the failures of slice ${s.description}` });
      return card(s.description, figures(s), [["Select", select], ["Find similar", mine]], { "data-slice": s.id });
    })
  );
}
