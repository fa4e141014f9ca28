"""User commands of the `trainyard` CLI: submit, jobs, logs, queue, pause, resume, estimate,
costs, instance-types, models, files, budgets.

They talk to the API through the SDK only, never to the database, so they work against any
server the credentials point at. Exit codes are in `trainyard.cli.client`.
"""

from __future__ import annotations

import typer

from trainyard.cli import budgets, costs, files, jobs, logs, models, outputs, queue


def register(app: typer.Typer) -> None:
    """Add the user commands to `app` (the main `trainyard` app, or a test's own)."""
    app.command("submit")(jobs.submit)
    app.command("estimate")(costs.estimate)
    app.command("costs")(costs.costs)
    app.command("instance-types")(costs.instance_types)
    app.command("logs")(logs.logs)
    app.command("queue")(queue.queue)
    app.command("pause")(jobs.pause)
    app.command("resume")(jobs.resume)
    files.register(app)
    budgets.register(app)
    app.command("models")(models.models)
    # A fresh sub-app per call, so registering on several apps (tests do) shares no state.
    jobs_app = typer.Typer(
        no_args_is_help=True, help="List, inspect, cancel and follow jobs; download their models."
    )
    jobs_app.command("list")(jobs.jobs_list)
    jobs_app.command("get")(jobs.jobs_get)
    jobs_app.command("cancel")(jobs.jobs_cancel)
    jobs_app.command("pause")(jobs.pause)
    jobs_app.command("resume")(jobs.resume)
    jobs_app.command("events")(jobs.jobs_events)
    jobs_app.command("move")(queue.jobs_move)
    jobs_app.command("download")(outputs.download)
    jobs_app.command("cost-report")(outputs.cost_report)
    app.add_typer(jobs_app, name="jobs")
