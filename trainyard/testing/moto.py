"""Start moto's S3-compatible server in a subprocess, for tests and benchmarks.

A subprocess rather than moto's in-process ``ThreadedMotoServer``: Ray workers and pyarrow's C++ S3
client live in other processes and must reach a real HTTP endpoint, and a server in its own process
neither competes with the client for the GIL (which would skew throughput figures) nor dies with a
test that wedges the interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["MotoServer", "start_moto_server"]


@dataclass
class MotoServer:
    """A running ``moto.server`` process; ``stop()`` (or leaving the ``with`` block) ends it."""

    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    # The port is released before moto binds it, so another process may take it in between;
    # start_moto_server retries with a fresh port when that happens.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        # Any HTTP status (an anonymous ListBuckets may be refused) means the server is serving.
        return True
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def start_moto_server(host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0) -> MotoServer:
    """Start ``python -m moto.server`` on ``host`` and ``port`` (0: a free one) and wait until it answers.

    Returns a MotoServer whose ``endpoint_url`` is ``http://host:port``. Raises RuntimeError when moto
    is not installed or the server does not come up within ``timeout`` seconds.
    """
    if importlib.util.find_spec("moto") is None:
        raise RuntimeError("moto is not installed; install the dev extra: pip install 'moto[server]>=5.2.5'")
    attempts = 1 if port else 3
    last_error = ""
    for _ in range(attempts):
        chosen = port or _free_port(host)
        fd, log_name = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
        log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            # Output goes to a file, not a pipe: an unread pipe fills up and blocks the server.
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(chosen)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = MotoServer(endpoint_url=f"http://{host}:{chosen}", process=process, log_path=log_path)
        # A crashed test run must not leave the server behind.
        atexit.register(server.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _answers_http(server.endpoint_url + "/"):
                return server
            time.sleep(0.05)
        last_error = _log_tail(log_path)
        server.stop()
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"moto server did not start on {host}: {last_error or 'timed out'}")
