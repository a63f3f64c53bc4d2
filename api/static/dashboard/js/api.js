// The API client of the dashboard: every call goes through the service's own /v1 and /api
// routes with the signed-in key as a Bearer header. The key lives in sessionStorage only
// (gone when the tab closes; never in a URL, so never in a server log or browser history).

const KEY = "paec.apiKey";

export function getKey() { return sessionStorage.getItem(KEY); }
export function setKey(key) { sessionStorage.setItem(KEY, key); }
export function clearKey() { sessionStorage.removeItem(KEY); }

/** An error answered by the API, in its envelope {message, type, param, code}. */
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.param = err.param || null;
    this.code = err.code || null;
  }
}

function headers(extra) {
  const h = new Headers(extra || {});
  const key = getKey();
  if (key) h.set("Authorization", `Bearer ${key}`);
  return h;
}

async function raise(resp, probe = false) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  const error = new ApiError(resp.status, body);
  // A key revoked while signed in: back to the sign-in page (not for the sign-in's own check).
  if (resp.status === 401 && !probe) window.dispatchEvent(new CustomEvent("paec:unauthorized"));
  throw error;
}

/** GET/POST JSON; resolves to the parsed body, rejects with ApiError. `probe`: a 401 is the
 *  caller's to handle (the sign-in's check of a key). */
export async function call(path, { method = "GET", body, signal, probe = false } = {}) {
  const init = { method, headers: headers(), signal };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) await raise(resp, probe);
  return resp.status === 204 ? null : resp.json();
}

/** Every item of an OpenAI-style list route, following `after` while `has_more`. */
export async function listAll(path, { limit = 100, max = 1000, signal } = {}) {
  const out = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await call(`${path}${sep}limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ""}`, { signal });
    out.push(...page.data);
    if (!page.has_more || !page.data.length || out.length >= max) return out;
    after = page.data[page.data.length - 1].id;
  }
}

/** Download a file the API serves (a checkpoint archive) under `filename`. The Bearer header
 *  rules out a plain link, so the body is fetched and handed to the browser as a blob. */
export async function download(path, filename) {
  const resp = await fetch(path, { headers: headers() });
  if (!resp.ok) await raise(resp);
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * Follow a job's Server-Sent Events (GET /api/jobs/{id}/stream) with fetch, which can send
 * the Bearer header (EventSource cannot). Calls onEvent(type, data, id) per message and
 * reconnects after a dropped connection with Last-Event-ID, as EventSource would. Resolves
 * when the stream sends `end` or `error`, or when `signal` aborts.
 */
export async function follow(jobId, { after = null, onEvent, signal }) {
  let last = after;
  let retryMs = 2000;
  while (!signal.aborted) {
    const h = headers({ Accept: "text/event-stream" });
    if (last) h.set("Last-Event-ID", last);
    let resp;
    try {
      resp = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/stream`, { headers: h, signal });
    } catch (e) {
      if (signal.aborted) return;
      await sleep(retryMs, signal);
      continue;
    }
    if (!resp.ok) await raise(resp);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const msg = parse(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (msg.retry) retryMs = msg.retry;
          if (!msg.event) continue;
          if (msg.id) last = msg.id;
          onEvent(msg.event, msg.data, msg.id);
          if (msg.event === "end" || msg.event === "error") return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    await sleep(retryMs, signal);
  }
}

function parse(block) {
  const msg = { event: null, data: null, id: null, retry: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") msg.event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") msg.id = value;
    else if (field === "retry") msg.retry = Number(value) || null;
  }
  if (data.length) {
    try { msg.data = JSON.parse(data.join("\n")); } catch { msg.data = data.join("\n"); }
  }
  return msg;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
