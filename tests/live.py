"""Real processes for the fault tests: a Postgres of the test's own that can be stopped and started,
the API served by `trainyard api` in a subprocess, and a TCP proxy that slows or cuts what passes
through.

Nothing here is mocked: the API is a separate process talking to a real Postgres over its socket,
and to a real S3 server when a test gives it one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

import trainyard
from trainyard.platform import auth, db, embedded_pg, migrate

REPO_ROOT = Path(trainyard.__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnPostgres:
    """An embedded Postgres in a directory of its own, which a test may stop and start again."""

    def __init__(self) -> None:
        # Under /tmp, not pytest's 0700 tmp_path: the server runs as its own user when we are root.
        self.root = Path(tempfile.mkdtemp(prefix="trainyard-faults-pg-"))
        self.admin_url, self._server = embedded_pg.start(self.root, cleanup="stop")

    def create_database(self) -> str:
        """A new database on this server, migrated to head; returns its URL."""
        name = f"faults_{secrets.token_hex(4)}"
        admin = db.make_engine(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
        engine = db.make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        return url

    def stop(self) -> None:
        self._server.stop()  # pg_ctl stop: fast shutdown, every connection is closed

    def start(self) -> None:
        self._server.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def team_key(url: str, team: str) -> str:
    """A member key for a new team `team`, written straight to the database."""
    engine = db.make_engine(url, pool_size=1, max_overflow=0)
    try:
        with db.make_sessionmaker(engine).begin() as s:
            return auth.create_key(s, auth.create_team(s, team))
    finally:
        engine.dispose()


class LiveApi:
    """`trainyard api` in a subprocess on a free port (the same port across restarts)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "TRAINYARD_STORAGE_URI": f"file://{workdir}/store",
            "TRAINYARD_DATA_DIR": str(workdir),
            "TRAINYARD_MIGRATE_ON_START": "false",
            # The made-up buckets of support.job_body, as the conftest settings allow them.
            "TRAINYARD_SHARED_SOURCES": "s3://data,s3://models",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        log = open(self.workdir / f"api-{self.starts}.log", "wb")  # noqa: SIM115 - the child writes it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainyard.cli", "api", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.base_url}/healthz", timeout=2)
                return  # it answers, whatever the database says
            time.sleep(0.1)
        raise RuntimeError(f"the API did not answer within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup; in-flight requests are cut."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        path = self.workdir / f"api-{self.starts}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.contextmanager
def live_api(workdir: Path, env: dict[str, str]) -> Iterator[LiveApi]:
    api = LiveApi(workdir, env)
    api.start()
    try:
        yield api
    finally:
        api.stop()


class Proxy:
    """A TCP proxy to `upstream`. With `delay`, it lets `chunk` bytes through every `delay`
    seconds each way, standing in for a slow network to the object store. `cut()` drops every
    open connection and refuses new ones (accepted, then closed at once, as a failing load
    balancer does) until `restore()`. `stall()` holds every byte in either direction, on open and
    new connections alike, as a hung store does, until `restore()`; `held` counts the chunks it
    has held."""

    def __init__(self, upstream: tuple[str, int], *, chunk: int = 65536, delay: float = 0.0) -> None:
        self.upstream, self.chunk, self.delay = upstream, chunk, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.down = False
        self.refused = 0
        self.stalled = False
        self.held = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(self.chunk):
                if self.delay:
                    time.sleep(self.delay)
                if self.stalled:
                    self.held += 1
                    while self.stalled:
                        time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._open.discard(sock)

    def cut(self) -> None:
        self.down = True
        with self._lock:
            doomed = list(self._open)
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def stall(self) -> None:
        self.stalled = True

    def restore(self) -> None:
        self.down = False
        self.stalled = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def error_code(response: httpx.Response) -> Any:
    """The error code in either envelope (Trainyard's or OpenAI's), or None."""
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        return response.json()["error"]["code"]
    return None
