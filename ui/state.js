// The dashboard's single state object and a tiny event emitter. Panels read `state` freely; what
// others react to changes only through the setters below (each emits the event in its comment), and a
// field only one panel uses (selPage, showAllClusters, colorBy, insightsLoaded) that panel sets itself.
// Panels never import each other: they listen (`on`) and ask (`emit`). Events are listed in README.md:
//   state changes  dataset · points · opened · selection · cluster · clusters · analysis · issues · mined
//                  mined-drop · versions · compare
//   requests       tab · highlight · focus · colors · hover · map-status · map-message · detail · filter
//                  mine · export-source · reload · analyze

const listeners = new Map(); // event -> [fn]

function emptyResults() {
  return { rows: [], label: "", selectionId: null, at: 0 };
}

/** Call `fn(payload)` on every `emit(event)`, in the order the listeners were added. */
export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, []);
  listeners.get(event).push(fn);
}

/** Call the listeners of `event` now (synchronously); returns what they returned (await a request). */
export function emit(event, payload) {
  return (listeners.get(event) || []).map((fn) => fn(payload));
}

export const state = {
  datasets: [],
  ds: null, // dataset name
  info: null, // dataset info (classes, metadata fields, ...)
  pts: null, // decoded points (points.js)
  idIndex: null, // Map id -> point index (built on first use)
  colorBy: "outcome",
  selection: { indices: new Uint32Array(0), source: "" },
  selPage: 0,
  clusters: [],
  baseErrorRate: null,
  showAllClusters: false,
  activeCluster: null,
  issues: [],
  // the result lists: "mine" (Find similar) and "next" (Label next), each {rows: [{id, distance, ...}],
  // label, selectionId (the server's saved selection; null once a row is dropped), at (when set)}
  results: { mine: emptyResults(), next: emptyResults() },
  analysis: null, // {freshness, ...} of the open dataset's analysis (null: none)
  insightsLoaded: null, // the dataset whose insights are shown
  readsNeedKey: false,
  // model versions (GET /versions: {current, versions[]}, null until loaded) and the pair compared
  // ({base, new, split}); points: the compare outcome code of each map point for that pair (data.js)
  versions: null,
  compare: { base: "", new: "", split: "", points: null },
  labelStudio: null, // whether the server has a Label Studio configured (GET /health; null: not known yet)
  ready: false,
};

// ---------------------------------------------------------------------------------------------
// setters
// ---------------------------------------------------------------------------------------------

/** A dataset is being opened: forget the previous one's selection, results and cluster. → dataset */
export function resetDataset(name) {
  state.ds = name;
  state.selection = { indices: new Uint32Array(0), source: "" };
  state.results = { mine: emptyResults(), next: emptyResults() };
  state.analysis = null;
  state.activeCluster = null;
  state.idIndex = null;
  state.versions = null;
  state.compare = { base: "", new: "", split: "", points: null };
  emit("dataset", name);
}

/** The decoded points of the open dataset (ids attached). → points */
export function setPoints(pts) {
  state.pts = pts;
  state.idIndex = null;
  emit("points", pts);
}

/** The dataset's info arrived after its points: panels fill their options and draw. → opened */
export function setInfo(info) {
  state.info = info;
  emit("opened", info);
}

/** Select rows by point index. → selection (then the map highlights them and the panel lists them) */
export function setSelection(indices, source, { focus = false, switchTab = true } = {}) {
  state.selection = { indices: indices instanceof Uint32Array ? indices : Uint32Array.from(indices), source };
  state.selPage = 1;
  emit("selection", { focus, switchTab });
}

/** → cluster */
export function setActiveCluster(cid) {
  state.activeCluster = cid;
  emit("cluster", cid);
}

/** → clusters */
export function setClusters(clusters, baseErrorRate) {
  state.clusters = clusters;
  state.baseErrorRate = baseErrorRate;
  emit("clusters", clusters);
}

/** → issues */
export function setIssues(issues) {
  state.issues = issues;
  emit("issues", issues);
}

/** The result list `kind` ("mine": Find similar, "next": Label next) of ids or {id, distance, ...}. → mined */
export function setMined(kind, rows, label, selectionId = null) {
  state.results[kind] = {
    rows: rows.map((r) => (typeof r === "string" ? { id: r } : r)),
    label,
    selectionId,
    at: performance.now(),
  };
  emit("mined", kind);
}

/** Drop one result of list `kind`; the server's saved selection no longer matches. → mined-drop */
export function dropMined(kind, id) {
  const list = state.results[kind];
  list.rows = list.rows.filter((x) => x.id !== id);
  list.selectionId = null;
  emit("mined-drop", { kind, id });
}

/** The analysis of the open dataset (GET /clusters without its cluster list), or null. → analysis */
export function setAnalysis(analysis) {
  state.analysis = analysis;
  emit("analysis", analysis);
}

/** The open dataset's model versions ({current, versions: [{name, rows...}]}). → versions */
export function setVersions(versions) {
  state.versions = versions;
  emit("versions", versions);
}

/** The two versions compared and the split (""; every labeled row); the map's codes stay for the same pair. → compare */
export function setComparePair(base, newer, split) {
  const old = state.compare;
  const points = old.base === base && old.new === newer ? old.points : null;
  state.compare = { base, new: newer, split, points };
  emit("compare", state.compare);
}

// ---------------------------------------------------------------------------------------------
// derived lookups
// ---------------------------------------------------------------------------------------------

export function idIndex() {
  if (!state.idIndex) {
    const m = new Map();
    const ids = state.pts.ids;
    for (let i = 0; i < ids.length; i++) m.set(ids[i], i);
    state.idIndex = m;
  }
  return state.idIndex;
}

/** Point indices of some ids (ids not on the map are left out), sorted. */
export function indicesOf(ids) {
  const m = idIndex();
  const out = [];
  for (const id of ids) {
    const i = m.get(id);
    if (i !== undefined) out.push(i);
  }
  out.sort((a, b) => a - b);
  return Uint32Array.from(out);
}

export function selectedIds() {
  const ids = state.pts.ids;
  return Array.from(state.selection.indices, (i) => ids[i]);
}

export function minedIds(kind) {
  return state.results[kind].rows.map((r) => r.id);
}

export function outcomeOf(i) {
  return state.pts.outcomeNames[state.pts.outcome[i]];
}

export function clusterIndices(cid) {
  const pts = state.pts;
  const out = [];
  for (let i = 0; i < pts.n; i++) if (pts.cluster[i] === cid) out.push(i);
  return Uint32Array.from(out);
}
