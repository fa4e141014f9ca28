"""Spot capacity on a real multi-node Ray cluster (`ray start` processes on this machine): a head
that trains nothing, two spot nodes and one on-demand node, all carrying the pool's resource and
each a marker of its capacity. Two ways a spot node goes:

- announced, the way a cloud's reclaim reaches Ray (`ray drain-node` with the preemption reason
  and a deadline): the run saves the step it is at, the attempt ends `preempted`, and the job
  resumes from exactly that step on the other spot node;
- without notice (the node's processes SIGKILLed): the attempt ends `preempted`, not `crashed`;
  the deadline contract, which cannot see the job surviving a second interruption on spot, moves
  it to on-demand, and it resumes from its last recorded checkpoint on the on-demand node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, make_key
from worker_support import grant_assets, job_body, running, wait_for

from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Checkpoint, JobAttempt, JobEvent
from trainyard.platform.scheduling.catalog import DEFAULT_CATALOG_PATH
from trainyard.platform.scheduling.constants import DEFAULT_CONSTANTS_PATH
from trainyard.testing.ray_cluster import NodeCluster, node_cluster
from trainyard.workers.daemon import WorkerDaemon

STEPS = 600
SPOT_NODES = {"a", "b"}
POOL = {
    "instance_type": "local-cpu",
    "max_concurrent": 1,
    "ray_resource": {"pool-cpu": 1},
    "capacity_resources": {"spot": {"spot-node": 1}, "on_demand": {"on-demand-node": 1}},
}
# A spot market for this machine's type: a fifth of the on-demand price, reclaimed about every
# two minutes, a minute to come back. What an operator would write from what they observed.
SPOT_USD_PER_HOUR = 0.01
INTERRUPTIONS_PER_HOUR = 30.0
RESTART_SECONDS = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[NodeCluster]:
    env = {
        # Ray Train's preemption watcher looks every 5 s by default; once a second keeps the
        # notice well inside a run that would otherwise finish first.
        "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "1",
        # A node that stops answering is marked dead after ~3 s rather than Ray's default ~15 s.
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    nodes = {
        "a": {"pool-cpu": 2, "spot-node": 2},
        "b": {"pool-cpu": 2, "spot-node": 2},
        "c": {"pool-cpu": 2, "on-demand-node": 2},
    }
    with node_cluster(nodes, env=env) as c:
        yield c


@pytest.fixture
def spot_settings(worker_settings: Any, tmp_path: Path) -> Any:
    """The API's and the worker's settings: this pool, and a catalog and estimator assumptions
    that price and rate the spot market above."""
    catalog = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text())
    for row in catalog["instance_types"]:
        if row["name"] == "local-cpu":
            row["spot_usd_per_hour"] = SPOT_USD_PER_HOUR
    constants = yaml.safe_load(DEFAULT_CONSTANTS_PATH.read_text())
    constants["spot"]["preemptions_per_hour"]["cpu"] = INTERRUPTIONS_PER_HOUR
    constants["spot"]["restart_overhead_seconds"] = RESTART_SECONDS
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    (tmp_path / "constants.yaml").write_text(yaml.safe_dump(constants))
    worker_settings.catalog_path = str(tmp_path / "catalog.yaml")
    worker_settings.estimator_constants_path = str(tmp_path / "constants.yaml")
    worker_settings.pools = json.dumps([POOL])
    return worker_settings


@pytest.fixture
def api(spot_settings: Any, sessions: sessionmaker[Session]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from trainyard.api.app import create_app

    with TestClient(create_app(spot_settings), raise_server_exceptions=False) as c:
        yield c


def _daemon(settings: Any, cluster: NodeCluster) -> WorkerDaemon:
    return WorkerDaemon(settings, load_deployment(settings), pools=["local-cpu"], ray_address=cluster.address)


def _rank_nodes(sessions: sessionmaker[Session], attempt_id: str, cluster: NodeCluster) -> set[str]:
    """The names of the nodes an attempt's ranks reported running on ("?" for any other)."""
    name_of = {node_id: name for name, node_id in cluster.known.items()}
    with sessions() as s:
        data = s.scalars(select(JobEvent.data).where(JobEvent.attempt_id == attempt_id))
        return {name_of.get(d["node_id"], "?") for d in data if d and "node_id" in d}


