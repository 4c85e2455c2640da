// "Label next" tab (#tab-next): POST /select (uncertainty strategy, budget, explore share); the chosen
// rows become this tab's own result list (state.results.next, results.js), under a header that says
// how they were chosen: review, drop, flag, show on the map, export.

import { describeError, postJSON } from "../api.js";
import { dsPath } from "../data.js";
import { $, busy, showError } from "../dom.js";
import { initResultList } from "../results.js";
import { emit, indicesOf, minedIds, on, setMined } from "../state.js";

export function init() {
  initResultList("next");
  on("dataset", () => ($("#select-status").textContent = ""));
  $("#select-form").addEventListener("submit", runSelect);
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
    const how = f.strategy.selectedOptions[0].textContent;
    setMined("next", res.items, `to label next, chosen by ${how} (explore share ${body.explore})`, res.selection_id);
    emit("focus", indicesOf(minedIds("next")));
    const parts = Object.entries(res.counts || {}).map(([k, v]) => `${v} by ${k}`).join(", ");
    $("#select-status").textContent =
      `${res.returned} of ${res.candidates.toLocaleString()} candidates chosen (${parts}). ` +
      `Drop any you do not want, then export them.`;
  } catch (err) {
    $("#select-status").textContent = describeError(err);
    showError(err, "Choosing rows");
  }
}
