// Shared by every console page: API calls (with the admin token), the live event stream,
// job progress, forms, dialogs, DOM building and number/time formatting.
// Data from the API is only ever inserted as text (textContent), never as HTML.
import { SeriesChart } from "./charts.js";

export const API = document.body.dataset.api || "/api/v1";
const TOKEN_KEY = "ups.adminToken";

// ---------------------------------------------------------------- DOM and formatting

/** Build an element: h("td", {class: "num"}, "42"). Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

export function setText(sel, text) {
  const el = typeof sel === "string" ? $(sel) : sel;
  if (el) el.textContent = text === undefined || text === null ? "–" : String(text);
}

export function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

export function fmtNum(x, digits = 3) {
  if (!isNum(x)) return x === undefined || x === null ? "–" : String(x);
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
  return x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtInt(x) {
  return isNum(x) ? Math.round(x).toLocaleString("en-US") : "–";
}

export function fmtScore(x) {
  return isNum(x) ? x.toFixed(3) : "–";
}

const pad = (n) => String(n).padStart(2, "0");

/** Local date-time of an epoch (seconds) or ISO string. */
export function fmtTime(t) {
  const d = toDate(t);
  if (!d) return "–";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function toDate(t) {
  if (t === undefined || t === null || t === "") return null;
  const d = isNum(t) ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtDuration(s) {
  if (!isNum(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.round(s / 86400)} days`;
}

export function fmtAgo(t) {
  const d = toDate(t);
  if (!d) return "–";
  const s = (Date.now() - d.getTime()) / 1000;
  if (s < -5) return `in ${fmtDuration(-s)}`;
  if (s < 2) return "just now";
  return `${fmtDuration(s)} ago`;
}

export function fmtBytes(b) {
  if (!isNum(b)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < units.length - 1) {
    b /= 1024;
    i += 1;
  }
  return `${b.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A value of unknown type as short text (objects as compact JSON). */
export function fmtValue(v) {
  if (v === undefined || v === null) return "–";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (isNum(v)) return fmtNum(v);
  if (typeof v === "object") {
    const s = JSON.stringify(v);
    return s.length > 160 ? `${s.slice(0, 157)}…` : s;
  }
  return String(v);
}

/** State word → pill class (green running, amber paused/stopped, red failed). */
export function stateClass(state) {
  const s = String(state || "").toLowerCase();
  if (["running", "applied", "ok", "succeeded"].includes(s)) return "pill pill-ok";
  if (["failed", "rejected", "cancelled", "expired"].includes(s)) return "pill pill-bad";
  if (["paused", "stopped", "off", "queued", "pending", "degraded", "shutting_down"].includes(s)) return "pill pill-warn";
  return "pill pill-muted";
}

export function pill(state, text) {
  return h("span", { class: stateClass(state) }, text ?? state ?? "–");
}

export function setPill(sel, state, text) {
  const el = typeof sel === "string" ? $(sel) : sel;
  if (!el) return;
  el.className = stateClass(state);
  el.textContent = text ?? state ?? "–";
}

/** Fill a <tbody> with key/value rows. */
export function fillKV(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map(([k, v, cls]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: cls || "" }, v instanceof Node ? v : fmtValue(v)))),
  );
}

/** Call fn at most once per `ms` (the last call within the window wins, run at its end); `.cancel()` drops a pending call. */
export function throttle(fn, ms) {
  let timer = null;
  let pendingArgs = null;
  const wrapped = (...args) => {
    pendingArgs = args;
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn(...pendingArgs);
    }, ms);
  };
  wrapped.cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  return wrapped;
}

// ---------------------------------------------------------------- toasts and dialogs

export function toast(text, kind = "info", ms = 5000) {
  const box = $("#toasts");
  if (!box) return;
  const t = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  box.append(t);
  setTimeout(() => t.remove(), ms);
}

