"""How the user commands show things: consoles, figures, status colours and tables.

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

from trainyard.money import format_usd
from trainyard.sdk import CostReport, Estimate, InstanceType, Job, JobEvent, JobGoodput

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
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def status(value: str) -> str:
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/{style}]" if style else escape(value)


def steps(job: Job) -> str:
    total = job.progress.total_steps
    return f"{job.progress.step}/{total}" if total else str(job.progress.step or "-")


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


def jobs_table(jobs: list[Job]) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("ID", "NAME", "STATUS", "INSTANCE", "STEPS", "COST", "CREATED"):
        table.add_column(name, no_wrap=name in ("ID", "STATUS"))
    for job in jobs:
        table.add_row(
            job.id,
            escape(job.name or ""),
            status(job.status),
            escape(job.instance_type or "-"),
            steps(job),
            usd(job.cost.usd),
            when(job.created_at),
        )
    return table


def job_detail(job: Job) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    p = job.progress
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("name", escape(job.name or "")),
        ("status", status(job.status) + (" (cancel requested)" if job.cancel_requested else "")),
        ("team", escape(job.team or "-")),
        ("base model", escape(job.base_model or "-")),
        ("task / method", f"{job.task or '-'} / {job.method or '-'}"),
        ("training file", escape(job.training_file or "-")),
        ("instance type", escape(job.instance_type or "-")),
        ("steps", steps(job)),
        ("loss", f"{p.loss:.4f}" if p.loss is not None else "-"),
        ("tokens", f"{p.tokens:,}"),
        ("tokens/s", f"{p.tokens_per_second:,.0f}" if p.tokens_per_second else "-"),
        ("cost", f"{usd(job.cost.usd)} (estimated {usd(job.cost.estimated_usd)})"),
        *([("goodput", goodput(job.cost.goodput))] if job.cost.goodput is not None else []),
        ("attempts", str(job.attempts)),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ]
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
    if job.result:
        rows.append(("result", escape(json.dumps(job.result, default=str))))
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
    text = escape(event.message or json.dumps(event.data, default=str))
    kind = escape(f"[{event.type}]")
    return f"{when(event.created_at)} {kind} " + (f"[{style}]{text}[/{style}]" if style else text)


# ------------------------------------------------------------------------------------------
# Estimates, costs, instance types


def estimate_table(est: Estimate) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("", "OPTION", "FITS", "AVAILABLE", "TIME", "COST", "TOK/S", "$/H", "NOTES"):
        table.add_column(name, no_wrap=name != "NOTES")
    for opt in est.options:
        notes = []
        if opt.meets_deadline is False:
            notes.append("misses deadline")
        if opt.within_budget is False:
            notes.append("over budget")
        if opt.runnable is False:
            notes.append("not runnable here")
        if opt.strategy and opt.fits:
            plan = opt.strategy
            if opt.micro_batch_size and opt.gradient_accumulation_steps:
                plan += f", micro-batch {opt.micro_batch_size} x {opt.gradient_accumulation_steps}"
            if opt.gradient_checkpointing:
                plan += ", checkpointed"
            notes.append(plan)
        table.add_row(
            "[green]*[/green]" if est.is_chosen(opt) else "",
            escape(opt.label),
            yes_no(opt.fits),
            yes_no(opt.available),
            duration(opt.estimated_seconds) if opt.fits is not False else "-",
            usd(opt.estimated_cost_usd) if opt.fits is not False else "-",
            f"{opt.tokens_per_second:,.0f}" if opt.tokens_per_second else "-",
            usd(opt.usd_per_hour),
            escape(", ".join(notes)),
        )
    return table


# (column, field, is money): the figures worth a column; --json has them all.
COST_COLUMNS = (
    ("COST", "cost_usd", True),
    ("PREVIOUS", "previous_cost_usd", True),
    ("JOBS", "jobs", False),
    ("HOURS", "billable_hours", False),
    ("GPU HOURS", "gpu_hours", False),
    ("WASTE", "waste_usd", True),
    ("SPOT SAVINGS", "spot_savings_usd", True),
)


def costs_table(report: CostReport) -> Table:
    dims = list(report.aggregate) or sorted({k for row in report.data for k in row.key})
    bucketed = bool(report.series)
    table = Table(box=None, pad_edge=False)
    if bucketed:
        table.add_column("FROM", no_wrap=True)
    for dim in dims:
        table.add_column(dim.upper(), no_wrap=True)
    columns = [c for c in COST_COLUMNS if not (bucketed and c[1] == "previous_cost_usd")]
    for title, _, _ in columns:
        table.add_column(title, justify="right", no_wrap=True)

    def add(row: Any, *lead: str) -> None:
        figures = row.model_dump()
        cells = [cell(figures.get(fld), money) for _, fld, money in columns]
        table.add_row(*lead, *(escape(str(row.key.get(d, "-"))) for d in dims), *cells)

    if bucketed:
        for bucket in report.series or []:
            start = (
                bucket.start.strftime("%Y-%m-%d %H:%M")
                if isinstance(bucket.start, datetime)
                else bucket.start
            )
            for row in bucket.data:
                add(row, escape(str(start)))
    else:
        for row in report.data:
            add(row)
    return table


def types_table(types: list[InstanceType]) -> Table:
    table = Table(box=None, pad_edge=False)
    columns = (
        "NAME",
        "KIND",
        "ACCELERATORS",
        "ACC MEM",
        "VCPUS",
        "RAM",
        "$/H",
        "SPOT $/H",
        "AVAILABLE",
        "RUNNABLE",
    )
    for name in columns:
        table.add_column(name, no_wrap=True)
    for t in types:
        acc = f"{t.accelerator_count} x {t.accelerator}" if t.accelerator and t.accelerator_count else "-"
        table.add_row(
            escape(t.name),
            escape(t.kind or "-"),
            escape(acc),
            f"{t.accelerator_memory_gb:g} GB" if t.accelerator_memory_gb else "-",
            str(t.vcpus) if t.vcpus is not None else "-",
            f"{t.ram_gb:g} GB" if t.ram_gb is not None else "-",
            usd(t.on_demand_usd_per_hour),
            usd(t.spot_usd_per_hour),
            yes_no(t.available),
            yes_no(t.runnable),
        )
    return table
