"""What the worker tests share: a job body over the S3 assets, a grant to read them, and waits."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support import headers

from trainyard.platform import auth
from trainyard.platform.models import Checkpoint, SourceGrant
from trainyard.workers.daemon import WorkerDaemon


def job_body(assets: dict[str, str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "tiny-e2e",
        "base_model": assets["model"],
        "training_file": assets["train"],
        "hyperparameters": {"max_steps": 24, "batch_size": 4, "seq_len": 32, "learning_rate": 1e-3},
        "checkpoint": {"every_steps": 6, "keep": 2},
    }
    body.update(overrides)
    return body


def grant_assets(sessions: sessionmaker[Session], team: str = "research") -> None:
    """Let the team's jobs read the assets bucket: the API and every attempt check sources."""
    with sessions.begin() as s:
        s.add(SourceGrant(team_id=auth.get_team_by_name(s, team).id, uri="s3://assets"))


def wait_for(client: Any, key: str, job_id: str, until: Any, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers(key)).json()
        if until(job):
            return job
        time.sleep(0.5)
    pytest.fail(f"timed out waiting on {job_id}: {job}")


def checkpoints(client: Any, key: str, job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/checkpoints", headers=headers(key)).json()["data"]


def wait_for_checkpoint(
    sessions: sessionmaker[Session], job_id: str, alive: Any = None, timeout: float = 180.0
) -> None:
    """Until the job has a recorded checkpoint; `alive()` (if given) says why a worker died."""
    deadline = time.monotonic() + timeout
    with sessions() as s:
        while not s.scalar(select(Checkpoint.step).where(Checkpoint.job_id == job_id).limit(1)):
            assert time.monotonic() < deadline, "no checkpoint recorded"
            if alive is not None:
                alive()
            time.sleep(0.5)
            s.expire_all()


def worker_env(settings: Any, ray_address: str, **extra: str) -> dict[str, str]:
    """The environment of a `trainyard worker` subprocess on the test's database, store and Ray."""
    return {
        **os.environ,
        "TRAINYARD_DATABASE_URL": settings.database_url,
        "TRAINYARD_STORAGE_URI": settings.storage_uri,
        "TRAINYARD_HEARTBEAT_SECONDS": "1",
        "TRAINYARD_LEASE_SECONDS": "20",
        "TRAINYARD_POLL_SECONDS": "0.5",
        "TRAINYARD_RETRY_BACKOFF_SECONDS": "0",
        "RAY_ADDRESS": ray_address,
        **extra,
    }


@contextlib.contextmanager
def running(daemon: WorkerDaemon) -> Iterator[threading.Thread]:
    """The daemon's loop in a thread of this process, stopped (attempts handed back) on exit."""
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        daemon.request_stop()
        thread.join(timeout=120)
