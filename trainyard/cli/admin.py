"""Commands that talk to the database directly: `migrate` and `admin create-team|create-key`.

They run where the server runs (they need `TRAINYARD_DATABASE_URL`), not on a user's laptop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

admin_app = typer.Typer(no_args_is_help=True, help="Teams and API keys (talks to the database directly).")


@contextlib.contextmanager
def _database() -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    from trainyard.platform import db
    from trainyard.settings import get_settings

    engine = db.make_engine(get_settings().database_url, pool_size=1, max_overflow=0)
    try:
        yield engine, db.make_sessionmaker(engine)
    finally:
        engine.dispose()


def migrate() -> None:
    """Apply database migrations (safe to run from several processes at once)."""
    from trainyard.platform import migrate as migrations

    with _database() as (engine, _):
        migrations.upgrade(engine)
    typer.echo("database is at the latest schema")


@admin_app.command("create-team")
def create_team(
    name: str,
    monthly_budget_usd: float = typer.Option(None, help="Monthly budget in dollars"),
) -> None:
    """Create a team."""
    from trainyard.platform import auth
    from trainyard.platform.errors import TrainyardError

    with _database() as (_, sessions):
        try:
            with sessions.begin() as s:
                team = auth.create_team(s, name, monthly_budget_usd=monthly_budget_usd)
                typer.echo(f"created team {team.name} ({team.id})")
        except TrainyardError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2) from None


@admin_app.command("create-key")
def create_key(
    team: str = typer.Option(..., help="Team name"),
    admin: bool = typer.Option(False, "--admin", help="An admin key sees and manages every team"),
    name: str = typer.Option("default", help="A label for the key"),
) -> None:
    """Create an API key and print it (it is shown only once)."""
    from trainyard.platform import auth
    from trainyard.platform.errors import TrainyardError

    with _database() as (_, sessions):
        try:
            with sessions.begin() as s:
                secret = auth.create_key(
                    s, auth.get_team_by_name(s, team), role="admin" if admin else "member", name=name
                )
        except TrainyardError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2) from None
    typer.echo(secret)
