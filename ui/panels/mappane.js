// The map pane: owns the PointMap (map.js) and the pane around it: the toolbar (modes, reset view,
// clear selection), keyboard shortcuts, #map-status and #map-message. Everything else reaches the map
// through events: points, colors, selection, highlight, focus, map-status, map-message; the map's own
// gestures become hover / detail / setSelection.

import { $, $$, h } from "../dom.js";
import { PointMap } from "../map.js";
import { emit, on, setActiveCluster, setSelection, state } from "../state.js";

let map = null;

/** Build the WebGL map (throws without WebGL2); returns it. */
export function createMap() {
  map = new PointMap($("#map"), $("#overlay"));
  map.onHover = (i, x, y) => emit("hover", { i, x, y });
  map.onClickPoint = (i) => emit("detail", state.pts.ids[i]);
  map.onSelect = (idx, kind) => setSelection(idx, `${kind} on the map`);
  return map;
}

/** The message over the map (empty text hides it); `extra`: nodes under the text (buttons). */
export function mapMessage(text, ...extra) {
  const m = $("#map-message");
  m.replaceChildren(h("div", {}, h("p", { text: text || "" }), ...extra));
  m.hidden = !text;
}

function mapStatus(text) {
  $("#map-status").textContent = text;
}

export function init() {
  on("points", (pts) => map.setPositions(pts.xy));
  on("colors", (rgba) => map.setColors(rgba));
  on("selection", ({ focus }) => {
    map.setHighlight(state.selection.indices);
    if (focus) map.focus(state.selection.indices);
  });
  on("highlight", ({ indices, focus = false, status }) => {
    map.setHighlight(indices);
    if (focus) map.focus(indices);
    if (status !== undefined) mapStatus(status);
  });
  on("focus", (indices) => map.focus(indices));
  on("map-status", mapStatus);
  on("map-message", ({ text, extra = [] }) => mapMessage(text, ...extra));
  wireToolbar();
}

function wireToolbar() {
  $$("#modes button").forEach((b) =>
    b.addEventListener("click", () => {
      $$("#modes button").forEach((x) => x.classList.toggle("on", x === b));
      map.setMode(b.dataset.mode);
    })
  );
  $("#reset-view").addEventListener("click", () => map.resetView());
  $("#clear-sel").addEventListener("click", () => {
    setSelection(new Uint32Array(0), "", { switchTab: false });
    setActiveCluster(null);
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey) return;
    const modes = { p: "pan", b: "box", l: "lasso" };
    if (modes[e.key]) $(`#modes button[data-mode=${modes[e.key]}]`).click();
    if (e.key === "Escape") $("#clear-sel").click();
  });
}