/** Ask for confirmation in the page's own dialog; resolves true on confirm. */
export function confirmAction(title, text, confirmLabel = "Confirm") {
  const dlg = $("#confirm-dialog");
  setText("#confirm-title", title);
  setText("#confirm-text", text);
  setText("#confirm-ok", confirmLabel);
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
  });
}

// ---------------------------------------------------------------- admin token

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

let pendingAsk = null;

/** Show the token dialog (once for concurrent callers); resolves to the token or "" if cancelled. */
export function askToken(reason) {
  if (pendingAsk) return pendingAsk;
  const dlg = $("#token-dialog");
  const input = $("#token-input");
  if (reason) setText("#token-dialog-reason", reason);
  input.value = getToken();
  pendingAsk = new Promise((resolve) => {
    dlg.addEventListener(
      "close",
      async () => {
        pendingAsk = null;
        if (dlg.returnValue === "ok" && input.value.trim()) {
          const token = input.value.trim();
          // checked at once: a wrong token is said so now and not kept (not at the next change)
          const accepted = await tokenAccepted(token);
          if (accepted) sessionStorage.setItem(TOKEN_KEY, token);
          else {
            sessionStorage.removeItem(TOKEN_KEY);
            toast("The server refused this admin token; it is not kept. Enter UPS_ADMIN_TOKEN of the server.", "error", 10000);
          }
          resolve(accepted ? token : "");
        } else {
          if (dlg.returnValue === "forget") sessionStorage.removeItem(TOKEN_KEY);
          resolve("");
        }
        renderTokenButton();
      },
      { once: true },
    );
    dlg.returnValue = "";
    dlg.showModal();
    input.focus();
  });
  return pendingAsk;
}

/** Whether the server takes ``token`` (true when it needs none, or cannot be asked). */
async function tokenAccepted(token) {
  try {
    const resp = await fetch(`${API}/auth/check`, { headers: { Accept: "application/json", Authorization: `Bearer ${token}` } });
    if (!resp.ok) return true; // an older server: the next change will tell
    return (await resp.json()).token_accepted !== false;
  } catch {
    return true;
  }
}

function renderTokenButton() {
  const b = $("#token-button");
  if (!b) return;
  const has = Boolean(getToken());
  b.textContent = has ? "Admin token ✓" : "Admin token";
  b.title = has ? "An admin token is kept for this tab's session" : "No admin token set (fine on loopback without one)";
}

// ---------------------------------------------------------------- API calls

export class ApiError extends Error {
  constructor(status, body, path) {
    super(errorMessage(status, body, path));
    this.status = status;
    this.body = body;
    this.path = path;
  }

  /**
   * [{field, message}] from the API's error body {status, error, message, details: [{field, problem}]}
   * (field like "body.condition"), or from Litestar's own {detail, extra: [{key, message}]}.
   */
  fieldErrors() {
    const b = this.body;
    const out = [];
    if (b && typeof b === "object") {
      for (const e of Array.isArray(b.details) ? b.details : []) {
        if (e && typeof e === "object") out.push({ field: fieldName(e.field), message: e.problem ?? e.message ?? "" });
      }
      for (const e of Array.isArray(b.extra) ? b.extra : []) {
        if (e && typeof e === "object") out.push({ field: fieldName(e.key), message: e.message ?? "" });
      }
    }
    return out;
  }
}

/** "body.weight" → "weight"; "body" (the whole body, e.g. a cross-field check) → "". */
function fieldName(f) {
  if (typeof f !== "string") return "";
  return f.replace(/^(body|query|path)\.?/, "");
}

function errorMessage(status, body, path) {
  if (body && typeof body === "object") {
    const msg = body.message ?? body.detail ?? body.error;
    if (msg) return String(msg);
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 300);
  return `${path}: HTTP ${status}`;
}

/**
 * Call the JSON API. Mutating calls carry the admin token when one is kept; on 401 the token is
 * asked for (once) and the call retried. Throws ApiError with the server's message.
 */
