// The dashboard's only way to the server: JSON and binary requests under /api/v1, the API key
// (asked for once on a 401, kept in sessionStorage, sent as X-API-Key), and problem+json errors
// turned into sentences a person can act on.

const KEY_STORAGE = "edgeminer.apiKey";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, title, detail, url) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.url = url;
  }
}

let keyPrompt = null; // installed by the app: () => Promise<string|null>
let keyWaiter = null; // one prompt at a time, however many requests got a 401

export function setKeyPrompt(fn) {
  keyPrompt = fn;
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

async function askForKey(message) {
  if (!keyPrompt) return null;
  if (!keyWaiter) {
    keyWaiter = keyPrompt(message).finally(() => {
      keyWaiter = null;
    });
  }
  return keyWaiter;
}

async function problemOf(resp, url) {
  let title = resp.statusText || `HTTP ${resp.status}`;
  let detail = "";
  const type = resp.headers.get("content-type") || "";
  try {
    if (type.includes("json")) {
      const body = await resp.json();
      if (body && typeof body === "object") {
        title = body.title || title;
        if (typeof body.detail === "string") detail = body.detail;
        else if (Array.isArray(body.detail)) {
          // FastAPI validation errors: [{loc, msg}, ...]
          detail = body.detail
            .map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`)
            .join("; ");
        } else if (body.detail) detail = JSON.stringify(body.detail);
        if (Array.isArray(body.errors) && body.errors.length && !detail) {
          detail = body.errors.map((e) => e.detail || e.msg || JSON.stringify(e)).join("; ");
        }
      }
    } else {
      const text = (await resp.text()).trim();
      if (text && text.length < 300) detail = text;
    }
  } catch {
    /* the status line is all we have */
  }
  if (resp.status === 502 || resp.status === 503 || resp.status === 504) {
    detail = detail || "the server is not answering; is `edgeminer serve` still running?";
  }
  return new ApiError(resp.status, title, detail, url);
}

/** fetch with the key; on 401 ask for the key once and retry. Returns the Response (ok). */
export async function request(path, { method = "GET", body, query, accept, signal } = {}) {
  let url = path.startsWith("/") ? path : `${API}/${path}`;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
      else qs.append(k, String(v));
    }
    const s = qs.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = {};
    if (accept) headers.Accept = accept;
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    let payload;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(url, { method, headers, body: payload, signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "Network error", `could not reach the server (${err.message}); is it running?`, url);
    }
    if (resp.ok) return resp;
    if (resp.status === 401) {
      const problem = await problemOf(resp, url);
      const newKey = await askForKey(
        key ? `The API key was not accepted (${problem.detail || problem.title}).` : "This server needs an API key."
      );
      if (!newKey) throw new ApiError(401, "API key needed", "enter the server's API key to do this", url);
      setApiKey(newKey);
      continue;
    }
    throw await problemOf(resp, url);
  }
  throw new ApiError(401, "API key not accepted", "the key was refused; check it with the server's owner", url);
}

export async function getJSON(path, opts = {}) {
  const resp = await request(path, { ...opts, accept: "application/json" });
  return resp.json();
}

export async function postJSON(path, body, opts = {}) {
  const resp = await request(path, { ...opts, method: "POST", body, accept: "application/json" });
  if (resp.status === 204) return null;
  return resp.json();
}

export async function sendJSON(method, path, body, opts = {}) {
  const resp = await request(path, { ...opts, method, body, accept: "application/json" });
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export async function getBinary(path, opts = {}) {
  const resp = await request(path, { ...opts, accept: "application/octet-stream" });
  return { buffer: await resp.arrayBuffer(), headers: resp.headers };
}

/** Wait for a job (GET /api/v1/jobs/{id}: queued, running, succeeded, failed, cancelled) to finish,
 * reporting progress; resolves with the job, rejects with the job's error in words. */
export async function waitForJob(jobPath, onProgress, { interval = 400, signal } = {}) {
  for (;;) {
    const job = await getJSON(jobPath, { signal });
    if (onProgress) onProgress(job);
    const status = job.status;
    if (status === "succeeded") return job;
    if (status === "failed" || status === "cancelled") {
      const why = job.error || (job.interrupted ? "the server stopped while it ran" : "no reason recorded");
      throw new ApiError(0, `Job ${job.id} ${status}`, why, jobPath);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

export function describeError(err) {
  if (err instanceof ApiError) {
    const what = err.detail ? `${err.title}: ${err.detail}` : err.title;
    return err.status ? `${what} (HTTP ${err.status})` : what;
  }
  return err && err.message ? err.message : String(err);
}
