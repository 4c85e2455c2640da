// Thumbnail grids shared by the panels: a tile per row (outcome border, caption under the image,
// optional ×), a click asks for the detail view (event "detail"). Captions show class names whole:
// they wrap (after "_", "-", "." and spaces first) instead of being cut with an ellipsis.

import { ROW_COLUMNS, fetchRows, rowCache, setImage } from "./data.js";
import { h, num, showError } from "./dom.js";
import { OUTCOME_NAMES } from "./palette.js";
import { emit, idIndex, outcomeOf } from "./state.js";

function tile(id, { caption, onDrop, index, kind, title: fixedTitle } = {}) {
  const i = index !== undefined ? index : idIndex().get(id);
  const outcome = i !== undefined ? outcomeOf(i) : null;
  let cls = "tile";
  if (kind) cls += ` ${kind}`; // the caller's border (compare: fixed / broken)
  else if (outcome === "correct") cls += " correct";
  else if (outcome === "unlabeled") cls += " unlabeled";
  else if (outcome && outcome !== "no_prediction") cls += " wrong";
  const title = fixedTitle || (outcome ? `${id}: ${OUTCOME_NAMES[outcome] || outcome}` : id);
  const img = h("img", { alt: title, loading: "lazy" });
  setImage(img, id);
  const node = h("div", { class: cls, title, "data-id": id, onclick: () => emit("detail", id) }, img);
  const cap = h("span", { class: "cap" });
  setCaption(cap, caption || "");
  cap.hidden = !caption;
  node.append(cap);
  node._fixedCaption = !!caption;
  if (onDrop) node.append(dropButton(id, onDrop));
  return node;
}

function dropButton(id, onDrop) {
  return h("button", {
    class: "drop",
    type: "button",
    title: "drop this result",
    "aria-label": `drop ${id}`,
    text: "×",
    onclick: (e) => {
      e.stopPropagation();
      onDrop(id);
    },
  });
}

/** Put tiles for `ids` into `container`, then fill captions (label → prediction) from the rows
 * (opts.ownCaptions: the captions given by opts.tileOptions are whole, no rows are fetched). */
export async function fillGrid(container, ids, opts = {}) {
  const tiles = ids.map((id) => tile(id, opts.tileOptions ? opts.tileOptions(id) : {}));
  container.replaceChildren(...tiles);
  if (opts.ownCaptions) return;
  const missing = ids.filter((id) => !rowCache.has(id));
  try {
    if (missing.length) for (const [id, row] of await fetchRows(missing, ROW_COLUMNS)) rowCache.set(id, row);
  } catch (err) {
    showError(err, "Loading the rows");
    return;
  }
  for (const t of tiles) {
    const row = rowCache.get(t.dataset.id);
    if (row) caption(t, row);
  }
}

function caption(t, row) {
  const lab = row.label ?? null;
  const pred = row.pred_label ?? "?";
  const text = row.labeled ? `${lab ?? "?"} → ${pred}` : t._fixedCaption ? `→ ${pred}` : `pred ${pred}`;
  t.title = `${t.dataset.id}: ${row.labeled ? `label ${lab}, ` : "unlabeled, "}predicted ${pred} (${num(row.confidence, 2)})`;
  const cap = t.querySelector(".cap");
  if (!t._fixedCaption) {
    setCaption(cap, text);
    cap.hidden = false;
  } else if (!cap.dataset.filled) {
    setCaption(cap, `${text} · ${cap.textContent}`);
    cap.dataset.filled = "1";
  }
}

/** the caption's text with line-break opportunities after _ - . / (class names like flower_lemon_yellow) */
function setCaption(cap, text) {
  const parts = String(text).split(/(?<=[_\-./])/);
  cap.replaceChildren(...parts.flatMap((p, k) => (k ? [h("wbr"), p] : [p])));
}
