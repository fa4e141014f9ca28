// The overview: totals, spend over time, the breakdowns, budgets, waste, goodput, estimate
// accuracy and the queue, for the window and team the filters name.

import {
  api, bucketLabel, chart, color, drillHref, duration, GOODPUT, integer, jobHref, label, link, money,
  moneyTicks, moneyTooltip, number, signedPct, table, tokens, $,
} from "./ui.js";

export const STEP_FOR_WINDOW = { "24h": "1h", "7d": "1d", "30d": "1d", month: "1d" };

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
      link(jobHref(r.key.job), r.job_name ? `${r.job_name} · ${r.key.job}` : r.key.job),
      r.job_status || "–",
      link(jobHref(r.key.job), money(r.cost_usd)),
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

function renderBudgets(budgets, team) {
  const shown = budgets.data.filter((b) => !team || b.team === team);
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

export async function loadOverview(filters) {
  const base = { window: filters.window, team: filters.team };
  const [byTeam, byInstance, byAccelerator, topJobs, budgets, queue] = await Promise.all([
    api("/v1/costs", { ...base, aggregate: "team", step: STEP_FOR_WINDOW[filters.window] }),
    api("/v1/costs", { ...base, aggregate: "instance_type" }),
    api("/v1/costs", { ...base, aggregate: "accelerator" }),
    api("/v1/costs", { ...base, aggregate: "job", limit: 10 }),
    api("/v1/budgets"),
    api("/v1/queue", { team: filters.team }),
  ]);
  renderCards(byTeam);
  renderSpendChart(byTeam);
  renderTeams(byTeam, budgets);
  renderJobs(topJobs);
  renderBreakdown("instance_type", byInstance, "chart-instance", "instance-table", "bar");
  renderBreakdown("accelerator", byAccelerator, "chart-accelerator", "accelerator-table", "doughnut");
  renderBudgets(budgets, filters.team);
  renderWaste(byTeam);
  renderGoodput("chart-goodput-team", byTeam.data, (r) => label(r.key.team));
  renderGoodput("chart-goodput-job", topJobs.data, (r) => r.job_name || r.key.job);
  renderEstimates(byInstance);
  renderQueue(queue);
}
