// One job: where it stands, the plan that placed it and the options it was chosen over, what
// its dollars bought (goodput), its attempts, its loss curve and its events. Read from
// /v1/jobs/{id}, its cost report (the ledger's figures), /loss-curve and /events.

import { api, chart, color, duration, el, fields, GOODPUT, integer, money, number, percent, table, when, $ } from "./ui.js";

const EVENTS_SHOWN = 100;

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

function renderSummary(job) {
  $("job-title").textContent = `${job.name || "Job"} · ${job.id}`;
  const labels = Object.entries(job.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  fields("job-fields", [
    ["Status", job.status],
    ["Instance type", job.instance_type || "–"],
    ["Pool", job.pool || "–"],
    ["Spend", money(job.cost && job.cost.usd)],
    ["Billable hours", number(job.cost ? job.cost.billable_seconds / 3600 : null, 2)],
    ["Attempts", integer(job.attempts)],
    ["Labels", labels || "–"],
    ["Base model", job.base_model || "–"],
    ["Created", when(job.created_at)],
    ["Finished", when(job.finished_at)],
    ["Error", job.error ? `${job.error.code}: ${job.error.message}` : "–"],
    ...queueFields(job.queue),
  ]);
  $("job-json").textContent = JSON.stringify(job, null, 2);
}

// --- the plan ---------------------------------------------------------------------------------

const optionName = (plan) => (plan.spot ? `${plan.instance_type} spot` : plan.instance_type);
const signedMoney = (v) => (v > 0 ? `+${money(v)}` : v < 0 ? `-${money(-v)}` : money(0));
const signedDuration = (v) => (v > 0 ? `+${duration(v)}` : v < 0 ? `-${duration(-v)}` : "same");

function renderPlan(job, report) {
  const plan = job.plan || {};
  const spent = report.totals.cost_usd;
  fields("job-plan", [
    ["Chosen", plan.instance_type ? optionName(plan) : "–"],
    ["Objective", plan.objective || "–"],
    ["Estimated", `${money(plan.estimated_cost_usd)} over ${duration(plan.estimated_seconds)}`],
    ["Actual", `${money(spent)} over ${duration(report.totals.billable_seconds)}`],
    ["Why", plan.reason || "–"],
  ]);
  const chosen = { option: plan.instance_type ? `${optionName(plan)} (chosen)` : "–", estimated_seconds: plan.estimated_seconds, estimated_cost_usd: plan.estimated_cost_usd };
  const others = plan.alternatives || [];
  table(
    "job-alternatives",
    ["Option", "Est. time", "Est. cost", "Time vs chosen", "Cost vs chosen"],
    [chosen, ...others].map((a, i) => [
      a.option,
      duration(a.estimated_seconds),
      money(a.estimated_cost_usd),
      i === 0 ? "–" : signedDuration(a.estimated_seconds - plan.estimated_seconds),
      i === 0 ? "–" : signedMoney(a.estimated_cost_usd - plan.estimated_cost_usd),
    ]),
    "No plan",
  );
  $("job-alternatives-note").textContent = others.length
    ? `${others.length} alternative(s) the planner ranked below the chosen option.`
    : "The planner had no other option that could run this job.";
}

// --- goodput ----------------------------------------------------------------------------------

// Checkpoint writes are a part of their own once attempts report how long they take; until
// then they are inside training time and the part is 0, not worth a row.
const CHECKPOINT_PART = ["checkpoint_usd", "Checkpoint writes"];

function renderGoodput(report) {
  const g = report.goodput || {};
  const total = report.totals.cost_usd;
  $("job-goodput").textContent = percent(g.goodput);
  table(
    "job-goodput-table",
    ["Part", "Dollars", "Share"],
    [...GOODPUT, ...(g.checkpoint_usd > 0 ? [CHECKPOINT_PART] : [])].map(([field, text]) => [text, money(g[field] || 0), total > 0 ? percent((g[field] || 0) / total) : "–"]).concat([
      [el("strong", { text: "Billed" }), money(total), duration(report.totals.billable_seconds)],
    ]),
    "Nothing billed yet",
  );
}

// --- attempts ---------------------------------------------------------------------------------

function renderAttempts(report) {
  table(
    "job-attempts",
    ["#", "Instance type", "Capacity", "Outcome", "Start step", "End step", "Started", "Duration", "Cost", "Wasted"],
    report.attempts.map((a) => [
      String(a.attempt),
      a.instance_type || "–",
      a.spot ? "spot" : "on-demand",
      a.outcome,
      integer(a.start_step),
      integer(a.end_step),
      when(a.started_at),
      duration(a.billable_seconds),
      money(a.cost_usd),
      money(a.wasted_usd),
    ]),
    "No attempt has started",
  );
}

// --- the loss curve ---------------------------------------------------------------------------

function renderLoss(curve) {
  const byAttempt = new Map();
  for (const p of curve.train) {
    if (!byAttempt.has(p.attempt)) byAttempt.set(p.attempt, []);
    byAttempt.get(p.attempt).push({ x: p.step, y: p.loss });
  }
  const datasets = [...byAttempt.entries()].map(([attempt, data], i) => ({
    label: attempt === null ? "Training loss" : `Attempt ${attempt}`,
    data,
    borderColor: color(i),
    backgroundColor: color(i),
    pointRadius: data.length > 60 ? 0 : 3,
    borderWidth: 2,
  }));
  if (curve.eval.length) {
    datasets.push({
      label: "Evaluation loss (checkpoints)",
      data: curve.eval.map((p) => ({ x: p.step, y: p.eval_loss })),
      borderColor: "#1d2433",
      backgroundColor: "#1d2433",
      pointStyle: "rectRot",
      pointRadius: 5,
      showLine: false,
    });
  }
  chart("chart-loss", {
    type: "line",
    data: { datasets },
    options: {
      parsing: true,
      scales: { x: { type: "linear", title: { display: true, text: "Step" } }, y: { title: { display: true, text: "Loss" } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${ctx.parsed.y.toPrecision(4)} at step ${ctx.parsed.x}` } } },
    },
  });
  const shown = curve.train.length;
  $("loss-note").textContent = !shown
    ? "No loss reported yet."
    : curve.thinned
      ? `${integer(shown)} of ${integer(curve.reported)} reported points, evenly spaced; each attempt's first and last kept.`
      : `${integer(shown)} reported point(s). A resumed attempt trains again from its checkpoint: the overlap is work redone.`;
}

// --- events -----------------------------------------------------------------------------------

function renderEvents(page) {
  table(
    "job-events",
    ["Time", "Type", "Level", "Message"],
    page.data.map((e) => [when(e.created_at), e.type, e.level, e.message]),
    "No events",
  );
  $("job-events-note").textContent = page.has_more ? `The latest ${EVENTS_SHOWN}; \`trainyard jobs events ${page.data[0].job_id}\` lists them all.` : "";
}

export async function showJob(id) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const [job, report, curve, events] = await Promise.all([
    api(path),
    api(`${path}/cost-report`),
    api(`${path}/loss-curve`, { points: 800 }),
    api(`${path}/events`, { order: "desc", limit: EVENTS_SHOWN }),
  ]);
  renderSummary(job);
  renderPlan(job, report);
  renderGoodput(report);
  renderAttempts(report);
  renderLoss(curve);
  renderEvents(events);
}
