"""The `trainyard` command line (typer): `trainyard.cli:app` is the console script."""

from __future__ import annotations

from trainyard.cli.main import app

__all__ = ["app"]
