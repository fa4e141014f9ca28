"""The options of `trainyard` itself, before any command: `--version` and `--base-url`."""

from __future__ import annotations

import typer

from trainyard.cli import client


def _print_version(value: bool) -> None:
    if value:
        from trainyard.sdk import __version__

        typer.echo(f"trainyard {__version__}")
        raise typer.Exit()


def main_options(
    base_url: str = typer.Option(
        None,
        "--base-url",
        envvar="TRAINYARD_BASE_URL",
        metavar="URL",
        help="The API the user commands talk to (default: the saved credentials' server, "
        "else http://127.0.0.1:8000).",
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    client.base_url = base_url or None
