"""Sweeps on the platform side, against real Postgres (the trials themselves need Ray; see
tests/ray/test_training.py): a sweep is planned, budgeted and billed as the trials it runs and
the instances they hold at once, its checkpoints are kept per trial, and a resumed sweep starts
where its trials had got together."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key, principal_for

from trainyard.platform import attempts, costs, queue
from trainyard.platform.models import JobAttempt

LONG = {"max_steps": 5000, "batch_size": 4, "seq_len": 64}
SWEEP = {"param_space": {"learning_rate": [1e-4, 2e-4, 3e-4, 4e-4]}, "max_concurrent_trials": 2}


def _create(client: Any, key: str, **body: Any) -> Any:
    return client.post(
        "/v1/jobs", json=job_body(instance_type=None, hyperparameters=LONG, **body), headers=headers(key)
    )


def test_a_sweep_is_planned_budgeted_and_billed_as_its_trials(
    client: Any, sessions: sessionmaker[Session]
) -> None:
    key = make_key(sessions)
    single = _create(client, key).json()["plan"]
    res = _create(client, key, sweep=SWEEP)
    assert res.status_code == 201, res.text
    job = res.json()
    plan = job["plan"]
    assert plan["trials"] == 4 and plan["concurrent_trials"] == 2
    assert plan["usd_per_hour"] == pytest.approx(2 * single["usd_per_hour"])
    assert plan["on_demand_usd_per_hour"] == pytest.approx(2 * single["on_demand_usd_per_hour"])
    assert plan["estimated_seconds"] == pytest.approx(2 * single["estimated_seconds"], rel=1e-3)
    assert plan["estimated_cost_usd"] == pytest.approx(4 * single["estimated_cost_usd"], rel=1e-3)
    assert "4 trials, 2 at a time" in plan["reason"]
    est = client.post(
        "/v1/estimates",
        json=job_body(instance_type=None, hyperparameters=LONG, sweep=SWEEP),
        headers=headers(key),
    )
    assert {o["trials"] for o in est.json()["options"]} == {4}

    # Billed at the rate of both instances it holds.
    with sessions() as s:
        claimed = {c.job_id: c for c in queue.claim(s, worker_id="w", n=5)}
    attempt_id = claimed[job["id"]].attempt_id
    with sessions.begin() as s:
        s.execute(
            text("UPDATE job_attempts SET started_at = started_at - interval '1 hour' WHERE id = :a"),
            {"a": attempt_id},
        )
    with sessions() as s:
        queue.heartbeat(s, attempt_id)
        attempt = s.get(JobAttempt, attempt_id)
        assert attempt is not None
        assert attempt.usd_per_hour == pytest.approx(plan["usd_per_hour"])
        assert attempt.cost_usd == pytest.approx(plan["usd_per_hour"], rel=1e-3)

    # A team budget that holds one run but not four is refused for the sweep.
    admin = principal_for(sessions, make_key(sessions, "ops", role="admin"))
    spent = plan["usd_per_hour"] + single["usd_per_hour"] / 60  # what the claimed attempts have cost
    with sessions.begin() as s:
        costs.set_team_budget(s, admin, "research", spent + single["estimated_cost_usd"] * 2.5)
    refused = _create(client, key, sweep=SWEEP)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "budget_exhausted"


def test_a_sweeps_checkpoints_are_each_its_trials(client: Any, sessions: sessionmaker[Session]) -> None:
    key = make_key(sessions)
    job_id = _create(client, key, sweep=SWEEP).json()["id"]
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w")
    first = claim.attempt_id
    # Two trials report the same step: two rows, not one overwriting the other.
    for trial, tokens in (("t1", 1000), ("t2", 900)):
        with sessions() as s:
            attempts.record_checkpoint(
                s, first, step=10, uri=f"file:///c/{trial}/10", metrics={"tokens_seen": tokens}, trial=trial
            )
    with sessions() as s:
        gone = attempts.record_checkpoint(
            s, first, step=20, uri="file:///c/t1/20", metrics={"tokens_seen": 2000}, keep=1, trial="t1"
        )
    assert gone == ["file:///c/t1/10"]  # t1 keeps one; t2's is its own
    listed = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=headers(key)).json()["data"]
    assert sorted((c["trial"], c["step"]) for c in listed) == [("t1", 20), ("t2", 10)]
    with sessions() as s:
        attempt = s.get(JobAttempt, first)
        assert attempt is not None
        # The sweep got at least as far as its trials together.
        assert (attempt.end_step, attempt.end_tokens) == (30, 2900)
        assert attempts.latest_checkpoint(s, job_id) is None  # no checkpoint of the job itself
    with sessions() as s:
        queue.finish(s, first, "handed_back")
    with sessions() as s:
        [again] = queue.claim(s, worker_id="w")
    with sessions() as s:
        attempts.set_sweep_start(s, again.attempt_id)
    with sessions() as s:
        resumed = s.get(JobAttempt, again.attempt_id)
        assert resumed is not None
        assert (resumed.start_step, resumed.start_tokens, resumed.prior_step) == (30, 2900, 30)
    # Its heartbeat carries the trials' progress together: the ledger counts only what is new.
    with sessions() as s:
        queue.heartbeat(s, again.attempt_id, progress={"step": 45, "total_steps": 400, "tokens": 4400})
    with sessions() as s:
        resumed = s.get(JobAttempt, again.attempt_id)
        assert resumed is not None and resumed.tokens_trained == 1500 and resumed.steps_recomputed == 0
