// What every screen shares: the signed-in person, the API with their token, words in the chosen
// language, times in the desk's time zone, live countdowns, evidence fetched with the token.
import { DELIVERY_NAMES, OUTCOME_NAMES, STATUS_NAMES, STRINGS } from "./i18n.js";

export const state = {
  lang: localStorage.getItem("console-lang") || (navigator.language.startsWith("zh") ? "zh" : "en"),
  token: sessionStorage.getItem("console-token") || "",
  me: null,  // /v1/console/me
  timers: [],  // intervals of the screen on show (cleared on every route)
  cleanups: [],
};

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
export const t = (key) => STRINGS[state.lang]?.[key] ?? STRINGS.en[key] ?? key;
export const statusName = (s) => STATUS_NAMES[state.lang]?.[s] ?? s;
export const outcomeName = (o) => OUTCOME_NAMES[state.lang]?.[o] ?? o;
export const deliveryName = (d) => DELIVERY_NAMES[state.lang]?.[d] ?? d;
export const categoryName = (c) => state.me?.categories?.[c]?.[state.lang] ?? c;

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** A call to the gateway with the signed-in token; JSON in and out. Throws ApiError. */
export async function api(path, { method = "GET", body, headers = {}, quiet = false, raw = false } = {}) {
  const r = await fetch(path, {
    method, headers: { Authorization: "Bearer " + state.token, ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  if (r.status === 401 && !quiet) { signOut(); throw new ApiError(401, {}); }
  if (raw) return r;
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, data);
  return { data, status: r.status, etag: r.headers.get("ETag") };
}

export function signOut() {
  sessionStorage.removeItem("console-token");
  state.token = "";
  state.me = null;
  location.hash = "#/login";
}

// -- time -----------------------------------------------------------------------------------

function zone() { return state.me?.timezone || "Asia/Shanghai"; }

export function fmtTime(iso, { date = true, seconds = false } = {}) {
  if (!iso) return "–";
  const opts = { timeZone: zone(), hour: "2-digit", minute: "2-digit", hour12: false };
  if (seconds) opts.second = "2-digit";
  if (date) Object.assign(opts, { month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat(state.lang === "zh" ? "zh-CN" : "en-GB", opts).format(new Date(iso));
}

export function fmtDuration(ms) {
  const s = Math.max(0, Math.round(Math.abs(ms) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

/** A live countdown: <span data-due="ISO"> rewritten every second by the ticker below. */
export function countdown(iso, extra = "") {
  if (!iso) return "–";
  return `<span class="countdown ${extra}" data-due="${esc(iso)}" title="${esc(fmtTime(iso, { seconds: true }))}"></span>`;
}

function tick() {
  const now = Date.now();
  for (const el of $$("[data-due]")) {
    const left = new Date(el.dataset.due).getTime() - now;
    el.textContent = left >= 0 ? `${t("due_in")} ${fmtDuration(left)}` : `${t("overdue")} ${fmtDuration(left)}`;
    el.classList.toggle("over", left < 0);
    el.classList.toggle("soon", left >= 0 && left < 60_000);
  }
}
setInterval(tick, 1000);
export const refreshCountdowns = tick;

// -- screens ----------------------------------------------------------------------------------

/** Run ``fn`` every ``ms`` while the current screen is shown (cleared when the route changes). */
export function every(ms, fn) { state.timers.push(setInterval(fn, ms)); }
export function onLeave(fn) { state.cleanups.push(fn); }
export function leaveScreen() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  state.cleanups.forEach((fn) => fn());
  state.cleanups = [];
}

export function toast(message, kind = "ok") {
  const box = $("#toast");
  box.textContent = message;
  box.className = `show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 3500);
}

export function problemText(err) {
  if (!(err instanceof ApiError)) return String(err);
  const b = err.body;
  return [b.code, b.detail || b.title].filter(Boolean).join(": ");
}

export function pill(text, kind = "") { return `<span class="pill ${kind}">${esc(text)}</span>`; }
export function statusPill(status) { return pill(statusName(status), `st-${status}`); }

// -- evidence -------------------------------------------------------------------------------

const blobs = new Map();  // url -> object URL (kept for the page's life: evidence does not change)

/** The evidence's bytes as an object URL (an <img src> cannot send the token). */
export async function evidenceUrl(path) {
  if (!blobs.has(path)) {
    const r = await api(path, { raw: true });
    if (!r.ok) throw new ApiError(r.status, {});
    blobs.set(path, URL.createObjectURL(await r.blob()));
  }
  return blobs.get(path);
}