def _attempts(sessions: sessionmaker[Session], job_id: str) -> list[JobAttempt]:
    with sessions() as s:
        return list(
            s.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number))
        )


def _checkpoint_steps(sessions: sessionmaker[Session], attempt_id: str) -> list[int]:
    with sessions() as s:
        return sorted(s.scalars(select(Checkpoint.step).where(Checkpoint.attempt_id == attempt_id)))


def _db_now(sessions: sessionmaker[Session]) -> datetime:
    with sessions() as s:
        now = s.scalar(select(func.now()))
    assert now is not None
    return now


def test_a_drained_spot_node_saves_its_step_and_the_job_resumes_there_on_another_node(
    api: Any,
    sessions: sessionmaker[Session],
    spot_settings: Any,
    assets: dict[str, str],
    cluster: NodeCluster,
) -> None:
    key = make_key(sessions)
    grant_assets(sessions)
    # No periodic checkpoint: the only one is the one the preemption notice makes.
    body = job_body(
        assets,
        hyperparameters={"max_steps": STEPS, "batch_size": 4, "seq_len": 32},
        checkpoint={"every_steps": 100000, "keep": 2},
        policy={"spot": "always"},
    )
    with running(_daemon(spot_settings, cluster)):
        job = api.post("/v1/jobs", json=body, headers=headers(key)).json()
        assert job["plan"]["spot"] is True, job["plan"]
        wait_for(api, key, job["id"], lambda j: (j["progress"]["step"] or 0) >= 1, timeout=300)
        [first] = _attempts(sessions, job["id"])
        used = _rank_nodes(sessions, first.id, cluster)
        # Spot capacity runs on spot nodes only; both ranks fit on one of them.
        assert len(used) == 1 and used <= SPOT_NODES, used
        [victim] = used
        drained_at = time.monotonic()
        cluster.drain(cluster.known[victim], deadline_s=120)
        wait_for(api, key, job["id"], lambda j: j["attempts"] >= 2, timeout=180)
        preempted_in = time.monotonic() - drained_at
        ended = wait_for(api, key, job["id"], lambda j: j["status"] == "succeeded", timeout=300)

    first, second = _attempts(sessions, job["id"])
    assert (first.outcome, first.error_code) == ("preempted", "preempted")
    assert second.outcome == "succeeded" and ended["progress"]["step"] == STEPS
    [saved] = _checkpoint_steps(sessions, first.id)
    # Not a step lost: the checkpoint is of the step the notice stopped the run at, and the next
    # attempt started there.
    assert saved == first.end_step and 1 <= saved < STEPS
    assert second.start_step == saved
    assert _rank_nodes(sessions, second.id, cluster) == SPOT_NODES - {victim}
    print(
        f"drain notice -> attempt preempted and the job requeued in {preempted_in:.1f}s; "
        f"saved step {saved}, resumed at {second.start_step}: 0 steps lost"
    )


def _tighten_deadline(sessions: sessionmaker[Session], attempt: JobAttempt, job_id: str, total: int) -> None:
    """As if the hours before the deadline had passed while the job ran: what is left is the
    remaining work at the pace the attempt measured, its start-up, and two minutes, enough for
    on-demand and less than spot needs to survive another interruption (a minute to restart at a
    rate of one every two minutes)."""
    with sessions() as s:
        job_plan = s.scalar(text("SELECT plan FROM jobs WHERE id = :j"), {"j": job_id})
        row = s.get(JobAttempt, attempt.id)
        assert row is not None and row.pace_at is not None and row.heartbeat_at is not None
        per_step = (row.heartbeat_at - row.pace_at).total_seconds() / max(
            1, (row.end_step or 0) - row.pace_step
        )
        resume = max(_checkpoint_steps(sessions, attempt.id))
    spot = next(e for e in job_plan["contract"]["options"] if e["spot"])
    left = spot["startup_seconds"] + (total - resume) * per_step + 120
    deadline = (_db_now(sessions) + timedelta(seconds=left)).isoformat()
    with sessions.begin() as s:
        s.execute(
            text(
                "UPDATE jobs SET spec = jsonb_set(spec, '{policy,deadline}', to_jsonb(CAST(:d AS text))) "
                "WHERE id = :j"
            ),
            {"d": deadline, "j": job_id},
        )