export async function api(path, { method = "GET", body, query, signal } = {}) {
  let url = API + path;
  if (query) {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null));
    if ([...qs].length) url += `?${qs}`;
  }
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, `cannot reach the server (${err.message})`, path);
    }
    const text = await resp.text();
    let data = text;
    if ((resp.headers.get("content-type") || "").includes("json") && text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (resp.status === 401 && attempt === 0) {
      const reason = token
        ? "The kept admin token was refused. Enter the current one (UPS_ADMIN_TOKEN of the server)."
        : "This server has an admin token (UPS_ADMIN_TOKEN): enter it to make changes. It is kept for this tab's session.";
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      const got = await askToken(reason);
      if (got) continue;
    }
    if (resp.status === 401 && token) {
      sessionStorage.removeItem(TOKEN_KEY); // refused again: never keep a token the server does not take
      renderTokenButton();
    }
    // the server is starting (scoring and explainer loading): it says when to ask again, and we do
    const retryAfter = Number(resp.headers.get("Retry-After"));
    if (resp.status === 503 && retryAfter > 0 && attempt < STARTUP_RETRIES) {
      if (attempt === 0) toast(`${errorMessage(resp.status, data, path)} Retrying…`, "info", retryAfter * 1000);
      await new Promise((resolve) => setTimeout(resolve, retryAfter * 1000));
      continue;
    }
    if (!resp.ok) throw new ApiError(resp.status, data, path);
    return data;
  }
}

/** How often a call refused while the server starts is retried (at its Retry-After, ~2 s: several minutes). */
const STARTUP_RETRIES = 150;

// ---------------------------------------------------------------- forms

/** Values of a form's named inputs, numbers as numbers, checkboxes as booleans. */
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.type === "number") out[el.name] = el.value.trim() === "" ? null : Number(el.value);
    else out[el.name] = el.value;
  }
  return out;
}

export function clearErrors(form) {
  for (const el of $$("[data-error-for]", form)) el.textContent = "";
  for (const el of $$(".invalid", form)) el.classList.remove("invalid");
}

/**
 * Show an API error next to the field it names (or at the form's foot): the server's own words.
 * `guess` maps a message to a field when the server names none (e.g. a rule compile error → condition).
 */
export function showError(form, err, guess) {
  const placed = new Set();
  const fieldErrs = err instanceof ApiError ? err.fieldErrors() : [];
  for (const { field, message } of fieldErrs) {
    // "calls_per_user.max" goes next to its field "calls_per_user" (a pair of inputs) when that has the slot
    const parent = field && field.includes(".") ? field.slice(0, field.indexOf(".")) : null;
    const own = field && $(`[data-error-for="${CSS.escape(field)}"]`, form);
    const slot = own || (parent && $(`[data-error-for="${CSS.escape(parent)}"]`, form));
    if (slot) {
      const text = own ? message : `${field.slice(parent.length + 1)}: ${message}`;
      slot.textContent = slot.textContent ? `${slot.textContent}; ${text}` : text;
      const key = own ? field : parent;
      const marked = form.elements[field] ? [form.elements[field]] : [...form.elements].filter((el) => el.name === key || el.name?.startsWith(`${key}.`));
      for (const el of marked) el.classList.add("invalid");
      placed.add(message);
    }
  }
  const rest = fieldErrs.filter((e) => !placed.has(e.message));
  if (placed.size && !rest.length) return;
  if (placed.size) {
    const target = $('[data-error-for="_form"]', form);
    if (target) target.textContent = rest.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join("; ");
    return;
  }
  const field = guess ? guess(err) : null;
  const slot = field ? $(`[data-error-for="${CSS.escape(field)}"]`, form) : null;
  const target = slot || $('[data-error-for="_form"]', form);
  if (slot) form.elements[field]?.classList.add("invalid");
  if (target) target.textContent = err.message;
  else toast(err.message, "error");
}

// ---------------------------------------------------------------- live stream (SSE)

