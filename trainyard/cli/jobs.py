"""The job commands: `submit`, `jobs list|get|cancel|events`, `pause` and `resume`."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from trainyard.cli import rendering as show
from trainyard.cli import tables
from trainyard.cli.client import EXIT_INTERRUPTED, EXIT_JOB_FAILED, JSON_OPT, api, echo_json, fail
from trainyard.cli.jobfile import FILE_ARG, load_job_file
from trainyard.cli.watch import summary, watch
from trainyard.sdk import Job, Trainyard

INTERVAL_OPT = typer.Option(
    2.0, "--interval", min=0.01, metavar="SECONDS", help="Seconds between polls while watching."
)


def _finish_watch(client: Trainyard, job: Job) -> None:
    """The end of a watch: the summary (state, cost against the estimate, model, checkpoints),
    and exit 1 unless the job succeeded."""
    checkpoints = list(client.jobs.checkpoints(job.id, limit=100))
    show.err().print(summary(job, checkpoints))
    if job.status == "paused":
        show.err().print(f"resume it with: trainyard resume {job.id}")
    if job.status != "succeeded":
        raise typer.Exit(EXIT_JOB_FAILED)


def _watch_guarded(client: Trainyard, job_id: str, **kwargs: Any) -> Job:
    try:
        return watch(client, job_id, **kwargs)
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
        _finish_watch(client, job)


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
        show.out().print(tables.jobs_table(jobs))


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


def pause(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = JSON_OPT) -> None:
    """Pause a job: a queued one at once; a running one saves a checkpoint and frees its
    instance first. `trainyard resume` continues it from that checkpoint."""
    with api() as client:
        job = client.jobs.pause(job_id)
    if as_json:
        echo_json(job.to_dict())
    elif job.status == "running" and job.pause_requested:
        show.out().print(f"{job.id} pausing: the worker saves a checkpoint and stops at its next heartbeat")
    else:
        show.out().print(f"{job.id} {show.status(job.status)}")


def resume(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = JSON_OPT) -> None:
    """Queue a paused job again, to continue from its latest checkpoint (or withdraw a pause
    that has not taken effect yet)."""
    with api() as client:
        job = client.jobs.resume(job_id)
    if as_json:
        echo_json(job.to_dict())
    else:
        show.out().print(f"{job.id} {show.status(job.status)}")


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
            _finish_watch(client, job)
        else:
            events = list(client.jobs.events(job_id, limit=100))
            if as_json:
                echo_json([e.to_dict() for e in events])
            else:
                out = show.out()
                for event in events:
                    out.print(show.event_line(event))
