"""Dispatch: a job waiting behind a full pool moves to the next-best pool with room."""

from __future__ import annotations

import json

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import TWO_POOLS, job_body, make_key, principal_for

from trainyard.platform import jobs, queue
from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Job, JobEvent
from trainyard.platform.planning import Planner
from trainyard.platform.spec import JobSpec
from trainyard.settings import get_settings


def _submit(sessions: sessionmaker[Session], planner: Planner, **overrides: object) -> str:
    principal = principal_for(sessions, make_key(sessions))
    spec = JobSpec(**job_body(**{"instance_type": None, **overrides}))
    with sessions.begin() as s:
        plan, pool = planner.plan(s, spec)
        job, _ = jobs.create_job(s, principal, spec, plan=plan, pool=pool)
        return job.id


def test_waiting_job_moves_to_a_pool_with_room_and_pinned_jobs_stay(sessions: sessionmaker[Session]) -> None:
    planner = Planner(load_deployment(get_settings(catalog_path=None, pools=TWO_POOLS)))
    first = _submit(sessions, planner)
    waiting = _submit(sessions, planner)
    pinned = _submit(sessions, planner, instance_type="local-cpu")
    with sessions() as s:
        assert {j.pool for j in s.scalars(select(Job))} == {"local-cpu"}, "cheapest first"
        [claim] = queue.claim(s, worker_id="w", capacity=planner.capacity)
        assert claim.job_id == first
        assert planner.redispatch(s, waited_seconds=0) == [waiting]
    with sessions() as s:
        moved = s.get(Job, waiting)
        assert moved is not None and moved.pool == "c7i.2xlarge" and moved.plan is not None
        assert moved.plan["instance_type"] == "c7i.2xlarge"
        stayed = s.get(Job, pinned)
        assert stayed is not None and stayed.pool == "local-cpu"
        note = s.scalar(
            select(JobEvent.message).where(JobEvent.job_id == waiting, JobEvent.type == "message")
        )
        assert note is not None and "local-cpu is full" in note
        # Now both pools are busy or spoken for: a claim takes the moved job, nothing moves further.
        [second] = queue.claim(s, worker_id="w", capacity=planner.capacity)
        assert second.job_id == waiting
        assert planner.redispatch(s, waited_seconds=0) == []


def test_nothing_moves_while_the_pool_has_room(sessions: sessionmaker[Session]) -> None:
    planner = Planner(load_deployment(get_settings(catalog_path=None, pools=TWO_POOLS)))
    _submit(sessions, planner)
    with sessions() as s:
        assert planner.redispatch(s, waited_seconds=0) == []


def test_a_waiting_job_is_not_moved_past_its_teams_gpu_quota(sessions: sessionmaker[Session]) -> None:
    pools = json.dumps(
        [
            {"instance_type": "local-cpu", "max_concurrent": 1},
            {"instance_type": "p4d.24xlarge", "max_concurrent": 1},
        ]
    )
    planner = Planner(load_deployment(get_settings(catalog_path=None, pools=pools)))
    first = _submit(sessions, planner)
    waiting = _submit(sessions, planner)
    with sessions.begin() as s:
        s.execute(text("UPDATE teams SET max_concurrent_gpus = 4"))  # p4d.24xlarge holds 8
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w", capacity=planner.capacity)
        assert claim.job_id == first
        # The one pool with room needs more GPUs than the team may hold: the job waits where it
        # fits, rather than being moved there and failed by the next claim as one that can never run.
        assert planner.redispatch(s, waited_seconds=0) == []
    with sessions() as s:
        job = s.get(Job, waiting)
        assert job is not None and job.status == "queued" and job.pool == "local-cpu"
        s.execute(text("UPDATE teams SET max_concurrent_gpus = NULL"))
        s.commit()
        assert planner.redispatch(s, waited_seconds=0) == [waiting]
