"""The parts of training that need no Ray instance: scaling_for, RunControlState, checkpoint_uri
and outcome_of. ray/test_training.py runs the fits themselves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from support import instance_type

from trainyard.platform.scheduling.pools import Pool
from trainyard.platform.storage import open_store


def test_scaling_cpu() -> None:
    from trainyard.workers.scaling import scaling_for

    sc = scaling_for(instance_type(workers=4), Pool("x", ray_resource={"pool-cpu": 1}))
    assert sc.num_workers == 4 and not sc.use_gpu
    assert sc.resources_per_worker == {"CPU": 1.0, "pool-cpu": 1.0}


def test_scaling_gpu_and_multi_gpu() -> None:
    from trainyard.workers.scaling import scaling_for

    one = scaling_for(instance_type(kind="gpu", accelerator="L4", accelerator_count=1, workers=1))
    assert one.num_workers == 1 and one.use_gpu and one.accelerator_type == "L4"
    assert one.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}

    eight = scaling_for(
        instance_type(kind="multi_gpu", accelerator="A100-80GB", accelerator_count=8, workers=8)
    )
    assert eight.num_workers == 8 and eight.accelerator_type == "A100"

    # Two nodes of 8 GPUs with no worker count given: one worker per GPU across nodes.
    multi = scaling_for(
        instance_type(kind="multi_gpu", accelerator="H100", accelerator_count=8, nodes=2, workers=0),
        Pool("x", ray_resource={"pool-h100": 1}),
    )
    assert multi.num_workers == 16
    # The pool resource pins the node group, so no accelerator_type is added on top.
    assert multi.accelerator_type is None
    assert multi.resources_per_worker == {"CPU": 1.0, "GPU": 1.0, "pool-h100": 1.0}


def test_scaling_tpu() -> None:
    from trainyard.workers.scaling import ray_accelerator_type, scaling_for

    assert ray_accelerator_type("TPU-v5e") == "TPU-V5LITEPOD"
    assert ray_accelerator_type("nonsense") is None
    slice_ = scaling_for(
        instance_type(kind="tpu", accelerator="TPU-v6e", accelerator_count=8, tpu_topology="2x4")
    )
    assert slice_.use_tpu and slice_.topology == "2x4" and slice_.accelerator_type == "TPU-V6E"
    # Ray runs one worker per TPU host; a v6e 2x4 is one host with 8 chips.
    assert slice_.num_workers == 1 and slice_.resources_per_worker["TPU"] == 8
    pod = scaling_for(
        instance_type(kind="tpu", accelerator="TPU-v6e", accelerator_count=16, tpu_topology="4x4"),
        Pool("x", ray_resource={"pool-tpu": 1}),
    )
    assert pod.num_workers == 4 and pod.resources_per_worker["TPU"] == 4
    assert pod.resources_per_worker["pool-tpu"] == 1.0
    single = scaling_for(
        instance_type(kind="tpu", accelerator="TPU-v6e", accelerator_count=1, tpu_topology=None)
    )
    assert single.num_workers == 1 and single.resources_per_worker["TPU"] == 1.0


def test_scaling_unknown_kind() -> None:
    from trainyard.workers.scaling import scaling_for

    with pytest.raises(ValueError, match="unknown kind"):
        scaling_for(instance_type(kind="fpga"))


def test_run_control_state() -> None:
    from trainyard.workers.control import MAX_PROGRESS_BACKLOG, RunControlState

    rc = RunControlState()
    assert rc.stop_requested() is None
    rc.report({"type": "checkpoint", "step": 1, "metrics": {}, "uri": "file:///x"})
    for i in range(MAX_PROGRESS_BACKLOG + 10):
        rc.report({"type": "progress", "step": i})
    rc.report({"type": "bogus"})
    events = rc.drain()
    # Old progress is dropped first; checkpoints never are.
    assert events[0]["type"] == "checkpoint"
    assert sum(e["type"] == "progress" for e in events) == MAX_PROGRESS_BACKLOG
    assert events[-1]["type"] == "message" and events[-1]["level"] == "warning"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert rc.latest_progress()["step"] == MAX_PROGRESS_BACKLOG + 9
    assert rc.drain() == []
    rc.request_stop("cancelled")
    rc.request_stop("lease_lost")
    assert rc.stop_requested() == "cancelled"


def test_checkpoint_uri_maps_storage_paths_to_store_uris(tmp_path: Path) -> None:
    from trainyard.workers.trainer import checkpoint_uri

    local = open_store(f"file://{tmp_path}")
    storage_path, _fs = local.ray_storage("jobs/j/checkpoints")
    uri = checkpoint_uri(
        local.root_uri, "jobs/j/checkpoints", storage_path, f"{storage_path}/run/checkpoint_1"
    )
    assert uri == local.uri_for("jobs/j/checkpoints/run/checkpoint_1")
    # pyarrow S3 paths are "bucket/key"; the URI gets the scheme and root back.
    s3 = checkpoint_uri(
        "s3://b/root", "jobs/j/checkpoints", "b/root/jobs/j/checkpoints", "b/root/jobs/j/checkpoints/r/c"
    )
    assert s3 == "s3://b/root/jobs/j/checkpoints/r/c"
    with pytest.raises(ValueError):
        checkpoint_uri(local.root_uri, "jobs/j/checkpoints", storage_path, "/elsewhere/checkpoint_1")


def test_outcome_of_adds_the_checkpoints_ray_kept(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    from trainyard.workers.outcome import TrainingOutcome
    from trainyard.workers.trainer import outcome_of

    store = open_store(f"file://{tmp_path}")
    storage_path, _fs = store.ray_storage("jobs/j/checkpoints")

    def ckpt(step: int) -> SimpleNamespace:
        return SimpleNamespace(path=f"{storage_path}/j/checkpoint_{step:09d}")

    loop = TrainingOutcome(
        final_model_uri=None,
        metrics={"step": 10, "loss": 1.5},
        steps=10,
        start_step=5,
        total_steps=20,
        tokens_trained=100,
        tokens_this_attempt=40,
        stopped_early=True,
        stop_reason="cancelled",
    )
    # What Ray Train's Result carries: rank 0's return value (a plain dict), the checkpoints kept.
    fit = SimpleNamespace(
        return_value=loop.to_dict(), checkpoint=ckpt(10), best_checkpoints=[(ckpt(5), {}), (ckpt(10), {})]
    )
    out = outcome_of(fit, store_uri=store.root_uri, checkpoints="jobs/j/checkpoints")  # type: ignore[arg-type]
    kept = [store.uri_for(f"jobs/j/checkpoints/j/checkpoint_{s:09d}") for s in (5, 10)]
    assert out == dataclasses.replace(loop, latest_checkpoint_uri=kept[-1], checkpoint_uris=kept)
    # The job's result column: the same keys as before, JSON as is, and back again.
    assert set(out.to_dict()) == {
        "final_model_uri",
        "latest_checkpoint_uri",
        "checkpoint_uris",
        "metrics",
        "steps",
        "start_step",
        "total_steps",
        "tokens_trained",
        "tokens_this_attempt",
        "stopped_early",
        "stop_reason",
        "best_trial",
        "trials",
        "tokens_per_second",
    }
    assert TrainingOutcome.from_dict(json.loads(json.dumps(out.to_dict()))) == out
    with pytest.raises(RuntimeError, match="no outcome"):
        outcome_of(
            SimpleNamespace(return_value=None, checkpoint=None, best_checkpoints=None),  # type: ignore[arg-type]
            store_uri=store.root_uri,
            checkpoints="jobs/j/checkpoints",
        )
