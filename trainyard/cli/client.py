"""What every user command shares: the SDK client, its errors as messages and exit codes, and
the options they all take.

Exit codes: 0 success; 1 a job that was waited on failed or was cancelled; 2 a usage error (a
bad file, or the API refused the request with a 4xx); 3 the API could not be reached or failed
(5xx); 130 interrupted while watching.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.markup import escape

from trainyard.cli import rendering
from trainyard.sdk import APIConnectionError, APIStatusError, AuthenticationError, Trainyard, TrainyardError

EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

# Replaced in tests (and by embedders) to point the commands at another client.
client_factory: Callable[..., Trainyard] = Trainyard
# The global `--base-url` (or $TRAINYARD_BASE_URL), set by the main app's callback. Passed to the
# client as its base_url, so the saved key of another server is never sent to this one.
base_url: str | None = None

JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    rendering.err().print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@contextlib.contextmanager
def api() -> Iterator[Trainyard]:
    """A client for one command, with SDK errors turned into messages and exit codes."""
    try:
        client = client_factory(base_url=base_url) if base_url else client_factory()
    except TrainyardError as exc:  # e.g. an unreadable credentials file
        raise fail(str(exc)) from None
    try:
        yield client
    except APIStatusError as exc:
        where = f" [{exc.param}]" if exc.param else ""
        code = EXIT_UNAVAILABLE if exc.status_code >= 500 else EXIT_USAGE
        hint = (
            " (check TRAINYARD_API_KEY or the saved credentials)"
            if isinstance(exc, AuthenticationError)
            else ""
        )
        raise fail(f"{exc.message}{where} ({exc.status_code} {exc.code or 'error'}){hint}", code) from None
    except APIConnectionError as exc:
        raise fail(f"{exc.message}; is the API running? (trainyard up)", EXIT_UNAVAILABLE) from None
    except TrainyardError as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None
    finally:
        client.close()
