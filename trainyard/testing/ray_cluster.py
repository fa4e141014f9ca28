"""A Ray cluster for tests and benchmarks, started the way production starts one (`ray start
--head`) so that attempt processes connect to it by address; this process connects too."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def ray_cluster(num_cpus: int = 2) -> Iterator[str]:
    """`RAY_ADDRESS` when set; else a fresh local head, stopped (all of it) on exit."""
    # Ray 2.60 turns token auth on for local clusters when a token exists and caches the mode
    # when it first reads its config: callers should set this before anything imports ray.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        ray.init(address=address, configure_logging=False, log_to_driver=False)
        try:
            yield address
        finally:
            ray.shutdown()
        return
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # A fresh machine has no token yet; make one (a no-op when it exists).
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ray's unix socket paths must stay short; pytest's temp paths are too long for them.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    log = open(Path(temp_dir) / "ray-start.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ray.init(address=address, configure_logging=False, log_to_driver=False)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
        os.environ["RAY_ADDRESS"] = address
        yield address
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        # `ray start --block` waits on its children for up to 30 s after a SIGTERM; a test
        # cluster holds nothing worth that wait.
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Some Ray processes leave the group; everything of this cluster names its temp dir.
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
