"""`trainyard queue` (what waits, where and why) and `trainyard jobs move` (to a sooner pool)."""

from __future__ import annotations

import itertools

import typer
from rich.markup import escape

from trainyard.cli import queue_rendering as view
from trainyard.cli import rendering as show
from trainyard.cli.client import JSON_OPT, api, echo_json


def queue(
    pool: str = typer.Option(None, "--pool", help="Only this pool's line."),
    team: str = typer.Option(None, "--team", help="Admins: only this team's jobs."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many waiting jobs."),
    as_json: bool = JSON_OPT,
) -> None:
    """Show each pool's load, then your waiting jobs in the order they will be claimed: their
    place, why they wait, when they should start, and a pool that would start them sooner."""
    with api() as client:
        summary = client.queue.summary(team=team)
        pages = client.queue.jobs(team=team, pool=pool, limit=min(limit, 100))
        waiting = list(itertools.islice(pages, limit))
    if as_json:
        echo_json({"summary": summary.to_dict(), "jobs": [j.to_dict() for j in waiting]})
        return
    out = show.out()
    if summary.pools:
        out.print(view.summary_table(summary))
    if not waiting:
        show.err().print("no waiting jobs")
        return
    out.print()
    out.print(view.waiting_table(waiting))
    moves = [j for j in waiting if j.queue is not None and j.queue.alternatives]
    if moves:
        first = moves[0].queue
        assert first is not None and first.alternatives[0].command
        out.print(f"\nto move one: {escape(first.alternatives[0].command)}")


def jobs_move(
    job_id: str = typer.Argument(..., help="Job id (a queued job)."),
    instance_type: str = typer.Option(..., "--instance-type", help="A pool's instance type."),
    spot: bool = typer.Option(
        None, "--spot/--on-demand", help="Spot or on-demand capacity (default: as the job's policy chooses)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Move a queued job to another pool, re-planned there (`trainyard jobs get` lists the pools
    that would start it sooner). Moving it where it already is changes nothing."""
    with api() as client:
        job = client.jobs.move(job_id, instance_type=instance_type, spot=spot)
    if as_json:
        echo_json(job.to_dict())
        return
    label = job.plan.label if job.plan is not None else (job.instance_type or "-")
    estimate = ""
    if job.plan is not None and job.plan.estimated_cost_usd is not None:
        plan = job.plan
        estimate = f", estimated {show.usd(plan.estimated_cost_usd)}, {show.duration(plan.estimated_seconds)}"
    line = f"{job.id} on {escape(label)}{estimate}"
    if job.queue is not None:
        line += f"; {view.where(job.queue)}, starts {view.starts(job.queue.eta_seconds)}"
    show.out().print(line)
