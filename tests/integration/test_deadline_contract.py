"""The deadline contract against real Postgres: a job planned on spot is moved to on-demand once
its deadline cannot survive another interruption, when a preempted attempt ends or at a recorded
checkpoint (then the running attempt is told to hand the job back); the move is an event with its
reason, the next attempt is billed on demand, and the cost report shows both capacities and the
savings against all-on-demand. Preemptions count against max_preemptions, not max_attempts."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import make_key, principal_for, shipped_catalog

from trainyard.platform import attempts, costs, jobs, queue, states
from trainyard.platform.deployment import Deployment
from trainyard.platform.models import Job, JobAttempt, JobEvent
from trainyard.platform.planning import Planner
from trainyard.platform.scheduling.pools import Pool
from trainyard.platform.spec import JobSpec
from trainyard.platform.storage import open_store

POOL = "p5.48xlarge"
# An 8B full fine-tune over 1.6B tokens: ~8.5 h of training on 8 H100s, 12,208 steps.
TOKENS = 1_600_000_000
MOVE = re.compile(
    r"^spot would finish .+ after the deadline with p=0\.\d\d; moving to on-demand p5\.48xlarge: \+\$[\d,.]+$"
)


def _planner() -> Planner:
    return Planner(Deployment(catalog=shipped_catalog(), pools=(Pool(POOL, 4),)))


def _db_now(sessions: sessionmaker[Session]) -> datetime:
    with sessions() as s:
        now = s.scalar(select(func.now()))
    assert now is not None
    return now


def _submit(sessions: sessionmaker[Session], *, deadline_hours: float = 16, **spec: Any) -> str:
    body: dict[str, Any] = {
        "name": "llama-8b",
        "base_model": "meta-llama/Meta-Llama-3-8B",
        "training_file": "s3://data/train.jsonl",
        "model_parameters": 8_030_261_248,
        "dataset_tokens": TOKENS,
        "hyperparameters": {"batch_size": 8, "seq_len": 2048},
        "checkpoint": {"every_steps": 50},
        "policy": {
            "objective": "deadline",
            "deadline": (_db_now(sessions) + timedelta(hours=deadline_hours)).isoformat(),
            "spot": "auto",
        },
    }
    job_spec = JobSpec(**(body | spec))
    principal = principal_for(sessions, make_key(sessions))
    with sessions() as s:
        plan, pool = _planner().plan(s, job_spec)
    with sessions.begin() as s:
        job, _ = jobs.create_job(s, principal, job_spec, plan=plan, pool=pool)
    return job.id


def _claim(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w", pools=[POOL])
    return claim.attempt_id


def _job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
    return job


def _train(
    sessions: sessionmaker[Session],
    job_id: str,
    attempt_id: str,
    start: int,
    end: int,
    *,
    checkpoint: bool = True,
) -> None:
    """The attempt trains from `start` to `end` at the pace its plan estimated (after ten minutes
    of start-up), and checkpoints there."""
    entry = next(e for e in _job(sessions, job_id).plan["contract"]["options"] if e["spot"])
    seconds = (end - start) * entry["compute_seconds"] / entry["steps"]
    with sessions() as s:
        queue.heartbeat(s, attempt_id, progress={"step": start, "total_steps": entry["steps"]})
    with sessions.begin() as s:
        # Time passing without waiting for it: the pace was first measured `seconds` ago.
        s.execute(
            text(
                "UPDATE job_attempts SET pace_at = pace_at - make_interval(secs => :s), "
                "started_at = started_at - make_interval(secs => :s + 600) WHERE id = :a"
            ),
            {"s": seconds, "a": attempt_id},
        )
    if checkpoint:
        with sessions() as s:
            uri = f"s3://store/jobs/{job_id}/ckpt-{end}"
            attempts.record_checkpoint(s, attempt_id, step=end, uri=uri, metrics={"tokens_seen": end})
    with sessions() as s:
        queue.heartbeat(s, attempt_id, progress={"step": end, "total_steps": entry["steps"]})


@pytest.fixture(autouse=True)
def _empty_pool(sessions: sessionmaker[Session]) -> None:
    """Each test claims its own jobs: the jobs earlier tests left in the pool are put away."""
    with sessions.begin() as s:
        s.execute(
            text("UPDATE jobs SET status = 'cancelled' WHERE pool = :p AND status IN ('queued', 'running')"),
            {"p": POOL},
        )


def _deadline_in(sessions: sessionmaker[Session], job_id: str, seconds: float) -> None:
    """The deadline draws near: as if the hours before it had passed."""
    deadline = (_db_now(sessions) + timedelta(seconds=seconds)).isoformat()
    with sessions.begin() as s:
        s.execute(
            text(
                "UPDATE jobs SET spec = jsonb_set(spec, '{policy,deadline}', to_jsonb(CAST(:d AS text))) "
                "WHERE id = :j"
            ),
            {"d": deadline, "j": job_id},
        )


def _tight(sessions: sessionmaker[Session], job_id: str, left: float) -> float:
    """Seconds to the deadline that on-demand meets with `left` of the work to do (start-up and
    the work, with 30 s to spare), and spot only without another interruption (which costs a
    restart plus half a checkpoint interval, more than 30 s)."""
    entry = next(e for e in _job(sessions, job_id).plan["contract"]["options"] if e["spot"])
    return entry["startup_seconds"] + entry["compute_seconds"] * left + 30


def _replans(sessions: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    with sessions() as s:
        rows = s.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.data.has_key("replan"))
            .order_by(JobEvent.id)
        ).all()
        s.expunge_all()
    return list(rows)


def test_a_deadline_that_cannot_survive_another_interruption_moves_to_on_demand(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = _submit(sessions)
    job = _job(sessions, job_id)
    assert (job.plan["instance_type"], job.plan["spot"]) == (POOL, True)
    assert {(e["instance_type"], e["spot"]) for e in job.plan["contract"]["options"]} == {
        (POOL, True),
        (POOL, False),
    }

    first = _claim(sessions)
    _train(sessions, job_id, first, 0, 6104)  # half-way, with 16 h to spare: stays on spot
    assert _replans(sessions, job_id) == []
    _deadline_in(sessions, job_id, _tight(sessions, job_id, 0.5))
    with sessions() as s:
        assert (
            queue.finish(s, first, "preempted", error_code="node_preempted", backoff_base=0) == states.QUEUED
        )

    job = _job(sessions, job_id)
    assert (job.status, job.pool, job.plan["instance_type"], job.plan["spot"]) == (
        "queued",
        POOL,
        POOL,
        False,
    )
    [event] = _replans(sessions, job_id)
    assert MOVE.match(event.message), event.message
    replan = event.data["replan"]
    assert replan["trigger"] == "interruption" and replan["to"] == {"instance_type": POOL, "spot": False}
    assert 0 < replan["current"]["p_on_time"] < 0.9 and replan["chosen"]["p_on_time"] == 1.0
    assert event.attempt_id == first and job.plan["replans"][0]["reason"] == event.message

    second = _claim(sessions)
    with sessions() as s:
        attempt = s.get(JobAttempt, second)
        assert attempt is not None
        assert (attempt.spot, attempt.usd_per_hour, attempt.on_demand_usd_per_hour) == (False, 55.04, 55.04)
        s.rollback()
    with sessions() as s:
        attempts.set_start_step(s, second, 6104)
    _train(sessions, job_id, second, 6104, 12208, checkpoint=False)
    store = open_store(f"file://{tmp_path}")
    with sessions() as s:
        assert queue.finish(s, second, "succeeded", store=store) == states.SUCCEEDED
    with sessions() as s:
        report = costs.cost_report(s, job_id)
    assert [(a["capacity"], a["outcome"]) for a in report["attempts"]] == [
        ("spot", "preempted"),
        ("on_demand", "succeeded"),
    ]
    totals = report["totals"]
    assert totals["all_on_demand_usd"] > 0
    assert totals["savings_vs_all_on_demand_usd"] == pytest.approx(
        totals["all_on_demand_usd"] - totals["cost_usd"]
    )
    # The spot half cost less than it would have on demand: the job saved money against all-on-demand.
    assert totals["savings_vs_all_on_demand_usd"] > 0
    assert [r["to"] for r in report["replans"]] == [{"instance_type": POOL, "spot": False}]


def test_a_checkpoint_moves_the_job_and_stops_the_running_attempt(sessions: sessionmaker[Session]) -> None:
    job_id = _submit(sessions)
    first = _claim(sessions)
    _deadline_in(sessions, job_id, _tight(sessions, job_id, 0.5))
    _train(sessions, job_id, first, 0, 6104)
    [event] = _replans(sessions, job_id)
    assert MOVE.match(event.message) and event.data["replan"]["trigger"] == "checkpoint"
    assert _job(sessions, job_id).plan["spot"] is False
    with sessions() as s:
        beat = queue.heartbeat(s, first)
    assert beat.stop_reason == "replanned"
    # The run stops after that checkpoint and hands the job back: queued on demand, not moved again.
    with sessions() as s:
        assert queue.finish(s, first, "handed_back") == states.QUEUED
    assert len(_replans(sessions, job_id)) == 1
    second = _claim(sessions)
    with sessions() as s:
        attempt = s.get(JobAttempt, second)
        assert attempt is not None and attempt.spot is False
        assert queue.heartbeat(s, second).stop_reason is None


def test_a_job_with_slack_stays_on_spot(sessions: sessionmaker[Session]) -> None:
    job_id = _submit(sessions)
    first = _claim(sessions)
    _train(sessions, job_id, first, 0, 6104)
    _deadline_in(sessions, job_id, 3 * _tight(sessions, job_id, 0.5))
    with sessions() as s:
        queue.finish(s, first, "preempted", backoff_base=0)
    assert _replans(sessions, job_id) == []
    assert _job(sessions, job_id).plan["spot"] is True


def test_preemptions_count_against_max_preemptions_not_max_attempts(sessions: sessionmaker[Session]) -> None:
    job_id = _submit(sessions, max_attempts=1, max_preemptions=2, policy={"spot": "always"})
    for _ in range(2):
        attempt = _claim(sessions)
        with sessions() as s:
            assert queue.finish(s, attempt, "preempted", backoff_base=0) == states.QUEUED
    attempt = _claim(sessions)
    with sessions() as s:
        assert (
            queue.finish(s, attempt, "preempted", error_message="node drained", backoff_base=0)
            == states.FAILED
        )
    job = _job(sessions, job_id)
    assert "contract" not in job.plan  # spot "always": nothing to move to
    assert job.error_code == "preemptions_exhausted"
    assert job.error_message == "gave up after 3 preemptions (max_preemptions 2); last: node drained"
    # A crash still uses up max_attempts, preemptions or not.
    crashing = _submit(sessions, max_attempts=1, policy={"spot": "always"})
    with sessions() as s:
        assert queue.finish(s, _claim(sessions), "crashed", backoff_base=0) == states.FAILED
    assert _job(sessions, crashing).error_code == "attempts_exhausted"
