// Shared DOM helpers: element lookup and creation, toasts and errors, the busy flag, number formats.

import { describeError } from "./api.js";

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** h("div", {class, text, onclick, any-attribute}, ...children): one element. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** <option value text>, the text defaulting to the value */
export const option = (value, text) => h("option", { value, text: text ?? value });

export function toast(message, kind = "info", ms = 6000) {
  const t = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  $("#toasts").append(t);
  setTimeout(() => t.remove(), kind === "error" ? Math.max(ms, 12000) : ms);
}

export function showError(err, what) {
  if (err && err.name === "AbortError") return;
  console.error(err);
  toast(`${what ? `${what} failed. ` : ""}${describeError(err)}`, "error");
}

let busyCount = 0;
/** Await `promise` with the topbar's "working…" shown. */
export async function busy(promise) {
  busyCount++;
  $("#busy").hidden = false;
  try {
    return await promise;
  } finally {
    busyCount--;
    if (!busyCount) $("#busy").hidden = true;
  }
}

/** Show only the form's `label[data-for]` matching its `source` select. */
export function toggleSourceFields(form) {
  const src = form.elements.source.value;
  $$("label[data-for]", form).forEach((l) => (l.hidden = l.dataset.for !== src));
}

export function pct(x) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : `${(100 * x).toFixed(1)}%`;
}

export function num(x, d = 3) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d);
}
