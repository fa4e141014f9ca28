"""`trainyard worker`, started as infra/compose.yaml starts it, runs at most a pool's
`max_concurrent` jobs at once, however many attempts it may run itself.

No Ray is needed: every attempt process here is real (the daemon spawns it, it heartbeats its
lease), but its training file lives on an object store that accepts connections and never
answers, so the attempt waits in its preflight (a HEAD request, read timeout 60 s), holding its
job `running`, before it would ever reach Ray. A running job therefore stays running exactly as
long as the test wants, and the daemon keeps trying to claim beside it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support import ROOT, attempt_pids, headers, job_body, make_key

from trainyard.platform import states
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.scheduling import Catalog, parse_pools

COMPOSE = ROOT / "infra" / "compose.yaml"
CONCURRENCY = 3  # more attempts than the pool allows, so only the pool's capacity can hold it back


def compose_worker() -> tuple[list[str], dict[str, str]]:
    """The compose worker's arguments after `trainyard`, and its environment."""
    worker = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["worker"]
    script = worker["command"][-1]  # `ray start --address=... && exec trainyard worker`
    _, sep, rest = script.partition("exec trainyard ")
    assert sep, f"the compose worker no longer ends in `exec trainyard ...`: {script!r}"
    return shlex.split(rest), {k: str(v) for k, v in worker["environment"].items()}


def _active(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(
            s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(sorted(states.ACTIVE)))) or 0
        )


def _attempts(sessions: sessionmaker[Session]) -> list[JobAttempt]:
    with sessions() as s:
        return list(s.scalars(select(JobAttempt).order_by(JobAttempt.started_at)))


def _status(sessions: sessionmaker[Session], job_id: str) -> str:
    with sessions() as s:
        return str(s.scalar(select(Job.status).where(Job.id == job_id)))


@pytest.fixture
def silent_store() -> Iterator[str]:
    """An S3 endpoint that accepts every connection and never answers a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def start_worker(
    db_url: str, tmp_path: Path, silent_store: str
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start `trainyard worker` with the compose worker's arguments and environment, pointed at
    this test's database and a local store; stop it and its attempts afterwards."""
    args, compose_env = compose_worker()
    env = {
        **os.environ,
        **compose_env,
        "TRAINYARD_DATABASE_URL": db_url,
        "TRAINYARD_STORAGE_URI": f"file://{tmp_path}/store",
        "TRAINYARD_WORKER_CONCURRENCY": str(CONCURRENCY),
        # A crashed attempt's job waits an hour before its retry, so its slot goes to the next job.
        "TRAINYARD_RETRY_BACKOFF_SECONDS": "3600",
        "TRAINYARD_POLL_SECONDS": "0.2",
        # The attempts check sources as the API does: the shared data bucket, job_body's model path.
        "TRAINYARD_ALLOW_LOCAL_PATHS": "true",
        "TRAINYARD_LOCAL_ROOTS": "/models",
        "TRAINYARD_SHARED_SOURCES": "s3://data",
        "AWS_ENDPOINT_URL_S3": silent_store,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    log = (tmp_path / "worker.log").open("wb")
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainyard.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        # Attempts run in sessions of their own and wait on the store: stop them first, then
        # let the daemon record their end and exit.
        for pid in attempt_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    log.close()


def _wait(what: str, until: Callable[[], bool], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            pytest.fail(f"timed out waiting for {what}; worker log:\n{tail}")
        time.sleep(0.1)


def test_trainyard_worker_runs_no_more_than_the_pools_max_concurrent(
    client: Any,
    sessions: sessionmaker[Session],
    start_worker: Callable[[], subprocess.Popen[bytes]],
    tmp_path: Path,
    catalog: Catalog,
) -> None:
    _, compose_env = compose_worker()
    [pool] = parse_pools(compose_env["TRAINYARD_POOLS"], catalog)
    assert pool.max_concurrent == 1 < CONCURRENCY
    log = tmp_path / "worker.log"

    key = make_key(sessions)
    body = job_body(
        instance_type=pool.instance_type, training_file="s3://data/silent.jsonl", dataset_tokens=10_000
    )
    ids = []
    for _ in range(CONCURRENCY):
        r = client.post("/v1/jobs", json=body, headers=headers(key))
        assert r.status_code == 201, r.text
        assert r.json()["instance_type"] == pool.instance_type
        ids.append(r.json()["id"])

    worker = start_worker()
    # The first job is claimed and its attempt process is alive: it has heartbeated its lease.
    _wait(
        "an attempt that heartbeats",
        lambda: any(a.heartbeat_at > a.started_at for a in _attempts(sessions)),
        log,
    )
    claimed = [a.job_id for a in _attempts(sessions)]
    assert claimed == [ids[0]], f"{len(claimed)} jobs claimed at once from a pool of one"

    # The daemon has room for two more attempts and wakes at least once a second to claim: over
    # several of its rounds, the pool stays at one running job.
    seen = []
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        seen.append(_active(sessions))
        time.sleep(0.1)
    assert max(seen) == 1, seen
    assert [a.job_id for a in _attempts(sessions)] == [ids[0]]
    assert worker.poll() is None

    # The slot frees when that attempt ends (here: its process dies), and only then is the next
    # job claimed; the first waits for its retry.
    [pid] = attempt_pids(worker.pid)
    os.kill(pid, signal.SIGKILL)
    seen = []

    def second_running() -> bool:
        seen.append(_active(sessions))
        return _status(sessions, ids[1]) == states.RUNNING

    _wait("the second job to be claimed", second_running, log)
    assert max(seen) <= 1, seen
    assert _status(sessions, ids[0]) == states.QUEUED
    assert _status(sessions, ids[2]) == states.QUEUED
    assert _active(sessions) == 1
