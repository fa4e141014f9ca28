"""How the user commands show things: consoles, figures, status colours, the job view and
event lines (the list tables are in `tables`, the live display in `watch`).

Only SDK models come in here; nothing is fetched.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainyard.durations import format_duration
from trainyard.money import format_usd
from trainyard.sdk import Job, JobEvent, JobGoodput, Plan

# Keyed by the API's status strings (the CLI reads the API, not the server's enums); a test
# checks that every job status has a colour.
STATUS_STYLE = {
    "queued": "cyan",
    "running": "blue",
    "cancelling": "yellow",
    "paused": "bright_black",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def console(stderr: bool = False) -> Console:
    # Built per call: the console binds the stream when it writes, so test runners that swap
    # streams see the output. Lines are never hard-wrapped (logs and grep want whole lines), and
    # piped output gets wide tables rather than the 80 columns rich assumes without a terminal,
    # so ids and prices are never cut short.
    made = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = 200
    return made


def out() -> Console:
    return console()


def err() -> Console:
    return console(stderr=True)


# ------------------------------------------------------------------------------------------
# Figures


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def usd(value: float | None) -> str:
    # The one money rule (precision follows the amount): a CPU minute stays visible.
    return "-" if value is None else format_usd(value)


def duration(seconds: float | None) -> str:
    # The one duration rule (trainyard/durations.py): tables, the job view and plans' reasons
    # show an estimate the same way.
    return format_duration(seconds)


def loss(value: float | None) -> str:
    """A loss to 4 significant figures (`3.852`), `-` until the run has reported one."""
    return "-" if value is None else f"{value:.4g}"


def rate(tokens_per_second: float | None) -> str:
    return f"{tokens_per_second:,.0f}" if tokens_per_second else "-"


def status(value: str) -> str:
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/{style}]" if style else escape(value)


def steps(job: Job) -> str:
    total = job.progress.total_steps
    return f"{job.progress.step}/{total}" if total else str(job.progress.step or "-")


def phase(job: Job) -> str:
    """What a running job's run is doing, as words (`loading model`); empty when the server does
    not say, or the job is not running (a finished job's last phase is history)."""
    value = job.progress.phase
    if not value or value == job.status or job.status not in ("running", "cancelling"):
        return ""
    return escape(value.replace("_", " "))


def trial(job: Job) -> str:
    """`trial 2/4` for a sweep that has started its second of four trials; empty otherwise."""
    p = job.progress
    if not p.trials:
        return ""
    return f"trial {p.trial or 0}/{p.trials}"


def stage(job: Job) -> str:
    """The job's state, with what its run is doing when the server says (`running: training`)."""
    doing = phase(job)
    return status(job.status) + (f": {doing}" if doing else "")


def throughput(plan: Plan) -> str:
    """`1,323 tok/s (learned from 1 run)` or `6,960 tok/s (model)`: the speed a plan's time
    comes from; empty for a plan that does not say."""
    if not plan.tokens_per_second:
        return ""
    if plan.throughput_source == "learned":
        runs = plan.throughput_runs or 0
        source = f"learned from {runs} run{'' if runs == 1 else 's'}"
    else:
        source = escape(plan.throughput_source or "model")
    return f"{rate(plan.tokens_per_second)} tok/s ({source})"


def against_estimate(actual: float | None, estimated: float | None, *, final: bool = True) -> str:
    """`$0.0012 of $0.0050 estimated (76% under)`; the share only once the spend is `final`."""
    if not estimated:
        return usd(actual)
    text = f"{usd(actual)} of {usd(estimated)} estimated"
    if actual is None or not final:
        return text
    off = (actual - estimated) / estimated
    return text + (f" ({abs(off):.0%} {'over' if off > 0 else 'under'})" if abs(off) >= 0.005 else "")


def yes_no(value: bool | None) -> str:
    return {True: "yes", False: "[red]no[/red]", None: "-"}[value]


def cell(value: Any, money: bool = False) -> str:
    if value is None:
        return "-"
    if money:
        return usd(float(value))
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else "<0.01"
    return escape(str(value))


# ------------------------------------------------------------------------------------------
# Jobs


def job_detail(job: Job) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    p = job.progress
    requested = " (cancel requested)" if job.cancel_requested else ""
    requested += " (pause requested)" if job.pause_requested else ""
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("name", escape(job.name or "")),
        ("status", stage(job) + requested),
        ("team", escape(job.team or "-")),
        ("base model", escape(job.base_model or "-")),
        ("task / method", f"{job.task or '-'} / {job.method or '-'}"),
        ("training file", escape(job.training_file or "-")),
        ("instance type", escape(job.instance_type or "-")),
        ("steps", steps(job)),
        ("loss", loss(p.loss)),
        ("tokens", f"{p.tokens:,}"),
        ("tokens/s", rate(p.tokens_per_second)),
    ]
    if job.plan is not None and job.plan.estimated_seconds is not None:
        speed = throughput(job.plan)
        rows.append(
            (
                "estimate",
                f"{duration(job.plan.estimated_seconds)}, {usd(job.plan.estimated_cost_usd)}"
                + (f" at {speed}" if speed else ""),
            )
        )
    rows += [
        ("cost", against_estimate(job.cost.usd, job.cost.estimated_usd, final=job.is_terminal)),
        *([("goodput", goodput(job.cost.goodput))] if job.cost.goodput is not None else []),
        ("attempts", str(job.attempts)),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ]
    if job.started_at and job.finished_at:
        rows.append(("took", duration((job.finished_at - job.started_at).total_seconds())))
    if job.plan is not None and job.plan.reason:
        rows.append(("plan", escape(job.plan.reason)))
    from trainyard.cli.queue_rendering import queue_rows  # it builds on this module's helpers

    rows += queue_rows(job)
    if job.metadata:
        rows.append(("metadata", escape(", ".join(f"{k}={v}" for k, v in job.metadata.items()))))
    if job.error:
        rows.append(
            ("error", f"[red]{escape(job.error.code or '')}[/red]: {escape(job.error.message or '')}")
        )
    if job.result is not None:
        result = job.result
        rows.append(("model", escape(result.final_model_uri or "-")))
        if result.checkpoint_uris:
            last = escape(result.latest_checkpoint_uri or result.checkpoint_uris[-1])
            rows.append(("checkpoints", f"{len(result.checkpoint_uris)} kept, latest {last}"))
        if result.cost_report_uri:
            rows.append(("cost report", escape(result.cost_report_uri)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def goodput(parts: JobGoodput) -> str:
    """`72% productive (start-up $0.40, recomputed $0.20, lost $0.50)`."""
    if parts.goodput is None:
        return "-"
    spent = [
        (name, value)
        for name, value in (
            ("start-up", parts.startup_usd),
            ("checkpoints", parts.checkpoint_usd),
            ("recomputed", parts.recomputed_usd),
            ("lost", parts.lost_usd),
        )
        if value > 0
    ]
    rest = f" ({', '.join(f'{name} {usd(value)}' for name, value in spent)})" if spent else ""
    return f"{parts.goodput:.0%} productive{rest}"


def event_line(event: JobEvent) -> str:
    level = event.level.lower()
    style = {"error": "red", "warning": "yellow"}.get(level)
    text = escape(_metrics_text(event) or event.message or json.dumps(event.data, default=str))
    kind = escape(f"[{event.type}]")
    return f"{when(event.created_at)} {kind} " + (f"[{style}]{text}[/{style}]" if style else text)


def _metrics_text(event: JobEvent) -> str | None:
    # A metrics event's figures, from its data rather than its message, so a loss reads `3.852`
    # (not 3.8515220642089845) and an unknown one `-` (not None).
    data = event.data
    if event.type != "metrics" or "step" not in data:
        return None
    total = data.get("total_steps")
    parts = [f"step {data.get('step')}" + (f"/{total}" if total else "")]
    value = data.get("loss")
    parts.append(f"loss {loss(value) if isinstance(value, int | float) else '-'}")
    tps = data.get("tokens_per_second")
    if isinstance(tps, int | float) and tps:
        parts.append(f"{rate(tps)} tok/s")
    return " ".join(parts)
