"""Commands that talk to the database directly: `migrate` and `admin create-team|create-key|
grant-source|revoke-source|list-sources`.

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

    from trainyard.platform.auth import Principal

admin_app = typer.Typer(
    no_args_is_help=True, help="Teams, API keys and source grants (talks to the database directly)."
)


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


@contextlib.contextmanager
def _as_admin() -> Iterator[tuple[Session, Principal]]:
    """A transaction and the principal of the operator at the console, who acts as an admin."""
    from trainyard.platform.auth import Principal
    from trainyard.platform.errors import TrainyardError

    with _database() as (_, sessions):
        try:
            with sessions.begin() as s:
                yield s, Principal(key_id="console", team_id="", team_name="", role="admin")
        except TrainyardError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2) from None


@admin_app.command("grant-source")
def grant_source(
    team: str = typer.Argument(..., help="Team name"),
    uri: str = typer.Argument(..., help="s3://bucket or s3://bucket/prefix"),
) -> None:
    """Let a team's jobs read an s3:// bucket or prefix outside the platform store."""
    from trainyard.platform import grants
    from trainyard.settings import get_settings

    with _as_admin() as (s, admin):
        row, _ = grants.grant_source(s, admin, team, uri, storage_uri=get_settings().storage_uri)
        typer.echo(f"granted {row.uri} to team {team}")


@admin_app.command("revoke-source")
def revoke_source(
    team: str = typer.Argument(..., help="Team name"),
    uri: str = typer.Argument(..., help="The granted s3:// bucket or prefix"),
) -> None:
    """Take a grant back; the team's queued jobs that need it are refused when they start."""
    from trainyard.platform import grants

    with _as_admin() as (s, admin):
        row, _ = grants.revoke_source(s, admin, team, uri)
        typer.echo(f"revoked {row.uri} from team {team}")


@admin_app.command("list-sources")
def list_sources(team: str = typer.Argument(..., help="Team name")) -> None:
    """The s3:// buckets and prefixes granted to a team, one a line."""
    from trainyard.platform import grants

    with _as_admin() as (s, admin):
        rows, _ = grants.list_grants(s, admin, team)
        for row in rows:
            typer.echo(row.uri)
