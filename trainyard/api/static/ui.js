// What every part of the dashboard uses: DOM building, number formats, tables, charts, and the
// API with the key of this tab. A module: the page's parts import it; nothing here runs on load.

export const KEY_STORE = "trainyard.apiKey";
const PALETTE = [
  "#2f6fed", "#f39c12", "#1e8e5a", "#c0392b", "#8e44ad", "#16a2b8",
  "#d35400", "#7f8c8d", "#2c3e50", "#e84393", "#6ab04c", "#b8860b",
];

export const $ = (id) => document.getElementById(id);

// Builds DOM nodes; text always goes in as text, never as HTML, so names from the API
// (teams, labels, job names, event messages) cannot inject markup.
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// --- formats ----------------------------------------------------------------------------------

const missing = (v) => v === null || v === undefined;
// money.js: the precision follows the amount ($0.00052, $3.10, $12,400), as in the CLI.
export const money = (v) => (missing(v) ? "–" : window.trainyardMoney.formatUsd(v));
export const duration = (v) => (missing(v) ? "–" : window.trainyardDuration.formatDuration(v));
export const number = (v, digits = 1) =>
  missing(v) ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
export const integer = (v) => (missing(v) ? "–" : Number(v).toLocaleString("en-US"));
export const percent = (ratio, digits = 0) => (missing(ratio) ? "–" : `${(ratio * 100).toFixed(digits)}%`);
export const signedPct = (ratio) => (missing(ratio) ? "–" : `${ratio >= 0 ? "+" : ""}${(ratio * 100).toFixed(1)}%`);
export const tokens = (v) => {
  if (!v) return "0";
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)}B`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return String(v);
};
export const label = (v) => (missing(v) || v === "" ? "(none)" : String(v));
export const color = (i) => PALETTE[i % PALETTE.length];
// An RFC 3339 time as "2026-03-10 14:05 UTC": one zone for every reader of a shared link.
export const when = (iso) => (iso ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : "–");

export function bucketLabel(iso, step) {
  const d = new Date(iso);
  const date = d.toISOString().slice(5, 10);
  return step && step < 86400 ? `${date} ${d.toISOString().slice(11, 16)}` : date;
}

export function drillHref(dim, value) {
  return `#drill/${encodeURIComponent(dim)}/${encodeURIComponent(value ?? "")}`;
}

export const jobHref = (id) => `#job/${encodeURIComponent(id)}`;
export const link = (href, text) => el("a", { href, text });

// --- tables -----------------------------------------------------------------------------------

export function table(id, headers, rows, empty) {
  const node = $(id);
  node.replaceChildren(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))));
  const body = el("tbody");
  if (!rows.length) {
    body.append(el("tr", {}, el("td", { class: "empty", colspan: headers.length, text: empty || "No spend in this window" })));
  }
  for (const cells of rows) body.append(el("tr", {}, ...cells.map((c) => el("td", {}, c))));
  node.append(body);
}

export function fields(id, pairs) {
  $(id).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v instanceof Node ? v : String(v))]));
}

// --- charts -----------------------------------------------------------------------------------

const charts = {};

// Each chart fills its container, whose CSS gives it a definite height: with
// `maintainAspectRatio: false` Chart.js then follows the container's width as the window is
// resized, and never works a height out of a width that is momentarily 0 (a hidden view).
export function chart(id, config) {
  if (charts[id]) charts[id].destroy();
  const base = {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
  };
  config.options = { ...base, ...(config.options || {}) };
  config.options.plugins = { ...base.plugins, ...(config.options.plugins || {}) };
  charts[id] = new window.Chart($(id), config);
  return charts[id];
}

export const moneyTicks = { callback: (v) => money(v) };
// Horizontal bars carry their value on x; the others on y.
export const moneyTooltip = {
  callbacks: {
    label: (ctx) => {
      const value = ctx.chart.options.indexAxis === "y" ? ctx.parsed.x : ctx.parsed.y;
      return `${ctx.dataset.label || ctx.label}: ${money(value)}`;
    },
  },
};

// Goodput's parts: what dollars bought (`costs.ledger.GOODPUT_PARTS`), named and coloured once.
export const GOODPUT = [
  ["productive_usd", "Productive", "#1e8e5a"],
  ["startup_usd", "Start-up", "#f39c12"],
  ["recomputed_usd", "Recomputed", "#8e44ad"],
  ["lost_usd", "Lost (failed, preempted)", "#c0392b"],
];
// --- the API ----------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = error && error.code;
  }
}

export const apiKey = () => sessionStorage.getItem(KEY_STORE);

export function apiUrl(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  return url;
}

export async function api(path, params) {
  const response = await fetch(apiUrl(path, params), {
    headers: { Authorization: `Bearer ${apiKey()}` },
  });
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const body = isJson ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, isJson ? body.error : null);
  return body;
}
