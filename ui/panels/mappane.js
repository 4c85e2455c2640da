// The map pane: owns the PointMap (map.js) and the pane around it: the toolbar (modes, reset view,
// clear selection, cluster outlines), keyboard shortcuts, #map-status and #map-message. Everything
// else reaches the map through events: points, colors, selection, highlight, focus, map-status,
// map-message, clusters, cluster; the map's own gestures become hover / detail / setSelection.
// Cluster outlines: hulls of each cluster's parts (hulls.js) computed once per loaded map, drawn for
// the failure clusters (labelled "#id ⚑rank" on the largest part) and the opened cluster.

import { $, $$, h } from "../dom.js";
import { clusterHulls } from "../hulls.js";
import { PointMap } from "../map.js";
import { emit, on, setActiveCluster, setSelection, state } from "../state.js";

let map = null;
let hulls = new Map(); // cluster id -> outlines of its parts on the loaded map (hulls.js)

/** Build the WebGL map (throws without WebGL2); returns it. */
export function createMap() {
  map = new PointMap($("#map"), $("#overlay"), $("#outlines"));
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
  on("points", (pts) => {
    map.setPositions(pts.xy);
    computeHulls(pts);
  });
  on("dataset", () => {
    hulls = new Map();
    map.setShapes([]);
  });
  on("clusters", drawOutlines);
  on("cluster", drawOutlines);
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
  $("#show-outlines").addEventListener("change", drawOutlines);
  $("#clear-sel").addEventListener("click", () => {
    setSelection(new Uint32Array(0), "", { switchTab: false });
    setActiveCluster(null);
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey) return;
    const modes = { p: "pan", b: "box", l: "lasso" };
    if (modes[e.key]) $(`#modes button[data-mode=${modes[e.key]}]`).click();
    if (e.key === "o") $("#show-outlines").click();
    if (e.key === "Escape") $("#clear-sel").click();
  });
}

function computeHulls(pts) {
  const t0 = performance.now();
  hulls = pts.n ? clusterHulls(pts.xy, pts.cluster) : new Map();
  window.edgeminer.timings.hulls = performance.now() - t0;
  drawOutlines();
}

/** the failure clusters' outlines (and the opened cluster's), when the toolbar's box is ticked */
function drawOutlines() {
  const shapes = [];
  if ($("#show-outlines").checked) {
    for (const c of state.clusters) {
      const polys = hulls.get(c.id);
      const active = c.id === state.activeCluster;
      if (!polys || !(c.failure_rank || active)) continue;
      polys.forEach((poly, k) =>
        shapes.push({
          poly,
          id: c.id,
          label: k ? "" : c.failure_rank ? `#${c.id} ⚑${c.failure_rank}` : `#${c.id}`, // on its largest part
          color: active ? "#1d4ed8" : "#b42318",
          width: active ? 2.5 : 1.5,
          fill: active ? "rgba(37,99,235,0.06)" : null,
        })
      );
    }
  }
  map.setShapes(shapes);
  $("#map-wrap").dataset.outlines = String(shapes.length);
}
