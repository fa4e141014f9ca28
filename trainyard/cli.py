"""The `trainyard` command line."""

from __future__ import annotations

import typer

from trainyard import cli_user

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Trainyard: training jobs, cost first.")
admin_app = typer.Typer(no_args_is_help=True, help="Teams and API keys (talks to the database directly).")
app.add_typer(admin_app, name="admin")
cli_user.register(app)


def _sessions():  # type: ignore[no-untyped-def]
    from trainyard.platform import db
    from trainyard.settings import get_settings

    engine = db.make_engine(get_settings().database_url, pool_size=1, max_overflow=0)
    return engine, db.make_sessionmaker(engine)


@app.command()
def migrate() -> None:
    """Apply database migrations (safe to run from several processes at once)."""
    from trainyard.platform import migrate as migrations

    engine, _ = _sessions()
    migrations.upgrade(engine)
    engine.dispose()
    typer.echo("database is at the latest schema")


@app.command()
def api(
    host: str = typer.Option(None, help="Bind address (default TRAINYARD_API_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="Port (default TRAINYARD_API_PORT or 8000)"),
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from trainyard.api.app import create_app
    from trainyard.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
    )


@app.command()
def worker(
    pools: str = typer.Option(None, help="Comma-separated pools to serve (default: every configured pool)"),
    concurrency: int = typer.Option(
        None, help="Attempts to run at once (default TRAINYARD_WORKER_CONCURRENCY)"
    ),
) -> None:
    """Claim jobs and run them on Ray (RAY_ADDRESS, or a local Ray)."""
    import logging

    from trainyard.settings import get_settings
    from trainyard.workers.daemon import WorkerDaemon, ensure_ray, served_pools

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    if concurrency:
        settings.worker_concurrency = concurrency
    daemon = WorkerDaemon(
        settings,
        pools=served_pools(settings, pools.split(",") if pools else None),
        ray_address=ensure_ray(settings),
    )
    daemon.install_signal_handlers()
    daemon.run()


@app.command()
def up(
    data_dir: str = typer.Option(".trainyard", help="Where the database, store and key live"),
    port: int = typer.Option(8000, help="API port"),
    host: str = typer.Option("127.0.0.1", help="API bind address"),
) -> None:
    """Run the embedded stack (Postgres, object store, Ray, API, worker) until Ctrl-C."""
    import logging
    import signal
    import threading
    from pathlib import Path

    from trainyard.local import LocalStack

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stack = LocalStack(data_dir=Path(data_dir), host=host, port=port)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stack.start()
    typer.echo(f"Trainyard is up at {stack.base_url}  (dashboard: {stack.base_url}/dashboard)")
    typer.echo(f"admin API key: {stack.api_key}")
    typer.echo(f"(saved to {stack.credentials_file} and the SDK's credentials file)")
    try:
        stopping.wait()
    finally:
        typer.echo("stopping...")
        stack.stop()
        typer.echo("stopped")


@app.command()
def demo(
    data_dir: str = typer.Option(".trainyard", help="Where the database, store and key live"),
    port: int = typer.Option(8000, help="API port (another free one is used if taken)"),
) -> None:
    """Run a real (tiny) fine-tuning job end to end on the embedded stack, then stop."""
    import logging
    from pathlib import Path

    from trainyard.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_demo(Path(data_dir), port))


@admin_app.command("create-team")
def create_team(
    name: str,
    monthly_budget_usd: float = typer.Option(None, help="Monthly budget in dollars"),
) -> None:
    """Create a team."""
    from trainyard.platform import auth
    from trainyard.platform.errors import TrainyardError

    engine, sessions = _sessions()
    try:
        with sessions.begin() as s:
            team = auth.create_team(s, name, monthly_budget_usd=monthly_budget_usd)
            typer.echo(f"created team {team.name} ({team.id})")
    except TrainyardError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()


@admin_app.command("create-key")
def create_key(
    team: str = typer.Option(..., help="Team name"),
    admin: bool = typer.Option(False, "--admin", help="An admin key sees and manages every team"),
    name: str = typer.Option("default", help="A label for the key"),
) -> None:
    """Create an API key and print it (it is shown only once)."""
    from trainyard.platform import auth
    from trainyard.platform.errors import TrainyardError

    engine, sessions = _sessions()
    try:
        with sessions.begin() as s:
            secret = auth.create_key(
                s, auth.get_team_by_name(s, team), role="admin" if admin else "member", name=name
            )
        typer.echo(secret)
    except TrainyardError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()


if __name__ == "__main__":
    app()
