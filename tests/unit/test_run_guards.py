"""What keeps a run from hanging or writing when it should not, without Ray: the cluster fit check
the attempt makes before it asks for a worker group, the lease the run learns from its attempt,
the workers' own environment, and where each attempt writes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trainyard.platform.states import AttemptOutcome
from trainyard.platform.storage import InvalidKey, attempt_prefix, checkpoints_prefix, final_model_prefix
from trainyard.workers.cluster import InsufficientResources, check_fits, shortfall, worker_env, worker_slots
from trainyard.workers.outcome import stopped_outcome


def _node(alive: bool = True, **resources: float) -> dict[str, object]:
    return {"Alive": alive, "Resources": resources}


def test_worker_slots_count_per_node_not_in_total() -> None:
    # Two nodes with one GPU each hold two 1-GPU workers, but no 2-GPU worker.
    nodes = [_node(CPU=8, GPU=1), _node(CPU=8, GPU=1), _node(False, CPU=64, GPU=8)]
    assert worker_slots({"CPU": 1, "GPU": 1}, nodes) == 2
    assert worker_slots({"CPU": 1, "GPU": 2}, nodes) == 0
    assert worker_slots({"CPU": 1, "pool-a": 1}, nodes) == 0, "no node carries the pool's resource"


def test_a_plan_the_cluster_cannot_hold_says_what_it_needs_and_what_there_is() -> None:
    nodes = [_node(CPU=2.0, memory=1e9)]
    assert shortfall(2, {"CPU": 1.0}, nodes) is None
    why = shortfall(4, {"CPU": 1.0}, nodes)
    assert why is not None and "4 worker(s) of {CPU: 1}" in why and "can hold 2" in why

    class Scaling:
        num_workers = 4
        resources_per_worker = {"CPU": 1.0}

    with pytest.raises(InsufficientResources, match="local-cpu: the plan needs 4"):
        check_fits(Scaling(), nodes, "local-cpu")


def test_the_run_answers_lease_lost_once_its_attempt_stops_renewing() -> None:
    from trainyard.workers.control import RunControlState

    rc = RunControlState()
    assert rc.stop_requested() is None, "no lease passed on yet: nothing to go by"
    rc.lease(30.0)
    assert rc.stop_requested() is None
    rc.request_stop("cancelled")
    assert rc.stop_requested() == "cancelled"
    rc.lease(0.05)
    time.sleep(0.1)
    # A lapsed lease overrides the cancel: the last checkpoint a cancel writes would be stale.
    assert rc.stop_requested() == "lease_lost"
    rc.lease(30.0)
    assert rc.stop_requested() == "cancelled"


def test_workers_get_the_store_and_hub_settings_but_nothing_else() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://store:9000",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "HF_HUB_OFFLINE": "1",
        "TRAINYARD_DATABASE_URL": "postgresql://secret@db/x",
        "HOME": "/root",
        "AWS_REGION": "",
    }
    assert worker_env(env) == {
        "AWS_ENDPOINT_URL": "http://store:9000",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "HF_HUB_OFFLINE": "1",
    }


def test_each_attempt_writes_under_its_own_prefix() -> None:
    assert attempt_prefix("j1", 2) == "jobs/j1/attempts/002"
    assert checkpoints_prefix("j1", 2) == "jobs/j1/attempts/002/checkpoints"
    assert final_model_prefix("j1", 12) == "jobs/j1/attempts/012/final"
    assert checkpoints_prefix("j1") == "jobs/j1/checkpoints"
    with pytest.raises(InvalidKey):
        attempt_prefix("j1", 0)


def test_a_stop_ends_in_its_target_state_however_it_ended() -> None:
    assert stopped_outcome("cancelled")[0] == AttemptOutcome.CANCELLED
    assert stopped_outcome("paused")[0] == AttemptOutcome.HANDED_BACK
    assert stopped_outcome("shutdown")[0] == AttemptOutcome.HANDED_BACK
    # The deadline contract moved the job at a checkpoint: the run hands it back to run elsewhere.
    assert stopped_outcome("replanned")[0] == AttemptOutcome.HANDED_BACK
    outcome, code, message, retryable = stopped_outcome("budget_exceeded", 2.5)
    assert (outcome, code, retryable) == (AttemptOutcome.FAILED, "budget_exceeded", False)
    assert message is not None and "$2.50" in message
    # A preemption notice: the run saved its step; the job resumes there, counted as a preemption.
    outcome, code, _, retryable = stopped_outcome("preempted")
    assert (outcome, code, retryable) == (AttemptOutcome.PREEMPTED, "preempted", True)
    assert stopped_outcome("something new")[:2] == (AttemptOutcome.CRASHED, "stopped")


def test_a_preemption_notice_stops_every_rank_saving_the_current_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trainyard.workers.training import callbacks

    notice = False
    monkeypatch.setattr(callbacks, "preemption_notice", lambda: notice)
    stop = callbacks.StopSignal(None, rank=0, world_size=1, poll_interval_s=1.0)
    assert not stop.should_stop()
    notice = True
    assert stop.should_stop()
    assert stop.reason == callbacks.PREEMPTED and not stop.lease_lost  # it saves before stopping


def test_retired_checkpoints_are_deleted_only_under_the_jobs_own_prefix(tmp_path: Path) -> None:
    from trainyard.platform.storage import open_store
    from trainyard.workers.mailbox import Mailbox

    store = open_store(f"file://{tmp_path}")
    mine = store.put_bytes("jobs/j1/attempts/001/checkpoints/run/checkpoint_000000006/w.bin", b"w")
    theirs = store.put_bytes("jobs/j2/attempts/001/checkpoints/run/checkpoint_000000006/w.bin", b"w")
    mailbox = Mailbox("att_1", fenced=None, store=store)  # type: ignore[arg-type]  # no write here
    mailbox.job_id = "j1"
    # A recorded URI is deleted only when it lies under jobs/j1/: not another job's, not elsewhere.
    mailbox._delete([mine.rsplit("/", 1)[0], theirs.rsplit("/", 1)[0], "s3://elsewhere/jobs/j1/x"])
    assert not store.list("jobs/j1/")
    assert store.list("jobs/j2/") == ["jobs/j2/attempts/001/checkpoints/run/checkpoint_000000006/w.bin"]
