// The topbar's #summary (row counts, rows not on the map) and "Analyze now" (also the request
// "analyze"): the analysis job with its progress, then the dataset is reopened (request "reload",
// answered by app.js).

import { API, postJSON, waitForJob } from "../api.js";
import { dsPath } from "../data.js";
import { $, $$, busy, h, showError, toast } from "../dom.js";
import { emit, on, state } from "../state.js";

export function init() {
  on("opened", describeCounts);
  on("analyze", runAnalysis);
}

function mapMessage(text, ...extra) {
  emit("map-message", { text, extra });
}

function analyzeButton(label) {
  return h("button", { type: "button", class: "primary", id: "analyze-now", text: label, onclick: runAnalysis });
}

function describeCounts() {
  const pts = state.pts;
  const total = state.info ? state.info.rows ?? pts.n : pts.n;
  const missing = total - pts.n;
  const summary = $("#summary");
  summary.replaceChildren(`${total.toLocaleString()} rows`);
  if (missing > 0 && pts.n) {
    summary.append(
      ` (${missing.toLocaleString()} not on the map: not analyzed yet or failed to index) `,
      h("button", { type: "button", class: "link", id: "analyze-now", text: "update the map", onclick: runAnalysis })
    );
  }
  if (!total) mapMessage("This dataset has no rows yet: ingest images with `edgeminer ingest`.");
  else if (!pts.n) {
    mapMessage(
      "No row has map coordinates yet: run `edgeminer analyze --dataset " + state.ds + "`, or start it here.",
      analyzeButton("Analyze now")
    );
  } else mapMessage("");
}

/** POST /analyze as a job, show its progress, then reload the dataset's map and panels. */
async function runAnalysis() {
  const ds = state.ds;
  const status = h("span", { class: "muted", text: " starting the analysis…" });
  const bar = h("progress", { max: 1, value: 0 });
  $("#summary").replaceChildren("analysis: ", bar, status);
  $$("#analyze-now").forEach((b) => (b.disabled = true));
  try {
    const job = await busy(postJSON(dsPath("/analyze"), {}));
    await waitForJob(`${API}/jobs/${encodeURIComponent(job.id)}`, (j) => {
      const p = j.progress || {};
      bar.max = p.total || 1;
      bar.value = p.done || 0;
      status.textContent = ` ${j.status}${p.message ? `: ${p.message}` : ""}`;
    });
    toast("Analysis done: the map and the clusters are up to date.", "ok");
    if (state.ds === ds) await Promise.all(emit("reload", ds));
  } catch (err) {
    showError(err, "The analysis");
    describeCounts();
  }
}
