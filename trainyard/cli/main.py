"""The `trainyard` command line: the user commands (through the SDK), the database commands,
and the server processes: `api`, `worker`, and the embedded stack (`up`, `demo`).

Server code is imported inside each server command, so the user commands run on a laptop that
has only the SDK's dependencies loaded.
"""

from __future__ import annotations

import typer

from trainyard.cli import admin, options, user
from trainyard.cli.help import HelpGroup

# Plain help (no rich panels), each parameter shown by name or metavar (cli.help).
app = typer.Typer(
    cls=HelpGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="Trainyard: training jobs, cost first.",
)
app.callback()(options.main_options)
app.add_typer(admin.admin_app, name="admin")
user.register(app)
app.command("migrate")(admin.migrate)

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@app.command()
def api(
    host: str = typer.Option(
        None, metavar="HOST", help="Bind address (default TRAINYARD_API_HOST or 127.0.0.1)"
    ),
    port: int = typer.Option(None, metavar="PORT", help="Port (default TRAINYARD_API_PORT or 8000)"),
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
    pools: str = typer.Option(
        None, metavar="POOLS", help="Comma-separated pools to serve (default: every configured pool)"
    ),
    concurrency: int = typer.Option(
        None, metavar="N", help="Attempts to run at once (default TRAINYARD_WORKER_CONCURRENCY)"
    ),
) -> None:
    """Claim jobs and run them on Ray.

    On RAY_ADDRESS, or a local Ray, within each pool's capacity."""
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
    data_dir: str = typer.Option(".trainyard", metavar="DIR", help="Where the database, store and key live"),
    port: int = typer.Option(8000, metavar="PORT", help="API port"),
    host: str = typer.Option("127.0.0.1", metavar="HOST", help="API bind address"),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also show the start-up logs of Postgres, Ray, the API and migrations."
    ),
) -> None:
    """Run the embedded stack until Ctrl-C.

    Postgres, an object store, Ray, the API and a worker, all on this machine."""
    from pathlib import Path

    from trainyard.cli.up import run_up

    raise typer.Exit(run_up(Path(data_dir), host=host, port=port, verbose=verbose))


@app.command()
def demo(
    data_dir: str = typer.Option(".trainyard", metavar="DIR", help="Where the database, store and key live"),
    port: int = typer.Option(8000, metavar="PORT", help="API port (another free one is used if taken)"),
) -> None:
    """Run a tiny fine-tuning job end to end, then stop.

    On the embedded stack: estimate, submit, follow, and where its outputs are."""
    import logging
    from pathlib import Path

    from trainyard.cli.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_demo(Path(data_dir), port))
