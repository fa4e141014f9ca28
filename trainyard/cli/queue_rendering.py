"""How the CLI shows queue answers: a waiting job's lines in `jobs get`, and the `queue` tables."""

from __future__ import annotations

from datetime import datetime

from rich.markup import escape
from rich.table import Table

from trainyard.cli.rendering import status, when
from trainyard.durations import format_duration
from trainyard.money import format_usd
from trainyard.sdk import Job, QueueAnswer, QueueSummary


def starts(seconds: float | None) -> str:
    """`now`, `in 5m00s`, `in 1h30m` (the one duration rule); `unknown` without an estimate."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return "now"
    return f"in {format_duration(seconds)}"


def where(answer: QueueAnswer) -> str:
    place = f"#{answer.position} in {answer.pool}" if answer.position is not None else (answer.pool or "-")
    return f"{escape(place)}, {escape(answer.reason)}"


def queue_rows(job: Job) -> list[tuple[str, str]]:
    """The `jobs get` lines of a waiting job: its place and reason, its start, the better pools."""
    answer = job.queue
    if answer is None:
        return []
    rows = [("queue", f"{where(answer)}: {escape(answer.message)}")]
    start = starts(answer.eta_seconds)
    at = answer.estimated_start_at
    if answer.eta_seconds is not None and answer.eta_seconds >= 60 and isinstance(at, datetime):
        start += f" (about {when(at)} UTC)"
    rows.append(("starts", start))
    for i, alt in enumerate(answer.alternatives):
        line = escape(alt.summary)
        if alt.command:
            line += f"\n  [dim]{escape(alt.command)}[/dim]"
        rows.append(("sooner" if i == 0 else "", line))
    return rows


def summary_table(summary: QueueSummary) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("POOL", "WAITING", "RUNNING", "GPUS", "OLDEST WAIT"):
        table.add_column(name, no_wrap=True, justify="left" if name == "POOL" else "right")
    for pool in summary.pools:
        oldest = pool.oldest_waiting_seconds
        table.add_row(
            escape(pool.pool or "-"),
            str(pool.waiting),
            str(pool.running),
            f"{pool.gpus_in_use:g}",
            format_duration(oldest),
        )
    return table


def waiting_table(jobs: list[Job]) -> Table:
    """One row per waiting job; ids, pools and reasons kept whole, the better pool last."""
    table = Table(box=None, pad_edge=False)
    for name in ("ID", "POOL", "#", "REASON", "STARTS", "SOONER ON"):
        table.add_column(name, no_wrap=name != "SOONER ON")
    for job in jobs:
        answer = job.queue
        if answer is None:
            table.add_row(job.id, escape(job.pool or "-"), "-", status(job.status), "-", "-")
            continue
        best = answer.alternatives[0] if answer.alternatives else None
        sooner = "-"
        if best is not None:
            label = f"{best.instance_type} spot" if best.spot else best.instance_type
            extra = best.extra_cost_usd or 0.0
            cost = ("+" if extra >= 0 else "-") + format_usd(abs(extra))
            sooner = f"{escape(label)} ({starts(best.starts_in_seconds)}, {cost})"
        table.add_row(
            job.id,
            escape(answer.pool or "-"),
            "-" if answer.position is None else str(answer.position),
            escape(answer.reason),
            starts(answer.eta_seconds),
            sooner,
        )
    return table
