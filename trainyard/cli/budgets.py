"""`trainyard budgets list|set`: monthly team budgets against this month's spend."""

from __future__ import annotations

import typer

from trainyard.cli import rendering as show
from trainyard.cli import tables
from trainyard.cli.client import JSON_OPT, api, echo_json, fail


def list_budgets(as_json: bool = JSON_OPT) -> None:
    """Each visible team's budget, spend this month, what running and queued jobs still expect
    to spend, and what is left (admins see every team)."""
    with api() as client:
        budgets = client.budgets.list()
    if as_json:
        echo_json([b.to_dict() for b in budgets])
    else:
        show.out().print(tables.budgets_table(budgets))


def set_budget(
    team: str = typer.Argument(..., help="Team name."),
    usd: str = typer.Argument(..., help="Monthly budget in dollars, or 'none' to clear it."),
    as_json: bool = JSON_OPT,
) -> None:
    """Set a team's monthly budget (admin keys only). New jobs whose estimate exceeds what is
    left are refused; running jobs are not stopped."""
    if usd.strip().lower() in ("none", "off", "clear"):
        amount: float | None = None
    else:
        try:
            amount = float(usd.strip().lstrip("$").replace(",", ""))
        except ValueError:
            raise fail(f"budget must be a dollar amount or 'none', got {usd!r}") from None
    with api() as client:
        budget = client.budgets.set(team, amount)
    if as_json:
        echo_json(budget.to_dict())
    else:
        show.out().print(tables.budgets_table([budget]))


def register(app: typer.Typer) -> None:
    budgets_app = typer.Typer(no_args_is_help=True, help="Monthly team budgets.")
    budgets_app.command("list")(list_budgets)
    budgets_app.command("set")(set_budget)
    app.add_typer(budgets_app, name="budgets")
