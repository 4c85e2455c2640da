// Label Studio, live, from the Export tab: push rows to a project of the server's Label Studio
// (`POST /datasets/{ds}/label_studio/push`) and pull its annotations back (`.../label_studio/pull`),
// each a job polled at `GET /jobs/{id}` and shown as a card in #export-jobs. The server talks only to
// the Label Studio of its settings (EDGEMINER_LABEL_STUDIO_URL / _TOKEN); `GET /health` says whether
// there is one (`label_studio`). The project title last used is kept per dataset in localStorage.

import { API, describeError, getJSON, postJSON, waitForJob } from "./api.js";
import { dsPath } from "./data.js";
import { h, showError, toast } from "./dom.js";

export const LS_HINT =
  "Label Studio is not configured on this server: set EDGEMINER_LABEL_STUDIO_URL and " +
  "EDGEMINER_LABEL_STUDIO_TOKEN where `edgeminer serve` runs.";
const PROJECT_KEY = "edgeminer.lsProject.";
const TITLE_MAX = 50; // Label Studio project titles: 1 to 50 characters

/** whether the server has a Label Studio configured (false when /health cannot be read) */
export async function labelStudioConfigured() {
  try {
    return Boolean((await getJSON(`${API}/health`)).label_studio);
  } catch {
    return false;
  }
}

/** the project title to offer for dataset `ds`: the last one used with it, else "<ds> round 1" */
export function defaultProject(ds) {
  let last = "";
  try {
    last = localStorage.getItem(PROJECT_KEY + ds) || "";
  } catch {
    /* storage refused: no memory of the last project */
  }
  return last || `${ds} round 1`.slice(0, TITLE_MAX).trim();
}

function rememberProject(ds, project) {
  try {
    localStorage.setItem(PROJECT_KEY + ds, project);
  } catch {
    /* storage refused: the default stays */
  }
}

/** the project title typed, or null after a toast saying what is wrong with it */
export function checkProject(text) {
  const title = (text || "").trim();
  if (!title || title.length > TITLE_MAX || [...title].some((c) => c.charCodeAt(0) < 32)) {
    toast(`A Label Studio project title is 1 to ${TITLE_MAX} printable characters.`, "error");
    return null;
  }
  return title;
}

/** a job card prepended to `list`: {card, bar, line} */
function jobCard(list, title) {
  const bar = h("progress", { max: 1, value: 0 });
  const line = h("div", { class: "muted", text: "starting…" });
  const card = h("div", { class: "job ls-job" }, h("strong", { text: title }), bar, line);
  list.prepend(card);
  return { card, bar, line };
}

/** Run the job the POST to `path` started, showing its progress on `ui`; resolves with the job. */
async function runJob(path, body, ui) {
  const job = await postJSON(dsPath(path), body);
  ui.card.dataset.job = job.id;
  return waitForJob(`${API}/jobs/${encodeURIComponent(job.id)}`, (j) => {
    const p = j.progress || {};
    ui.bar.max = p.total || 1;
    ui.bar.value = p.done || 0;
    const count = p.total ? ` ${p.done || 0} / ${p.total} tasks` : "";
    ui.line.textContent = `${j.status}:${count}${p.message ? ` — ${p.message}` : ""}`;
  });
}

function finish(ui) {
  ui.bar.max = 1;
  ui.bar.value = 1;
}

function failed(ui, err, what) {
  ui.card.classList.add("failed");
  ui.line.textContent = describeError(err);
  showError(err, what);
}

/** Push `body` (rows as for an export: ids or issue, media) to `project`; `what` names the rows. */
export async function pushRows(ds, project, body, what, list) {
  const ui = jobCard(list, `Send ${what} to Label Studio project “${project}”`);
  rememberProject(ds, project);
  try {
    const job = await runJob("/label_studio/push", { ...body, project }, ui);
    finish(ui);
    const r = (job.result && job.result.report) || {};
    ui.line.replaceChildren(pushSummary(r), ...projectLink(r));
    ui.card.dataset.pushed = String(r.pushed || 0);
    if (r.failed) ui.card.classList.add("failed");
    toast(`Label Studio: ${r.pushed || 0} tasks created in “${project}”.`, r.failed ? "error" : "ok");
  } catch (err) {
    failed(ui, err, "Sending to Label Studio");
  }
}

/** "N tasks created, M already there, K refused in B of T batches; E rows left out" */
function pushSummary(r) {
  const parts = [`done: ${(r.pushed || 0).toLocaleString()} tasks created`];
  parts.push(`${(r.skipped_existing || 0).toLocaleString()} already there`);
  const refused = (r.failed_batches || []).length;
  parts.push(
    refused
      ? `${(r.failed || 0).toLocaleString()} refused in ${refused} of ${r.batches} batches (${r.failed_batches[0].message})`
      : "no batch refused"
  );
  const left = (r.errors || []).length;
  if (left) parts.push(`${left} rows left out (${r.errors[0].message})`);
  return `${parts.join(", ")}. `;
}

function projectLink(r) {
  if (!r.project_url || !/^https?:\/\//.test(r.project_url)) return [];
  return [h("a", { href: r.project_url, target: "_blank", rel: "noopener", text: "Open the project" })];
}

/** Pull the annotations of `project` into the dataset; `onLabeled` runs when rows got labels. */
export async function pullLabels(ds, project, list, onLabeled) {
  const ui = jobCard(list, `Pull labels from Label Studio project “${project}”`);
  rememberProject(ds, project);
  try {
    const job = await runJob("/label_studio/pull", { project }, ui);
    finish(ui);
    const p = (job.result && job.result.pull) || {};
    const r = p.report || null;
    ui.card.dataset.matched = String(r ? r.matched : 0);
    ui.line.textContent = pullSummary(p, r);
    toast(`Label Studio: ${r ? r.matched : 0} rows labeled from “${project}”.`, "ok");
    if (r && r.matched && onLabeled) onLabeled(ui.line);
  } catch (err) {
    failed(ui, err, "Pulling labels");
  }
}

function pullSummary(p, r) {
  const head = `done: ${p.annotated_tasks || 0} annotated tasks`;
  if (!r) return `${head}, nothing new to import.`;
  const parts = [`${r.matched.toLocaleString()} rows labeled (${r.changed} changed)`];
  if (r.unmatched_count) parts.push(`${r.unmatched_count} not matched (${(r.unmatched[0] || {}).reason || "?"})`);
  if (r.new_classes && r.new_classes.length) parts.push(`new classes: ${r.new_classes.join(", ")}`);
  return `${head}: ${parts.join(", ")}; labeled rows ${r.labeled_before} → ${r.labeled_after}. `;
}
