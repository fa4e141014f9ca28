"""Rescue and heartbeats against real Postgres: one lock order (job, then attempt), so a rescuer
running flat out beside heartbeating attempts never deadlocks; `fence` and the rescuer agree,
on the database clock, on when a lease has expired."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import job_body, make_key, principal_for

from trainyard.platform import attempts, events, jobs, queue
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.spec import JobSpec

LEASE = 0.5


def _enqueue(sessions: sessionmaker[Session], n: int) -> list[str]:
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        return [jobs.create_job(s, principal, JobSpec(**job_body(name=f"j{i}")))[0].id for i in range(n)]


def _deadlock(error: BaseException) -> bool:
    return isinstance(error, psycopg.errors.DeadlockDetected) or (
        isinstance(error, sa_exc.DBAPIError) and isinstance(error.orig, psycopg.errors.DeadlockDetected)
    )


def test_rescue_in_a_loop_beside_16_heartbeating_attempts_never_deadlocks(
    sessions: sessionmaker[Session],
) -> None:
    _enqueue(sessions, 16)
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"beats": 0, "lost": 0, "rescued": 0, "rescues": 0}
    lock = threading.Lock()

    def attempt(i: int) -> None:
        rng = random.Random(i)
        try:
            with sessions() as s:
                while not stop.is_set():
                    got = queue.claim(s, worker_id=f"w{i}", lease_seconds=LEASE)
                    if not got:
                        time.sleep(0.05)
                        continue
                    attempt_id = got[0].attempt_id
                    while not stop.is_set():
                        # Some beats come after the lease ran out, so rescue and heartbeat race
                        # for the same rows all the time.
                        time.sleep(rng.uniform(0.05, 1.4 * LEASE))
                        try:
                            queue.heartbeat(s, attempt_id, lease_seconds=LEASE, progress={"step": i})
                            attempts.record_event(s, attempt_id, events.MESSAGE, "beat")
                        except LeaseLost:
                            s.rollback()
                            with lock:
                                counts["lost"] += 1
                            break
                        with lock:
                            counts["beats"] += 1
        except BaseException as e:
            errors.append(e)

    def rescuer() -> None:
        try:
            with sessions() as s:
                while not stop.is_set():
                    rescued = queue.rescue(s, backoff_base=0)
                    with lock:
                        counts["rescues"] += 1
                        counts["rescued"] += len(rescued)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    rescue_thread = threading.Thread(target=rescuer)
    for t in [*threads, rescue_thread]:
        t.start()
    time.sleep(6.0)
    alive_at_end = rescue_thread.is_alive()
    stop.set()
    for t in [*threads, rescue_thread]:
        t.join(timeout=30)

    deadlocks = [e for e in errors if _deadlock(e)]
    print(f"rescue beside 16 heartbeating attempts: {len(deadlocks)} deadlocks, {counts}")
    assert deadlocks == [], "job row, then attempt row, everywhere"
    assert errors == []
    assert alive_at_end, "the rescuer never died"
    assert counts["beats"] > 30 and counts["rescued"] > 0 and counts["lost"] > 0, counts
    with sessions() as s:
        # Nothing half-done: every open attempt is its job's current one, and every running job has one.
        stray = s.execute(
            text(
                "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
                "WHERE a.ended_at IS NULL AND j.current_attempt_id IS DISTINCT FROM a.id"
            )
        ).scalar_one()
        assert stray == 0


def test_fence_refuses_an_expired_lease_even_while_the_attempt_is_still_current(
    sessions: sessionmaker[Session],
) -> None:
    [job_id] = _enqueue(sessions, 1)
    with sessions() as s:
        [c] = queue.claim(s, worker_id="late", lease_seconds=0.3)
    time.sleep(0.5)
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == "running" and job.current_attempt_id == c.attempt_id
    # No rescue has run yet: the attempt still owns the job, but its lease is gone.
    for write in (
        lambda s: queue.heartbeat(s, c.attempt_id, lease_seconds=60),
        lambda s: attempts.record_checkpoint(s, c.attempt_id, step=1, uri="file:///x"),
        lambda s: queue.finish(s, c.attempt_id, "succeeded"),
    ):
        with sessions() as s, pytest.raises(LeaseLost, match="expired"):
            write(s)
    with sessions() as s:
        assert queue.rescue(s, backoff_base=0) == [job_id]
        attempt = s.get(JobAttempt, c.attempt_id)
        assert attempt is not None and attempt.outcome == "lost"


def test_rescue_skips_a_job_whose_row_is_held_and_takes_it_on_the_next_pass(
    sessions: sessionmaker[Session], engine: object
) -> None:
    [job_id] = _enqueue(sessions, 1)
    with sessions() as s:
        queue.claim(s, worker_id="w", lease_seconds=0.1)
    time.sleep(0.3)
    with sessions() as holder:
        holder.execute(select(Job).where(Job.id == job_id).with_for_update())
        t0 = time.monotonic()
        with sessions() as s:
            assert queue.rescue(s) == [], "a held job row is skipped, not waited on"
        assert time.monotonic() - t0 < 2.0
        holder.rollback()
    with sessions() as s:
        assert queue.rescue(s, backoff_base=0) == [job_id]
