"""Team GPU quotas under concurrency: claims for a team serialise on its lock, so 16 claimers never
run more of its accelerators at once than its quota; a job that can never fit is refused at create,
and one whose team's quota was lowered below its need fails at claim instead of waiting forever."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key, principal_for

from trainyard.platform import jobs, queue, states
from trainyard.platform.models import Job, JobAttempt, JobEvent
from trainyard.platform.spec import JobSpec

QUOTA = 4
JOBS = 200
CLAIMERS = 16

_RUNNING_GPUS = text(
    f"""
    SELECT COALESCE(sum((j.plan->>'accelerator_count')::int), 0) FROM jobs j JOIN teams t ON t.id = j.team_id
    WHERE t.name = :team AND j.status IN ({states.sql_list(states.ACTIVE)})
    """
)


def _running_gpus(session: Session, team: str = "capped") -> int:
    return int(session.scalar(_RUNNING_GPUS, {"team": team}) or 0)


def test_16_claimers_never_run_more_than_the_team_quota(sessions: sessionmaker[Session]) -> None:
    capped = principal_for(sessions, make_key(sessions, "capped"))
    free = principal_for(sessions, make_key(sessions, "free"))
    rng = random.Random(18)
    with sessions.begin() as s:
        s.execute(text("UPDATE teams SET max_concurrent_gpus = :q WHERE name = 'capped'"), {"q": QUOTA})
        for i in range(JOBS):
            plan = {"accelerator_count": rng.choice([1, 1, 2, 3, 4])}
            jobs.create_job(s, capped, JobSpec(**job_body(name=f"c{i}")), plan=plan, pool="a10g")
        # Another team's jobs, without a quota, go through the same claims.
        for i in range(20):
            jobs.create_job(
                s, free, JobSpec(**job_body(name=f"f{i}")), plan={"accelerator_count": 8}, pool="a10g"
            )

    lock = threading.Lock()
    held = 0  # capped GPUs claimed and not yet finished, as the claimers know them
    peaks: list[int] = []
    violations: list[str] = []
    done = threading.Event()
    start = threading.Barrier(CLAIMERS + 1)

    def claimer(i: int) -> int:
        nonlocal held
        rng = random.Random(i)
        finished = 0
        start.wait()
        with sessions() as s:
            while True:
                # Half the claimers go through the pool-capacity path (pool locks, then team locks).
                capacity = {"a10g": 1000} if i % 2 else None
                got = queue.claim(s, worker_id=f"w{i}", n=rng.choice([1, 2, 3]), capacity=capacity)
                if not got:
                    left = s.scalar(
                        select(func.count()).select_from(Job).where(Job.status.in_(sorted(states.PENDING)))
                    )
                    s.commit()
                    if not left:
                        return finished
                    time.sleep(rng.uniform(0.001, 0.01))
                    continue
                mine = sum(int((c.plan or {})["accelerator_count"]) for c in got if c.spec["name"][0] == "c")
                with lock:
                    held += mine
                    if held > QUOTA:
                        violations.append(f"claimer {i} saw {held} GPUs held")
                in_db = _running_gpus(s)
                s.commit()
                with lock:
                    peaks.append(in_db)
                if in_db > QUOTA:
                    violations.append(f"claimer {i} read {in_db} GPUs running")
                time.sleep(rng.uniform(0.001, 0.02))
                for c in got:
                    with lock:
                        if c.spec["name"][0] == "c":
                            held -= int(c.plan["accelerator_count"])  # type: ignore[index]
                    queue.finish(s, c.attempt_id, "succeeded")
                    finished += 1

    def monitor() -> None:
        start.wait()
        with sessions() as s:
            while not done.is_set():
                running = _running_gpus(s)
                s.commit()
                with lock:
                    peaks.append(running)
                if running > QUOTA:
                    violations.append(f"monitor read {running} GPUs running")
                time.sleep(0.002)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    try:
        with ThreadPoolExecutor(CLAIMERS) as pool:
            counts = list(pool.map(claimer, range(CLAIMERS)))
    finally:
        done.set()
        watcher.join()

    assert violations == []
    assert sum(counts) == JOBS + 20
    assert sum(1 for c in counts if c) > 1, "the work was shared"
    assert max(peaks) == QUOTA, "the quota was reached, so the test tested something"
    with sessions() as s:
        assert (
            s.scalar(select(func.count()).select_from(Job).where(Job.status == states.SUCCEEDED)) == JOBS + 20
        )
        assert s.scalar(select(func.max(JobAttempt.number))) == 1


def test_a_queued_job_over_a_lowered_quota_fails_at_claim(sessions: sessionmaker[Session]) -> None:
    team = principal_for(sessions, make_key(sessions, "shrunk"))
    with sessions.begin() as s:
        big, _ = jobs.create_job(s, team, JobSpec(**job_body(name="big")), plan={"accelerator_count": 8})
        small, _ = jobs.create_job(s, team, JobSpec(**job_body(name="small")), plan={"accelerator_count": 2})
        # An admin lowers the quota after both were queued.
        s.execute(text("UPDATE teams SET max_concurrent_gpus = 4 WHERE name = 'shrunk'"))
    with sessions() as s:
        got = queue.claim(s, worker_id="w", n=2)
    assert [c.job_id for c in got] == [small.id]
    with sessions() as s:
        failed = s.get(Job, big.id)
        assert failed is not None and failed.status == states.FAILED
        assert failed.error_code == "quota_exceeded"
        assert failed.error_message is not None and "needs 8 accelerators" in failed.error_message
        assert "max_concurrent_gpus" in failed.error_message and "is 4" in failed.error_message
        event = s.scalars(
            select(JobEvent).where(JobEvent.job_id == big.id).order_by(JobEvent.id.desc()).limit(1)
        ).one()
        assert event.level == "error" and (event.data or {}).get("to") == "failed"


def test_a_job_that_can_never_fit_is_refused_at_create(
    sessions: sessionmaker[Session], settings: Any, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from trainyard.api.app import create_app

    pools = json.dumps([{"instance_type": "p4d.24xlarge", "max_concurrent": 4}])
    key = make_key(sessions, "small-team")
    body = job_body(instance_type="p4d.24xlarge")
    with sessions.begin() as s:
        s.execute(text("UPDATE teams SET max_concurrent_gpus = 4 WHERE name = 'small-team'"))
    app = create_app(settings.model_copy(update={"pools": pools}))
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.post("/v1/jobs", json=body, headers=headers(key))
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded" and error["param"] == "instance_type"
        assert "needs 8 accelerators" in error["message"] and "p4d.24xlarge" in error["message"]
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(Job)) == 0, "nothing was created"
        with sessions.begin() as s:
            s.execute(text("UPDATE teams SET max_concurrent_gpus = 8 WHERE name = 'small-team'"))
        accepted = client.post("/v1/jobs", json=body, headers=headers(key))
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["plan"]["accelerator_count"] == 8
