"""`trainyard models`: the models a job may start from, as `/v1/models` lists them."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from trainyard.cli import rendering as show
from trainyard.cli.client import JSON_OPT, api, echo_json
from trainyard.sdk import Model

SOURCES = ("fine_tuned", "registry", "cache")


def parameters(value: int | None) -> str:
    """A parameter count as people say it: 124M, 8.03B."""
    if not value:
        return "-"
    if value >= 10**9:
        return f"{value / 1e9:.3g}B"
    if value >= 10**6:
        return f"{value / 1e6:.3g}M"
    return f"{value:,}"


def models_table(models: list[Model]) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("ID", no_wrap=True, overflow="fold")
    for name in ("PARAMS", "CONTEXT", "SOURCE", "OWNER", "LICENSE / BASE"):
        table.add_column(name, no_wrap=True)
    for m in models:
        table.add_row(
            escape(m.id),
            parameters(m.parameters),
            f"{m.context_length:,}" if m.context_length else "-",
            escape(m.source or "-"),
            escape(m.owned_by or "-"),
            escape((m.base_model if m.source == "fine_tuned" else m.license) or "-"),
        )
    return table


def models(
    fine_tuned: bool = typer.Option(False, "--fine-tuned", help="Only this team's fine-tuned models."),
    as_json: bool = JSON_OPT,
) -> None:
    """Base models the platform sizes without a hub, and this team's fine-tuned models (ft ids
    work as a job's base_model)."""
    with api() as client:
        found = client.models.list()
    if fine_tuned:
        found = [m for m in found if m.source == "fine_tuned"]
    if as_json:
        echo_json([m.to_dict() for m in found])
    else:
        show.out().print(models_table(found))