// event names of /operations/stream (api/sse.py): the dataflow summary, job rows, commands, process
// metrics (CPU, memory; at once on connecting, then every few seconds); "rules" once the stream sends it
const STREAM_EVENTS = ["status", "job", "op", "metrics", "rules"];

class Live {
  constructor() {
    this.handlers = new Map();
    this.source = null;
    this.last = new Map();
  }

  /** Subscribe to a stream event ("status", "metrics", "job", …); also gets the last one seen. */
  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
    if (this.last.has(name)) fn(this.last.get(name));
    return () => this.handlers.get(name).delete(fn);
  }

  emit(name, data) {
    this.last.set(name, data);
    for (const fn of this.handlers.get(name) || []) {
      try {
        fn(data);
      } catch (err) {
        console.error(`live ${name} handler failed`, err);
      }
    }
  }

  /** One stream per browser: a SharedWorker holds it for every console tab (a stream per tab would use
   * up the browser's six connections per host); a tab of a browser without SharedWorker opens its own. */
  start() {
    if (this.source) return;
    const url = `${API}/operations/stream`;
    if ("SharedWorker" in window) {
      const worker = new SharedWorker(`${document.body.dataset.prefix || "/console"}/static/live-worker.js`, { name: "ups-live" });
      this.source = worker.port;
      worker.port.addEventListener("message", (ev) => {
        const m = ev.data || {};
        if (m.type === "event") this.deliver(m.name, m.data);
        else if (m.type === "state") this.showState(m.state);
      });
      worker.port.start();
      worker.port.postMessage({ type: "hello", url, names: STREAM_EVENTS });
      window.addEventListener("pagehide", () => worker.port.postMessage({ type: "bye" }));
      // back from the page cache: the worker forgot this tab at pagehide
      window.addEventListener("pageshow", (ev) => ev.persisted && worker.port.postMessage({ type: "hello", url, names: STREAM_EVENTS }));
      return;
    }
    if (!("EventSource" in window)) return;
    const src = new EventSource(url);
    this.source = src;
    src.addEventListener("message", (ev) => this.deliver("message", ev.data));
    for (const name of STREAM_EVENTS) src.addEventListener(name, (ev) => this.deliver(name, ev.data));
    src.addEventListener("open", () => this.showState("open"));
    src.addEventListener("error", () => this.showState(src.readyState === EventSource.CLOSED ? "closed" : "reconnecting"));
    window.addEventListener("pagehide", () => src.close());
  }

  /** One event of the stream (its name and raw data) to this page's handlers. */
  deliver(name, raw) {
    let data = raw;
    try {
      data = JSON.parse(raw);
    } catch {
      /* plain text event */
    }
    // unnamed events may carry their kind inside: {"type": "status", ...}
    const kind = name === "message" && data && typeof data === "object" ? data.type || data.event || "message" : name;
    const payload = name === "message" && data && typeof data === "object" && "data" in data ? data.data : data;
    this.emit(kind, payload);
    // events received per kind (data-live-status, data-live-metrics, …): observable progress for tests
    if (STREAM_EVENTS.includes(kind)) {
      const key = `live${kind.charAt(0).toUpperCase()}${kind.slice(1)}`;
      document.body.dataset[key] = String(Number(document.body.dataset[key] || 0) + 1);
    }
    this.showState("open");
  }

  /** The stream's state in the top bar: live, reconnecting, disconnected. */
  showState(state) {
    const ind = $("#live-indicator");
    if (!ind) return;
    if (state === "connecting") return;
    const ok = state === "open";
    ind.className = ok ? "pill pill-ok" : "pill pill-warn";
    ind.textContent = ok ? "live" : state === "closed" ? "live: disconnected" : "live: reconnecting…";
    if (ok) ind.title = `last update ${new Date().toLocaleTimeString()}`;
  }
}

export const live = new Live();

// ---------------------------------------------------------------- system status

/**
 * The system status as the pages show it: the full /operations/status document, kept current by the
 * stream's "status" events (the dataflow summary, sent when it changes) plus a throttled re-read of
 * the full document for what the summary lacks (dead letters, history, components).
 */
