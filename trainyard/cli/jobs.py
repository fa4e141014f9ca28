"""The job commands: `submit` and `jobs list|get|cancel|events`, and the watch they share."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from trainyard.cli import rendering as show
from trainyard.cli.client import EXIT_INTERRUPTED, EXIT_JOB_FAILED, JSON_OPT, api, echo_json, fail
from trainyard.cli.jobfile import FILE_ARG, load_job_file
from trainyard.sdk import Job, Trainyard

INTERVAL_OPT = typer.Option(
    2.0, "--interval", min=0.01, metavar="SECONDS", help="Seconds between polls while watching."
)


# ------------------------------------------------------------------------------------------
# Watching a job: the progress bar shared by `submit --wait` and `jobs events --follow`


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.fields[status]}"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("{task.fields[usd]}"),
        TimeElapsedColumn(),
        console=show.err(),
    )


def _bar_fields(job: Job) -> dict[str, Any]:
    p = job.progress
    return {
        "status": show.status(job.status),
        "steps": show.steps(job),
        "loss": f"{p.loss:.4f}" if p.loss is not None else "-",
        "tps": f"{p.tokens_per_second:,.0f}" if p.tokens_per_second else "-",
        "usd": show.usd(job.cost.usd),
    }


def _update_bar(progress: Progress, task: TaskID, job: Job) -> None:
    total = job.progress.total_steps
    completed = job.progress.step if total else 0
    if job.status == "succeeded" and total:
        completed = total
    progress.update(task, total=total or None, completed=completed, **_bar_fields(job))


def _watch(client: Trainyard, job_id: str, *, interval: float, events: bool, json_lines: bool) -> Job:
    """Poll the job (and, with `events`, print its new events) until it finishes."""
    last_event: str | None = None
    out = show.out()
    with _progress() as progress:
        task: TaskID | None = None
        while True:
            job = client.jobs.get(job_id)
            # Events after the job: the event that finishes a job is written with its status,
            # so a terminal job's events are complete by the time we read them.
            if events:
                for event in client.jobs.events(job_id, after=last_event, limit=100):
                    last_event = event.id
                    if json_lines:
                        typer.echo(json.dumps(event.to_dict()))
                    else:
                        out.print(show.event_line(event))
            if task is None:
                task = progress.add_task("job", total=None, **_bar_fields(job))
            _update_bar(progress, task, job)
            if job.is_settled:
                return job
            time.sleep(interval)


def _finish_watch(job: Job) -> None:
    message = f"job {job.id} {show.status(job.status)}"
    if job.error:
        message += f": {escape(job.error.message or job.error.code or '')}"
    show.err().print(message)
    if job.status != "succeeded":
        raise typer.Exit(EXIT_JOB_FAILED)


def _watch_guarded(client: Trainyard, job_id: str, **kwargs: Any) -> Job:
    try:
        return _watch(client, job_id, **kwargs)
    except KeyboardInterrupt:
        show.err().print(
            f"stopped watching; job {job_id} keeps running (trainyard jobs cancel {job_id} stops it)"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


# ------------------------------------------------------------------------------------------
# Commands


def submit(
    file: Path = FILE_ARG,
    wait: bool = typer.Option(False, "--wait", help="Show progress until the job finishes."),
    idempotency_key: str = typer.Option(
        None, "--idempotency-key", metavar="KEY", help="Resubmitting with the same key returns the same job."
    ),
    as_json: bool = JSON_OPT,
    interval: float = INTERVAL_OPT,
) -> None:
    """Queue a job from a file. With --wait, exit 0 if it succeeds and 1 if it fails."""
    spec = load_job_file(file)
    with api() as client:
        job = client.jobs.create(spec, idempotency_key=idempotency_key)
        if not wait:
            if as_json:
                echo_json(job.to_dict())
            else:
                where = f" on {job.instance_type}" if job.instance_type else ""
                estimate = f", estimated {show.usd(job.cost.estimated_usd)}" if job.cost.estimated_usd else ""
                show.out().print(f"queued {job.id}{escape(where)}{estimate}")
            return
        show.err().print(f"queued {job.id}; waiting for it to finish (Ctrl-C stops watching, not the job)")
        job = _watch_guarded(client, job.id, interval=interval, events=False, json_lines=False)
    if as_json:
        echo_json(job.to_dict())
    _finish_watch(job)


def jobs_list(
    status: str = typer.Option(
        None, "--status", metavar="STATE", help="Only jobs in this state (queued, running, ...)."
    ),
    metadata: list[str] = typer.Option(
        None,
        "--metadata",
        metavar="KEY=VALUE",
        help="Only jobs with this metadata; repeat to require several.",
    ),
    limit: int = typer.Option(
        20, "--limit", min=1, metavar="N", help="Show at most this many jobs (newest first)."
    ),
    as_json: bool = JSON_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the job ids, one a line."),
) -> None:
    """List jobs, newest first."""
    filters: dict[str, str] = {}
    for pair in metadata or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--metadata wants key=value, got {pair!r}")
        filters[key] = value
    with api() as client:
        pages = client.jobs.list(status=status, metadata=filters or None, limit=min(limit, 100))
        jobs = list(itertools.islice(pages, limit))
    if as_json:
        echo_json([j.to_dict() for j in jobs])
    elif quiet:
        for job in jobs:
            typer.echo(job.id)
    elif not jobs:
        show.err().print("no jobs")
    else:
        show.out().print(show.jobs_table(jobs))


def jobs_get(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = JSON_OPT) -> None:
    """Show one job: spec, status, progress, cost, error."""
    with api() as client:
        job = client.jobs.get(job_id)
    if as_json:
        echo_json(job.to_dict())
    else:
        show.out().print(show.job_detail(job))


def jobs_cancel(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = JSON_OPT) -> None:
    """Cancel a job. A queued one stops at once, a running one as soon as its worker sees the request."""
    with api() as client:
        job = client.jobs.cancel(job_id)
    if as_json:
        echo_json(job.to_dict())
    elif job.status == "cancelling":
        show.out().print(f"{job.id} cancelling: the worker stops it at its next heartbeat")
    else:
        show.out().print(f"{job.id} {job.status}")


def jobs_events(
    job_id: str = typer.Argument(..., help="Job id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the job ends."),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON: an array, or one object per line with --follow."
    ),
    interval: float = INTERVAL_OPT,
) -> None:
    """Show a job's events, oldest first.

    Status changes, metrics, checkpoints, costs and messages."""
    with api() as client:
        if follow:
            job = _watch_guarded(client, job_id, interval=interval, events=True, json_lines=as_json)
        else:
            events = list(client.jobs.events(job_id, limit=100))
            if as_json:
                echo_json([e.to_dict() for e in events])
            else:
                out = show.out()
                for event in events:
                    out.print(show.event_line(event))
            return
    _finish_watch(job)
