"""A pool on a node group of a real multi-node Ray cluster (`ray start` processes on this
machine: a head that trains nothing and two worker nodes carrying the pool's resource), and a
spot reclaim announced the way a cloud's reaches Ray (`ray drain-node` with the preemption
reason and a deadline): the run saves the step it is at, the attempt ends `preempted`, and the
job resumes from exactly that step on the other node."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support import headers, make_key
from worker_support import grant_assets, job_body, running, wait_for

from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Checkpoint, JobAttempt, JobEvent
from trainyard.testing.ray_cluster import node_cluster
from trainyard.workers.daemon import WorkerDaemon

STEPS = 600
POOL = {"instance_type": "local-cpu", "max_concurrent": 1, "ray_resource": {"pool-spot": 1}}


def _rank_nodes(sessions: sessionmaker[Session], attempt_id: str) -> set[str]:
    """The Ray nodes an attempt's ranks reported running on."""
    with sessions() as s:
        data = s.scalars(select(JobEvent.data).where(JobEvent.attempt_id == attempt_id))
        return {d["node_id"] for d in data if d and "node_id" in d}


def _attempts(sessions: sessionmaker[Session], job_id: str) -> list[JobAttempt]:
    with sessions() as s:
        return list(
            s.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number))
        )


def test_a_drained_spot_node_saves_its_step_and_the_job_resumes_there_on_another_node(
    client: Any, sessions: sessionmaker[Session], worker_settings: Any, assets: dict[str, str]
) -> None:
    key = make_key(sessions)
    grant_assets(sessions)
    # Ray Train's preemption watcher looks every 5 s by default; once a second keeps the test short
    # and the notice well inside a run that would otherwise finish first.
    watcher = {"RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "1"}
    with node_cluster({"a": {"pool-spot": 2}, "b": {"pool-spot": 2}}, env=watcher) as cluster:
        worker_settings.pools = json.dumps([POOL])
        daemon = WorkerDaemon(
            worker_settings,
            load_deployment(worker_settings),
            pools=["local-cpu"],
            ray_address=cluster.address,
        )
        # No periodic checkpoint: the only one is the one the preemption notice makes.
        body = job_body(
            assets,
            hyperparameters={"max_steps": STEPS, "batch_size": 4, "seq_len": 32},
            checkpoint={"every_steps": 100000, "keep": 2},
        )
        ids = cluster.node_ids()
        name_of = {node_id: name for name, node_id in ids.items()}
        with running(daemon):
            job = client.post("/v1/jobs", json=body, headers=headers(key)).json()
            wait_for(client, key, job["id"], lambda j: (j["progress"]["step"] or 0) >= 1, timeout=300)
            [first] = _attempts(sessions, job["id"])
            used = {name_of.get(n, "head") for n in _rank_nodes(sessions, first.id)}
            # The pool's resource is only on the worker nodes; both ranks fit on one of them.
            assert len(used) == 1 and used <= {"a", "b"}, used
            [victim] = used
            drained_at = time.monotonic()
            cluster.drain(ids[victim], deadline_s=120)
            wait_for(client, key, job["id"], lambda j: j["attempts"] >= 2, timeout=180)
            preempted_in = time.monotonic() - drained_at
            ended = wait_for(client, key, job["id"], lambda j: j["status"] == "succeeded", timeout=300)

    first, second = _attempts(sessions, job["id"])
    assert (first.outcome, first.error_code) == ("preempted", "preempted")
    assert second.outcome == "succeeded" and ended["progress"]["step"] == STEPS
    with sessions() as s:
        [saved] = s.scalars(select(Checkpoint).where(Checkpoint.attempt_id == first.id))
    # Not a step lost: the checkpoint is of the step the notice stopped the run at, and the next
    # attempt started there.
    assert saved.step == first.end_step and 1 <= saved.step < STEPS
    assert second.start_step == saved.step
    elsewhere = {name_of.get(n, "head") for n in _rank_nodes(sessions, second.id)}
    assert elsewhere and victim not in elsewhere and elsewhere <= {"a", "b"}, elsewhere
    print(
        f"drain notice -> attempt preempted and the job requeued in {preempted_in:.1f}s; "
        f"saved step {saved.step}, resumed at {second.start_step}: 0 steps lost"
    )
