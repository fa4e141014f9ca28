"""`trainyard logs JOB [-f]`: an attempt's output (its own lines and its Ray workers' training
output), read through the API as the worker ships it to the store."""

from __future__ import annotations

import sys

import typer

from trainyard.cli.client import EXIT_INTERRUPTED, api, echo_json


def logs(
    job_id: str = typer.Argument(..., help="Job id."),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing as the log grows, attempt after attempt, until the job ends.",
    ),
    attempt: int | None = typer.Option(
        None, "--attempt", min=1, metavar="N", help="Attempt number (default: the latest)."
    ),
    tail: int | None = typer.Option(
        None, "--tail", min=0, metavar="LINES", help="Only the last LINES lines."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the API's answer as JSON (not with --follow)."),
) -> None:
    """Show a job's log: what its attempt printed, training output included."""
    with api() as client:
        if not follow:
            piece = client.jobs.logs(job_id, attempt=attempt, tail=tail)
            if as_json:
                echo_json(piece.to_dict())
            else:
                sys.stdout.write(piece.data)
            return
        try:
            for text in client.jobs.follow_logs(job_id):
                sys.stdout.write(text)
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
