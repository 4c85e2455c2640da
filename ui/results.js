// A result list (state.results[kind]) shown in its own tab: "mine" (Find similar, #tab-mine) and
// "next" (Label next, #tab-next). Each owns the ids `#KIND-results`, `#KIND-count`, `#KIND-grid`,
// `#KIND-flag-form`, `#KIND-show`, `#KIND-export` inside its tab: a header naming where the rows came
// from, tiles (× drops one), flag as an issue, show on the map, export (request "export-source").

import { flagIssue } from "./data.js";
import { $, showError } from "./dom.js";
import { dropMined, emit, indicesOf, minedIds, on, state } from "./state.js";
import { fillGrid } from "./tiles.js";

/** the Export form's source value of each list */
export const EXPORT_SOURCE = { mine: "mined", next: "next" };

/**
 * Wire the list `kind`. `caption(row)`: a tile's fixed caption (e.g. the distance), or undefined.
 */
export function initResultList(kind, { caption } = {}) {
  on("mined", (k) => {
    if (k !== kind) return;
    renderList(kind, caption);
    showOnMap(kind);
  });
  on("mined-drop", ({ kind: k, id }) => {
    if (k !== kind) return;
    $(`#${kind}-grid .tile[data-id="${CSS.escape(id)}"]`)?.remove();
    renderCount(kind);
    showOnMap(kind);
  });
  on("dataset", () => {
    $(`#${kind}-results`).hidden = true;
    $(`#${kind}-grid`).replaceChildren();
  });
  $(`#${kind}-show`).addEventListener("click", () => {
    showOnMap(kind);
    emit("focus", indicesOf(minedIds(kind)));
  });
  $(`#${kind}-flag-form`).addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = e.target.elements.name.value.trim();
    try {
      if (await flagIssue(name, minedIds(kind))) e.target.reset();
    } catch (err) {
      showError(err, "Flagging");
    }
  });
  $(`#${kind}-export`).addEventListener("click", () => emit("export-source", EXPORT_SOURCE[kind]));
}

function renderCount(kind) {
  const list = state.results[kind];
  const n = list.rows.length;
  $(`#${kind}-count`).textContent = `${n.toLocaleString()} ${n === 1 ? "row" : "rows"} ${list.label}`;
}

function renderList(kind, caption) {
  const list = state.results[kind];
  $(`#${kind}-results`).hidden = !list.rows.length;
  renderCount(kind);
  const byId = new Map(list.rows.map((r) => [r.id, r]));
  fillGrid(
    $(`#${kind}-grid`),
    minedIds(kind),
    {
      tileOptions: (id) => ({
        caption: caption ? caption(byId.get(id)) : undefined,
        onDrop: (dropped) => dropMined(kind, dropped),
      }),
    }
  );
}

/** highlight the list's rows on the map */
export function showOnMap(kind) {
  const idx = indicesOf(minedIds(kind));
  const what = kind === "next" ? "rows to label next" : "similar rows";
  emit("highlight", { indices: idx, status: `${idx.length.toLocaleString()} ${what} highlighted` });
}

