// "Export" tab (#tab-export): the export form (rows: the selection, a result list or an issue; format;
// how images travel), one card per export job in #export-jobs with its progress and, when done, the
// download link. Answers the request "export-source" (open the tab with that source). When the tab is
// shown, "Rows" defaults to the source that got rows last (the results just mined, not an empty
// selection); a source the person picks stays until another one gets newer rows. Below the form,
// "Send to Label Studio" pushes the same rows to a project of the server's Label Studio and "Pull
// labels" imports that project's annotations (labelstudio.js; disabled with a hint when the server
// has no Label Studio).

import { ApiError, apiKey, describeError, getJSON, postJSON, request } from "../api.js";
import { dsPath } from "../data.js";
import { $, h, showError, toast, toggleSourceFields } from "../dom.js";
import { LS_HINT, checkProject, defaultProject, labelStudioConfigured, pullLabels, pushRows } from "../labelstudio.js";
import { EXPORT_SOURCE } from "../results.js";
import { emit, minedIds, on, selectedIds, state } from "../state.js";

const EXPORT_DONE = new Set(["done"]);
const EXPORT_FAILED = new Set(["failed", "interrupted", "cancelled"]);
const SOURCE_NAMES = { selection: "selection is", mined: "Find similar result list is", next: "Label next list is" };

// when each source last got rows or was picked by the person (performance.now(); 0: never)
let produced = { selection: 0, mined: 0, next: 0, issue: 0 };

export function init() {
  const form = $("#export-form");
  on("export-source", (source) => {
    produced[source] = performance.now();
    setSource(form, source);
    emit("tab", "export");
  });
  on("issues", (issues) =>
    form.elements.issue.replaceChildren(
      ...[...issues].reverse().map((is) => h("option", { value: is.id, text: `${is.name} (${is.count})` }))
    )
  );
  on("dataset", (name) => {
    produced = { selection: 0, mined: 0, next: 0, issue: 0 };
    $("#ls-form").elements.project.value = defaultProject(name);
  });
  on("selection", () => state.selection.indices.length && (produced.selection = performance.now()));
  on("mined", (kind) => state.results[kind].rows.length && (produced[EXPORT_SOURCE[kind]] = performance.now()));
  on("tab", (name) => name === "export" && setSource(form, defaultSource()));
  form.elements.source.addEventListener("change", () => {
    produced[form.elements.source.value] = performance.now();
    toggleSourceFields(form);
  });
  form.addEventListener("submit", startExport);
  initLabelStudio();
}

/** the Label Studio form: enabled when the server has one (GET /health), else disabled with the hint */
function initLabelStudio() {
  const ls = $("#ls-form");
  const setEnabled = (ok) => {
    state.labelStudio = ok;
    for (const el of [ls.elements.project, $("#ls-push"), $("#ls-pull")]) el.disabled = !ok;
    $("#ls-hint").textContent = ok ? "" : LS_HINT;
    $("#ls-hint").hidden = ok;
  };
  setEnabled(false);
  labelStudioConfigured().then(setEnabled);
  ls.addEventListener("submit", (e) => {
    e.preventDefault();
    const project = checkProject(ls.elements.project.value);
    const req = project && exportRequest($("#export-form").elements, "send");
    if (!req) return;
    const media = req.body.media === "relative" ? "relative" : "url"; // copied images mean nothing to a server
    const { target, ...rows } = req.body; // the push has no target
    pushRows(state.ds, project, { ...rows, media }, req.what, $("#export-jobs"));
  });
  $("#ls-pull").addEventListener("click", () => {
    const project = checkProject(ls.elements.project.value);
    if (project) pullLabels(state.ds, project, $("#export-jobs"), reloadButton);
  });
}

/** after a pull that labeled rows: a button reopening the dataset (counts, map outcomes) */
function reloadButton(line) {
  const ds = state.ds;
  line.append(h("button", { type: "button", text: "Reload the dataset", onclick: () => emit("reload", ds) }));
}

function setSource(form, source) {
  if (!source) return;
  form.elements.source.value = source;
  toggleSourceFields(form);
}

/** rows of a source (for issues: whether there is one) */
function sourceIds(source) {
  if (source === "mined") return minedIds("mine");
  if (source === "next") return minedIds("next");
  if (source === "issue") return state.issues.length ? ["issue"] : [];
  return selectedIds();
}

