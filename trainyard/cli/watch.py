"""Watching a job: the live display `submit --wait` and `jobs events --follow` share, and the
summary they end with.

The display is two lines on stderr: the job's state (and its phase, when the server reports one),
a bar and the steps (before the first one, the phase in their place; a sweep's trial n of m
beside them); then the loss, tokens/s and dollars against the estimate. Events print above
it, through the display's own console, so they never land on top of the bar. When stdout is not
the terminal the display is on (a pipe, a file), events go to stdout plainly and the display
stays on stderr.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import typer
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from trainyard.cli import rendering as show
from trainyard.sdk import Checkpoint, Job, Trainyard

__all__ = ["JobView", "summary", "watch"]

BAR_WIDTH = 40


def _elapsed(job: Job, now: datetime) -> str:
    """How long the job has run (or waited, while queued), or took once it ended."""
    if job.started_at is not None:
        end = job.finished_at or (now if job.status in ("running", "cancelling") else None)
        if end is not None:
            return show.duration(max(0.0, (end - job.started_at).total_seconds()))
    if job.status == "queued" and job.created_at is not None:
        return "waiting " + show.duration(max(0.0, (now - job.created_at).total_seconds()))
    return ""


class JobView:
    """The live display of one job; `job` is replaced at each poll."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def lines(self, now: datetime | None = None) -> tuple[Table, str]:
        job, p = self.job, self.job.progress
        now = now or datetime.now(UTC)
        total = p.total_steps
        done = total if job.status == "succeeded" and total else p.step
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(min_width=10, max_width=BAR_WIDTH)
        head.add_column(no_wrap=True)
        # No total yet (a server that does not plan one): a pulse while it runs.
        bar = ProgressBar(
            total=float(total or 1),
            completed=float(done or 0) if total else 0.0,
            pulse=not total and job.status == "running",
        )
        step_text = f"{p.step}/{total} steps" if total else (f"step {p.step}" if p.step else "")
        # Before the first step, what the run is doing stands where the steps will be.
        doing = "" if p.step else show.phase(job)
        tail = "  ".join(x for x in (show.trial(job), doing or step_text, _elapsed(job, now)) if x)
        head.add_row(show.status(job.status) if doing else show.stage(job), bar, tail)
        figures = [
            f"loss {show.loss(p.loss)}",
            f"{show.rate(p.tokens_per_second)} tok/s",
            show.against_estimate(job.cost.usd, job.cost.estimated_usd, final=job.is_terminal),
        ]
        return head, "  ·  ".join(figures)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        head, figures = self.lines()
        yield Group(head, figures)


def watch(client: Trainyard, job_id: str, *, interval: float, events: bool, json_lines: bool) -> Job:
    """Poll the job (and, with `events`, print its new events) until it settles; returns it."""
    err, out = show.err(), show.out()
    view = JobView(client.jobs.get(job_id))
    if not err.is_terminal:
        # No live display off a terminal: the events as they come, and the last frame at the end.
        job = _poll(client, job_id, view, interval, events, json_lines, None, out)
        err.print(view)
        return job
    with Live(view, console=err, refresh_per_second=4, redirect_stdout=False, redirect_stderr=False) as live:
        # Through the display only when stdout is the terminal too; else it keeps its own stream.
        return _poll(
            client, job_id, view, interval, events, json_lines, live if out.is_terminal else None, out
        )


def _poll(
    client: Trainyard,
    job_id: str,
    view: JobView,
    interval: float,
    events: bool,
    json_lines: bool,
    live: Live | None,
    out: Console,
) -> Job:
    last_event: str | None = None
    while True:
        job = client.jobs.get(job_id)
        # Events after the job: the event that finishes a job is written with its status, so a
        # terminal job's events are complete by the time they are read.
        if events:
            for event in client.jobs.events(job_id, after=last_event, limit=100):
                last_event = event.id
                if json_lines:
                    line = json.dumps(event.to_dict())
                    if live is not None:
                        live.console.print(line, markup=False, highlight=False, soft_wrap=True)
                    else:
                        typer.echo(line)
                elif live is not None:
                    live.console.print(show.event_line(event))
                else:
                    out.print(show.event_line(event))
        view.job = job
        if live is not None:
            live.refresh()
        if job.is_settled:
            return job
        time.sleep(interval)


def summary(job: Job, checkpoints: list[Checkpoint]) -> Table:
    """How a watched job ended: its state and time, cost against the estimate, the model, the
    checkpoints and the cost report."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    took = _elapsed(job, datetime.now(UTC))
    estimated = job.plan.estimated_seconds if job.plan is not None else None
    head = show.status(job.status) + (f" in {took}" if took else "")
    if estimated is not None:
        head += f" (estimated {show.duration(estimated)})"
    table.add_row("job", f"{escape(job.id)} {head}")
    if job.error:
        table.add_row(
            "error", f"[red]{escape(job.error.code or '')}[/red]: {escape(job.error.message or '')}"
        )
    table.add_row("cost", show.against_estimate(job.cost.usd, job.cost.estimated_usd))
    result = job.result
    if job.status == "succeeded" or (result is not None and result.final_model_uri):
        table.add_row("model", escape((result.final_model_uri if result else None) or "-"))
    if checkpoints:
        last = checkpoints[0]  # highest step first
        table.add_row(
            "checkpoints", f"{len(checkpoints)}, last at step {last.step}: {escape(last.uri or '-')}"
        )
    else:
        table.add_row("checkpoints", "none")
    if result is not None and result.cost_report_uri:
        table.add_row("cost report", escape(result.cost_report_uri))
    return table
