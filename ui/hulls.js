// Cluster outlines for the map, computed in the browser from the points already loaded (x, y and
// cluster of every row), once per loaded map: each cluster's points are split into the groups that lie
// together on the map (occupied cells of a coarse grid, 8-connected), and each group big enough gets
// its convex hull. A cluster in two places on the map gets two outlines, not one long sliver across
// the empty space between them; a few stray points get none. About n log n: ~100k points take a
// fraction of a second.

/**
 * @param {Float32Array} xy  [x0, y0, x1, y1, ...]
 * @param {Int32Array} cluster  cluster id per point (negative: noise / not clustered, no outline)
 * @param {{grid?: number, minShare?: number, minPoints?: number}} opts  grid cells per side; a group
 *   needs `minShare` of its cluster's points and at least `minPoints` points to get an outline
 * @returns {Map<number, number[][][]>} cluster id -> its outlines, largest group first; an outline is
 *   hull vertices [[x, y], ...], counter-clockwise
 */
export function clusterHulls(xy, cluster, { grid = 48, minShare = 0.05, minPoints = 3 } = {}) {
  const b = bounds(xy);
  const sx = grid / Math.max(b.maxX - b.minX, 1e-9);
  const sy = grid / Math.max(b.maxY - b.minY, 1e-9);
  const cells = new Map(); // cluster id -> Map(cell -> [point indices])
  for (let i = 0; i < cluster.length; i++) {
    const c = cluster[i];
    const x = xy[2 * i];
    const y = xy[2 * i + 1];
    if (c < 0 || !Number.isFinite(x) || !Number.isFinite(y)) continue;
    const cell = Math.min(grid - 1, Math.floor((y - b.minY) * sy)) * grid + Math.min(grid - 1, Math.floor((x - b.minX) * sx));
    let byCell = cells.get(c);
    if (!byCell) cells.set(c, (byCell = new Map()));
    const list = byCell.get(cell);
    if (list) list.push(i);
    else byCell.set(cell, [i]);
  }
  const out = new Map();
  for (const [c, byCell] of cells) {
    let size = 0;
    for (const list of byCell.values()) size += list.length;
    const need = Math.max(minPoints, minShare * size);
    const hulls = groups(byCell, grid)
      .filter((g) => g.length >= need)
      .sort((a, b2) => b2.length - a.length)
      .map((g) => convexHull(g.map((i) => [xy[2 * i], xy[2 * i + 1]])))
      .filter((h) => h.length >= 3);
    if (hulls.length) out.set(c, hulls);
  }
  return out;
}

function bounds(xy) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (let i = 0; i < xy.length; i += 2) {
    const x = xy[i];
    const y = xy[i + 1];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    if (x < minX) minX = x;
    if (x > maxX) maxX = x;
    if (y < minY) minY = y;
    if (y > maxY) maxY = y;
  }
  return Number.isFinite(minX) ? { minX, minY, maxX, maxY } : { minX: 0, minY: 0, maxX: 1, maxY: 1 };
}

/** the point indices of each 8-connected group of occupied cells */
function groups(byCell, grid) {
  const seen = new Set();
  const out = [];
  for (const start of byCell.keys()) {
    if (seen.has(start)) continue;
    seen.add(start);
    const stack = [start];
    const members = [];
    while (stack.length) {
      const cell = stack.pop();
      members.push(...byCell.get(cell));
      const cx = cell % grid;
      const cy = (cell - cx) / grid;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = cx + dx;
          const ny = cy + dy;
          const next = ny * grid + nx;
          if (nx < 0 || ny < 0 || nx >= grid || ny >= grid || seen.has(next) || !byCell.has(next)) continue;
          seen.add(next);
          stack.push(next);
        }
      }
    }
    out.push(members);
  }
  return out;
}

function cross(o, a, b) {
  return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

/** Andrew's monotone chain: the hull of `pts` ([[x, y], ...]), counter-clockwise, no repeated point */
export function convexHull(pts) {
  const p = pts.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (p.length < 3) return p;
  const lower = [];
  for (const q of p) {
    while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], q) <= 0) lower.pop();
    lower.push(q);
  }
  const upper = [];
  for (let k = p.length - 1; k >= 0; k--) {
    const q = p[k];
    while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], q) <= 0) upper.pop();
    upper.push(q);
  }
  lower.pop();
  upper.pop();
  return lower.concat(upper);
}
