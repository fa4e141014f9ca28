"""User commands of the `trainyard` CLI: submit, jobs, estimate, costs, instance-types, models.

They talk to the API through the SDK only, never to the database, so they work against any
server the credentials point at. Exit codes are in `trainyard.cli.client`.
"""

from __future__ import annotations

import typer

from trainyard.cli import costs, jobs, models


def register(app: typer.Typer) -> None:
    """Add the user commands to `app` (the main `trainyard` app, or a test's own)."""
    app.command("submit")(jobs.submit)
    app.command("estimate")(costs.estimate)
    app.command("costs")(costs.costs)
    app.command("instance-types")(costs.instance_types)
    app.command("models")(models.models)
    # A fresh sub-app per call, so registering on several apps (tests do) shares no state.
    jobs_app = typer.Typer(no_args_is_help=True, help="List, inspect, cancel and follow jobs.")
    jobs_app.command("list")(jobs.jobs_list)
    jobs_app.command("get")(jobs.jobs_get)
    jobs_app.command("cancel")(jobs.jobs_cancel)
    jobs_app.command("events")(jobs.jobs_events)
    app.add_typer(jobs_app, name="jobs")
