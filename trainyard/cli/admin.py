"""Commands that talk to the database directly: `migrate` and `admin create-team|create-key|
grant-source|revoke-source|list-sources`.

They run where the server runs, not on a user's laptop. The database is
`TRAINYARD_DATABASE_URL` when it is set, else the one a running `trainyard up` recorded
(`cli.stackfile`), else the settings' default. Every failure is one line: exit 2 for what the
operator asked wrongly (a duplicate team, an unknown one, a bad URL), 3 when the database
cannot be reached or cannot serve the command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer

from trainyard.cli import stackfile
from trainyard.cli.client import EXIT_UNAVAILABLE, EXIT_USAGE, fail

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from trainyard.platform.auth import Principal
    from trainyard.settings import Settings

admin_app = typer.Typer(
    no_args_is_help=True,
    help="Teams, API keys and source grants. These talk to the database directly: "
    "TRAINYARD_DATABASE_URL, else the running `trainyard up`.",
    short_help="Teams, API keys and source grants (database access).",
)


def database_settings() -> Settings:
    """The settings, with the database (and store) of a running `trainyard up` unless
    `TRAINYARD_DATABASE_URL` names one."""
    from trainyard.settings import get_settings

    running = None if os.environ.get("TRAINYARD_DATABASE_URL") else stackfile.read()
    if running is None:
        return get_settings()
    overrides = {"database_url": running.database_url}
    if not os.environ.get("TRAINYARD_STORAGE_URI"):
        overrides["storage_uri"] = running.storage_uri
    return get_settings(**overrides)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else type(cause).__name__


def database_problem(url: str, exc: Exception) -> str:
    """One line on a database error: where, what the server said, and what to do."""
    from sqlalchemy import exc as sa_exc

    from trainyard.platform import db

    where = stackfile.display_url(url)
    if db.is_outage(exc):
        hint = (
            ""
            if os.environ.get("TRAINYARD_DATABASE_URL")
            else ("; start `trainyard up`, or set TRAINYARD_DATABASE_URL")
        )
        return f"cannot reach the database at {where}: {_first_line(exc)}{hint}"
    hint = "; run `trainyard migrate`" if isinstance(exc, sa_exc.ProgrammingError) else ""
    return f"the database at {where} could not run the command: {_first_line(exc)}{hint}"


@contextlib.contextmanager
def _database() -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    """An engine and sessions for one command; whatever fails inside becomes one line and an
    exit code."""
    from sqlalchemy import exc as sa_exc

    from trainyard.platform import db
    from trainyard.platform.errors import TrainyardError

    url = database_settings().database_url
    try:
        engine = db.make_engine(url, pool_size=1, max_overflow=0)
    except (ValueError, sa_exc.ArgumentError) as exc:
        raise fail(f"bad database URL {url!r}: {exc}", EXIT_USAGE) from None
    try:
        yield engine, db.make_sessionmaker(engine)
    except TrainyardError as exc:
        code = EXIT_UNAVAILABLE if exc.status >= 500 else EXIT_USAGE
        raise fail(f"{exc.message} ({exc.code})", code) from None
    except db.DATABASE_ERRORS as exc:
        raise fail(database_problem(url, exc), EXIT_UNAVAILABLE) from None
    finally:
        engine.dispose()


def migrate() -> None:
    """Apply database migrations.

    Safe to run from several processes at once; the API also migrates when it starts."""
    from trainyard.platform import migrate as migrations

    with _database() as (engine, _):
        migrations.upgrade(engine)
    typer.echo("database is at the latest schema")


@admin_app.command("create-team")
def create_team(
    name: str = typer.Argument(..., help="Team name"),
    monthly_budget_usd: float = typer.Option(None, metavar="USD", help="Monthly budget in dollars"),
) -> None:
    """Create a team."""
    from trainyard.platform import auth

    with _database() as (_, sessions), sessions.begin() as s:
        team = auth.create_team(s, name, monthly_budget_usd=monthly_budget_usd)
    typer.echo(f"created team {team.name} ({team.id})")


@admin_app.command("create-key")
def create_key(
    team: str = typer.Option(..., help="Team name"),
    admin: bool = typer.Option(False, "--admin", help="An admin key sees and manages every team"),
    name: str = typer.Option("default", help="A label for the key"),
) -> None:
    """Create an API key and print it (it is shown only once)."""
    from trainyard.platform import auth

    with _database() as (_, sessions), sessions.begin() as s:
        secret = auth.create_key(
            s, auth.get_team_by_name(s, team), role="admin" if admin else "member", name=name
        )
    typer.echo(secret)


@contextlib.contextmanager
def _as_admin() -> Iterator[tuple[Session, Principal]]:
    """A transaction and the principal of the operator at the console, who acts as an admin."""
    from trainyard.platform.auth import Principal

    with _database() as (_, sessions), sessions.begin() as s:
        yield s, Principal(key_id="console", team_id="", team_name="", role="admin")


@admin_app.command("grant-source")
def grant_source(
    team: str = typer.Argument(..., help="Team name"),
    uri: str = typer.Argument(..., help="s3://bucket or s3://bucket/prefix"),
) -> None:
    """Let a team's jobs read an s3:// bucket or prefix beyond the platform store."""
    from trainyard.platform import grants

    storage_uri = database_settings().storage_uri
    with _as_admin() as (s, admin):
        row, _ = grants.grant_source(s, admin, team, uri, storage_uri=storage_uri)
    typer.echo(f"granted {row.uri} to team {team}")  # once committed


@admin_app.command("revoke-source")
def revoke_source(
    team: str = typer.Argument(..., help="Team name"),
    uri: str = typer.Argument(..., help="The granted s3:// bucket or prefix"),
) -> None:
    """Take a grant back.

    The team's queued jobs that need it are refused when they start."""
    from trainyard.platform import grants

    with _as_admin() as (s, admin):
        row, _ = grants.revoke_source(s, admin, team, uri)
    typer.echo(f"revoked {row.uri} from team {team}")  # once committed


@admin_app.command("list-sources")
def list_sources(team: str = typer.Argument(..., help="Team name")) -> None:
    """The s3:// buckets and prefixes granted to a team, one a line."""
    from trainyard.platform import grants

    with _as_admin() as (s, admin):
        rows, _ = grants.list_grants(s, admin, team)
        for row in rows:
            typer.echo(row.uri)