export class StatusView {
  constructor(onChange) {
    this.full = {};
    this.onChange = onChange;
    this.reread = throttle(() => this.load().catch(() => {}), 4000);
  }

  async load() {
    this.full = await api("/operations/status");
    this.onChange(this.view());
    return this.full;
  }

  start() {
    live.on("status", (summary) => {
      this.full = { ...this.full, dataflow: summary };
      this.onChange(this.view());
      this.reread();
    });
    live.on("op", () => this.reread());
    return this.load();
  }

  view() {
    const f = this.full || {};
    const raw = f.components?.dataflow || {};
    // the API's summary (liveness-checked) wins over the flow's own raw row
    const df = { ...raw, ...(f.dataflow || {}) };
    const running = df.alive === true;
    return { full: f, df, running, log: f.log || {}, models: f.models || {}, history: f.history || [] };
  }
}

/** What the console calls ingestion: "stopped" whenever events are not flowing in. */
export function ingestionWord(v) {
  if (!v.running) return "stopped";
  return v.df.ingestion === "running" ? "running" : "stopped";
}

export function refreshWord(v) {
  if (!v.running) return "stopped";
  return v.df.refresh === "running" ? "running" : v.df.refresh === "off" ? "off" : "stopped";
}

// ---------------------------------------------------------------- jobs

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isTerminal(state) {
  return TERMINAL.has(String(state || "").toLowerCase());
}

export function progressFraction(job) {
  let p = Number(job?.progress);
  if (!Number.isFinite(p)) return 0;
  if (p > 1) p /= 100; // tolerate percentages
  return Math.max(0, Math.min(1, p));
}

/**
 * Follow a background job in `box`: progress bar and message from the live stream (with a slow
 * poll of /jobs/{id} as a safety net for events missed while connecting), final metrics at the end.
 * Resolves with the final job document.
 */
export function followJob(box, jobOrId, { title = "Job", onDone } = {}) {
  const id = typeof jobOrId === "string" ? jobOrId : jobOrId.id || jobOrId.job_id;
  box.hidden = false;
  const bar = h("progress", { max: 1, value: 0, class: "job-progress", "aria-label": `${title} progress` });
  const head = h("div", { class: "job-head" }, h("strong", {}, title), " ", h("code", {}, id), " ", pill("queued"), h("span", { class: "job-pct" }, "0 %"));
  const msg = h("div", { class: "job-message hint" }, "");
  const result = h("div", { class: "job-result" });
  box.replaceChildren(head, bar, msg, result);
  box.dataset.jobId = id;
  box.dataset.state = "queued";

  return new Promise((resolve) => {
    let finished = false;
    let timer = null;
    const render = (job) => {
      if (finished || !job) return;
      const jid = job.id || job.job_id;
      if (jid && jid !== id) return;
      const state = job.state || job.status || "running";
      const frac = state === "succeeded" ? 1 : progressFraction(job);
      bar.value = frac;
      head.querySelector(".pill").replaceWith(pill(state));
      head.querySelector(".job-pct").textContent = `${Math.round(frac * 100)} %`;
      box.dataset.state = state;
      if (job.message) msg.textContent = job.message;
      if (isTerminal(state)) {
        finished = true;
        clearInterval(timer);
        off();
        if (job.error) result.replaceChildren(h("div", { class: "notice notice-error" }, String(job.error)));
        else if (job.result) result.replaceChildren(renderMetrics(job.result, job));
        else fetchFinal();
        onDone?.(job);
        resolve(job);
      }
    };
    // the stream may announce the end without the result: fetch the job document once
    const fetchFinal = () =>
      api(`/jobs/${encodeURIComponent(id)}`)
        .then((j) => j?.result && result.replaceChildren(renderMetrics(j.result, j)))
        .catch(() => {});
    const off = live.on("job", (ev) => render(ev?.job || ev));
    const poll = () =>
      api(`/jobs/${encodeURIComponent(id)}`)
        .then(render)
        .catch((err) => {
          if (err.status === 404) {
            msg.textContent = err.message;
            clearInterval(timer);
          }
        });
    if (typeof jobOrId === "object") render(jobOrId);
    poll();
    timer = setInterval(poll, 3000);
  });
}

