// "Label next" tab (#tab-next): POST /select (uncertainty strategy, budget, explore share), or, for
// "from the failures", POST /mine around the model's failures with half the budget mined (spread over
// each failure mode's cluster, diversity "cover") and half by margin: the pick the active-learning
// benchmark found best (README).
// The chosen rows become this tab's own result list (state.results.next, results.js), under a header
// that says how they were chosen: review, drop, flag, show on the map, export.

import { describeError, postJSON } from "../api.js";
import { dsPath } from "../data.js";
import { $, busy, showError } from "../dom.js";
import { initResultList } from "../results.js";
import { emit, indicesOf, minedIds, on, setMined } from "../state.js";

export function init() {
  initResultList("next");
  on("dataset", () => ($("#select-status").textContent = ""));
  $("#select-form").addEventListener("submit", runSelect);
  // "from the failures" has no explore share: its field is greyed out while that strategy is chosen
  const form = $("#select-form").elements;
  form.strategy.addEventListener("change", () => {
    form.explore.disabled = form.strategy.value === "failures";
    form.explore.title = form.explore.disabled ? "not used by \"from the failures\"" : "";
  });
}

/** "from the failures": the failures are the seeds; half mined, half the most uncertain by margin. */
async function runFromFailures(f) {
  const body = {
    seeds: { failures: true },
    budget: Number(f.budget.value) || 100,
    include_exported: f.include_exported.checked,
    diversity: "cover",
    uncertain_share: 0.5,
  };
  const res = await busy(postJSON(dsPath("/mine"), body));
  const mined = res.returned - (res.uncertain || 0);
  show(res, "half mined near the model's failures, half by margin",
    `${mined} mined near ${res.seeds.toLocaleString()} failures in ${res.modes.length} failure modes, ` +
    `${res.uncertain || 0} by margin`);
}

/** The chosen rows become this tab's list, shown on the map, with how they were chosen. */
function show(res, how, parts) {
  setMined("next", res.items, `to label next, ${how}`, res.selection_id);
  emit("focus", indicesOf(minedIds("next")));
  $("#select-status").textContent =
    `${res.returned} of ${res.candidates.toLocaleString()} candidates chosen (${parts}). ` +
    `Drop any you do not want, then export them.`;
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
    if (body.strategy === "failures") return await runFromFailures(f);
    const res = await busy(postJSON(dsPath("/select"), body));
    const how = f.strategy.selectedOptions[0].textContent;
    const parts = Object.entries(res.counts || {}).map(([k, v]) => `${v} by ${k}`).join(", ");
    show(res, `chosen by ${how} (explore share ${body.explore})`, parts);
  } catch (err) {
    $("#select-status").textContent = describeError(err);
    showError(err, "Choosing rows");
  }
}
