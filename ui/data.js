// The open dataset's data, on top of api.js: its points and per-point columns, rows for captions and
// tooltips (cached), ids matching filters, images, a cluster's common trait, and the issues (read and
// flagged). Writes into the state only through its setters.

import { API, getBinary, getJSON, postJSON, request } from "./api.js";
import { busy, toast } from "./dom.js";
import { decodePoints } from "./points.js";
import { idIndex, on, setIssues, setPoints, setVersions, state } from "./state.js";

export const dsPath = (suffix = "") => `${API}/datasets/${encodeURIComponent(state.ds)}${suffix}`;

/** the open dataset's metadata fields: its own first, then the image properties computed at ingest
 * (img_brightness, img_sharpness...), so a chart or a menu opens on the dataset's own field */
export function metadataFields() {
  const names = Object.keys((state.info && state.info.metadata_fields) || {});
  return [...names.filter((f) => !f.startsWith("img_")), ...names.filter((f) => f.startsWith("img_"))];
}

/** the score columns every analyzed row may have (color by, filters, detail) */
export function scoreFields() {
  return ["confidence", "least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald"];
}

// ---------------------------------------------------------------------------------------------
// images (plain <img> unless reads need the key: then fetched with the header)
// ---------------------------------------------------------------------------------------------

function mediaURL(id, size = "thumb") {
  return `${dsPath(`/media/${encodeURIComponent(id)}`)}?size=${size}`;
}

export function setImage(img, id, size = "thumb", onFail = null) {
  const fail = () => {
    if (onFail) return onFail();
    img.alt = "image unavailable";
    img.title = `could not load the image of ${id}`;
  };
  if (!state.readsNeedKey) {
    img.onerror = () => {
      img.onerror = null;
      fail();
    };
    img.src = mediaURL(id, size);
    return;
  }
  request(mediaURL(id, size))
    .then((r) => r.blob())
    .then((b) => {
      const url = URL.createObjectURL(b);
      img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      img.src = url;
    })
    .catch(fail);
}

// ---------------------------------------------------------------------------------------------
// rows
// ---------------------------------------------------------------------------------------------

export const rowCache = new Map(); // id -> row (label, pred_label, confidence...) for tooltips and captions
export const ROW_COLUMNS = ["id", "label", "pred_label", "labeled", "outcome", "confidence", "split", "cluster"];

on("dataset", () => rowCache.clear());

/** Rows (dicts) for some ids, fetched with a read-only GET; order follows `ids`. */
export async function fetchRows(ids, columns) {
  const out = new Map();
  for (let k = 0; k < ids.length; k += 500) {
    const chunk = ids.slice(k, k + 500);
    const page = await getJSON(dsPath("/samples"), {
      query: {
        filters: JSON.stringify([{ field: "id", op: "in", value: chunk }]),
        columns: columns.join(","),
        limit: chunk.length,
      },
    });
    for (const r of page.items) out.set(r.id, r);
  }
  return out;
}

