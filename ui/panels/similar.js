// "Find similar" tab (#tab-mine): the mining form (seeds: the selection, an issue, a cluster or a text),
// POST /mine, and its own result list (state.results.mine, results.js): tiles with distances, × to
// drop one, show on the map, flag as an issue, export (request "export-source"). Answers the request
// "mine" ({seeds, label}) from the other panels. ("Label next" has its own list in its own tab.)

import { describeError, postJSON } from "../api.js";
import { dsPath } from "../data.js";
import { $, busy, h, num, pct, showError, toast, toggleSourceFields } from "../dom.js";
import { initResultList } from "../results.js";
import { emit, indicesOf, minedIds, on, selectedIds, setMined } from "../state.js";

export function init() {
  on("mine", ({ seeds, label }) => runMine(seeds, label));
  initResultList("mine", { caption: (r) => (r && r.distance !== undefined && r.distance !== null ? `d ${num(r.distance, 2)}` : undefined) });
  on("dataset", () => ($("#mine-status").textContent = ""));
  on("issues", (issues) =>
    $("#mine-form").elements.issue.replaceChildren(
      ...[...issues].reverse().map((is) => h("option", { value: is.id, text: `${is.name} (${is.count})` }))
    )
  );
  on("clusters", (clusters) =>
    $("#mine-form").elements.cluster.replaceChildren(
      ...clusters
        .filter((c) => c.id !== -1)
        .map((c) => h("option", { value: c.id, text: `#${c.id} (${pct(c.error_rate)} wrong, ${c.size} rows)` }))
    )
  );
  wireForms();
}

function wireForms() {
  const mineForm = $("#mine-form");
  mineForm.elements.source.addEventListener("change", () => toggleSourceFields(mineForm));
  mineForm.addEventListener("submit", (e) => {
    e.preventDefault();
    submitMine(mineForm.elements);
  });
}

/** the form's seeds, or a toast saying what is missing */
function submitMine(f) {
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
}

async function runMine(seeds, label) {
  const form = $("#mine-form").elements;
  const budget = Number(form.budget.value) || 50;
  const includeExported = form.include_exported.checked;
  const status = $("#mine-status");
  status.textContent = `Searching the unlabeled pool near ${label}…`;
  emit("tab", "mine");
  try {
    const res = await busy(postJSON(dsPath("/mine"), { seeds, budget, include_exported: includeExported }));
    setMined("mine", res.items, `similar to ${label}`, res.selection_id);
    emit("focus", indicesOf(minedIds("mine")));
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
