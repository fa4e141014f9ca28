"""The end of an attempt, driven without Ray from a finished `TrainingOutcome`, against real
Postgres and a real file:// store: the cost report is in the store before the job reaches its end
state, a store blip is retried, a cancel that lands meanwhile is in the report, and an attempt
that lost its lease writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import job_body, make_key, principal_for

from trainyard.platform import attempts, jobs, queue, storage
from trainyard.platform.auth import Principal
from trainyard.platform.models import Checkpoint, Job, JobEvent
from trainyard.platform.spec import JobSpec
from trainyard.platform.states import AttemptOutcome
from trainyard.workers.attempt import EXIT_LEASE_LOST, AttemptRunner
from trainyard.workers.outcome import TrainingOutcome


class WatchedStore(storage.LocalStore):
    """A real directory store that notes, at each write, what the database says of the job;
    `before_put` can make a write fail or act in between."""

    def __init__(self, root: Path, sessions: sessionmaker[Session], job_id: str) -> None:
        super().__init__(root)
        self.sessions = sessions
        self.job_id = job_id
        self.seen: list[tuple[str, str, int]] = []
        self.before_put: Callable[[int], None] = lambda n: None

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        with self.sessions() as s:
            job = s.get(Job, self.job_id)
            assert job is not None
            costs = s.scalar(
                select(func.count()).where(JobEvent.job_id == self.job_id, JobEvent.type == "cost")
            )
            self.seen.append((key, str(job.status), int(costs or 0)))
        self.before_put(len(self.seen))
        return super().put_bytes(key, data, content_type)


@pytest.fixture
def claimed(sessions: sessionmaker[Session]) -> tuple[Principal, queue.Claim]:
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        jobs.create_job(s, principal, JobSpec(**job_body()), pool="local-cpu")
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w", lease_seconds=60)
    return principal, claim


@pytest.fixture
def runner(settings: Any, claimed: tuple[Principal, queue.Claim]) -> Iterator[AttemptRunner]:
    r = AttemptRunner(settings, claimed[1].attempt_id)
    yield r
    r.engine.dispose()


def _trained(steps: int = 10, kept: list[str] | None = None) -> TrainingOutcome:
    return TrainingOutcome(
        final_model_uri="file:///final",
        metrics={"step": steps, "loss": 1.0},
        steps=steps,
        start_step=0,
        total_steps=steps,
        tokens_trained=4096,
        tokens_this_attempt=4096,
        stopped_early=False,
        checkpoint_uris=kept or [],
    )


def _watch(
    runner: AttemptRunner, sessions: sessionmaker[Session], job_id: str, tmp_path: Path
) -> WatchedStore:
    store = WatchedStore(tmp_path / "store", sessions, job_id)
    runner.store = store
    return store


def test_the_cost_report_is_in_the_store_before_the_job_succeeds(
    sessions: sessionmaker[Session], runner: AttemptRunner, claimed: Any, tmp_path: Path
) -> None:
    _, claim = claimed
    store = _watch(runner, sessions, claim.job_id, tmp_path)
    with sessions() as s:
        retired = [
            attempts.record_checkpoint(s, claim.attempt_id, step=step, uri=f"file:///ckpt/{step}", keep=1)
            for step in (5, 10)
        ]
    assert retired == [[], ["file:///ckpt/5"]], "keep: 1 retires the older one as the newer is recorded"
    assert runner.end(AttemptOutcome.SUCCEEDED, trained=_trained()) == 0

    key = storage.cost_report_key(claim.job_id)
    assert store.seen == [(key, "running", 0)], "written while the job was running, before its cost event"
    with sessions() as s:
        job = s.get(Job, claim.job_id)
        assert job is not None and job.status == "succeeded"
        assert job.result["final_model_uri"] == "file:///final"
        assert job.result["cost_report_uri"] == store.root_uri + "/" + key
        assert s.scalars(select(Checkpoint.step).where(Checkpoint.job_id == claim.job_id)).all() == [10]
        [cost] = s.scalars(select(JobEvent).where(JobEvent.job_id == claim.job_id, JobEvent.type == "cost"))
        assert cost.data["uri"] == job.result["cost_report_uri"]
        report = json.loads(store.get_bytes(key))
        assert report["status"] == "succeeded"
        assert [a["outcome"] for a in report["attempts"]] == ["succeeded"]
        assert report["totals"]["cost_usd"] == pytest.approx(job.cost_usd, abs=1e-6)
        assert report["totals"]["tokens_trained"] == 4096


def test_a_store_blip_at_the_end_is_retried_and_logged_once(
    sessions: sessionmaker[Session],
    runner: AttemptRunner,
    claimed: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, claim = claimed
    store = _watch(runner, sessions, claim.job_id, tmp_path)

    def blip(n: int) -> None:
        if n <= 2:
            raise storage.StorageError("store unavailable")

    store.before_put = blip
    assert runner.end(AttemptOutcome.SUCCEEDED, trained=_trained()) == 0
    assert [status for _, status, _ in store.seen] == ["running"] * 3
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    with sessions() as s:
        job = s.get(Job, claim.job_id)
        assert job is not None and job.status == "succeeded" and "cost_report_uri" in job.result


def test_a_cancel_during_the_report_write_is_what_the_report_says(
    sessions: sessionmaker[Session], runner: AttemptRunner, claimed: Any, tmp_path: Path
) -> None:
    principal, claim = claimed
    store = _watch(runner, sessions, claim.job_id, tmp_path)

    def cancel_once(n: int) -> None:
        if n == 1:
            with sessions.begin() as s:
                jobs.cancel_job(s, principal, claim.job_id)

    store.before_put = cancel_once
    # The attempt fails the job, but the cancel that came in while its report was written ends
    # it as cancelled: the report in the store says so.
    assert runner.end(AttemptOutcome.FAILED, code="user_error", message="bad data", retryable=False) == 0
    assert len(store.seen) == 2, "the first report went stale and was written again"
    with sessions() as s:
        job = s.get(Job, claim.job_id)
        assert job is not None and job.status == "cancelled"
    report = json.loads(store.get_bytes(storage.cost_report_key(claim.job_id)))
    assert report["status"] == "cancelled"


def test_an_attempt_that_lost_its_lease_writes_nothing_at_its_end(
    sessions: sessionmaker[Session], runner: AttemptRunner, claimed: Any, tmp_path: Path
) -> None:
    _, claim = claimed
    store = _watch(runner, sessions, claim.job_id, tmp_path)
    with sessions.begin() as s:
        s.execute(
            text("UPDATE job_attempts SET lease_expires_at = now() - interval '1 second' WHERE id = :a"),
            {"a": claim.attempt_id},
        )
    with sessions() as s:
        assert queue.rescue(s, backoff_base=0) == [claim.job_id]
    assert runner.end(AttemptOutcome.SUCCEEDED, trained=_trained()) == EXIT_LEASE_LOST
    assert store.seen == []
    with sessions() as s:
        job = s.get(Job, claim.job_id)
        assert job is not None and job.status == "queued" and job.result is None


def test_an_attempt_past_its_local_deadline_writes_nothing(
    sessions: sessionmaker[Session], runner: AttemptRunner, claimed: Any, tmp_path: Path
) -> None:
    _, claim = claimed
    store = _watch(runner, sessions, claim.job_id, tmp_path)
    runner.lease.deadline = 0.0  # as if it had not renewed for a whole lease
    assert runner.end(AttemptOutcome.SUCCEEDED, trained=_trained()) == EXIT_LEASE_LOST
    assert runner.lease_lost.is_set() and store.seen == []
    with sessions() as s:
        job = s.get(Job, claim.job_id)
        assert job is not None and job.status == "running", "the database still holds its lease"


def test_a_job_queued_again_has_no_report_until_it_ends(
    sessions: sessionmaker[Session], runner: AttemptRunner, claimed: Any, tmp_path: Path
) -> None:
    _, claim = claimed
    store = _watch(runner, sessions, claim.job_id, tmp_path)
    # A crash with attempts left sends the job back to the queue: it has not ended yet.
    assert runner.end(AttemptOutcome.CRASHED, code="training_error", message="boom") == 0
    assert store.seen == []
    with sessions() as s:
        job = s.get(Job, claim.job_id)
        assert job is not None and job.status == "queued"
        assert "cost_report_uri" not in (job.result or {})
