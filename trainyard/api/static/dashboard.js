// Trainyard cost dashboard: plain JavaScript modules over the public API (/v1/costs,
// /v1/budgets, /v1/queue, /v1/teams, /v1/jobs/...); charts with the vendored Chart.js. No build
// step. This module signs in, keeps the filters and routes between the views:
//   (no hash)              the overview (overview.js) with spend by user and by label (views.js)
//   #drill/<dim>/<value>   the jobs behind a number (views.js)
//   #job/<id>              one job (job.js)
//
// The API key is asked for once and kept in sessionStorage, so it lasts as long as the tab and
// is never written to disk or sent anywhere but this server. `#key=<key>` in the URL sets it
// (handy for links from the CLI); it is removed from the address bar at once.

import { ApiError, KEY_STORE, api, apiKey, apiUrl, el, $ } from "./ui.js";
import { STEP_FOR_WINDOW, loadOverview } from "./overview.js";
import { loadLabelKeys, loadLabels, loadUsers, showDrill } from "./views.js";
import { showJob } from "./job.js";

const filters = { window: "7d", team: "" };

// --- signing in -------------------------------------------------------------------------------

function takeKeyFromUrl() {
  const match = window.location.hash.match(/^#key=([^&]+)/);
  if (!match) return;
  sessionStorage.setItem(KEY_STORE, decodeURIComponent(match[1]));
  history.replaceState(null, "", window.location.pathname + window.location.search);
}

// Signed out, only the prompt shows: no filters, no figures, no controls that would ask the
// API with no key.
function showLogin(message) {
  document.body.dataset.state = "login";
  $("main").hidden = true;
  $("filters").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("key-input").focus();
}

function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    sessionStorage.removeItem(KEY_STORE);
    showLogin("That key was not accepted. Check it and try again.");
    return;
  }
  $("error").hidden = false;
  $("error").textContent = `Could not load: ${err.message}`;
  document.body.dataset.state = "error";
}

// --- views ------------------------------------------------------------------------------------

async function refresh() {
  document.body.dataset.state = "loading";
  $("error").hidden = true;
  await Promise.all([loadOverview(filters), loadUsers(filters), loadLabels(filters)]);
  await route();
  document.body.dataset.state = "ready";
}

async function route() {
  const hash = window.location.hash;
  const job = hash.match(/^#job\/(.+)$/);
  const drill = hash.match(/^#drill\/([^/]+)\/(.*)$/);
  $("job-view").hidden = !job;
  $("drill").hidden = !drill;
  $("overview").hidden = Boolean(job || drill);
  // The filters narrow the overview and the drills; a job page is the job's alone.
  $("filters").classList.toggle("muted", Boolean(job));
  if (job) await showJob(decodeURIComponent(job[1]));
  if (drill) await showDrill(filters, decodeURIComponent(drill[1]), decodeURIComponent(drill[2]));
}

async function loadTeams() {
  const teams = await api("/v1/teams");
  const select = $("team");
  select.replaceChildren(el("option", { value: "", text: teams.data.length > 1 ? "All teams" : "My team" }));
  for (const t of teams.data) select.append(el("option", { value: t.name, text: t.name }));
  select.value = filters.team;
}

async function downloadCsv() {
  const step = STEP_FOR_WINDOW[filters.window];
  const response = await fetch(apiUrl("/v1/costs.csv", { window: filters.window, team: filters.team, aggregate: "team", step }), {
    headers: { Authorization: `Bearer ${apiKey()}` },
  });
  if (!response.ok) throw new ApiError(response.status, null);
  const url = URL.createObjectURL(await response.blob());
  const a = el("a", { href: url, download: `trainyard-costs-${filters.window}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function openDashboard() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("filters").hidden = false;
  try {
    // The teams first, alone: a key that is not accepted draws one 401, not one per request.
    await loadTeams();
    await loadLabelKeys();
    await refresh();
  } catch (err) {
    showError(err);
  }
}

// Runs `fn` as the page's one piece of work: loading while it runs, ready or the error after.
function guarded(fn) {
  return () => {
    document.body.dataset.state = "loading";
    return fn().then(() => { document.body.dataset.state = "ready"; }, showError);
  };
}

function start() {
  takeKeyFromUrl();
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-input").value = "";
    openDashboard();
  });
  $("window").addEventListener("change", (e) => { filters.window = e.target.value; guarded(refresh)(); });
  $("team").addEventListener("change", (e) => { filters.team = e.target.value; guarded(refresh)(); });
  $("label-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(() => loadLabels(filters))(); });
  $("label-key").addEventListener("change", guarded(() => loadLabels(filters)));
  $("refresh").addEventListener("click", guarded(refresh));
  $("csv").addEventListener("click", () => downloadCsv().catch(showError));
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); showLogin(); });
  window.addEventListener("hashchange", () => {
    if (apiKey()) guarded(route)();
  });
  if (apiKey()) openDashboard();
  else showLogin();
}

start();