def test_a_spot_node_killed_without_notice_is_a_preemption_and_the_deadline_moves_the_job_on_demand(
    api: Any,
    sessions: sessionmaker[Session],
    spot_settings: Any,
    assets: dict[str, str],
    cluster: NodeCluster,
) -> None:
    key = make_key(sessions)
    grant_assets(sessions)
    total = 400
    body = job_body(
        assets,
        hyperparameters={"max_steps": total, "batch_size": 4, "seq_len": 32},
        checkpoint={"every_steps": 50, "keep": 2},
        policy={
            "objective": "deadline",
            "deadline": (_db_now(sessions) + timedelta(hours=2)).isoformat(),
            "spot": "auto",
        },
    )
    with running(_daemon(spot_settings, cluster)):
        job = api.post("/v1/jobs", json=body, headers=headers(key)).json()
        # Two hours of slack: spot is the cheapest way to meet it.
        assert (job["plan"]["instance_type"], job["plan"]["spot"]) == ("local-cpu", True), job["plan"]
        deadline = time.monotonic() + 300
        while True:
            started = _attempts(sessions, job["id"])
            # A checkpoint to resume from, and the pace the attempt measured (set by its first
            # heartbeat with a step, which may come a beat after the first checkpoint is drained).
            if started and _checkpoint_steps(sessions, started[0].id) and started[0].pace_at is not None:
                [first] = started
                break
            assert time.monotonic() < deadline, "no checkpoint and pace recorded"
            assert not started or started[0].outcome is None, started[0].error_message
            time.sleep(0.2)
        used = _rank_nodes(sessions, first.id, cluster)
        assert len(used) == 1 and used <= SPOT_NODES - cluster.gone, used
        [victim] = used
        killed_at = time.monotonic()
        cluster.kill(victim)
        _tighten_deadline(sessions, first, job["id"], total)
        wait_for(api, key, job["id"], lambda j: j["attempts"] >= 2, timeout=180)
        requeued_in = time.monotonic() - killed_at
        ended = wait_for(api, key, job["id"], lambda j: j["status"] == "succeeded", timeout=300)

    first, second = _attempts(sessions, job["id"])
    log = api.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 1, "tail": 60}, headers=headers(key))
    assert (first.outcome, first.error_code, first.spot) == ("preempted", "node_lost", True), log.text
    assert victim in (first.error_message or "") or cluster.known[victim] in (first.error_message or "")
    # Resumed from the last checkpoint the lost attempt recorded, on the on-demand node (the rows
    # of its checkpoints are gone by now, pruned as the next attempt saved its own: the events stay).
    with sessions() as s:
        recorded = s.scalars(
            select(JobEvent.data["step"].as_integer()).where(
                JobEvent.attempt_id == first.id, JobEvent.type == "checkpoint"
            )
        ).all()
    last = max(recorded)
    assert second.start_step == last and (second.outcome, second.spot) == ("succeeded", False)
    assert _rank_nodes(sessions, second.id, cluster) == {"c"}
    assert ended["progress"]["step"] == total
    with sessions() as s:
        [move] = s.scalars(
            select(JobEvent).where(JobEvent.job_id == job["id"], JobEvent.data.has_key("replan"))
        ).all()
    assert move.data["replan"]["trigger"] == "interruption" and move.attempt_id == first.id
    assert move.message.startswith("spot would finish") and "moving to on-demand local-cpu" in move.message
    report = api.get(f"/v1/jobs/{job['id']}/cost-report", headers=headers(key)).json()
    assert [(a["capacity"], a["outcome"]) for a in report["attempts"]] == [
        ("spot", "preempted"),
        ("on_demand", "succeeded"),
    ]
    assert report["replans"][0]["reason"] == move.message
    totals = report["totals"]
    # The report's sums are to the millionth of a dollar; a run this small saves less than that.
    assert totals["savings_vs_all_on_demand_usd"] == pytest.approx(
        totals["all_on_demand_usd"] - totals["cost_usd"], abs=2e-6
    )
    print(
        f"node {victim} SIGKILLed at step {first.end_step} -> preempted (node_lost) and requeued in "
        f"{requeued_in:.1f}s; resumed at checkpoint {last} on on-demand: {move.message}"
    )
