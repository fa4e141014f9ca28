"""Claims and ends that race each other on real connections: the last pool slot and a team's
last GPUs go to exactly one claimer, and an attempt's end that waited on the job row acts on the
row as it is once it has the lock. Each race is made certain by holding, on a third connection,
the lock both sides must take, then letting go."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import job_body, make_key, principal_for

from trainyard.platform import jobs, queue, states
from trainyard.platform.models import Job, JobAttempt, JobEvent
from trainyard.platform.queue.quotas import _TEAM_LOCK_CLASS
from trainyard.platform.spec import JobSpec

_TEAM_LOCK = "SELECT pg_advisory_xact_lock(CAST(:cls AS int4), hashtext(:team))"
_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


def _blocked_until_released(
    sessions: sessionmaker[Session], hold: Callable[[Session], None], racers: list[Callable[[Session], Any]]
) -> list[Any]:
    """Run `racers` in threads of their own sessions while a third session holds what `hold`
    locks; let go once all of them are waiting on it; return their results in order."""
    results: list[Any] = [None] * len(racers)
    errors: list[BaseException] = []
    holder = sessions()
    hold(holder)

    def run(i: int) -> None:
        try:
            with sessions() as s:
                results[i] = racers[i](s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(racers))]
    for t in threads:
        t.start()
    with sessions() as watch:
        deadline = time.monotonic() + 20
        while True:
            waiting = watch.scalar(text(_WAITING))
            if int(waiting or 0) >= len(racers) or time.monotonic() > deadline:
                break
            watch.rollback()
            time.sleep(0.02)
    assert int(waiting or 0) >= len(racers), "every racer waits on the held lock"
    holder.commit()
    holder.close()
    for t in threads:
        t.join(timeout=30)
    if errors:
        raise errors[0]
    return results


def test_two_claimers_for_the_last_pool_slot_exactly_one_wins(sessions: sessionmaker[Session]) -> None:
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        for i in range(3):
            jobs.create_job(s, principal, JobSpec(**job_body(name=f"p{i}")), pool="a10g")
    with sessions() as s:
        assert len(queue.claim(s, worker_id="first", capacity={"a10g": 2})) == 1

    def claim(s: Session) -> list[queue.Claim]:
        return queue.claim(s, worker_id="racer", n=2, capacity={"a10g": 2})

    got = _blocked_until_released(
        sessions,
        lambda s: s.execute(text("SELECT pg_advisory_xact_lock(hashtext('trainyard.pool:a10g'))")),
        [claim, claim],
    )
    assert sorted(len(g) for g in got) == [0, 1], "one slot was left: one claimer takes it"
    with sessions() as s:
        running = s.scalar(select(func.count()).select_from(Job).where(Job.status == states.RUNNING))
        assert running == 2
        assert s.scalar(select(func.count()).select_from(JobAttempt)) == 2


def test_two_claimers_for_a_teams_last_gpus_exactly_one_wins(sessions: sessionmaker[Session]) -> None:
    capped = principal_for(sessions, make_key(sessions, "capped"))
    free = principal_for(sessions, make_key(sessions, "free"))
    with sessions.begin() as s:
        s.execute(text("UPDATE teams SET max_concurrent_gpus = 8 WHERE name = 'capped'"))
        for i in range(3):
            jobs.create_job(s, capped, JobSpec(**job_body(name=f"c{i}")), plan={"accelerator_count": 4})
        other, _ = jobs.create_job(s, free, JobSpec(**job_body(name="f")), plan={"accelerator_count": 8})
    with sessions() as s:
        assert len(queue.claim(s, worker_id="first", n=1)) == 1
    team_id = capped.team_id

    def claim(s: Session) -> list[queue.Claim]:
        return queue.claim(s, worker_id="racer", n=2)

    got = _blocked_until_released(
        sessions,
        lambda s: s.execute(text(_TEAM_LOCK), {"cls": _TEAM_LOCK_CLASS, "team": team_id}),
        [claim, claim],
    )
    claimed = [c.job_id for g in got for c in g]
    assert len(claimed) == 2 and other.id in claimed, "the other team's job, and one 4-GPU job"
    with sessions() as s:
        capped_running = s.scalar(
            select(func.count()).select_from(Job).where(Job.team_id == team_id, Job.status == states.RUNNING)
        )
        assert capped_running == 2, "8 GPUs: two 4-GPU jobs at once, never three"


@pytest.mark.parametrize("outcome", [states.AttemptOutcome.HANDED_BACK, states.AttemptOutcome.CRASHED])
def test_an_end_that_waited_on_a_cancel_ends_the_job_cancelled(
    sessions: sessionmaker[Session], outcome: states.AttemptOutcome
) -> None:
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        job, _ = jobs.create_job(s, principal, JobSpec(**job_body(name="c")))
    with sessions() as s:
        (claimed,) = queue.claim(s, worker_id="w")

    def cancel_in_flight(s: Session) -> None:
        # What a cancel does to a running job, with its lock held until the racers wait on it.
        s.execute(text("SELECT 1 FROM jobs WHERE id = :j FOR NO KEY UPDATE"), {"j": job.id})
        s.execute(text("UPDATE jobs SET cancel_requested = true WHERE id = :j"), {"j": job.id})

    (dst,) = _blocked_until_released(
        sessions, cancel_in_flight, [lambda s: queue.finish(s, claimed.attempt_id, outcome)]
    )
    assert dst == states.CANCELLED, "the end saw the cancel it waited for"
    with sessions() as s:
        ended = s.get(Job, job.id)
        assert ended is not None and ended.status == states.CANCELLED and ended.current_attempt_id is None
        last = s.scalars(
            select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id.desc()).limit(1)
        ).one()
        assert last.data["from"] == states.RUNNING and last.data["to"] == states.CANCELLED
        assert last.attempt_id == claimed.attempt_id
