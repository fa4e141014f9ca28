"""The attempt process against real Postgres and a file:// store, without Ray: an attempt whose
dataset cannot be read ends before training starts (ray/test_worker.py runs jobs end to end)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key

from trainyard.platform import queue, storage
from trainyard.platform.models import Job, JobAttempt, JobEvent
from trainyard.workers.attempt import AttemptRunner


def test_attempt_with_unreadable_dataset_fails_at_once_with_a_cost_report(
    client: Any, sessions: sessionmaker[Session], settings: Any, tmp_path: Path
) -> None:
    key = make_key(sessions)
    missing = str(tmp_path / "nope.jsonl")
    job = client.post("/v1/jobs", json=job_body(training_file=missing), headers=headers(key)).json()
    with sessions() as s:
        (claim,) = queue.claim(s, worker_id="w1")
    assert claim.job_id == job["id"]
    sigterm = signal.getsignal(signal.SIGTERM)
    runner = AttemptRunner(settings, claim.attempt_id)
    try:
        assert runner.run() == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        runner.engine.dispose()
    with sessions() as s:
        attempt = s.get(JobAttempt, claim.attempt_id)
        done = s.get(Job, job["id"])
        assert attempt is not None and done is not None
        assert (attempt.outcome, attempt.error_code) == ("failed", "user_error")
        assert (
            done.status == "failed" and done.error_code == "user_error" and "nope.jsonl" in done.error_message
        )
        cost = s.scalars(select(JobEvent).where(JobEvent.job_id == job["id"], JobEvent.type == "cost")).one()
        assert cost.attempt_id == claim.attempt_id and cost.data["uri"] == done.result["cost_report_uri"]
    report = json.loads(
        storage.open_store(settings.storage_uri).get_bytes(storage.cost_report_key(job["id"]))
    )
    assert [a["outcome"] for a in report["attempts"]] == ["failed"]
