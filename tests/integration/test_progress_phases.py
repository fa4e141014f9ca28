"""A job's phase and a sweep's trial n of m, as heartbeats write them (real Postgres) and the
API and the SDK read them back: queued before a claim, starting_workers from it, then what the
run reports, and queued again when the job goes back in line."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import AppTransport, headers, job_body, make_sdk

from trainyard.platform import queue, states
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import Job
from trainyard.platform.states import AttemptOutcome, JobPhase

pytestmark = pytest.mark.usefixtures("isolated_config")

SWEEP = {"param_space": {"learning_rate": [1e-4, 3e-4]}, "num_samples": 2, "max_concurrent_trials": 1}


def _get(client: Any, key: str, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}", headers=headers(key))
    assert r.status_code == 200, r.text
    return dict(r.json()["progress"])


def test_each_phase_a_heartbeat_writes_reads_back_through_the_api_and_the_sdk(
    client: Any, key: str, sessions: sessionmaker[Session]
) -> None:
    created = client.post("/v1/jobs", json=job_body(), headers=headers(key))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["progress"]["phase"] == "queued"
    sdk = make_sdk(AppTransport(client), key)
    assert sdk.jobs.get(job_id).progress.phase == "queued"

    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w")
    assert _get(client, key, job_id)["phase"] == "starting_workers"

    # What the attempt and then the run's rank 0 report, in the order a run goes through them.
    reports: list[dict[str, Any]] = [
        {"phase": "starting_workers"},
        {"phase": "loading_model"},
        {"phase": "training"},
        {"phase": "training", "step": 5, "total_steps": 20, "tokens": 1280, "loss": 3.1},
        {"phase": "checkpointing", "step": 10, "total_steps": 20, "tokens": 2560, "loss": 2.9},
        {"phase": "saving", "step": 20, "total_steps": 20, "tokens": 5120, "loss": 2.5},
    ]
    for report in reports:
        with sessions() as s:
            queue.heartbeat(s, claim.attempt_id, progress=report)
        seen = _get(client, key, job_id)
        progress = sdk.jobs.get(job_id).progress
        assert seen["phase"] == progress.phase == report["phase"]
        # A phase alone leaves the figures as they were: a step once reported stays.
        assert (
            progress.step
            == seen["step"]
            == max(r.get("step", 0) for r in reports[: reports.index(report) + 1])
        )
        assert progress.trial is None and progress.trials is None
    assert progress.total_steps == 20 and progress.tokens == 5120 and progress.loss == 2.5

    # A word the vocabulary does not spell is refused, and nothing of that beat is written.
    with sessions() as s, pytest.raises(ValueError, match="unknown progress phase 'warming_up'"):
        queue.heartbeat(s, claim.attempt_id, progress={"phase": "warming_up", "step": 21})
    assert _get(client, key, job_id)["phase"] == "saving"
    assert _get(client, key, job_id)["step"] == 20

    with sessions() as s:
        queue.finish(s, claim.attempt_id, AttemptOutcome.SUCCEEDED)
    done = sdk.jobs.get(job_id)
    assert done.status == "succeeded" and done.progress.phase == "saving"


def test_a_job_back_in_line_is_queued_again_whatever_its_attempt_was_doing(
    client: Any, key: str, sessions: sessionmaker[Session]
) -> None:
    job_id = client.post("/v1/jobs", json=job_body(), headers=headers(key)).json()["id"]
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w")
        queue.heartbeat(s, claim.attempt_id, progress={"phase": "training", "step": 4, "tokens": 1024})
    # Preempted mid-run: retried, so it waits again (its step stays: the next attempt resumes).
    with sessions() as s:
        assert queue.finish(s, claim.attempt_id, AttemptOutcome.PREEMPTED, backoff_base=0) == "queued"
    progress = _get(client, key, job_id)
    assert progress["phase"] == "queued" and progress["step"] == 4
    with sessions() as s:
        [again] = queue.claim(s, worker_id="w")
    assert again.job_id == job_id and _get(client, key, job_id)["phase"] == "starting_workers"
    with sessions() as s, pytest.raises(LeaseLost):
        queue.heartbeat(s, claim.attempt_id, progress={"phase": "training"})
    # Paused and resumed through the API: queued again by the state machine's own move.
    with sessions() as s:
        queue.heartbeat(s, again.attempt_id, progress={"phase": "checkpointing"})
        queue.finish(s, again.attempt_id, AttemptOutcome.HANDED_BACK)
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.progress = {**job.progress, "phase": "training"}  # as a stale write would leave it
        states.transition(s, job, states.PAUSED, message="paused")
        states.transition(s, job, states.QUEUED, message="resumed")
    assert _get(client, key, job_id)["phase"] == "queued"


def test_a_sweep_says_which_trial_it_has_got_to(
    client: Any, key: str, sessions: sessionmaker[Session]
) -> None:
    r = client.post("/v1/jobs", json=job_body(sweep=SWEEP), headers=headers(key))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    sdk = make_sdk(AppTransport(client), key)
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w")
        queue.heartbeat(s, claim.attempt_id, progress={"phase": "starting_workers", "trials": 4})
    before = sdk.jobs.get(job_id).progress
    assert before.phase == "starting_workers" and before.trial is None and before.trials == 4
    with sessions() as s:
        queue.heartbeat(s, claim.attempt_id, progress={"phase": "loading_model", "trial": 1, "trials": 4})
    seen = _get(client, key, job_id)
    assert (seen["phase"], seen["trial"], seen["trials"], seen["step"]) == ("loading_model", 1, 4, 0)
    with sessions() as s:
        queue.heartbeat(
            s, claim.attempt_id, progress={"phase": "training", "trial": 3, "trials": 4, "step": 25}
        )
    progress = sdk.jobs.get(job_id).progress
    assert (progress.phase, progress.trial, progress.trials, progress.step) == ("training", 3, 4, 25)
    for bad in ({"trial": 5, "trials": 4}, {"trial": 0, "trials": 4}, {"trials": "four"}):
        with sessions() as s, pytest.raises(ValueError, match="trial"):
            queue.heartbeat(s, claim.attempt_id, progress=bad)
    assert sdk.jobs.get(job_id).progress.trial == 3
    assert JobPhase.TRAINING in states.PHASES