/** the source that got rows (or was picked) last and has rows now; null: none has */
function defaultSource() {
  const have = Object.keys(produced).filter((s) => produced[s] > 0 && sourceIds(s).length);
  have.sort((a, b) => produced[b] - produced[a]);
  return have[0] || null;
}

/** {body, what} of the export the form asks for, or null after a toast saying what is missing */
function exportRequest(f, verb = "export") {
  const body = { target: f.format.value, media: f.media.value };
  if (f.source.value === "issue") {
    if (!f.issue.value) {
      toast(`There is no issue to ${verb} yet: flag a selection first.`, "error");
      return null;
    }
    body.issue = f.issue.value;
    return { body, what: `issue ${f.issue.selectedOptions[0].textContent}` };
  }
  const ids = sourceIds(f.source.value);
  if (!ids.length) {
    toast(`Nothing to ${verb}: the ${SOURCE_NAMES[f.source.value]} empty.`, "error");
    return null;
  }
  body.ids = ids;
  return { body, what: `${ids.length.toLocaleString()} rows` };
}

async function startExport(e) {
  e.preventDefault();
  const f = $("#export-form").elements;
  const req = exportRequest(f);
  if (!req) return;
  const card = h("div", { class: "job" });
  const progress = h("progress", { max: 1, value: 0 });
  const line = h("div", { class: "muted", text: "starting…" });
  card.append(h("strong", { text: `${f.format.selectedOptions[0].textContent} export of ${req.what}` }), progress, line);
  $("#export-jobs").prepend(card);
  try {
    let doc = await postJSON(dsPath("/exports"), req.body);
    card.dataset.export = doc.id;
    const docPath = dsPath(`/exports/${encodeURIComponent(doc.id)}`);
    doc = await waitForExport(doc, docPath, progress, line);
    progress.max = 1;
    progress.value = 1;
    const extra = [];
    if (doc.media_errors) extra.push(`${doc.media_errors} images could not be read`);
    if (doc.zip_bytes) extra.push(`${(doc.zip_bytes / 1024).toFixed(0)} KB`);
    const done = `done: ${(doc.rows_exported ?? doc.count).toLocaleString()} rows${extra.length ? ` (${extra.join(", ")})` : ""}. `;
    line.replaceChildren(done, downloadLink(doc, `${docPath}/download`));
    toast("Export ready to download.", "ok");
  } catch (err) {
    card.classList.add("failed");
    line.textContent = describeError(err);
    showError(err, "Export");
  }
}

/** Poll the export until it ends, showing its progress; throws if it failed. */
async function waitForExport(doc, docPath, progress, line) {
  while (!EXPORT_DONE.has(doc.status) && !EXPORT_FAILED.has(doc.status)) {
    const total = doc.count || 0;
    progress.max = total || 1;
    progress.value = doc.rows_done || 0;
    const jp = (doc.job && doc.job.progress) || {};
    line.textContent = `${doc.status}: ${(doc.rows_done || 0).toLocaleString()} / ${total.toLocaleString()} rows${
      jp.message ? ` — ${jp.message}` : ""
    }`;
    await new Promise((r) => setTimeout(r, 400));
    doc = await getJSON(docPath);
  }
  if (EXPORT_FAILED.has(doc.status)) {
    const why = (doc.job && doc.job.error) || (doc.errors && doc.errors[0] && (doc.errors[0].message || doc.errors[0].detail)) || "no reason recorded";
    throw new ApiError(0, `Export ${doc.status}`, why, docPath);
  }
  return doc;
}

/** a plain link, unless reads need the key: then the zip is fetched with it */
function downloadLink(doc, href) {
  const link = h("a", { href, download: doc.zip || "", class: "download", text: `Download ${doc.zip || "zip"}` });
  link.addEventListener("click", async (ev) => {
    if (!apiKey() || !state.readsNeedKey) return; // a plain link works
    ev.preventDefault();
    try {
      const resp = await request(href);
      const a = h("a", { href: URL.createObjectURL(await resp.blob()), download: doc.zip || `export-${doc.id}.zip` });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) {
      showError(err, "Download");
    }
  });
  return link;
}