/** ids of every row matching structured filters (paged). */
export async function fetchIds(filters) {
  const ids = [];
  const limit = 10000;
  for (let offset = 0; ; offset += limit) {
    // GET, not POST /samples/query: reading must not need the API key
    const page = await getJSON(dsPath("/samples"), {
      query: { filters: JSON.stringify(filters), columns: "id", sort: "id", limit, offset },
    });
    for (const r of page.items) ids.push(r.id);
    if (page.items.length < limit || ids.length >= page.total) break;
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------
// points and per-point columns
// ---------------------------------------------------------------------------------------------

/** The map's points and their ids; → state.pts (event "points"). */
export async function loadPoints() {
  const t0 = performance.now();
  // the blob and the ids in parallel; the ids are re-read at the blob's version if a write came between
  const [{ buffer }, idsBody] = await Promise.all([getBinary(dsPath("/points")), getJSON(dsPath("/points/ids"))]);
  const pts = decodePoints(buffer);
  let ids = idsBody.ids;
  if (idsBody.version !== pts.version || ids.length !== pts.n) {
    ids = (await getJSON(dsPath("/points/ids"), { query: { version: pts.version } })).ids;
  }
  pts.ids = ids;
  pts.columns = {}; // lazily loaded per-point columns (label, pred_label, scores, metadata)
  window.edgeminer.timings.pointsFetch = performance.now() - t0;
  setPoints(pts);
}

/** One column for every point on the map, aligned with the points (paged GET /samples, sorted by id). */
export async function loadPointColumn(field) {
  const pts = state.pts;
  if (pts.columns[field]) return pts.columns[field];
  const values = await fetchPointValues(field);
  const numeric = values.every((v) => v === null || typeof v === "number");
  const col = numeric ? numberColumn(values) : categoryColumn(field, values);
  pts.columns[field] = col;
  return col;
}

async function fetchPointValues(field) {
  const m = idIndex();
  const filters = [
    { field: "status", op: "eq", value: "ok" },
    { field: "x", op: "is_null", value: false },
    { field: "y", op: "is_null", value: false },
  ];
  const values = new Array(state.pts.n).fill(null);
  const limit = 10000;
  for (let offset = 0; ; offset += limit) {
    const page = await getJSON(dsPath("/samples"), {
      query: { filters: JSON.stringify(filters), columns: `id,${field}`, sort: "id", limit, offset },
    });
    for (const r of page.items) {
      const i = m.get(r.id);
      if (i !== undefined) values[i] = r[field] ?? r[`meta_${field}`] ?? null;
    }
    if (page.items.length < limit || offset + limit >= page.total) break;
  }
  return values;
}

function numberColumn(values) {
  const arr = new Float32Array(values.length);
  values.forEach((v, i) => (arr[i] = v === null ? NaN : v));
  return { kind: "number", values: arr };
}

/** codes into `categories` (the classes, else the 19 commonest values); cats.length: other; 65535: null */
function categoryColumn(field, values) {
  let cats;
  if (field === "label" || field === "pred_label") cats = [...(state.info.classes || [])];
  else {
    const counts = new Map();
    for (const v of values) if (v !== null) counts.set(String(v), (counts.get(String(v)) || 0) + 1);
    cats = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a)).slice(0, 19);
  }
  const pos = new Map(cats.map((c, k) => [c, k]));
  const codes = new Uint16Array(values.length);
  let other = false;
  values.forEach((v, i) => {
    if (v === null) codes[i] = 65535;
    else {
      const c = pos.get(String(v));
      if (c === undefined) {
        other = true;
        codes[i] = cats.length; // "other"
      } else codes[i] = c;
    }
  });
  return { kind: "category", values: codes, categories: cats, other };
}

// ---------------------------------------------------------------------------------------------
// clusters
// ---------------------------------------------------------------------------------------------

/** The metadata value most over-represented in a cluster, held by at least half of it (the CLI's
 * "common trait": share over the dataset's share above 1.5); null when none. */
/** A cluster's name in tables and legends: "#id", and "noise" for the rows HDBSCAN left out (-1). */
export function clusterName(id) {
  return id === -1 ? "noise" : `#${id}`;
}

export function commonTrait(c) {
  const t = c.common_trait;
  return t ? { field: t.field, value: t.value, share: t.share, datasetShare: t.dataset_share } : null;
}

// ---------------------------------------------------------------------------------------------
// issues
// ---------------------------------------------------------------------------------------------

/** → state.issues (event "issues") */
export async function loadIssues() {
  setIssues(await getJSON(dsPath("/issues")));
}

/** POST an issue of `ids`, then reload the issues; null (and a toast) when `ids` is empty. */
export async function flagIssue(name, ids) {
  if (!ids.length) {
    toast("Select some rows first (lasso, box, a cluster or the filters).", "error");
    return null;
  }
  const issue = await busy(postJSON(dsPath("/issues"), { name, sample_ids: ids }));
  const unknown = (issue.unknown_ids || []).length;
  toast(`Flagged ${issue.count.toLocaleString()} rows as “${issue.name}”${unknown ? ` (${unknown} unknown ids left out)` : ""}.`, "ok");
  await loadIssues();
  return issue;
}

// ---------------------------------------------------------------------------------------------
// model versions and their comparison (GET /versions, /compare/points)
// ---------------------------------------------------------------------------------------------

/** The open dataset's model versions into the state (→ versions); a failure counts as no versions. */
export async function loadVersions() {
  const ds = state.ds;
  let versions;
  try {
    versions = await getJSON(dsPath("/versions"));
  } catch (err) {
    versions = { current: "", versions: [], error: err };
  }
  if (state.ds === ds) setVersions(versions);
  return versions;
}

/** The compare outcome code of each map point for the pair in `state.compare` (cached there):
 * {key, outcomes: [names by code], codes: Uint8Array in points order}. */
export async function loadComparePoints() {
  const cmp = state.compare;
  const key = `${state.ds}|${cmp.base}|${cmp.new}`;
  if (cmp.points && cmp.points.key === key) return cmp.points;
  const res = await getJSON(dsPath("/compare/points"), { query: { base: cmp.base, new: cmp.new } });
  if (res.count !== state.pts.n) {
    throw new Error(`the comparison has ${res.count} points, the map ${state.pts.n}: reload the page`);
  }
  const points = { key, outcomes: res.outcomes, codes: Uint8Array.from(res.codes) };
  if (state.compare === cmp) cmp.points = points;
  return points;
}
