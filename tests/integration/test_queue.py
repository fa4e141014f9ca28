"""The queue against real Postgres: exactly-once claims, leases, rescue, retries, cancel, notify."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import job_body, make_key, principal_for

from trainyard.platform import jobs, queue, states
from trainyard.platform.errors import Conflict, LeaseLost, NotFound
from trainyard.platform.models import Job, JobAttempt, JobEvent
from trainyard.platform.spec import JobSpec


def _enqueue(sessions: sessionmaker[Session], n: int, **overrides: object) -> list[str]:
    principal = principal_for(sessions, make_key(sessions))
    ids = []
    with sessions.begin() as s:
        for i in range(n):
            job, _ = jobs.create_job(s, principal, JobSpec(**job_body(name=f"job-{i}", **overrides)))
            ids.append(job.id)
    return ids


def test_exactly_once_under_16_concurrent_claimers(sessions: sessionmaker[Session]) -> None:
    ids = _enqueue(sessions, 2000)
    claimed: list[list[str]] = [[] for _ in range(16)]
    start = threading.Barrier(16)

    def claimer(i: int) -> None:
        start.wait()
        with sessions() as s:
            while True:
                got = queue.claim(s, worker_id=f"w{i}", n=7)
                if not got:
                    return
                claimed[i].extend(c.job_id for c in got)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(claimer, range(16)))

    flat = [j for part in claimed for j in part]
    assert len(flat) == 2000, "every job claimed"
    assert set(flat) == set(ids), "no job lost, none invented"
    assert sum(1 for part in claimed if part) > 1, "the work was actually shared"
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(JobAttempt)) == 2000
        assert s.scalar(select(func.count()).select_from(Job).where(Job.status == "running")) == 2000
        assert s.scalar(select(func.max(JobAttempt.number))) == 1


def test_claims_by_priority_then_age(sessions: sessionmaker[Session]) -> None:
    low = _enqueue(sessions, 2, priority=0)
    high = _enqueue(sessions, 1, priority=5)
    with sessions() as s:
        order = [c.job_id for c in queue.claim(s, worker_id="w", n=3)]
    assert order == [high[0], *low]


def test_dead_claimer_lease_expires_and_job_is_claimed_again(sessions: sessionmaker[Session]) -> None:
    [job_id] = _enqueue(sessions, 1)
    with sessions() as s:
        [first] = queue.claim(s, worker_id="dies", lease_seconds=0.3)
    time.sleep(0.5)
    with sessions() as s:
        assert queue.rescue(s, backoff_base=0) == [job_id]
    with sessions() as s:
        [second] = queue.claim(s, worker_id="survivor")
    assert second.job_id == job_id and second.attempt_number == 2
    # The dead worker comes back to life: fencing refuses everything it tries.
    with sessions() as s, pytest.raises(LeaseLost):
        queue.heartbeat(s, first.attempt_id)
    with sessions() as s, pytest.raises(LeaseLost):
        queue.finish(s, first.attempt_id, "succeeded")
    with sessions() as s:
        assert queue.finish(s, second.attempt_id, "succeeded") == "succeeded"
        outcomes = dict(s.execute(select(JobAttempt.number, JobAttempt.outcome)).all())
    assert outcomes == {1: "lost", 2: "succeeded"}


def test_heartbeat_keeps_a_live_attempt_from_rescue(sessions: sessionmaker[Session]) -> None:
    _enqueue(sessions, 1)
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w", lease_seconds=0.4)
    for _ in range(3):
        time.sleep(0.2)
        with sessions() as s:
            queue.heartbeat(s, c.attempt_id, lease_seconds=0.4, progress={"step": 3})
        with sessions() as s:
            assert queue.rescue(s) == []
    with sessions() as s:
        job = s.get(Job, c.job_id)
        assert job is not None and job.status == "running" and job.progress["step"] == 3


def test_failures_back_off_exponentially_then_fail(sessions: sessionmaker[Session]) -> None:
    [job_id] = _enqueue(sessions, 1, max_attempts=3)
    delays = []
    for attempt in range(1, 4):
        with sessions() as s:
            s.execute(text("UPDATE jobs SET run_after = now()"))  # skip the wait, keep the count
            s.commit()
            [c] = queue.claim(s, worker_id="w")
            assert c.attempt_number == attempt
            status = queue.finish(
                s, c.attempt_id, "crashed", error_message="boom", backoff_base=10, backoff_cap=600
            )
            job = s.get(Job, job_id)
            assert job is not None
            if attempt < 3:
                assert status == "queued"
                delays.append((job.run_after - job.updated_at).total_seconds())
    assert status == "failed"
    assert job.error_code == "attempts_exhausted"
    assert delays[0] == pytest.approx(10, abs=1) and delays[1] == pytest.approx(20, abs=1)


def test_user_error_fails_without_retry(sessions: sessionmaker[Session]) -> None:
    _enqueue(sessions, 1, max_attempts=5)
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w")
        status = queue.finish(
            s,
            c.attempt_id,
            "failed",
            error_code="user_error",
            error_message="dataset missing",
            retryable=False,
        )
        job = s.get(Job, c.job_id)
    assert status == "failed" and job is not None and job.error_code == "user_error"


def test_hand_back_requeues_without_spending_an_attempt(sessions: sessionmaker[Session]) -> None:
    _enqueue(sessions, 1, max_attempts=1)
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w")
        assert queue.finish(s, c.attempt_id, "handed_back") == "queued"
        [c2] = queue.claim(s, worker_id="w2")
        assert c2.attempt_number == 2
        assert queue.finish(s, c2.attempt_id, "crashed") == "failed"


def test_cancel_queued_at_once_and_running_by_flag(sessions: sessionmaker[Session]) -> None:
    secret = make_key(sessions)
    principal = principal_for(sessions, secret)
    queued_id, running_id = _enqueue(sessions, 2)
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w", n=1)
    assert c.job_id == queued_id
    queued_id, running_id = running_id, queued_id
    with sessions.begin() as s:
        assert jobs.cancel_job(s, principal, queued_id).status == "cancelled"
        assert jobs.cancel_job(s, principal, running_id).status == "cancelling"
    with sessions() as s:
        assert queue.heartbeat(s, c.attempt_id).cancel_requested
        assert queue.finish(s, c.attempt_id, "cancelled") == "cancelled"
    with sessions.begin() as s:
        assert jobs.cancel_job(s, principal, running_id).status == "cancelled", "idempotent"
    [done] = _enqueue(sessions, 1)
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w")
        queue.finish(s, c.attempt_id, "succeeded")
    with sessions.begin() as s, pytest.raises(Conflict):
        jobs.cancel_job(s, principal_for(sessions, make_key(sessions)), done)


def test_cancelling_job_whose_worker_died_ends_cancelled(sessions: sessionmaker[Session]) -> None:
    principal = principal_for(sessions, make_key(sessions))
    [job_id] = _enqueue(sessions, 1)
    with sessions() as s:
        queue.claim(s, worker_id="w", lease_seconds=0.2)
    with sessions.begin() as s:
        jobs.cancel_job(s, principal, job_id)
    time.sleep(0.3)
    with sessions() as s:
        queue.rescue(s)
        job = s.get(Job, job_id)
        assert job is not None and job.status == "cancelled"


def test_every_transition_writes_an_event_and_bad_ones_are_refused(sessions: sessionmaker[Session]) -> None:
    [job_id] = _enqueue(sessions, 1)
    with sessions() as s:
        [c] = queue.claim(s, worker_id="w")
        queue.finish(s, c.attempt_id, "succeeded")
    with sessions() as s:
        kinds = [
            (e.data["from"], e.data["to"])
            for e in s.scalars(select(JobEvent).where(JobEvent.type == "status").order_by(JobEvent.id))
        ]
        assert kinds == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
        job = s.get(Job, job_id)
        assert job is not None
        with pytest.raises(Conflict):
            states.transition(s, job, "running", message="no")
    for src, dsts in states.ALLOWED.items():
        if src in states.TERMINAL:
            # One way back: a job stopped for its budget, resumed once the budget allows (the
            # service allows it for no other failure: test_budget_warnings.py).
            expected = {states.QUEUED} if src == states.FAILED else set()
            assert set(dsts) == expected, f"{src} is terminal"


def test_notify_wakes_a_listening_worker(sessions: sessionmaker[Session], db_url: str) -> None:
    from sqlalchemy.engine import make_url

    conninfo = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    listener = queue.Listener(conninfo)
    try:
        assert listener.wait(0.1) is False  # connects and listens; nothing pending
        timer = threading.Timer(0.2, lambda: _enqueue(sessions, 1))
        timer.start()
        t0 = time.monotonic()
        assert listener.wait(10.0) is True
        assert time.monotonic() - t0 < 5.0
        timer.join()
    finally:
        listener.close()


def test_pool_capacity_holds_across_claimers(sessions: sessionmaker[Session]) -> None:
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        for i in range(6):
            jobs.create_job(s, principal, JobSpec(**job_body(name=f"a{i}")), pool="a10g")
    got: list[str] = []

    def claimer(i: int) -> None:
        with sessions() as s:
            got.extend(c.job_id for c in queue.claim(s, worker_id=f"w{i}", n=3, capacity={"a10g": 2}))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(claimer, range(4)))
    assert len(got) == 2, "never more running in a pool than it holds"


def test_team_gpu_quota_lets_other_teams_go_first(sessions: sessionmaker[Session]) -> None:
    capped = principal_for(sessions, make_key(sessions, "capped"))
    free = principal_for(sessions, make_key(sessions, "free"))
    with sessions.begin() as s:
        s.execute(text("UPDATE teams SET max_concurrent_gpus = 8 WHERE name = 'capped'"))
        for i in range(2):
            jobs.create_job(s, capped, JobSpec(**job_body(name=f"c{i}")), plan={"accelerator_count": 8})
        other, _ = jobs.create_job(s, free, JobSpec(**job_body(name="f")), plan={"accelerator_count": 8})
    with sessions() as s:
        first = queue.claim(s, worker_id="w", n=3)
    assert len(first) == 2 and other.id in {c.job_id for c in first}


def test_queue_summary_counts_waiting_and_running_by_pool_for_the_callers_view(
    sessions: sessionmaker[Session],
) -> None:
    research = principal_for(sessions, make_key(sessions, "research"))
    vision = principal_for(sessions, make_key(sessions, "vision"))
    admin = principal_for(sessions, make_key(sessions, "ops", role="admin"))
    with sessions.begin() as s:
        for i in range(2):
            jobs.create_job(
                s, research, JobSpec(**job_body(name=f"r{i}")), pool="a10g", plan={"accelerator_count": 2}
            )
        jobs.create_job(s, research, JobSpec(**job_body(name="unplaced")))
        # A count that is not a number (a hand-edited plan) counts as no accelerators.
        jobs.create_job(
            s, vision, JobSpec(**job_body(name="v")), pool="tpu", plan={"accelerator_count": "four"}
        )
        gone, _ = jobs.create_job(s, vision, JobSpec(**job_body(name="gone")), pool="tpu")
    with sessions.begin() as s:
        jobs.cancel_job(s, vision, gone.id)
    with sessions() as s:
        assert len(queue.claim(s, worker_id="w", n=1, pools=["a10g"])) == 1
        assert len(queue.claim(s, worker_id="w", n=1, pools=["tpu"])) == 1
        everyone = queue.queue_summary(s, admin)
        mine = queue.queue_summary(s, vision)
        only_research = queue.queue_summary(s, admin, "research")
        with pytest.raises(NotFound):
            queue.queue_summary(s, vision, "research")
    assert everyone["object"] == "queue_summary"
    assert (everyone["waiting"], everyone["running"], everyone["gpus_in_use"]) == (2, 2, 2.0)
    assert [p["pool"] for p in everyone["pools"]] == [None, "a10g", "tpu"]
    by_pool = {p["pool"]: p for p in everyone["pools"]}
    assert by_pool[None]["waiting"] == 1 and by_pool[None]["running"] == 0
    assert (by_pool["a10g"]["waiting"], by_pool["a10g"]["running"], by_pool["a10g"]["gpus_in_use"]) == (
        1,
        1,
        2.0,
    )
    assert (by_pool["tpu"]["waiting"], by_pool["tpu"]["running"], by_pool["tpu"]["gpus_in_use"]) == (
        0,
        1,
        0.0,
    )
    assert by_pool["a10g"]["oldest_waiting_seconds"] >= 0 and by_pool["tpu"]["oldest_waiting_seconds"] is None
    assert everyone["as_of"].endswith("Z")
    assert [p["pool"] for p in mine["pools"]] == ["tpu"] and mine["waiting"] == 0
    assert (only_research["waiting"], only_research["running"]) == (2, 1)


def test_a_claim_over_several_pools_takes_the_highest_priority_of_them_all(
    sessions: sessionmaker[Session],
) -> None:
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        for i in range(3):  # older, low priority, in the pool whose name sorts first
            jobs.create_job(s, principal, JobSpec(**job_body(name=f"a{i}")), pool="a-pool")
        urgent, _ = jobs.create_job(
            s, principal, JobSpec(**job_body(name="urgent", priority=100)), pool="b-pool"
        )
    capacity = {"a-pool": 4, "b-pool": 4}
    with sessions() as s:
        [first] = queue.claim(s, worker_id="w", n=1, capacity=capacity)
    assert first.job_id == urgent.id, "a pool's name decided, not the jobs' priority"
    with sessions() as s:
        rest = queue.claim(s, worker_id="w", n=5, capacity=capacity)
    assert [c.pool for c in rest] == ["a-pool"] * 3
