"""Workers end to end: real Postgres, moto's S3 over HTTP, a Ray cluster started with
`ray start --head` (not ray.init in-process). Few and small: each fit costs most of a minute.
integration/test_worker_attempt.py covers an attempt that ends before it needs Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from support import attempt_pids, headers, make_key
from worker_support import (
    checkpoints,
    grant_assets,
    job_body,
    running,
    wait_for,
    wait_for_checkpoint,
    worker_env,
)

from trainyard.platform import storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Checkpoint, JobAttempt, JobEvent
from trainyard.platform.states import TERMINAL, JobStatus
from trainyard.workers.daemon import WorkerDaemon


def test_job_runs_to_checkpoints_final_model_and_cost_report(
    client: Any, sessions: sessionmaker[Session], daemon: WorkerDaemon, assets: dict[str, str], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    key = make_key(sessions)
    grant_assets(sessions)
    job = client.post("/v1/jobs", json=job_body(assets), headers=headers(key)).json()
    assert job["plan"]["instance_type"] == "local-cpu"
    job = wait_for(client, key, job["id"], lambda j: j["status"] in TERMINAL)
    assert job["status"] == "succeeded", job
    assert job["progress"]["step"] == 24 and job["progress"]["tokens"] > 0
    assert job["progress"]["phase"] == "saving", "the attempt's last phase: the model and the report"
    assert job["cost"]["usd"] > 0 and job["cost"]["billable_seconds"] > 0

    ckpts = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=headers(key)).json()["data"]
    assert [c["step"] for c in ckpts] == [24, 18], "keep: 2, and the API lists what the store holds"
    store = storage.open_store(daemon.settings.storage_uri)
    for c in ckpts:
        prefix = c["uri"].removeprefix(store.root_uri.rstrip("/") + "/")
        assert store.list(prefix), f"{c['uri']} is in the store"

    # keep: 2 holds in the store too: the checkpoints retired as newer ones were recorded are gone.
    # jobs/{id}/attempts/001/checkpoints/{run}/checkpoint_000000024/{file}
    keys = [k.split("/") for k in store.list(f"jobs/{job['id']}/attempts/001/checkpoints/")]
    assert {parts[6] for parts in keys if len(parts) > 7} == {"checkpoint_000000018", "checkpoint_000000024"}
    final = job["result"]["final_model_uri"]
    assert final == store.uri_for(f"jobs/{job['id']}/attempts/001/final"), "the attempt's own prefix"
    model = AutoModelForCausalLM.from_pretrained(storage.download_uri_dir(final, tmp_path / "final"))
    assert model.config.n_layer == 2

    report = json.loads(store.get_bytes(storage.cost_report_key(job["id"])))
    assert report["job_id"] == job["id"] and report["instance_type"] == "local-cpu"
    assert [a["outcome"] for a in report["attempts"]] == ["succeeded"]
    assert report["totals"]["cost_usd"] == pytest.approx(job["cost"]["usd"], rel=1e-3)
    assert report["totals"]["tokens_trained"] == job["progress"]["tokens"]
    assert report["estimate"]["estimated_cost_usd"] == job["plan"]["estimated_cost_usd"]
    types = [
        e["type"]
        for e in client.get(f"/v1/jobs/{job['id']}/events?limit=100", headers=headers(key)).json()["data"]
    ]
    assert {"status", "checkpoint", "metrics", "cost"} <= set(types)


def test_pause_resume_cancel_budget_stop_and_missing_dataset(
    client: Any, sessions: sessionmaker[Session], daemon: WorkerDaemon, assets: dict[str, str]
) -> None:
    key = make_key(sessions)
    grant_assets(sessions)
    nope = job_body(assets, training_file="s3://assets/datasets/nope.jsonl")
    missing = client.post("/v1/jobs", json=nope, headers=headers(key)).json()
    missing = wait_for(client, key, missing["id"], lambda j: j["status"] in TERMINAL)
    assert missing["status"] == "failed" and missing["error"]["code"] == "user_error"
    assert "nope.jsonl" in missing["error"]["message"] and missing["attempts"] == 1

    long = {"max_steps": 400, "batch_size": 4, "seq_len": 32}
    job = client.post("/v1/jobs", json=job_body(assets, hyperparameters=long), headers=headers(key)).json()
    running = wait_for(client, key, job["id"], lambda j: j["progress"]["step"] >= 8)
    assert running["progress"]["phase"] in ("training", "checkpointing"), running["progress"]
    # Pause: the worker checkpoints and hands the job back; resume continues from there.
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/pause", headers=headers(key))
    paused = wait_for(client, key, job["id"], lambda j: j["status"] in TERMINAL | {JobStatus.PAUSED})
    assert paused["status"] == "paused", paused
    paused_at = max(c["step"] for c in checkpoints(client, key, job["id"]))
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume", headers=headers(key))
    wait_for(client, key, job["id"], lambda j: j["attempts"] == 2 and j["progress"]["step"] > paused_at)
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers(key)).json()["status"] == "cancelling"
    job = wait_for(client, key, job["id"], lambda j: j["status"] in TERMINAL)
    assert job["status"] == "cancelled"
    with sessions() as s:
        outcomes = s.scalars(
            select(JobAttempt.outcome).where(JobAttempt.job_id == job["id"]).order_by(JobAttempt.number)
        ).all()
        start = s.scalar(
            select(JobAttempt.start_step).where(JobAttempt.job_id == job["id"], JobAttempt.number == 2)
        )
    assert outcomes == ["handed_back", "cancelled"]
    assert start == paused_at, "the resumed attempt started from the pause's checkpoint"

    capped = client.post(
        "/v1/jobs",
        json=job_body(assets, hyperparameters=long, policy={"max_cost_usd": 1.0}),
        headers=headers(key),
    ).json()
    # A local CPU run costs fractions of a cent: lower the cap under what this run will spend,
    # as if the estimate had been far too low, and the worker must stop it.
    with sessions.begin() as s:
        s.execute(
            text(
                "UPDATE jobs SET spec = jsonb_set(spec, '{policy,max_cost_usd}', '0.000001') WHERE id = :id"
            ),
            {"id": capped["id"]},
        )
    capped = wait_for(client, key, capped["id"], lambda j: j["status"] in TERMINAL)
    assert capped["status"] == "failed" and capped["error"]["code"] == "budget_exceeded"
    assert capped["attempts"] == 1, "a budget stop is not retried"


def test_sigkill_mid_run_resumes_from_last_checkpoint(
    client: Any,
    sessions: sessionmaker[Session],
    worker_settings: Any,
    ray_address: str,
    assets: dict[str, str],
) -> None:
    key = make_key(sessions)
    grant_assets(sessions)
    body = job_body(assets, hyperparameters={"max_steps": 60, "batch_size": 4, "seq_len": 32})
    job = client.post("/v1/jobs", json=body, headers=headers(key)).json()
    env = worker_env(worker_settings, ray_address)
    # The first worker runs as its own process group: `trainyard worker` and its attempt.
    first = subprocess.Popen(
        [sys.executable, "-m", "trainyard.cli", "worker"], env=env, start_new_session=True
    )
    try:
        wait_for(client, key, job["id"], lambda j: j["status"] == "running")
        wait_for_checkpoint(sessions, job["id"])
        pids = attempt_pids(first.pid)
        os.killpg(first.pid, signal.SIGKILL)
        assert pids, "the attempt runs in a process of its own"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
    finally:
        first.wait(timeout=30)

    second = WorkerDaemon(
        worker_settings, load_deployment(worker_settings), pools=["local-cpu"], ray_address=ray_address
    )
    with running(second):
        done = wait_for(client, key, job["id"], lambda j: j["status"] in TERMINAL, timeout=300)
    assert done["status"] == "succeeded", done
    with sessions() as s:
        attempts = s.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job["id"]).order_by(JobAttempt.number)
        ).all()
        assert [a.outcome for a in attempts] == ["lost", "succeeded"]
        assert attempts[1].start_step > 0, "attempt 2 resumed from a checkpoint"
        recorded = s.scalars(
            select(JobEvent.data["step"].as_integer()).where(
                JobEvent.attempt_id == attempts[0].id, JobEvent.type == "checkpoint"
            )
        ).all()
        assert attempts[1].start_step == max(recorded), "resumed from attempt 1's last recorded checkpoint"
        # The rescuer records attempt 1's end; nothing else may carry attempt 1's id afterwards.
        after_death = text("to_timestamp(:t)").bindparams(t=killed_at + 1)
        stale = s.execute(
            select(JobEvent.type, JobEvent.message).where(
                JobEvent.attempt_id == attempts[0].id,
                JobEvent.created_at > after_death,
                JobEvent.type != "status",
            )
        ).all()
        assert stale == [], "the killed attempt wrote nothing after its death"
        stale_ckpts = s.scalars(
            select(Checkpoint.step).where(
                Checkpoint.attempt_id == attempts[0].id, Checkpoint.created_at > after_death
            )
        ).all()
        assert stale_ckpts == []
    report = json.loads(
        storage.open_store(worker_settings.storage_uri).get_bytes(storage.cost_report_key(job["id"]))
    )
    assert [a["outcome"] for a in report["attempts"]] == ["lost", "succeeded"]
    assert report["totals"]["wasted_usd"] > 0
