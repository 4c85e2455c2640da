// "Export" tab (#tab-export): the export form (rows: the selection, the result list or an issue;
// format; how images travel), one card per export job in #export-jobs with its progress and, when
// done, the download link. Answers the request "export-source" (open the tab with that source).

import { ApiError, apiKey, describeError, getJSON, postJSON, request } from "../api.js";
import { dsPath } from "../data.js";
import { $, h, showError, toast, toggleSourceFields } from "../dom.js";
import { emit, minedIds, on, selectedIds, state } from "../state.js";

const EXPORT_DONE = new Set(["done"]);
const EXPORT_FAILED = new Set(["failed", "interrupted", "cancelled"]);

export function init() {
  const form = $("#export-form");
  on("export-source", (source) => {
    form.elements.source.value = source;
    toggleSourceFields(form);
    emit("tab", "export");
  });
  on("issues", (issues) =>
    form.elements.issue.replaceChildren(
      ...[...issues].reverse().map((is) => h("option", { value: is.id, text: `${is.name} (${is.count})` }))
    )
  );
  form.elements.source.addEventListener("change", () => toggleSourceFields(form));
  form.addEventListener("submit", startExport);
}

/** {body, what} of the export the form asks for, or null after a toast saying what is missing */
function exportRequest(f) {
  const body = { target: f.format.value, media: f.media.value };
  if (f.source.value === "issue") {
    if (!f.issue.value) {
      toast("There is no issue to export yet: flag a selection first.", "error");
      return null;
    }
    body.issue = f.issue.value;
    return { body, what: `issue ${f.issue.selectedOptions[0].textContent}` };
  }
  const ids = f.source.value === "mined" ? minedIds() : selectedIds();
  if (!ids.length) {
    toast(`Nothing to export: the ${f.source.value === "mined" ? "result list is" : "selection is"} empty.`, "error");
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
