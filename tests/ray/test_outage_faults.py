"""Real training runs through outages of what they depend on.

- A Postgres of the test's own stopped for 20 s mid-training, while the API (`trainyard api` in a
  subprocess), the worker daemon and the attempt all use it: the API answers 503 meanwhile, the
  daemon and the attempt ride it out, and the job succeeds once, with every checkpoint written
  during the outage recorded afterwards.
- The object store behind a TCP proxy that drops every connection for 30 s while checkpoints are
  being uploaded: the job succeeds, and every checkpoint the API lists is whole and loadable.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from live import OwnPostgres, Proxy, live_api, team_key
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support import headers, make_key
from worker_support import (
    checkpoints,
    grant_assets,
    job_body,
    running,
    wait_for,
    wait_for_checkpoint,
    worker_env,
)

from trainyard.platform import auth, db, storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Job, JobAttempt, JobEvent, SourceGrant
from trainyard.platform.states import TERMINAL
from trainyard.settings import get_settings
from trainyard.workers.daemon import WorkerDaemon

DOWN_SECONDS = 20.0
CUT_SECONDS = 30.0


def test_postgres_down_for_20_s_mid_training_loses_nothing(
    own_pg: OwnPostgres, ray_address: str, assets: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    url = own_pg.create_database()
    key = team_key(url, "outage")
    engine = db.make_engine(url, pool_size=1, max_overflow=0)
    sessions = db.make_sessionmaker(engine)
    with sessions.begin() as s:
        s.add(SourceGrant(team_id=auth.get_team_by_name(s, "outage").id, uri="s3://assets"))
    settings = get_settings(
        database_url=url,
        storage_uri=s3_bucket,
        heartbeat_seconds=1.0,
        lease_seconds=60.0,
        poll_seconds=0.5,
        retry_backoff_seconds=0.0,
    )
    daemon = WorkerDaemon(settings, load_deployment(settings), pools=["local-cpu"], ray_address=ray_address)
    probes: dict[str, Counter[str]] = {"down": Counter(), "other": Counter()}
    phase = "up"
    stop = threading.Event()
    try:
        with (
            running(daemon) as worker,
            live_api(tmp_path, {"TRAINYARD_DATABASE_URL": url, "TRAINYARD_STORAGE_URI": s3_bucket}) as api,
            httpx.Client(base_url=api.base_url, timeout=10.0) as http,
        ):
            body = job_body(assets, hyperparameters={"max_steps": 150, "batch_size": 4, "seq_len": 32})
            job = http.post("/v1/jobs", json=body, headers=headers(key)).json()
            wait_for(http, key, job["id"], lambda j: (j["progress"]["step"] or 0) >= 12)

            def probe() -> None:
                while not stop.is_set():
                    sent = phase
                    try:
                        outcome = str(http.get(f"/v1/jobs/{job['id']}", headers=headers(key)).status_code)
                    except httpx.TimeoutException:
                        outcome = "hang"
                    except httpx.HTTPError as exc:
                        outcome = type(exc).__name__
                    probes["down" if sent == phase == "down" else "other"][outcome] += 1
                    time.sleep(0.3)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            step_before = wait_for(http, key, job["id"], lambda j: True)["progress"]["step"]
            own_pg.stop()
            phase = "down"
            time.sleep(DOWN_SECONDS)
            phase = "starting"
            own_pg.start()
            phase = "after"
            done = wait_for(http, key, job["id"], lambda j: j["status"] in TERMINAL, timeout=300)
            stop.set()
            prober.join(timeout=15)
            listed = http.get(f"/v1/jobs/{job['id']}/checkpoints", headers=headers(key)).json()["data"]
            assert worker.is_alive(), "the daemon rode the outage out"
    finally:
        stop.set()

    down = probes["down"]
    with sessions() as s:
        outcomes = s.scalars(select(JobAttempt.outcome).where(JobAttempt.job_id == job["id"])).all()
        jobs = s.scalar(select(Job.id).where(Job.team_id == auth.get_team_by_name(s, "outage").id))
        steps = s.scalars(
            select(JobEvent.data["step"].as_integer()).where(
                JobEvent.job_id == job["id"], JobEvent.type == "checkpoint"
            )
        ).all()
    engine.dispose()
    print(
        f"\nPostgres {DOWN_SECONDS:.0f} s down mid-training (from step {step_before}): "
        f"1 job, {done['status']}, "
        f"attempts {list(outcomes)}, API during the outage {dict(down)}; "
        f"{len(steps)} checkpoints recorded, steps {min(steps)}..{max(steps)}"
    )
    assert done["status"] == "succeeded", done
    assert list(outcomes) == ["succeeded"], "the attempt survived the outage: no retry, no rescue"
    assert jobs == job["id"], "one job, not lost, not duplicated"
    assert down and set(down) == {"503"}, f"the API answered only 503 while the database was down: {down}"
    # Every checkpoint the run wrote was recorded, those written during the outage too.
    assert sorted(steps) == list(range(6, 151, 6)), steps
    store = storage.open_store(s3_bucket)
    for c in listed:
        key_prefix = c["uri"].removeprefix(store.root_uri.rstrip("/") + "/")
        assert any(k.endswith("model.safetensors") for k in store.list(key_prefix)), c
    assert store.exists(storage.cost_report_key(job["id"]))


def test_the_store_cut_for_30_s_during_checkpoint_uploads_leaves_only_whole_checkpoints(
    client: Any,
    sessions: sessionmaker[Session],
    worker_settings: Any,
    ray_address: str,
    assets: dict[str, str],
    s3_server: str,
    tmp_path: Path,
) -> None:
    from urllib.parse import urlsplit

    from transformers import AutoModelForCausalLM

    upstream = urlsplit(s3_server)
    assert upstream.hostname and upstream.port
    proxy = Proxy((upstream.hostname, upstream.port))
    key = make_key(sessions)
    grant_assets(sessions)
    body = job_body(assets, hyperparameters={"max_steps": 90, "batch_size": 4, "seq_len": 32})
    job = client.post("/v1/jobs", json=body, headers=headers(key)).json()
    # `trainyard worker` and its attempts reach the store only through the proxy: the daemon, the
    # attempt process and, through the run's runtime environment, every Ray Train worker.
    env = worker_env(
        worker_settings,
        ray_address,
        TRAINYARD_RETRY_BACKOFF_SECONDS="5",
        AWS_ENDPOINT_URL=proxy.url,
        AWS_ENDPOINT_URL_S3=proxy.url,
    )
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - the child writes it
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainyard.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def alive() -> None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]

        wait_for_checkpoint(sessions, job["id"], alive)
        proxy.cut()
        time.sleep(CUT_SECONDS)
        proxy.restore()
        done = wait_for(client, key, job["id"], lambda j: j["status"] in TERMINAL, timeout=400)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=90)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        proxy.close()
    with sessions() as s:
        outcomes = s.scalars(
            select(JobAttempt.outcome).where(JobAttempt.job_id == job["id"]).order_by(JobAttempt.number)
        ).all()
    listed = checkpoints(client, key, job["id"])
    print(
        f"\nstore cut {CUT_SECONDS:.0f} s during checkpoint uploads: job {done['status']}, attempts "
        f"{list(outcomes)}, {proxy.refused} connections refused; "
        f"checkpoints listed {[c['step'] for c in listed]}"
    )
    assert done["status"] == "succeeded", (done, (tmp_path / "worker.log").read_text()[-3000:])
    assert listed, "the job lists its checkpoints"
    for c in listed:
        local = storage.download_uri_dir(c["uri"], tmp_path / f"ckpt-{c['step']}")
        assert (local / "trainer_state.json").is_file() and (local / "optimizer.pt").is_file(), c
        assert AutoModelForCausalLM.from_pretrained(local).config.n_layer == 2
    store = storage.open_store(worker_settings.storage_uri)
    assert store.exists(storage.cost_report_key(job["id"]))
