"""A worker that claims a job and then cannot start its attempt process (here its log cannot be
opened: the log directory is a file) hands the job back at once and pauses its claims. The job
then runs on a later claim, with none of its attempts spent on the run that never began."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support import job_body, make_key, principal_for

from trainyard.platform import jobs
from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.spec import JobSpec
from trainyard.platform.states import TERMINAL
from trainyard.workers.daemon import WorkerDaemon


def test_an_attempt_that_cannot_start_hands_its_job_back_and_spends_no_attempt(
    settings: Any, sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attempt process reads the source policy from the environment, as the daemon's do.
    monkeypatch.setenv("TRAINYARD_ALLOW_LOCAL_PATHS", "true")
    monkeypatch.setenv("TRAINYARD_LOCAL_ROOTS", "/")
    settings.warm_attempts = False  # the cold path opens the log itself, before the process
    settings.poll_seconds = 0.2
    settings.retry_backoff_seconds = 0.0
    daemon = WorkerDaemon(settings, load_deployment(settings), pools=["local-cpu"], worker_id="spawn-w")
    usable = daemon.log_dir
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    daemon.log_dir = blocker

    principal = principal_for(sessions, make_key(sessions))
    # One attempt allowed; a dataset that is not there ends the run it gets as the user's error.
    spec = JobSpec(**job_body(name="once", training_file=str(tmp_path / "absent.jsonl"), max_attempts=1))
    with sessions.begin() as s:
        job_id = jobs.create_job(s, principal, spec, pool="local-cpu")[0].id

    assert daemon._claim_and_start() == 0
    assert not daemon.running
    # It claims nothing for a while (1 s after a first failure), rather than claim the job
    # again at once and hand it back again.
    assert daemon._claim_and_start() == 0
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == "queued" and job.current_attempt_id is None
        [first] = s.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)).all()
        assert first.outcome == "handed_back" and "could not start" in (first.error_message or "")

    daemon.log_dir = usable
    thread = threading.Thread(target=daemon.run, name="worker", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            with sessions() as s:
                job = s.get(Job, job_id)
                assert job is not None
                if job.status in TERMINAL:
                    break
            assert time.monotonic() < deadline, f"the job did not end: {job.status}"
            time.sleep(0.3)
    finally:
        daemon.request_stop()
        thread.join(timeout=30)
    with sessions() as s:
        outcomes = list(
            s.scalars(
                select(JobAttempt.outcome).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
            )
        )
    # The second attempt ran and failed on the missing dataset: the job's one failure, not
    # `attempts_exhausted` after a lost first attempt.
    assert (job.status, job.error_code) == ("failed", "user_error"), job.error_message
    assert outcomes == ["handed_back", "failed"]
