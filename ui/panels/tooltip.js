// The hover tooltip over the map (#tooltip): thumbnail, labels, outcome and cluster of the point under
// the pointer (event "hover" from the map pane); the row is fetched once the pointer rests.

import { ROW_COLUMNS, fetchRows, rowCache, setImage } from "../data.js";
import { $, h, num } from "../dom.js";
import { OUTCOME_NAMES } from "../palette.js";
import { on, outcomeOf, state } from "../state.js";

let hoverTimer = null;
let hoverIndex = -1;

export function init() {
  on("hover", ({ i, x, y }) => onHover(i, x, y));
}

function onHover(i, cx, cy) {
  const tip = $("#tooltip");
  if (i < 0) {
    tip.hidden = true;
    hoverIndex = -1;
    clearTimeout(hoverTimer);
    return;
  }
  tip.style.left = `${Math.min(cx + 14, window.innerWidth - 330)}px`;
  tip.style.top = `${Math.min(cy + 14, window.innerHeight - 130)}px`;
  if (i === hoverIndex) return;
  hoverIndex = i;
  clearTimeout(hoverTimer);
  const id = state.pts.ids[i];
  const img = h("img", { alt: "" });
  const fields = { lab: h("span", { text: "…" }), pred: h("span", { text: "…" }), conf: h("span", { text: "…" }) };
  tip.replaceChildren(img, facts(i, fields));
  tip.hidden = false;
  // wait until the pointer rests a moment: sweeping over points must not fire a request per point
  hoverTimer = setTimeout(() => fillTip(i, id, img, fields), 80);
}

function facts(i, { lab, pred, conf }) {
  const pts = state.pts;
  const outcome = outcomeOf(i);
  return h(
    "div",
    { class: "kv" },
    h("span", { class: "muted", text: "id" }), h("span", { text: pts.ids[i] }),
    h("span", { class: "muted", text: "label" }), lab,
    h("span", { class: "muted", text: "predicted" }), pred,
    h("span", { class: "muted", text: "confidence" }), conf,
    h("span", { class: "muted", text: "outcome" }), h("span", { text: OUTCOME_NAMES[outcome] || outcome }),
    h("span", { class: "muted", text: "cluster" }), h("span", { text: pts.cluster[i] === -1 ? "noise" : String(pts.cluster[i]) })
  );
}

async function fillTip(i, id, img, { lab, pred, conf }) {
  if (hoverIndex !== i) return;
  setImage(img, id);
  try {
    let row = rowCache.get(id);
    if (!row) {
      row = (await fetchRows([id], ROW_COLUMNS)).get(id);
      if (row) rowCache.set(id, row);
    }
    if (row && hoverIndex === i) {
      lab.textContent = row.label ?? (row.labeled ? "–" : "unlabeled");
      pred.textContent = row.pred_label ?? "–";
      conf.textContent = num(row.confidence, 3);
    }
  } catch (err) {
    lab.textContent = pred.textContent = conf.textContent = "?";
  }
}
