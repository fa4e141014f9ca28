"""The `trainyard` command line: the user commands (through the SDK), the database commands,
and the server processes: `api`, `worker`, and the embedded stack (`up`, `demo`).

Server code is imported inside each server command, so the user commands run on a laptop that
has only the SDK's dependencies loaded.
"""

from __future__ import annotations

import typer

from trainyard.cli import admin, user

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Trainyard: training jobs, cost first.")
app.add_typer(admin.admin_app, name="admin")
user.register(app)
app.command("migrate")(admin.migrate)

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


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
    """Claim jobs and run them on Ray (RAY_ADDRESS, or a local Ray), within each pool's capacity."""
    import logging

    from trainyard.platform.deployment import load_deployment
    from trainyard.settings import get_settings
    from trainyard.workers.daemon import WorkerDaemon, ensure_ray

    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    settings = get_settings()
    if concurrency:
        settings.worker_concurrency = concurrency
    daemon = WorkerDaemon(
        settings,
        load_deployment(settings),
        pools=pools.split(",") if pools else None,
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

    from trainyard.cli.local import LocalStack

    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    stack = LocalStack(data_dir=Path(data_dir), host=host, port=port)
    stopping, force = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        # The first asks running jobs to checkpoint and hand back; the second kills them.
        if stopping.is_set():
            if not force.is_set():
                typer.echo("forcing the stop: running jobs go back to their last checkpoint", err=True)
            force.set()
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack.start()
    typer.echo(f"Trainyard is up at {stack.base_url}  (dashboard: {stack.base_url}/dashboard)")
    typer.echo(f"admin API key: {stack.api_key}")
    typer.echo(f"(saved to {stack.credentials_file} and the SDK's credentials file)")
    try:
        stopping.wait()
    finally:
        typer.echo("stopping: running jobs checkpoint and go back to the queue (Ctrl-C again to force)...")
        stack.stop(force=force)
        typer.echo("stopped")


@app.command()
def demo(
    data_dir: str = typer.Option(".trainyard", help="Where the database, store and key live"),
    port: int = typer.Option(8000, help="API port (another free one is used if taken)"),
) -> None:
    """Run a real (tiny) fine-tuning job end to end on the embedded stack, then stop."""
    import logging
    from pathlib import Path

    from trainyard.cli.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_demo(Path(data_dir), port))
