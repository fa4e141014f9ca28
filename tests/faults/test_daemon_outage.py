"""The worker daemon and an attempt's end survive their database going away.

Each test stops an embedded Postgres of this module's own (a real server, started here) and
starts it again; nothing about Postgres is mocked. The daemon's attempt processes are real too:
their jobs name a dataset that does not exist, so each attempt ends at its preflight, before it
would need Ray.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live import OwnPostgres
from sqlalchemy.orm import Session, sessionmaker
from support import job_body, make_key, principal_for

from trainyard.platform import db, jobs, queue, storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Job
from trainyard.platform.spec import JobSpec
from trainyard.platform.states import TERMINAL, AttemptOutcome
from trainyard.settings import get_settings
from trainyard.workers.attempt import AttemptRunner
from trainyard.workers.daemon import WorkerDaemon
from trainyard.workers.outcome import TrainingOutcome

OUTAGE_SECONDS = 10.0


@pytest.fixture(scope="module")
def pg_url(own_pg: OwnPostgres) -> str:
    return own_pg.create_database()


@pytest.fixture
def own(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, sessionmaker[Session]]]:
    # Any local path, as the conftest settings allow; the daemon's attempt processes read the
    # policy from the environment.
    monkeypatch.setenv("TRAINYARD_ALLOW_LOCAL_PATHS", "true")
    monkeypatch.setenv("TRAINYARD_LOCAL_ROOTS", "/")
    settings = get_settings(
        database_url=pg_url,
        storage_uri=f"file://{tmp_path}/store",
        data_dir=str(tmp_path),
        allow_local_paths=True,
        local_roots=["/"],
        poll_seconds=0.5,
        lease_seconds=30.0,
        heartbeat_seconds=1.0,
        retry_backoff_seconds=0.0,
    )
    engine = db.make_engine(pg_url, pool_size=2, max_overflow=2)
    yield settings, db.make_sessionmaker(engine)
    engine.dispose()


def _enqueue(sessions: sessionmaker[Session], tmp_path: Path, name: str) -> str:
    principal = principal_for(sessions, make_key(sessions, team=f"t-{name}"))
    spec = JobSpec(**job_body(name=name, training_file=str(tmp_path / "nope.jsonl")))
    with sessions.begin() as s:
        return jobs.create_job(s, principal, spec, pool="local-cpu")[0].id


def _wait_terminal(sessions: sessionmaker[Session], job_id: str, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as s:
            job = s.get(Job, job_id)
            if job is not None and job.status in TERMINAL:
                return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not end")


def _count(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_the_daemon_survives_its_database_going_away_and_claims_afterwards(
    own_pg: OwnPostgres, own: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, sessions = own
    caplog.set_level(logging.INFO, logger="trainyard")
    daemon = WorkerDaemon(settings, load_deployment(settings), pools=["local-cpu"], worker_id="outage-w")
    thread = threading.Thread(target=daemon.run, name="worker", daemon=True)
    thread.start()
    try:
        before = _enqueue(sessions, tmp_path, "before")
        assert _wait_terminal(sessions, before).error_code == "user_error"
        own_pg.stop()
        t0 = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        assert thread.is_alive(), "the daemon outlived the outage"
        own_pg.start()
        after = _enqueue(sessions, tmp_path, "after")
        job = _wait_terminal(sessions, after)
        took = time.monotonic() - t0
        assert thread.is_alive()
    finally:
        daemon.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    # Claimed after the restart, its attempt ran and ended the job with its cost report.
    assert (job.status, job.error_code, job.attempt_count) == ("failed", "user_error", 1)
    report = json.loads(storage.open_store(settings.storage_uri).get_bytes(storage.cost_report_key(after)))
    assert [a["outcome"] for a in report["attempts"]] == ["failed"]
    assert _count(caplog, "worker outage-w: database or store unavailable") == 1, "logged once per outage"
    assert _count(caplog, "worker outage-w: database or store reachable again") == 1
    assert _count(caplog, "queue listener: database unavailable") <= 1
    print(
        f"Postgres {OUTAGE_SECONDS:.0f} s down: daemon alive; a job queued after the restart "
        f"ended {took:.1f}s after the stop"
    )


def test_an_attempt_ends_its_run_through_a_database_outage(
    own_pg: OwnPostgres, own: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, sessions = own
    job_id = _enqueue(sessions, tmp_path, "ending")
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w", lease_seconds=settings.lease_seconds)
    runner = AttemptRunner(settings, claim.attempt_id)
    trained = TrainingOutcome(
        final_model_uri="file:///final",
        metrics={},
        steps=4,
        start_step=0,
        total_steps=4,
        tokens_trained=512,
        tokens_this_attempt=512,
        stopped_early=False,
    )
    own_pg.stop()
    restart = threading.Timer(4.0, own_pg.start)
    restart.start()
    try:
        assert runner.end(AttemptOutcome.SUCCEEDED, trained=trained) == 0, "retried, not given up"
    finally:
        restart.join()
        runner.engine.dispose()
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == "succeeded" and job.attempt_count == 1
        assert job.result["cost_report_uri"].endswith(storage.cost_report_key(job_id))
    assert _count(caplog, f"attempt {claim.attempt_id}: reading the run's reports unavailable") == 0
    assert (
        sum(
            f"attempt {claim.attempt_id}" in r.getMessage() and "unavailable" in r.getMessage()
            for r in caplog.records
        )
        == 1
    )
