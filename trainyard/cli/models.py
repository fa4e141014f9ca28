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


# Dropped in this order when the terminal is too narrow; the id is always shown whole.
_LESSER = ("OWNER", "LICENSE / BASE", "SOURCE", "CONTEXT")


def models_table(models: list[Model], width: int | None = None) -> Table:
    rows = [
        {
            "ID": m.id,
            "PARAMS": parameters(m.parameters),
            "CONTEXT": f"{m.context_length:,}" if m.context_length else "-",
            "SOURCE": m.source or "-",
            "OWNER": m.owned_by or "-",
            "LICENSE / BASE": (m.base_model if m.source == "fine_tuned" else m.license) or "-",
        }
        for m in models
    ]
    columns = ["ID", "PARAMS", "CONTEXT", "SOURCE", "OWNER", "LICENSE / BASE"]

    def needed(names: list[str]) -> int:
        return sum(max(len(n), *(len(r[n]) for r in rows)) for n in names) + 2 * (len(names) - 1)

    for lesser in _LESSER:
        if width is None or not rows or needed(columns) <= width:
            break
        columns.remove(lesser)
    table = Table(box=None, pad_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=True, min_width=len(name) if name != "ID" else None)
    for row in rows:
        table.add_row(*(escape(row[name]) for name in columns))
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
        console = show.out()
        console.print(models_table(found, width=console.width))
