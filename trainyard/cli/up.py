"""`trainyard up`: the embedded stack in the foreground until Ctrl-C.

Start-up prints what a person needs and nothing else: the API, the dashboard (with the key in
its URL fragment, which the dashboard takes and removes from the address bar), the database
and the admin key. `--verbose` adds the logs of Postgres, Ray, the API and the migrations.
The stack is recorded in `stack.json` (`cli.stackfile`) while it runs, so `trainyard admin`
and `trainyard migrate` reach its database from another terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import typer

from trainyard.cli import stackfile
from trainyard.cli.client import EXIT_UNAVAILABLE, EXIT_USAGE, fail

if TYPE_CHECKING:
    from trainyard.cli.local import LocalStack

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging(verbose: bool) -> None:
    """INFO from everything with `verbose`; otherwise warnings only while the stack starts."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    if verbose:
        return
    # Ray configures its own logger at import (INFO, its own handler, not propagated), so its
    # level is set after that import, which would otherwise print a line per part it starts.
    import ray  # noqa: F401

    logging.getLogger("ray").setLevel(logging.ERROR)


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        # As uvicorn binds: connections of a stack that just stopped, left in TIME_WAIT, do not
        # hold the port; a listening server does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def dashboard_url(base_url: str, api_key: str) -> str:
    # In the fragment, the key never reaches a server log or a Referer header.
    return f"{base_url}/dashboard#key={quote(api_key, safe='')}"


def run_up(data_dir: Path, *, host: str, port: int, verbose: bool) -> int:
    """Run the stack until SIGINT/SIGTERM; the exit status (0 after a clean stop)."""
    from trainyard.cli.local import LocalStack

    if _port_taken(host, port):
        raise fail(
            f"port {port} on {host} is in use (another trainyard up?); choose one with --port", EXIT_USAGE
        )
    configure_logging(verbose)
    stack = LocalStack(data_dir=data_dir, host=host, port=port)
    stopping, force = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        # The first asks running jobs to checkpoint and hand back; the second kills them.
        if stopping.is_set():
            if not force.is_set():
                typer.echo("forcing the stop: running jobs go back to their last checkpoint", err=True)
            force.set()
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except Exception as exc:
        stack.stop(grace=0)
        if verbose:
            raise
        raise fail(
            f"the embedded stack did not start: {_problem(stack, exc)} (--verbose shows why)",
            EXIT_UNAVAILABLE,
        ) from None
    pid = os.getpid()
    stackfile.write(
        stackfile.StackInfo(
            base_url=stack.base_url,
            database_url=stack.settings.database_url,
            storage_uri=stack.settings.storage_uri,
            data_dir=str(stack.data_dir),
            pid=pid,
        )
    )
    _announce(stack.base_url, stack.api_key, stack.settings.database_url)
    if verbose:
        typer.echo(f"(key saved to {stack.credentials_file} and the SDK's credentials file)")
    # Once it is up, the platform's own lines (a job started, moved, handed back) are worth seeing.
    logging.getLogger("trainyard").setLevel(logging.INFO)
    try:
        stopping.wait()
    finally:
        stackfile.remove(pid)
        typer.echo("stopping: running jobs checkpoint and go back to the queue (Ctrl-C again to force)...")
        stack.stop(force=force)
        typer.echo("stopped")
    return 0


def _problem(stack: LocalStack, exc: Exception) -> str:
    from trainyard.cli.admin import database_problem
    from trainyard.platform import db

    settings = getattr(stack, "settings", None)
    if settings is not None and isinstance(exc, db.DATABASE_ERRORS):
        return database_problem(settings.database_url, exc)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _announce(base_url: str, api_key: str, database_url: str) -> None:
    rows = (
        ("API", base_url),
        ("dashboard", dashboard_url(base_url, api_key)),
        ("database", stackfile.display_url(database_url)),
        ("admin key", api_key),
    )
    typer.echo("Trainyard is up; Ctrl-C stops it.")
    for name, value in rows:
        typer.echo(f"  {name:<10} {value}")
