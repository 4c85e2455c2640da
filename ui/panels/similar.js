// "Find similar" tab (#tab-mine): the mining form (seeds: the selection, an issue, a cluster or a text),
// POST /mine, and the result list shared with "Label next" (state.mined): tiles with distances, ×
// to drop one, show on the map, flag as an issue, export (request "export-source"). Answers the
// request "mine" ({seeds, label}) from the other panels.

import { describeError, postJSON } from "../api.js";
import { dsPath, flagIssue } from "../data.js";
import { $, busy, h, num, pct, showError, toast, toggleSourceFields } from "../dom.js";
import { dropMined, emit, indicesOf, minedIds, on, selectedIds, setMined, state } from "../state.js";
import { fillGrid } from "../tiles.js";

export function init() {
  on("mine", ({ seeds, label }) => runMine(seeds, label));
  on("mined", () => {
    renderMined();
    showMinedOnMap();
  });
  on("mined-drop", (id) => {
    $(`#mine-grid .tile[data-id="${CSS.escape(id)}"]`)?.remove();
    $("#mine-count").textContent = `${state.mined.length} results ${state.minedLabel}`;
    showMinedOnMap();
  });
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
  $("#mine-show").addEventListener("click", () => {
    showMinedOnMap();
    emit("focus", indicesOf(minedIds()));
  });
  $("#mine-flag-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = e.target.elements.name.value.trim();
    try {
      if (await flagIssue(name, minedIds())) e.target.reset();
    } catch (err) {
      showError(err, "Flagging");
    }
  });
  $("#mine-export").addEventListener("click", () => emit("export-source", "mined"));
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
    setMined(res.items, `similar to ${label}`, res.selection_id);
    emit("focus", indicesOf(minedIds()));
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

function renderMined() {
  $("#mine-results").hidden = !state.mined.length;
  $("#mine-count").textContent = `${state.mined.length} results ${state.minedLabel}`;
  const byId = new Map(state.mined.map((r) => [r.id, r]));
  fillGrid($("#mine-grid"), minedIds(), {
    tileOptions: (id) => {
      const r = byId.get(id);
      return {
        caption: r && r.distance !== undefined && r.distance !== null ? num(r.distance, 2) : undefined,
        onDrop: dropMined,
      };
    },
  });
}

function showMinedOnMap() {
  const idx = indicesOf(minedIds());
  emit("highlight", { indices: idx, status: `${idx.length} results highlighted` });
}