/** Final metrics of a job: every figure as a compact key/value grid, loss curves as small charts. */
export function renderMetrics(result, job) {
  const wrap = h("div", { class: "metrics" });
  const rows = [];
  const series = [];
  const walk = (obj, prefix) => {
    for (const [k, v] of Object.entries(obj)) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (Array.isArray(v) && v.length > 1 && v.every(isNum)) series.push([key, v]);
      else if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length <= 40) walk(v, key);
      else rows.push([key, v]);
    }
  };
  const doc = result && typeof result === "object" ? result : { result };
  // {"fusion": {...}} or {"refresh": {...}, "duration_s": 3}: the one section needs no prefix on every key
  const sections = Object.entries(doc).filter(([, v]) => v && typeof v === "object" && !Array.isArray(v));
  if (sections.length === 1) {
    walk(Object.fromEntries(Object.entries(doc).filter(([k]) => k !== sections[0][0])), "");
    walk(sections[0][1], "");
  } else walk(doc, "");
  if (job?.started_at && job?.finished_at && !rows.some(([k]) => k.startsWith("duration"))) {
    rows.unshift(["duration", job.finished_at - job.started_at]);
  }
  const grid = h(
    "dl",
    { class: "metrics-table" },
    rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, /duration|seconds/.test(k) && isNum(v) ? fmtDuration(v) : fmtValue(v))]),
  );
  wrap.append(grid);
  for (const [k, vals] of series.slice(0, 4)) {
    const holder = h("div", { class: "chart chart-small" });
    wrap.append(holder);
    new SeriesChart(holder, { title: k, values: vals });
  }
  return wrap;
}

/** A form that starts a background job: the API's validation beside its fields, then the job followed in `box`. */
export function jobForm(form, { path, box, title, onDone }) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const job = await api(path, { method: "POST", body: formValues(form) });
      toast(`${title}: job ${job.id} started`);
      await followJob(box, job, { title, onDone });
    } catch (err) {
      showError(form, err);
    } finally {
      button.disabled = false;
    }
  });
}

/** Recent jobs into a table body (shared by Overview and Operations). */
export function renderJobs(tbody, jobs) {
  const list = Array.isArray(jobs) ? jobs : jobs?.jobs || jobs?.items || [];
  if (!list.length) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "hint" }, "no jobs yet")));
    return;
  }
  tbody.replaceChildren(
    ...list.slice(0, 20).map((j) => {
      const dur = j.finished_at && j.started_at ? j.finished_at - j.started_at : j.started_at ? Date.now() / 1000 - j.started_at : null;
      return h(
        "tr",
        { dataset: { jobId: j.id } },
        h("td", {}, h("code", {}, j.id)),
        h("td", {}, j.kind),
        h("td", {}, pill(j.state)),
        h("td", { class: "num" }, `${Math.round(progressFraction(j) * 100)} %`),
        h("td", { class: "wrap" }, j.error || j.message || ""),
        h("td", {}, fmtTime(j.created_at)),
        h("td", { class: "num" }, fmtDuration(dur)),
      );
    }),
  );
}

// ---------------------------------------------------------------- page start

export function boot(main) {
  renderTokenButton();
  $("#token-button")?.addEventListener("click", () => askToken());
  live.start();
  Promise.resolve()
    .then(main)
    // the page has loaded its data and wired its controls: what tests (and impatient users) wait for
    .then(() => {
      document.body.dataset.ready = "true";
    })
    .catch((err) => {
      document.body.dataset.ready = "error";
      console.error(err);
      toast(err.message || String(err), "error", 10000);
    });
}
