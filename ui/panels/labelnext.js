// "Label next" tab (#tab-next): POST /select (uncertainty strategy, budget, explore share); the chosen
// rows become the result list (state.mined), reviewed in "Find similar".

import { describeError, postJSON } from "../api.js";
import { dsPath } from "../data.js";
import { $, busy, showError } from "../dom.js";
import { emit, setMined } from "../state.js";

export function init() {
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
    setMined(res.items, `chosen by ${body.strategy} (budget ${body.budget}, explore ${body.explore})`, res.selection_id);
    const parts = Object.entries(res.counts || {}).map(([k, v]) => `${v} by ${k}`).join(", ");
    $("#select-status").textContent =
      `${res.returned} of ${res.candidates.toLocaleString()} candidates chosen (${parts}). ` +
      `Review them in “Find similar”, drop any, then export.`;
    emit("tab", "mine");
  } catch (err) {
    $("#select-status").textContent = describeError(err);
    showError(err, "Choosing rows");
  }
}
