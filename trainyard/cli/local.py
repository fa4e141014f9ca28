"""The embedded stack behind `trainyard up` and `trainyard demo`: one process tree with an
embedded Postgres, a `file://` object store, a local Ray, the API and a worker.

`TRAINYARD_DATABASE_URL`, `TRAINYARD_STORAGE_URI` and `RAY_ADDRESS` switch each part to an
external one. Data lives under `--data-dir` (default `./.trainyard`), so a restart finds its jobs.
Jobs may read local files under the data directory, the directory the stack started in, and
any directory `TRAINYARD_LOCAL_ROOTS` adds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.platform.outages import keep_running
from trainyard.settings import Settings, get_settings

log = logging.getLogger("trainyard.local")

TEAM = "default"


@dataclass
class LocalStack:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    num_cpus: int | None = None
    settings: Settings = field(init=False)
    api_key: str = field(init=False, default="")
    _pg: Any = field(init=False, default=None)
    _server: Any = field(init=False, default=None)
    _threads: list[threading.Thread] = field(init=False, default_factory=list)
    _daemon: Any = field(init=False, default=None)
    _own_ray: bool = field(init=False, default=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.json"

    # -- parts -----------------------------------------------------------------------------
    def _database(self) -> str:
        url = os.environ.get("TRAINYARD_DATABASE_URL")
        if url:
            return url
        from trainyard.platform import embedded_pg

        url, self._pg = embedded_pg.start(self.data_dir / "pg", cleanup="stop")
        return url

    def _bootstrap_key(self) -> str:
        """Create a team and an admin key on first start; reuse the saved key afterwards."""
        from trainyard.platform import auth, db
        from trainyard.sdk import save_credentials

        if self.credentials_file.exists():
            saved = json.loads(self.credentials_file.read_text())
            engine = db.make_engine(self.settings.database_url, pool_size=1, max_overflow=0)
            try:
                with db.make_sessionmaker(engine)() as s:
                    auth.authenticate(s, f"Bearer {saved['api_key']}")
                return str(saved["api_key"])
            except Exception:
                log.warning("saved key no longer valid for this database; making a new one")
            finally:
                engine.dispose()
        engine = db.make_engine(self.settings.database_url, pool_size=1, max_overflow=0)
        try:
            with db.make_sessionmaker(engine).begin() as s:
                try:
                    team = auth.get_team_by_name(s, TEAM)
                except Exception:
                    team = auth.create_team(s, TEAM)
                secret = auth.create_key(s, team, role="admin", name="local admin")
        finally:
            engine.dispose()
        save_credentials(self.base_url, secret, self.credentials_file)
        return secret

    def start(self) -> LocalStack:
        import uvicorn

        from trainyard.api.app import create_app
        from trainyard.platform import db, migrate
        from trainyard.platform.deployment import load_deployment
        from trainyard.sdk import save_credentials
        from trainyard.workers.daemon import WorkerDaemon, ensure_ray

        self.data_dir = self.data_dir.resolve()
        # The data directory holds the database, the store and the admin key: owner only.
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)
        store = os.environ.get("TRAINYARD_STORAGE_URI") or f"file://{self.data_dir / 'store'}"
        self.settings = get_settings(
            database_url=self._database(),
            storage_uri=store,
            data_dir=str(self.data_dir),
            api_host=self.host,
            api_port=self.port,
            allow_local_paths=True,  # one user, one machine: their own files are fair game
            local_roots=[str(self.data_dir), os.getcwd(), *get_settings().local_roots],
            heartbeat_seconds=float(os.environ.get("TRAINYARD_HEARTBEAT_SECONDS", "2")),
            poll_seconds=float(os.environ.get("TRAINYARD_POLL_SECONDS", "2")),
        )
        # One deployment for the API and the worker of this process (and its one throughput cache).
        deployment = load_deployment(self.settings)
        engine = db.make_engine(self.settings.database_url, pool_size=1, max_overflow=0)
        migrate.upgrade(engine)
        engine.dispose()
        self.api_key = self._bootstrap_key()
        save_credentials(self.base_url, self.api_key)

        # Children (attempt processes) find the same database, store, Ray and timings.
        os.environ["TRAINYARD_DATABASE_URL"] = self.settings.database_url
        os.environ["TRAINYARD_STORAGE_URI"] = self.settings.storage_uri
        os.environ["TRAINYARD_HEARTBEAT_SECONDS"] = str(self.settings.heartbeat_seconds)
        # ... and check sources as the API does.
        os.environ["TRAINYARD_ALLOW_LOCAL_PATHS"] = "true"
        os.environ["TRAINYARD_LOCAL_ROOTS"] = json.dumps(self.settings.local_roots)
        self._own_ray = not self.settings.ray_address
        ray_address = ensure_ray(self.settings, num_cpus=self.num_cpus)
        os.environ["RAY_ADDRESS"] = ray_address

        config = uvicorn.Config(
            create_app(self.settings, deployment),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        api = threading.Thread(target=self._server.run, name="api", daemon=True)
        api.start()
        self._threads.append(api)
        self._wait_for_api()

        self._daemon = WorkerDaemon(self.settings, deployment, ray_address=ray_address)
        daemon = self._daemon
        worker = threading.Thread(
            target=keep_running,
            args=(log, "the embedded worker", daemon.run),
            kwargs={"stopping": lambda: daemon.stopping},
            name="worker",
            daemon=True,
        )
        worker.start()
        self._threads.append(worker)
        return self

    @property
    def busy(self) -> bool:
        """Whether the stack's worker is running an attempt now."""
        return self._daemon is not None and bool(self._daemon.running)

    def _wait_for_api(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server.started:
                return
            if not self._threads[0].is_alive():
                raise RuntimeError(f"the API failed to start on {self.base_url}")
            time.sleep(0.1)
        raise RuntimeError(f"the API did not start on {self.base_url} within {timeout:.0f}s")

    def stop(self, grace: float = 120.0, force: threading.Event | None = None) -> None:
        """Hand running attempts back (they checkpoint first), then stop API, Ray and Postgres.

        Once `force` is set (a second Ctrl-C), or after `grace`, running attempts are killed
        instead and their jobs handed back from their last recorded checkpoints."""
        if self._daemon is not None:
            self._daemon.request_stop()
        deadline = time.monotonic() + grace
        forced = False
        for t in self._threads[1:]:
            while t.is_alive():
                if not forced and (time.monotonic() > deadline or (force is not None and force.is_set())):
                    forced = True
                    if self._daemon is not None:
                        self._daemon.force_stop()
                    # Time for the worker to record the hand-backs; the rest waits on nothing.
                    deadline = time.monotonic() + 4.0
                elif forced and time.monotonic() > deadline:
                    break
                t.join(timeout=0.2)
        if self._server is not None:
            self._server.should_exit = True
            self._threads[0].join(timeout=2 if forced else 15)
        if self._own_ray:
            import ray

            ray.shutdown()
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """`preferred` if it is free, else any free port (a second stack must not fail to start)."""
    with socket.socket() as s:
        try:
            s.bind((host, preferred))
            return preferred
        except OSError:
            s.bind((host, 0))
            return int(s.getsockname()[1])
