// Trainyard cost dashboard: plain JavaScript over the public API (/v1/costs, /v1/budgets,
// /v1/queue, /v1/teams, /v1/jobs/{id}); charts with the vendored Chart.js. No build step.
//
// The API key is asked for once and kept in sessionStorage, so it lasts as long as the tab and
// is never written to disk or sent anywhere but this server. `#key=<key>` in the URL sets it
// (handy for links from the CLI); it is removed from the address bar at once.
"use strict";

(() => {
  const KEY_STORE = "trainyard.apiKey";
  const PALETTE = [
    "#2f6fed", "#f39c12", "#1e8e5a", "#c0392b", "#8e44ad", "#16a2b8",
    "#d35400", "#7f8c8d", "#2c3e50", "#e84393", "#6ab04c", "#b8860b",
  ];
  const STEP_FOR_WINDOW = { "24h": "1h", "7d": "1d", "30d": "1d", month: "1d" };

  const state = { window: "7d", team: "", charts: {}, last: null };
  const $ = (id) => document.getElementById(id);

  // --- small helpers ------------------------------------------------------------------------

  // Builds DOM nodes; text always goes in as text, never as HTML, so names from the API
  // (teams, labels, job names) cannot inject markup.
  function el(tag, props, ...children) {
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

  // money.js: the precision follows the amount ($0.00052, $3.10, $12,400), as in the CLI.
  const money = (v) => (v === null || v === undefined ? "–" : window.trainyardMoney.formatUsd(v));
  const duration = (v) => (v === null || v === undefined ? "–" : window.trainyardDuration.formatDuration(v));
  const number = (v, digits = 1) =>
    v === null || v === undefined
      ? "–"
      : Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const integer = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
  const signedPct = (ratio) =>
    ratio === null || ratio === undefined ? "–" : `${ratio >= 0 ? "+" : ""}${(ratio * 100).toFixed(1)}%`;
  const tokens = (v) => {
    if (!v) return "0";
    if (v >= 1e9) return `${(v / 1e9).toFixed(2)}B`;
    if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
    return String(v);
  };
  const label = (v) => (v === null || v === undefined || v === "" ? "(none)" : String(v));
  const color = (i) => PALETTE[i % PALETTE.length];

  function bucketLabel(iso, step) {
    const d = new Date(iso);
    const date = d.toISOString().slice(5, 10);
    return step && step < 86400 ? `${date} ${d.toISOString().slice(11, 16)}` : date;
  }

  function drillHref(dim, value) {
    return `#drill/${encodeURIComponent(dim)}/${encodeURIComponent(value ?? "")}`;
  }

  // --- the API ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, error) {
      super((error && error.message) || `HTTP ${status}`);
      this.status = status;
      this.code = error && error.code;
    }
  }

  const apiKey = () => sessionStorage.getItem(KEY_STORE);

  function apiUrl(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, value);
    }
    return url;
  }

  async function api(path, params) {
    const response = await fetch(apiUrl(path, params), {
      headers: { Authorization: `Bearer ${apiKey()}` },
    });
    const isJson = (response.headers.get("content-type") || "").includes("json");
    const body = isJson ? await response.json() : await response.text();
    if (!response.ok) throw new ApiError(response.status, isJson ? body.error : null);
    return body;
  }

  // --- key handling -------------------------------------------------------------------------

  function takeKeyFromUrl() {
    const match = window.location.hash.match(/^#key=([^&]+)/);
    if (!match) return;
    sessionStorage.setItem(KEY_STORE, decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

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

  // --- charts -------------------------------------------------------------------------------

  function chart(id, config) {
    if (state.charts[id]) state.charts[id].destroy();
    const base = {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    };
    config.options = { ...base, ...(config.options || {}) };
    config.options.plugins = { ...base.plugins, ...(config.options.plugins || {}) };
    state.charts[id] = new window.Chart($(id), config);
  }

  const moneyTicks = { callback: (v) => money(v) };
  // Horizontal bars carry their value on x; the others on y.
  const moneyTooltip = {
    callbacks: {
      label: (ctx) => {
        const value = ctx.chart.options.indexAxis === "y" ? ctx.parsed.x : ctx.parsed.y;
        return `${ctx.dataset.label || ctx.label}: ${money(value)}`;
      },
    },
  };

  // --- tables -------------------------------------------------------------------------------

  function table(id, headers, rows, empty) {
    const node = $(id);
    node.replaceChildren(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))));
    const body = el("tbody");
    if (!rows.length) {
      body.append(el("tr", {}, el("td", { class: "empty", colspan: headers.length, text: empty || "No spend in this window" })));
    }
    for (const cells of rows) body.append(el("tr", {}, ...cells.map((c) => el("td", {}, c))));
    node.append(body);
  }

  const link = (href, text) => el("a", { href, text });

  // --- the overview -------------------------------------------------------------------------

  function renderCards(result) {
    const t = result.totals;
    const change = result.change.cost_usd;
    $("total-cost").textContent = money(t.cost_usd);
    const pct = change.percent;
    $("total-change").textContent =
      pct === null ? `${money(result.previous.cost_usd)} in the window before` : `${pct >= 0 ? "+" : ""}${pct.toFixed(1)}% on the window before`;
    $("total-change").className = `sub ${pct > 0 ? "up" : pct < 0 ? "down" : ""}`;
    $("total-hours").textContent = number(t.billable_hours);
    $("total-gpu-hours").textContent = `${number(t.gpu_hours)} GPU hours`;
    $("total-jobs").textContent = integer(t.jobs);
    $("total-tokens").textContent =
      `${tokens(t.tokens_trained)} tokens${t.usd_per_million_tokens === null ? "" : ` · ${money(t.usd_per_million_tokens)} per M`}`;
    $("total-waste").textContent = money(t.waste_usd);
    $("total-savings").textContent = money(t.spot_savings_usd);
    $("total-estimate").textContent = signedPct(t.estimate_error);
    $("total-estimate-sub").textContent = `${integer(t.estimate_jobs)} succeeded job(s) with an estimate`;
  }

  function renderSpendChart(result) {
    const series = result.series || [];
    const teams = result.data.map((r) => r.key.team);
    const step = result.window.step;
    chart("chart-spend", {
      type: "bar",
      data: {
        labels: series.map((b) => bucketLabel(b.start, step)),
        datasets: teams.map((team, i) => ({
          label: label(team),
          backgroundColor: color(i),
          data: series.map((b) => {
            const row = b.data.find((r) => r.key.team === team);
            return row ? row.cost_usd : 0;
          }),
        })),
      },
      options: {
        scales: { x: { stacked: true }, y: { stacked: true, ticks: moneyTicks } },
        plugins: { tooltip: moneyTooltip },
      },
    });
  }

  function renderTeams(result, budgets) {
    const budgetOf = Object.fromEntries(budgets.data.map((b) => [b.team, b]));
    table(
      "teams-table",
      ["Team", "Spend", "Previous", "GPU h", "Jobs started", "$/M tokens", "Waste", "Spot savings", "Est. error", "Budget left"],
      result.data.map((r) => {
        const team = r.key.team;
        const b = budgetOf[team];
        return [
          link(drillHref("team", team), label(team)),
          link(drillHref("team", team), money(r.cost_usd)),
          money(r.previous_cost_usd),
          number(r.gpu_hours),
          link(drillHref("team", team), integer(r.jobs)),
          money(r.usd_per_million_tokens),
          money(r.waste_usd),
          money(r.spot_savings_usd),
          signedPct(r.estimate_error),
          b && b.budget !== null ? money(b.remaining) : "no budget",
        ];
      }),
    );
  }

  function renderJobs(result) {
    table(
      "jobs-table",
      ["Job", "Status", "Spend", "Hours", "Waste", "Est. error"],
      result.data.map((r) => [
        link(`#job/${encodeURIComponent(r.key.job)}`, r.job_name ? `${r.job_name} · ${r.key.job}` : r.key.job),
        r.job_status || "–",
        link(`#job/${encodeURIComponent(r.key.job)}`, money(r.cost_usd)),
        number(r.billable_hours),
        money(r.waste_usd),
        signedPct(r.estimate_error),
      ]),
    );
  }

  function renderBreakdown(dim, result, chartId, tableId, type) {
    const rows = result.data;
    chart(chartId, {
      type,
      data: {
        labels: rows.map((r) => label(r.key[dim])),
        datasets: [{
          label: "Spend",
          data: rows.map((r) => r.cost_usd),
          backgroundColor: rows.map((_, i) => color(i)),
        }],
      },
      options:
        type === "bar"
          ? { indexAxis: "y", scales: { x: { ticks: moneyTicks } }, plugins: { legend: { display: false }, tooltip: moneyTooltip } }
          : { plugins: { legend: { position: "right" }, tooltip: { callbacks: { label: (ctx) => `${ctx.label}: ${money(ctx.parsed)}` } } } },
    });
    table(
      tableId,
      [dim === "instance_type" ? "Instance type" : "Accelerator", "Spend", "Hours", "GPU h", "Jobs started", "Spot savings"],
      rows.map((r) => [
        link(drillHref(dim, r.key[dim]), label(r.key[dim])),
        link(drillHref(dim, r.key[dim]), money(r.cost_usd)),
        number(r.billable_hours),
        number(r.gpu_hours),
        integer(r.jobs),
        money(r.spot_savings_usd),
      ]),
    );
  }

  function renderBudgets(budgets) {
    const shown = budgets.data.filter((b) => !state.team || b.team === state.team);
    const withBudget = shown.filter((b) => b.budget !== null);
    chart("chart-budget", {
      type: "bar",
      data: {
        labels: withBudget.map((b) => b.team),
        datasets: [
          { label: "Spent", data: withBudget.map((b) => b.spent_this_month), backgroundColor: "#2f6fed" },
          { label: "Expected by queued and running jobs", data: withBudget.map((b) => b.committed_usd), backgroundColor: "#f39c12" },
          {
            label: "Left",
            data: withBudget.map((b) => Math.max(0, b.budget - b.spent_this_month - b.committed_usd)),
            backgroundColor: "#d0d5dd",
          },
        ],
      },
      options: {
        indexAxis: "y",
        scales: { x: { stacked: true, ticks: moneyTicks }, y: { stacked: true } },
        plugins: { tooltip: moneyTooltip },
      },
    });
    table(
      "budget-table",
      ["Team", "Budget", "Spent", "Used", "Left", "Projected month"],
      shown.map((b) => [
        link(drillHref("team", b.team), b.team),
        b.budget === null ? "none" : money(b.budget),
        money(b.spent_this_month),
        b.used_fraction === null ? "–" : `${(b.used_fraction * 100).toFixed(1)}%`,
        b.remaining === null ? "–" : money(b.remaining),
        money(b.projected_month_usd),
      ]),
      "No teams",
    );
  }

  function renderWaste(result) {
    const rows = result.data;
    chart("chart-waste", {
      type: "bar",
      data: {
        labels: rows.map((r) => label(r.key.team)),
        datasets: [
          { label: "Waste", data: rows.map((r) => r.waste_usd), backgroundColor: "#c0392b" },
          { label: "Spot savings", data: rows.map((r) => r.spot_savings_usd), backgroundColor: "#1e8e5a" },
        ],
      },
      options: { scales: { y: { ticks: moneyTicks } }, plugins: { tooltip: moneyTooltip } },
    });
  }

  // Goodput: each row's dollars by what they bought, stacked; the share that trained is in the label.
  const GOODPUT = [
    ["productive_usd", "Productive", "#1e8e5a"],
    ["startup_usd", "Start-up", "#f39c12"],
    ["recomputed_usd", "Recomputed", "#8e44ad"],
    ["lost_usd", "Lost (failed, preempted)", "#c0392b"],
  ];
  const goodputLabel = (name, r) => `${name} · ${r.goodput === null ? "–" : `${(r.goodput * 100).toFixed(0)}%`}`;

  function renderGoodput(chartId, rows, name) {
    chart(chartId, {
      type: "bar",
      data: {
        labels: rows.map((r) => goodputLabel(name(r), r)),
        datasets: GOODPUT.map(([field, text, colour]) => ({
          label: text, data: rows.map((r) => r[field] || 0), backgroundColor: colour,
        })),
      },
      options: {
        indexAxis: "y",
        scales: { x: { stacked: true, ticks: moneyTicks }, y: { stacked: true } },
        plugins: { tooltip: moneyTooltip },
      },
    });
  }

  function renderEstimates(result) {
    const rows = result.data.filter((r) => r.estimate_error !== null);
    chart("chart-estimate", {
      type: "bar",
      data: {
        labels: rows.map((r) => label(r.key.instance_type)),
        datasets: [{
          label: "Actual vs estimate",
          data: rows.map((r) => r.estimate_error * 100),
          backgroundColor: rows.map((r) => (r.estimate_error > 0 ? "#c0392b" : "#1e8e5a")),
        }],
      },
      options: {
        scales: { y: { ticks: { callback: (v) => `${v}%` } } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: (ctx) => `${ctx.parsed.y >= 0 ? "+" : ""}${ctx.parsed.y.toFixed(1)}%` } },
        },
      },
    });
  }

  function renderQueue(queue) {
    $("queue-waiting").textContent = integer(queue.waiting);
    $("queue-running").textContent = integer(queue.running);
    $("queue-gpus").textContent = integer(queue.gpus_in_use);
    table(
      "queue-table",
      ["Pool", "Waiting", "Running", "GPUs in use", "Oldest waiting"],
      queue.pools.map((p) => [
        label(p.pool),
        integer(p.waiting),
        integer(p.running),
        integer(p.gpus_in_use),
        duration(p.oldest_waiting_seconds),
      ]),
      "Nothing queued or running",
    );
  }

  async function refresh() {
    document.body.dataset.state = "loading";
    $("error").hidden = true;
    const base = { window: state.window, team: state.team };
    const [byTeam, byInstance, byAccelerator, topJobs, budgets, queue] = await Promise.all([
      api("/v1/costs", { ...base, aggregate: "team", step: STEP_FOR_WINDOW[state.window] }),
      api("/v1/costs", { ...base, aggregate: "instance_type" }),
      api("/v1/costs", { ...base, aggregate: "accelerator" }),
      api("/v1/costs", { ...base, aggregate: "job", limit: 10 }),
      api("/v1/budgets"),
      api("/v1/queue", { team: state.team }),
    ]);
    state.last = byTeam;
    renderCards(byTeam);
    renderSpendChart(byTeam);
    renderTeams(byTeam, budgets);
    renderJobs(topJobs);
    renderBreakdown("instance_type", byInstance, "chart-instance", "instance-table", "bar");
    renderBreakdown("accelerator", byAccelerator, "chart-accelerator", "accelerator-table", "doughnut");
    renderBudgets(budgets);
    renderWaste(byTeam);
    renderGoodput("chart-goodput-team", byTeam.data, (r) => label(r.key.team));
    renderGoodput("chart-goodput-job", topJobs.data, (r) => r.job_name || r.key.job);
    renderEstimates(byInstance);
    renderQueue(queue);
    await route();
    document.body.dataset.state = "ready";
  }

  // --- the jobs behind a number, and one job -------------------------------------------------

  async function showDrill(dim, value) {
    const params = { window: state.window, team: state.team, aggregate: "job", limit: 100 };
    params[`filter[${dim}]`] = value;
    const result = await api("/v1/costs", params);
    $("drill-title").textContent = `Jobs behind ${dim} ${label(value)} (${money(result.totals.cost_usd)})`;
    table(
      "drill-table",
      ["Job", "Status", "Spend", "Hours", "Tokens", "Waste"],
      result.data.map((r) => [
        link(`#job/${encodeURIComponent(r.key.job)}`, r.job_name ? `${r.job_name} · ${r.key.job}` : r.key.job),
        r.job_status || "–",
        money(r.cost_usd),
        number(r.billable_hours),
        tokens(r.tokens_trained),
        money(r.waste_usd),
      ]),
    );
  }

  function goodputText(g) {
    if (!g || g.goodput === null || g.goodput === undefined) return "–";
    const parts = GOODPUT.slice(1).filter(([field]) => g[field] > 0).map(([field, text]) => `${text.toLowerCase()} ${money(g[field])}`);
    return `${(g.goodput * 100).toFixed(0)}% productive${parts.length ? ` (${parts.join(", ")})` : ""}`;
  }

  // A waiting job's answer: its place and reason, its start, the pools that would start it sooner.
  function queueFields(q) {
    if (!q) return [];
    const place = q.position ? `#${q.position} in ${q.pool}` : q.pool || "–";
    // The one duration rule (duration.js), as the CLI says it.
    const eta = q.eta_seconds === null || q.eta_seconds === undefined ? "unknown" : q.eta_seconds < 60 ? "now" : `in ${duration(q.eta_seconds)}`;
    const sooner = (q.alternatives || []).map((a) => `${a.summary} (${a.command})`);
    return [
      ["Queue", `${place}, ${q.reason}: ${q.message}`],
      ["Starts", eta],
      ...(sooner.length ? [["Sooner", sooner.join("; ")]] : []),
    ];
  }

  async function showJob(id) {
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    $("job-title").textContent = `${job.name || "Job"} · ${job.id}`;
    const fields = [
      ["Status", job.status],
      ["Instance type", job.instance_type || "–"],
      ["Pool", job.pool || "–"],
      ["Spend", money(job.cost && job.cost.usd)],
      ["Billable hours", number(job.cost ? job.cost.billable_seconds / 3600 : null, 2)],
      ["Estimated", money(job.cost && job.cost.estimated_usd)],
      ["Goodput", goodputText(job.cost && job.cost.goodput)],
      ["Attempts", integer(job.attempts)],
      ["Base model", job.base_model || "–"],
      ["Created", job.created_at || "–"],
      ["Finished", job.finished_at || "–"],
      ["Error", job.error ? `${job.error.code}: ${job.error.message}` : "–"],
      ...queueFields(job.queue),
    ];
    $("job-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    $("job-json").textContent = JSON.stringify(job, null, 2);
  }

  async function route() {
    const hash = window.location.hash;
    const job = hash.match(/^#job\/(.+)$/);
    const drill = hash.match(/^#drill\/([^/]+)\/(.*)$/);
    $("job-view").hidden = !job;
    $("drill").hidden = !drill;
    $("overview").hidden = Boolean(job || drill);
    if (job) await showJob(decodeURIComponent(job[1]));
    if (drill) await showDrill(decodeURIComponent(drill[1]), decodeURIComponent(drill[2]));
  }

  // --- start ----------------------------------------------------------------------------------

  async function loadTeams() {
    const teams = await api("/v1/teams");
    const select = $("team");
    select.replaceChildren(el("option", { value: "", text: teams.data.length > 1 ? "All teams" : "My team" }));
    for (const t of teams.data) select.append(el("option", { value: t.name, text: t.name }));
    select.value = state.team;
  }

  async function downloadCsv() {
    const step = STEP_FOR_WINDOW[state.window];
    const response = await fetch(apiUrl("/v1/costs.csv", { window: state.window, team: state.team, aggregate: "team", step }), {
      headers: { Authorization: `Bearer ${apiKey()}` },
    });
    if (!response.ok) throw new ApiError(response.status, null);
    const url = URL.createObjectURL(await response.blob());
    const a = el("a", { href: url, download: `trainyard-costs-${state.window}.csv` });
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
      await loadTeams();
      await refresh();
    } catch (err) {
      showError(err);
    }
  }

  function guarded(fn) {
    return () => fn().catch(showError);
  }

  function start() {
    takeKeyFromUrl();
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
      $("key-input").value = "";
      openDashboard();
    });
    $("window").addEventListener("change", (e) => { state.window = e.target.value; guarded(refresh)(); });
    $("team").addEventListener("change", (e) => { state.team = e.target.value; guarded(refresh)(); });
    $("refresh").addEventListener("click", guarded(refresh));
    $("csv").addEventListener("click", guarded(downloadCsv));
    $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); showLogin(); });
    window.addEventListener("hashchange", () => {
      if (apiKey()) {
        document.body.dataset.state = "loading";
        route().then(() => { document.body.dataset.state = "ready"; }, showError);
      }
    });
    if (apiKey()) openDashboard();
    else showLogin();
  }

  start();
})();
