"""`python -m trainyard.cli ...`: the same as the `trainyard` console script."""

from __future__ import annotations

from trainyard.cli.main import app

app()
