// Small SVG charts (no library needed): horizontal bars, and stacked correct / wrong bars.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(0)}k`;
  return String(n);
}

/**
 * Horizontal bars, one row per category, each split into stacked segments.
 * rows: [{label, parts: [{value, color, name}]}]; onClick(row) optional.
 */
export function stackedBars(container, rows, { legend = [], onClick, width = 440 } = {}) {
  container.replaceChildren();
  if (!rows.length) {
    container.textContent = "No data.";
    return;
  }
  const labelW = Math.min(150, 12 + 7 * Math.max(...rows.map((r) => String(r.label).length)));
  const rowH = 20;
  const top = legend.length ? 22 : 4;
  const height = top + rows.length * rowH + 4;
  const max = Math.max(1, ...rows.map((r) => r.parts.reduce((s, p) => s + p.value, 0)));
  const hasNotes = rows.some((r) => r.note);
  const barW = width - labelW - (hasNotes ? 120 : 50);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  let lx = labelW;
  for (const item of legend) {
    svg.append(el("rect", { x: lx, y: 5, width: 10, height: 10, fill: item.color, rx: 2 }));
    svg.append(el("text", { x: lx + 14, y: 14 }, item.name));
    lx += 24 + 7 * item.name.length;
  }
  rows.forEach((row, k) => {
    const y = top + k * rowH;
    const g = el("g", { class: "row" });
    const title = el("title", {}, `${row.label}: ${row.parts.map((p) => `${p.name} ${p.value}`).join(", ")}`);
    g.append(title);
    g.append(el("text", { x: labelW - 6, y: y + 14, "text-anchor": "end" }, String(row.label)));
    let x = labelW;
    let total = 0;
    for (const part of row.parts) {
      const w = (part.value / max) * barW;
      if (w > 0) g.append(el("rect", { x, y: y + 3, width: Math.max(w, 0.5), height: rowH - 6, fill: part.color, rx: 2 }));
      x += w;
      total += part.value;
    }
    g.append(el("text", { x: x + 4, y: y + 14, fill: "#667085" }, row.note ? `${fmt(total)} · ${row.note}` : fmt(total)));
    if (onClick) {
      g.style.cursor = "pointer";
      g.addEventListener("click", () => onClick(row));
    }
    svg.append(g);
  });
  container.append(svg);
}
