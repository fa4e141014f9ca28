"""Processes that hang or freeze under a real Ray run: a stop of training whose Ray workers are
SIGSTOPped ends within its grace period, and an attempt process SIGSTOPped past its lease writes
nothing once another attempt owns its job (real Postgres, moto's S3 over HTTP, `ray start`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, make_key
from worker_support import grant_assets, job_body, running, wait_for, wait_for_checkpoint

from trainyard.platform import storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Checkpoint, JobAttempt, JobEvent
from trainyard.platform.states import TERMINAL, JobStatus
from trainyard.workers.daemon import WorkerDaemon

GRACE = 5.0
REPORTED = TERMINAL | {JobStatus.PAUSED}
LONG = {"max_steps": 2000, "batch_size": 4, "seq_len": 32}


def _pids(pattern: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return {int(p) for p in out} - {os.getpid()}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _report(store: Any, job_id: str) -> dict[str, Any]:
    return json.loads(store.get_bytes(storage.cost_report_key(job_id)))


def _hang_then_stop(
    client: Any, sessions: sessionmaker[Session], key: str, job: dict[str, Any], stop: Any
) -> tuple[dict[str, Any], float, set[int]]:
    """Wait until `job` trains, SIGSTOP its Ray Train workers, `stop()` it; returns the job once
    it has ended (or paused), the seconds that took, and the frozen pids."""
    wait_for(client, key, job["id"], lambda j: (j["progress"]["step"] or 0) >= 2)
    hung = _pids("ray::RayTrainWorker")
    assert hung, "the run's Ray Train workers"
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    asked = time.monotonic()
    stop()
    ended = wait_for(client, key, job["id"], lambda j: j["status"] in REPORTED, timeout=GRACE + 60)
    return ended, time.monotonic() - asked, hung


def test_cancel_pause_and_budget_stop_of_hung_training_end_within_the_grace_period(
    client: Any,
    sessions: sessionmaker[Session],
    worker_settings: Any,
    ray_address: str,
    assets: dict[str, str],
) -> None:
    worker_settings.stop_grace_seconds = GRACE
    key = make_key(sessions)
    grant_assets(sessions)
    store = storage.open_store(worker_settings.storage_uri)
    daemon = WorkerDaemon(
        worker_settings, load_deployment(worker_settings), pools=["local-cpu"], ray_address=ray_address
    )

    def lower_cap(job_id: str) -> None:
        # As if the estimate had been far too low: the next heartbeat finds the cap passed.
        with sessions.begin() as s:
            s.execute(
                text("UPDATE jobs SET spec = jsonb_set(spec, '{policy,max_cost_usd}', '1e-6') WHERE id=:id"),
                {"id": job_id},
            )

    stops = {
        "cancelled": lambda j: client.post(f"/v1/jobs/{j}/cancel", headers=headers(key)),
        "paused": lambda j: client.post(f"/v1/fine_tuning/jobs/{j}/pause", headers=headers(key)),
        "failed": lower_cap,
    }
    figures = []
    with running(daemon):
        for status, stop in stops.items():
            # A cap far above what the run costs, until `lower_cap`.
            policy = {"max_cost_usd": 1000.0} if status == "failed" else {}
            body = job_body(assets, hyperparameters=LONG, policy=policy)
            job = client.post("/v1/jobs", json=body, headers=headers(key)).json()
            ended, took, hung = _hang_then_stop(client, sessions, key, job, lambda j=job["id"], f=stop: f(j))
            figures.append(f"{status} in {took:.1f}s")
            assert ended["status"] == status, ended
            assert took <= GRACE + 15, f"{status}: ended {took:.1f}s after the request (grace {GRACE:.0f}s)"
            if status == "failed":
                assert ended["error"]["code"] == "budget_exceeded", ended
            report = _report(store, job["id"])
            assert report["status"] == status and report["totals"]["cost_usd"] > 0
            # Ending the attempt ended its Ray job: the frozen workers are gone, not billing on.
            deadline = time.monotonic() + 30
            while any(_alive(p) for p in hung) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not [p for p in hung if _alive(p)], "the hung Ray workers were killed"
            with sessions() as s:
                [message] = s.scalars(select(JobAttempt.error_message).where(JobAttempt.job_id == job["id"]))
            assert message is not None and "was killed" in message, message
    print(f"hung training, stops with a {GRACE:.0f}s grace: " + ", ".join(figures))


def test_an_attempt_frozen_past_its_lease_writes_nothing_once_another_owns_the_job(
    client: Any,
    sessions: sessionmaker[Session],
    worker_settings: Any,
    ray_address: str,
    assets: dict[str, str],
) -> None:
    worker_settings.lease_seconds = 10.0
    key = make_key(sessions)
    grant_assets(sessions)
    store = storage.open_store(worker_settings.storage_uri)
    deployment = load_deployment(worker_settings)
    hp = {"max_steps": 60, "batch_size": 4, "seq_len": 32}
    job = client.post("/v1/jobs", json=job_body(assets, hyperparameters=hp), headers=headers(key)).json()
    first = WorkerDaemon(worker_settings, deployment, pools=["local-cpu"], ray_address=ray_address)
    with running(first):
        wait_for_checkpoint(sessions, job["id"])
        [attempt_1] = first.running
        [pid] = _pids(f"trainyard.workers.attempt {attempt_1}")
        os.kill(pid, signal.SIGSTOP)
        try:
            # The first daemon's one slot is held by the frozen attempt; a second takes the job over.
            second = WorkerDaemon(worker_settings, deployment, pools=["local-cpu"], ray_address=ray_address)
            with running(second):
                wait_for(client, key, job["id"], lambda j: j["attempts"] == 2 and j["status"] == "running")
                with sessions() as s:
                    rescued_at = s.scalar(select(JobAttempt.ended_at).where(JobAttempt.id == attempt_1))
                assert isinstance(rescued_at, datetime)
                os.kill(pid, signal.SIGCONT)
                done = wait_for(client, key, job["id"], lambda j: j["status"] in TERMINAL, timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert done["status"] == "succeeded", done
    assert not _alive(pid), "the frozen attempt exited once it woke past its lease"
    with sessions() as s:
        attempts = s.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job["id"]).order_by(JobAttempt.number)
        ).all()
        assert [a.outcome for a in attempts] == ["lost", "succeeded"]
        late = text("to_timestamp(:t)").bindparams(t=rescued_at.timestamp())
        assert not s.scalars(
            select(JobEvent.type).where(
                JobEvent.attempt_id == attempt_1, JobEvent.created_at > late, JobEvent.type != "status"
            )
        ).all(), "no event from attempt 1 after the rescue"
        assert not s.scalars(
            select(Checkpoint.step).where(Checkpoint.attempt_id == attempt_1, Checkpoint.created_at > late)
        ).all(), "no checkpoint row from attempt 1 after the rescue"
        recorded = s.scalars(
            select(JobEvent.data["step"].as_integer()).where(
                JobEvent.attempt_id == attempt_1, JobEvent.type == "checkpoint"
            )
        ).all()
        assert attempts[1].start_step == max(recorded), "attempt 2 resumed from a recorded checkpoint"
    # Nothing in the store from attempt 1 after the rescue, and no final model of its own.
    import boto3

    s3 = boto3.client("s3")
    bucket, _, root = worker_settings.storage_uri.removeprefix("s3://").partition("/")
    prefix = "/".join(p for p in (root, f"jobs/{job['id']}/attempts/001/") if p)
    objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    # The worker keeps shipping what the frozen process printed (its lease loss among it) to that
    # attempt's own log, which no later attempt reads; nothing the attempt writes lands there.
    logs = f"{prefix}logs/"
    after = [o["Key"] for o in objects if o["LastModified"] > rescued_at and not o["Key"].startswith(logs)]
    assert after == [], f"attempt 1 wrote {after} after the rescue"
    assert not [o for o in objects if "/final/" in o["Key"]], "attempt 1 left no final model"
    assert done["result"]["final_model_uri"] == store.uri_for(f"jobs/{job['id']}/attempts/002/final")
    report = _report(store, job["id"])
    assert [a["outcome"] for a in report["attempts"]] == ["lost", "succeeded"]


def test_a_plan_the_live_nodes_cannot_hold_is_refused_before_a_worker_group_waits(ray_address: str) -> None:
    import ray

    from trainyard.settings import get_settings
    from trainyard.workers.cluster import InsufficientResources, check_fits
    from trainyard.workers.scaling import scaling_for

    catalog = load_deployment(get_settings()).catalog
    nodes = ray.nodes()
    check_fits(scaling_for(catalog.get("local-cpu")), nodes, "local-cpu")  # 2 workers, 2 CPUs
    # Four 1-CPU workers on the session's 2-CPU cluster would wait for their placement forever.
    with pytest.raises(InsufficientResources, match=r"needs 4 worker\(s\) of \{CPU: 1\} each.*can hold 2"):
        check_fits(scaling_for(catalog.get("c7i.8xlarge")), nodes, "c7i.8xlarge")
