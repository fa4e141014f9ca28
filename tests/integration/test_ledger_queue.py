"""The ledger as the queue writes it, against real Postgres: a paused and resumed job counts its
tokens once; steps redone after resuming from an older checkpoint are counted as waste; an
attempt nobody hears from stops accruing at its last heartbeat, rescued or not; a budget stop
waits for a training pace; earlier attempts keep what they were billed on."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key, principal_for

from trainyard.cli import rendering
from trainyard.platform import attempts, costs, jobs, queue, states
from trainyard.platform.auth import Principal
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.spec import JobSpec
from trainyard.sdk import Job as SdkJob


def plan(
    instance: str = "g5.xlarge", count: int = 1, spot: bool = False, rate: float = 1.0, od: float = 1.0
) -> dict:
    return {
        "instance_type": instance,
        "accelerator": "A10G",
        "accelerator_count": count,
        "spot": spot,
        "usd_per_hour": rate,
        "on_demand_usd_per_hour": od,
        "estimated_cost_usd": 5.0,
    }


def _job(sessions: sessionmaker[Session], the_plan: dict, **spec: Any) -> tuple[Principal, str]:
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        job, _ = jobs.create_job(s, principal, JobSpec(**job_body(**spec)), plan=the_plan)
    return principal, job.id


def _claim(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w")
    return claim.attempt_id


def _earlier(sessions: sessionmaker[Session], attempt_id: str, seconds: float, *columns: str) -> None:
    """Move the attempt's `columns` (default: its start) `seconds` into the past: time passing
    without waiting for it."""
    sets = ", ".join(f"{c} = {c} - make_interval(secs => :s)" for c in (columns or ("started_at",)))
    with sessions.begin() as s:
        s.execute(text(f"UPDATE job_attempts SET {sets} WHERE id = :a"), {"s": seconds, "a": attempt_id})


def _beat(sessions: sessionmaker[Session], attempt_id: str, **progress: Any) -> queue.Heartbeat:
    with sessions() as s:
        return queue.heartbeat(s, attempt_id, progress=progress or None, pace=costs.PaceRule(10, 60))


def _finish(sessions: sessionmaker[Session], attempt_id: str, outcome: str, **kw: Any) -> str:
    with sessions() as s:
        return queue.finish(s, attempt_id, outcome, backoff_base=0, **kw)


def _attempts(sessions: sessionmaker[Session], job_id: str) -> list[JobAttempt]:
    with sessions() as s:
        rows = s.query(JobAttempt).filter_by(job_id=job_id).order_by(JobAttempt.number).all()
        s.expunge_all()
        return rows


def _by(sessions: sessionmaker[Session], principal: Principal, dim: str, window: str = "24h") -> dict:
    with sessions() as s:
        res = costs.query_costs(s, principal, window=window, aggregate=dim)
    return {r["key"][dim]: r for r in res["data"]}


def test_a_paused_and_resumed_job_counts_its_tokens_once(sessions: sessionmaker[Session]) -> None:
    principal, job_id = _job(sessions, plan())
    first = _claim(sessions)
    _beat(sessions, first, step=10, total_steps=20, tokens=128_496)
    with sessions() as s:
        attempts.record_checkpoint(s, first, step=10, uri="file:///c/10", metrics={"tokens_seen": 128_496})
    with sessions.begin() as s:
        jobs.pause_job(s, principal, job_id)
    assert _beat(sessions, first, step=10, total_steps=20, tokens=128_496).stop_reason == "paused"
    assert _finish(sessions, first, states.AttemptOutcome.HANDED_BACK) == states.PAUSED
    with sessions.begin() as s:
        jobs.resume_job(s, principal, job_id)
    second = _claim(sessions)
    with sessions() as s:
        attempts.set_start_step(s, second, 10)
    # The run reports its cumulative count, the 128,496 tokens restored from the checkpoint included.
    _beat(sessions, second, step=20, total_steps=20, tokens=256_992)
    assert _finish(sessions, second, states.AttemptOutcome.SUCCEEDED) == states.SUCCEEDED

    first_row, second_row = _attempts(sessions, job_id)
    assert (first_row.tokens_trained, second_row.tokens_trained) == (128_496, 128_496)
    assert (second_row.start_step, second_row.start_tokens, second_row.steps_recomputed) == (10, 128_496, 0)
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.tokens_trained == 256_992
        report = costs.cost_report(s, job_id)
    assert report["totals"]["tokens_trained"] == 256_992
    assert report["totals"]["wasted_usd"] == 0.0  # a pause keeps its checkpoint
    assert _by(sessions, principal, "job")[job_id]["tokens_trained"] == 256_992


def test_steps_redone_after_resuming_from_an_older_checkpoint_are_waste(
    sessions: sessionmaker[Session], client: Any, key: str
) -> None:
    principal, job_id = _job(sessions, plan(rate=2.0, od=2.0))
    first = _claim(sessions)
    _earlier(sessions, first, 3600)  # it has run an hour
    with sessions() as s:
        attempts.record_checkpoint(s, first, step=10, uri="file:///c/10", metrics={"tokens_seen": 1_000})
    _beat(sessions, first, step=15, total_steps=20, tokens=1_500)
    assert _finish(sessions, first, states.AttemptOutcome.CRASHED, error_code="oom") == states.QUEUED
    second = _claim(sessions)
    _earlier(sessions, second, 600)  # ten minutes of start-up
    with sessions() as s:
        attempts.set_start_step(s, second, 10)
    _beat(sessions, second, step=11, total_steps=20, tokens=1_100)  # its first step
    _earlier(sessions, second, 6600, "started_at", "pace_at")  # then nine more steps
    _beat(sessions, second, step=20, total_steps=20, tokens=2_000)
    _finish(sessions, second, states.AttemptOutcome.SUCCEEDED)

    crashed, resumed = _attempts(sessions, job_id)
    # Steps 10 to 15 were done by the crashed attempt and again by the one that resumed at 10.
    assert (resumed.steps_recomputed, resumed.tokens_recomputed) == (5, 500)
    assert resumed.tokens_trained == 1_000
    with sessions() as s:
        report = costs.cost_report(s, job_id)
    totals = report["totals"]
    assert totals["tokens_trained"] == 2_000
    assert totals["steps_recomputed"] == 5
    # All of the crash ($2), and the resumed attempt's two hours ($4).
    assert crashed.cost_usd == pytest.approx(2.0, abs=0.01) and resumed.cost_usd == pytest.approx(
        4.0, abs=0.01
    )
    # Half of the resumed attempt's steps were redone: half of its time after start-up ($3.67).
    training = resumed.cost_usd * 6600 / 7200
    assert totals["recomputed_usd"] == pytest.approx(training / 2, abs=0.01)
    assert totals["wasted_usd"] == pytest.approx(crashed.cost_usd + totals["recomputed_usd"], abs=1e-6)
    # Goodput: the crash is lost, the start-up and the redone steps are not productive.
    parts = report["goodput"]
    assert parts["lost_usd"] == pytest.approx(crashed.cost_usd, abs=1e-6)
    assert parts["startup_usd"] == pytest.approx(resumed.cost_usd * 600 / 7200, abs=0.01)
    assert parts["productive_usd"] == pytest.approx(training / 2, abs=0.01)
    total = sum(parts[p] for p in costs.ledger.GOODPUT_PARTS)
    assert total == pytest.approx(totals["cost_usd"], abs=1e-5)
    assert parts["goodput"] == pytest.approx(parts["productive_usd"] / total, abs=1e-6)
    # The same split in the job's answer, and the CLI's line for it.
    answer = client.get(f"/v1/jobs/{job_id}", headers=headers(key)).json()
    assert answer["cost"]["goodput"] == parts
    shown = SdkJob.model_validate(answer).cost.goodput
    assert shown is not None
    line = rendering.goodput(shown)
    assert line.startswith(f"{parts['goodput']:.0%} productive (start-up $") and "lost $2.00" in line
    row = _by(sessions, principal, "job")[job_id]
    assert row["waste_usd"] == pytest.approx(totals["wasted_usd"], abs=1e-5)
    assert row["tokens_trained"] == 2_000


def test_an_attempt_nobody_hears_from_accrues_nothing_after_its_last_heartbeat(
    sessions: sessionmaker[Session],
) -> None:
    principal, job_id = _job(sessions, plan(rate=3.0, od=3.0))
    attempt_id = _claim(sessions)
    _earlier(sessions, attempt_id, 7200)
    _beat(sessions, attempt_id, step=3, total_steps=20, tokens=300)  # billed: 2 h at $3
    # An hour goes by without a word from its worker (its lease ran out long ago).
    _earlier(sessions, attempt_id, 3600, "started_at", "heartbeat_at", "pace_at")
    with sessions.begin() as s:
        s.execute(
            text(
                "UPDATE job_attempts SET lease_expires_at = heartbeat_at + interval '1 minute' WHERE id = :a"
            ),
            {"a": attempt_id},
        )

    def spend() -> tuple[float, float, float]:
        team = _by(sessions, principal, "team")["research"]["cost_usd"]
        with sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None
            budget = costs.budget_status(s, job.team_id)
            month = costs.query_costs(s, principal, window="month", aggregate="team")["totals"]["cost_usd"]
            assert budget["spent_this_month"] == pytest.approx(month, abs=1e-5)
            return team, job.cost_usd, month

    team, job_cost, _ = spend()
    assert team == pytest.approx(6.0, abs=0.01) and job_cost == pytest.approx(team, abs=1e-5)
    # Nothing ran in the last hour, so nothing was spent in it.
    with sessions() as s:
        quiet = costs.query_costs(s, principal, window="1h", aggregate="team")
    assert quiet["totals"]["cost_usd"] == pytest.approx(0.0, abs=1e-6)

    # Rescued now: lost, and billed to its last heartbeat, not to the rescue.
    with sessions() as s:
        assert queue.rescue(s, backoff_base=0) == [job_id]
    [row] = _attempts(sessions, job_id)
    assert row.outcome == states.AttemptOutcome.LOST and row.ended_at is not None
    assert row.billable_seconds == pytest.approx(7200, abs=5)
    assert row.ended_at.timestamp() - row.heartbeat_at.timestamp() >= 3600
    after = spend()
    assert after[0] == pytest.approx(team, abs=1e-6) and after[1] == pytest.approx(job_cost, abs=1e-6)


def test_a_budget_stop_waits_for_a_training_pace(sessions: sessionmaker[Session]) -> None:
    # $4/h, a $2 cap, 1000 steps at 1 s a step after 120 s of start-up: about $1.25 in all.
    _, job_id = _job(sessions, plan(rate=4.0, od=4.0), policy={"max_cost_usd": 2.0})
    attempt_id = _claim(sessions)
    _earlier(sessions, attempt_id, 120)
    assert _beat(sessions, attempt_id, step=1, total_steps=1000, tokens=10).stop_reason is None
    _earlier(sessions, attempt_id, 4, "started_at", "pace_at")
    # At step 5 the time since the start would project $27.8; four steps are no pace to go by.
    assert _beat(sessions, attempt_id, step=5, total_steps=1000, tokens=50).stop_reason is None
    _earlier(sessions, attempt_id, 60, "started_at", "pace_at")
    assert _beat(sessions, attempt_id, step=65, total_steps=1000, tokens=650).stop_reason is None
    with sessions() as s:
        job, attempt = s.get(Job, job_id), s.get(JobAttempt, attempt_id)
        assert job is not None and attempt is not None
        projected = costs.projected_cost(job, attempt, attempt.heartbeat_at, costs.PaceRule(10, 60))
    assert projected == pytest.approx(1.25, abs=0.05)
    # Then it slows to 4 s a step: the projection passes the cap and the worker is told to stop.
    _earlier(sessions, attempt_id, 240, "started_at", "pace_at")
    assert _beat(sessions, attempt_id, step=70, total_steps=1000, tokens=700).stop_reason == "budget_exceeded"


def test_earlier_attempts_keep_what_they_were_billed_on(sessions: sessionmaker[Session]) -> None:
    principal, job_id = _job(sessions, plan("g5.xlarge", 1, spot=True, rate=0.45, od=1.006))
    first = _claim(sessions)
    _earlier(sessions, first, 3600)
    _beat(sessions, first)
    _finish(sessions, first, states.AttemptOutcome.PREEMPTED)
    # Dispatch moves the job to four on-demand GPUs before it runs again.
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.plan, job.instance_type = plan("g5.12xlarge", 4, rate=5.672, od=5.672), "g5.12xlarge"
    second = _claim(sessions)
    _earlier(sessions, second, 3600)
    _beat(sessions, second)
    _finish(sessions, second, states.AttemptOutcome.SUCCEEDED)

    rows = _by(sessions, principal, "instance_type")
    small, big = rows["g5.xlarge"], rows["g5.12xlarge"]
    assert small["cost_usd"] == pytest.approx(0.45, abs=0.01) and small["gpu_hours"] == pytest.approx(
        1.0, abs=0.01
    )
    assert small["spot_savings_usd"] == pytest.approx(0.556, abs=0.01)
    assert small["waste_usd"] == pytest.approx(small["cost_usd"], abs=1e-6)  # preempted
    assert big["gpu_hours"] == pytest.approx(4.0, abs=0.02) and big["spot_savings_usd"] == 0.0
    assert set(_by(sessions, principal, "spot")) == {"spot", "on_demand"}
    with sessions() as s:
        report = costs.cost_report(s, job_id)
    assert [(a["instance_type"], a["spot"], a["accelerator_count"]) for a in report["attempts"]] == [
        ("g5.xlarge", True, 1),
        ("g5.12xlarge", False, 4),
    ]
    assert report["totals"]["spot_savings_usd"] == pytest.approx(small["spot_savings_usd"], abs=1e-5)
