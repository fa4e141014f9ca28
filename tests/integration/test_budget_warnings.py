"""Budgets that warn, then stop, then let a job go on: a running job is warned once when its spend
passes its team's warning share of its own cap and of its team's monthly budget; GET /v1/budgets
flags the team; a job stopped for its budget keeps its checkpoint, is refused a resume (409
budget_exhausted) while its cap or its team's budget still stops it, and resumes from its last
checkpoint once they allow."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key, principal_for

from trainyard.platform import attempts, costs, jobs, queue, states
from trainyard.platform.auth import Principal
from trainyard.platform.errors import Conflict, InvalidRequest
from trainyard.platform.models import Job, JobAttempt, JobEvent, Team
from trainyard.platform.spec import JobSpec

PLAN = {
    "instance_type": "g5.xlarge",
    "accelerator": "A10G",
    "accelerator_count": 1,
    "spot": False,
    "usd_per_hour": 10.0,
    "on_demand_usd_per_hour": 10.0,
    "estimated_cost_usd": 4.0,
}


def _job(sessions: sessionmaker[Session], secret: str, cap: float | None = 10.0) -> tuple[Principal, str]:
    principal = principal_for(sessions, secret)
    policy = {"max_cost_usd": cap} if cap is not None else {}
    with sessions.begin() as s:
        job, _ = jobs.create_job(s, principal, JobSpec(**job_body(policy=policy)), plan=PLAN)
    return principal, job.id


def _claim(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w")
    return claim.attempt_id


def _run_for(
    sessions: sessionmaker[Session], attempt_id: str, seconds: float, **progress: Any
) -> queue.Heartbeat:
    """The attempt has run `seconds` more by its next heartbeat ($10 an hour)."""
    with sessions.begin() as s:
        s.execute(
            text("UPDATE job_attempts SET started_at = started_at - make_interval(secs => :s) WHERE id = :a"),
            {"s": seconds, "a": attempt_id},
        )
    with sessions() as s:
        return queue.heartbeat(s, attempt_id, progress=progress or None, pace=costs.PaceRule(1000, 1e6))


def _warnings(sessions: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    with sessions() as s:
        rows = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.level == "warning")).all()
        s.expunge_all()
        return list(rows)


def _set_budget(
    sessions: sessionmaker[Session], team: str, usd: float | None, share: float | None = None
) -> None:
    admin = principal_for(sessions, make_key(sessions, "ops", role="admin"))
    with sessions.begin() as s:
        costs.set_team_budget(s, admin, team, usd, share)


def test_a_job_is_warned_once_at_its_cap_and_once_at_its_teams_budget(
    sessions: sessionmaker[Session],
) -> None:
    secret = make_key(sessions)
    _set_budget(sessions, "research", 20.0, 0.5)
    principal, job_id = _job(sessions, secret, cap=10.0)
    attempt_id = _claim(sessions)
    # $6 of a $10 cap: past half of it, the job's warning; $6 of $20 is not half the budget.
    assert _run_for(sessions, attempt_id, 2160).stop_reason is None
    [warned] = _warnings(sessions, job_id)
    assert warned.data["budget_warning"] == "job" and warned.data["cap_usd"] == 10.0
    assert "$6.00" in warned.message and "$10.00" in warned.message
    _run_for(sessions, attempt_id, 60)
    assert len(_warnings(sessions, job_id)) == 1  # once
    with sessions() as s:
        [status] = costs.list_budgets(s, principal)
    assert status["warn_fraction"] == 0.5 and status["warning"] is False and status["exhausted"] is False
    # Another job of the team takes its spend past $10, half the budget: both running jobs are
    # warned, each once, at their next heartbeat.
    _, other_id = _job(sessions, secret, cap=None)
    other = _claim(sessions)
    _run_for(sessions, other, 1800)
    _run_for(sessions, attempt_id, 0)
    for jid in (job_id, other_id):
        team = [w for w in _warnings(sessions, jid) if w.data["budget_warning"] == "team"]
        assert len(team) == 1 and team[0].data["team"] == "research"
    _run_for(sessions, other, 0)
    assert len(_warnings(sessions, other_id)) == 1
    with sessions() as s:
        [status] = costs.list_budgets(s, principal)
    assert status["warning"] is True and status["exhausted"] is False


def test_the_warning_share_is_the_teams_and_checked(sessions: sessionmaker[Session], client: Any) -> None:
    admin = make_key(sessions, "ops", role="admin")
    make_key(sessions, "research")
    ok = client.put(
        "/v1/teams/research/budget",
        json={"monthly_budget_usd": 100, "warn_fraction": 0.9},
        headers=headers(admin),
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["warn_fraction"] == 0.9
    # Setting the budget alone keeps the share.
    again = client.put("/v1/teams/research/budget", json={"monthly_budget_usd": 50}, headers=headers(admin))
    assert again.json()["warn_fraction"] == 0.9
    for bad in (0, 1.5, -1, "x"):
        res = client.put(
            "/v1/teams/research/budget",
            json={"monthly_budget_usd": 50, "warn_fraction": bad},
            headers=headers(admin),
        )
        assert res.status_code in (400, 422) and res.json()["error"]["param"] in (
            "warn_fraction",
            "body.warn_fraction",
        )


def _stop_for_budget(sessions: sessionmaker[Session], secret: str) -> tuple[Principal, str, str]:
    """A job with a $10 cap that checkpointed at step 40 and spent $10.50: told to stop, it
    ends as the worker ends it (`workers.outcome.stopped_outcome`)."""
    principal, job_id = _job(sessions, secret, cap=10.0)
    attempt_id = _claim(sessions)
    with sessions() as s:
        attempts.record_checkpoint(s, attempt_id, step=40, uri="file:///c/40", metrics={"tokens_seen": 4000})
    beat = _run_for(sessions, attempt_id, 3780, step=42, total_steps=100, tokens=4200)
    assert beat.stop_reason == "budget_exceeded"
    with sessions() as s:
        queue.finish(
            s,
            attempt_id,
            "failed",
            error_code="budget_exceeded",
            error_message="projected spend passed",
            retryable=False,
        )
    return principal, job_id, attempt_id


def test_a_job_stopped_for_its_budget_resumes_when_the_budget_allows(sessions: sessionmaker[Session]) -> None:
    principal, job_id, _ = _stop_for_budget(sessions, make_key(sessions))
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.status == states.FAILED and job.error_code == "budget_exceeded"
        assert attempts.latest_checkpoint(s, job_id).step == 40  # type: ignore[union-attr]
    # Spent past its cap: refused, with what it spent and what to do.
    with sessions() as s, pytest.raises(Conflict) as refused:
        jobs.resume_job(s, principal, job_id)
    assert refused.value.code == "budget_exhausted" and refused.value.param == "max_cost_usd"
    assert "$10.50" in str(refused.value) and "higher max_cost_usd" in str(refused.value)
    with sessions() as s, pytest.raises(InvalidRequest):
        jobs.resume_job(s, principal, job_id, max_cost_usd=-1)
    # A team budget used up refuses it too, whatever its cap.
    _set_budget(sessions, "research", 10.0)
    with sessions() as s, pytest.raises(Conflict) as team_refused:
        jobs.resume_job(s, principal, job_id, max_cost_usd=50.0)
    assert team_refused.value.code == "budget_exhausted" and "monthly budget" in str(team_refused.value)
    # With room in both, it is queued again and its next attempt starts from step 40.
    _set_budget(sessions, "research", 1000.0)
    with sessions.begin() as s:
        job = jobs.resume_job(s, principal, job_id, max_cost_usd=50.0)
        assert job.status == states.QUEUED and job.error_code is None and job.finished_at is None
        assert job.spec["policy"]["max_cost_usd"] == 50.0
    attempt_id = _claim(sessions)
    with sessions() as s:
        latest = attempts.latest_checkpoint(s, job_id)
        assert latest is not None and latest.step == 40
        attempts.set_start_step(s, attempt_id, latest.step)
    with sessions() as s:
        attempt = s.get(JobAttempt, attempt_id)
        assert attempt is not None and attempt.number == 2 and attempt.start_step == 40
    assert _run_for(sessions, attempt_id, 60, step=50, total_steps=100).stop_reason is None


def test_only_a_budget_stop_is_resumed_from_failed(sessions: sessionmaker[Session], client: Any) -> None:
    secret = make_key(sessions)
    _, job_id = _job(sessions, secret, cap=None)
    attempt_id = _claim(sessions)
    with sessions() as s:
        queue.finish(s, attempt_id, "failed", error_code="bad_data", retryable=False)
    res = client.post(f"/v1/jobs/{job_id}/resume", headers=headers(secret))
    assert res.status_code == 409 and res.json()["error"]["code"] == "job_not_resumable"
    # Over HTTP, a budget stop: 409 until the cap is raised, then the job is queued.
    _, stopped, _ = _stop_for_budget(sessions, secret)
    res = client.post(f"/v1/jobs/{stopped}/resume", headers=headers(secret))
    assert res.status_code == 409 and res.json()["error"]["code"] == "budget_exhausted"
    bad = client.post(f"/v1/jobs/{stopped}/resume", json={"max_cost_usd": "lots"}, headers=headers(secret))
    assert bad.status_code in (400, 422)
    ok = client.post(f"/v1/jobs/{stopped}/resume", json={"max_cost_usd": 40}, headers=headers(secret))
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "queued"
    with sessions() as s:
        assert s.scalar(select(Team.budget_warn_fraction).where(Team.name == "research")) == 0.8
