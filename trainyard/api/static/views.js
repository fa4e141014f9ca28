// Spend by who submitted it (the API key's owner) and by a job label (a metadata key), and the
// jobs behind any number of the dashboard (a drill).

import { api, drillHref, el, integer, jobHref, label, link, money, number, percent, table, tokens, $ } from "./ui.js";

const LABEL_STORE = "trainyard.labelKey";
const LABEL_PREFIX = "label:";

// A row's name: a link to its jobs, unless the row is the jobs without a value.
const named = (dim, value) => (value === null || value === undefined ? label(value) : link(drillHref(dim, value), label(value)));

function spendCells(dim, value, r) {
  return [
    value === null || value === undefined ? money(r.cost_usd) : link(drillHref(dim, value), money(r.cost_usd)),
    integer(r.jobs),
    number(r.billable_hours),
    money(r.waste_usd),
    percent(r.goodput),
  ];
}

export async function loadUsers(filters) {
  const result = await api("/v1/costs", { window: filters.window, team: filters.team, aggregate: "user,team", limit: 50 });
  table(
    "users-table",
    ["User (key)", "Team", "Spend", "Jobs started", "Hours", "Waste", "Goodput"],
    result.data.map((r) => [named("user", r.key.user), label(r.key.team), ...spendCells("user", r.key.user, r)]),
  );
  $("users-total").textContent = `${money(result.totals.cost_usd)} by ${integer(result.data.length)} key(s)`;
}

// --- labels -----------------------------------------------------------------------------------

export const labelKey = () => $("label-key").value.trim();

// The label keys of recent jobs, the commonest first, offered in the picker; the last key
// chosen in this tab stays chosen.
export async function loadLabelKeys() {
  const recent = await api("/v1/jobs", { limit: 100 });
  const seen = new Map();
  for (const job of recent.data) {
    for (const key of Object.keys(job.metadata || {})) seen.set(key, (seen.get(key) || 0) + 1);
  }
  const keys = [...seen.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([k]) => k);
  $("label-keys").replaceChildren(...keys.map((k) => el("option", { value: k })));
  const input = $("label-key");
  input.value = sessionStorage.getItem(LABEL_STORE) || input.value || keys[0] || "";
}

export async function loadLabels(filters) {
  const key = labelKey();
  if (!/^[A-Za-z0-9_.\-/]{1,64}$/.test(key)) {
    table("labels-table", ["Value", "Spend"], [], key ? "A label key is 1-64 letters, digits or . _ - /" : "No label key");
    $("labels-total").textContent = "";
    return;
  }
  sessionStorage.setItem(LABEL_STORE, key);
  const dim = `${LABEL_PREFIX}${key}`;
  const result = await api("/v1/costs", { window: filters.window, team: filters.team, aggregate: dim, limit: 50 });
  table(
    "labels-table",
    [key, "Spend", "Jobs started", "Hours", "Waste", "Goodput"],
    result.data.map((r) => [named(dim, r.key[dim]), ...spendCells(dim, r.key[dim], r)]),
  );
  const labelled = result.data.filter((r) => r.key[dim] !== null && r.key[dim] !== undefined).length;
  $("labels-total").textContent = `${integer(labelled)} value(s) of ${key}`;
}

// --- the jobs behind a number -----------------------------------------------------------------

export async function showDrill(filters, dim, value) {
  const params = { window: filters.window, team: filters.team, aggregate: "job", limit: 100 };
  params[`filter[${dim}]`] = value;
  const result = await api("/v1/costs", params);
  $("drill-title").textContent = `Jobs behind ${dim} ${label(value)} (${money(result.totals.cost_usd)})`;
  table(
    "drill-table",
    ["Job", "Status", "Spend", "Hours", "Tokens", "Waste"],
    result.data.map((r) => [
      link(jobHref(r.key.job), r.job_name ? `${r.job_name} · ${r.key.job}` : r.key.job),
      r.job_status || "–",
      money(r.cost_usd),
      number(r.billable_hours),
      tokens(r.tokens_trained),
      money(r.waste_usd),
    ]),
  );
}
