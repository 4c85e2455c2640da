// The detail dialog (#detail) of one row, asked for with the event "detail" (a tile, a map click):
// the image (an object row: its parent image with the box drawn, else its crop), every field, and the
// model's top probabilities.

import { describeError, getJSON } from "../api.js";
import { dsPath, scoreFields, setImage } from "../data.js";
import { $, h, num } from "../dom.js";
import { OUTCOME_NAMES } from "../palette.js";
import { on, state } from "../state.js";

export function init() {
  on("detail", showDetail);
}

async function showDetail(id) {
  const dlg = $("#detail");
  const info = $("#detail-info");
  info.replaceChildren(h("p", { class: "muted", text: "loading…" }));
  const img = $("#detail-img");
  img.removeAttribute("src");
  img.classList.remove("crop");
  $("#detail-box").replaceChildren();
  if (!dlg.open) dlg.showModal();
  try {
    const row = await getJSON(dsPath(`/samples/${encodeURIComponent(id)}`));
    const note = h("p", { class: "muted" });
    showImage(img, id, row, note);
    const parts = [h("h3", { text: `Sample ${row.id}` }), fieldList(row), note];
    if (Array.isArray(row.probs) && row.probs.length) parts.push(h("h4", { text: "Probabilities" }), probTable(row.probs));
    info.replaceChildren(...parts);
  } catch (err) {
    info.replaceChildren(h("p", { class: "error", text: describeError(err) }));
  }
}

function showImage(img, id, row, note) {
  img.onload = null;
  if (!(row.parent_id && Array.isArray(row.bbox))) {
    setImage(img, id, "full");
    return;
  }
  // object rows: the parent image with the box drawn on it, when the parent is a row too;
  // otherwise the object's own crop (the media route cuts it out by the box)
  img.onload = () => drawBox(img, row);
  setImage(img, row.parent_id, "full", () => {
    img.onload = null;
    $("#detail-box").replaceChildren();
    note.textContent = "The image shows the object's box, cut out of its image.";
    img.classList.add("crop");
    setImage(img, id, "full");
  });
}

function fieldList(row) {
  const kv = h("div", { class: "kv" });
  const add = (k, v) => kv.append(h("span", { class: "muted", text: k }), h("span", { text: v ?? "–" }));
  add("id", row.id);
  add("split", row.split);
  add("ground truth", row.label ?? (row.outcome === "false_positive" ? "nothing there (false positive)" : row.labeled ? "–" : "unlabeled"));
  add("prediction", row.pred_label);
  add("outcome", OUTCOME_NAMES[row.outcome] || row.outcome || (row.labeled ? "–" : "unlabeled"));
  add("cluster", row.cluster === null || row.cluster === undefined ? "–" : row.cluster === -1 ? "noise" : String(row.cluster));
  for (const s of scoreFields()) if (row[s] !== null && row[s] !== undefined) add(s.replace("_", " "), num(row[s]));
  if (row.bbox) add("box", row.bbox.map((v) => Math.round(v)).join(", "));
  for (const [k, v] of Object.entries(row)) {
    if (k.startsWith("meta_") && v !== null) add(k.slice(5), String(v));
  }
  if (row.metadata && typeof row.metadata === "object") {
    for (const [k, v] of Object.entries(row.metadata)) if (v !== null) add(k, String(v));
  }
  if (row.tags && row.tags.length) add("tags", row.tags.join(", "));
  if (row.uri) add("file", row.uri);
  return kv;
}

/** the 8 likeliest classes with bars */
function probTable(probs) {
  const classes = (state.info && state.info.classes) || [];
  const order = probs.map((p, k) => [p, k]).sort((a, b) => b[0] - a[0]).slice(0, 8);
  const table = h("div", { class: "probs" });
  for (const [p, k] of order) {
    table.append(
      h("span", { text: classes[k] ?? String(k) }),
      h("span", {}, h("div", { class: "pbar", style: `width:${Math.max(1, 100 * p)}%` })),
      h("span", { class: "muted", text: p.toFixed(3) })
    );
  }
  return table;
}

function drawBox(img, row) {
  const svg = $("#detail-box");
  const W = row.width || img.naturalWidth;
  const H = row.height || img.naturalHeight;
  if (!W || !H) return;
  const s = Math.min(320 / W, 320 / H);
  const ox = (320 - W * s) / 2;
  const oy = (320 - H * s) / 2;
  const [x, y, w, hh] = row.bbox;
  const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  r.setAttribute("x", ox + x * s);
  r.setAttribute("y", oy + y * s);
  r.setAttribute("width", w * s);
  r.setAttribute("height", hh * s);
  r.setAttribute("fill", "none");
  r.setAttribute("stroke", "#e0453a");
  r.setAttribute("stroke-width", "2");
  svg.replaceChildren(r);
}
