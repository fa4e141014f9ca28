"""Training on Ray: a tiny GPT-2 on local CPU workers, checkpoints in a file:// store.

The Ray tests are few and small on purpose (a 2-worker fit costs most of a minute on 2 cores).
The ``scaling_for`` tests at the bottom need no Ray instance.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from trainyard.platform.scheduling.catalog import InstanceType
from trainyard.platform.scheduling.pools import Pool
from trainyard.platform.spec import JobSpec
from trainyard.platform.storage import open_store
from trainyard.testing.tiny import make_dataset, make_tiny_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _itype(**kw: Any) -> InstanceType:
    base: dict[str, Any] = {
        "name": "x",
        "kind": "cpu",
        "accelerator": None,
        "accelerator_count": 0,
        "accelerator_memory_gb": None,
        "vcpus": 8,
        "ram_gb": 16.0,
        "on_demand_usd_per_hour": 1.0,
        "spot_usd_per_hour": None,
        "nodes": 1,
        "interconnect": "host",
        "workers": 2,
        "tpu_topology": None,
        "source": "test",
        "as_of": "2025-01-01",
    }
    return InstanceType(**{**base, **kw})


CPU2 = _itype(name="local-cpu", vcpus=2)


@pytest.fixture(scope="session")
def ray_session(ray_address: str) -> Any:
    """The session's shared Ray cluster (conftest); a second local instance would confuse Ray."""
    import ray

    return ray


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "lm": make_tiny_model_dir(root / "lm", "causal_lm"),
        "cls": make_tiny_model_dir(root / "cls", "sequence_classification"),
        "lm_train": make_dataset(root / "lm_train.jsonl", 64, "causal_lm"),
        "cls_train": make_dataset(root / "cls_train.jsonl", 64, "sequence_classification"),
        "cls_valid": make_dataset(root / "cls_valid.jsonl", 16, "sequence_classification", seed=1),
    }


def _events(control: Any) -> list[dict[str, Any]]:
    import ray

    return ray.get(control.drain.remote())


def _spec(**overrides: Any) -> JobSpec:
    base: dict[str, Any] = {
        "name": "tiny",
        "hyperparameters": {"batch_size": 4, "seq_len": 32, "learning_rate": 1e-3, "max_steps": 10},
        "checkpoint": {"every_steps": 5, "keep": 2},
    }
    base.update(overrides)
    return JobSpec.model_validate(base)


@pytest.mark.ray
def test_full_finetune_checkpoints_then_resumes(ray_session, tiny_assets, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainyard.workers.control import create_run_control
    from trainyard.workers.launch import run_training

    store_uri = f"file://{tmp_path / 'store'}"
    # The base model goes through the store too, the way an s3:// model dir would.
    base_uri = open_store(store_uri).upload_dir("models/tiny-lm", tiny_assets["lm"])
    spec = _spec(base_model=base_uri, training_file=f"file://{tiny_assets['lm_train']}")

    control = create_run_control()
    t0 = time.monotonic()
    first = run_training(
        spec,
        job_id="j1",
        itype=CPU2,
        pool=None,
        store_uri=store_uri,
        control=control,
        run_name="j1",
        progress_interval_s=0.5,
    )
    print(f"first fit: {time.monotonic() - t0:.1f}s")
    assert first.steps == 10 and first.start_step == 0 and not first.stopped_early
    assert first.tokens_trained > 0
    events = _events(control)
    ckpts = [e for e in events if e["type"] == "checkpoint"]
    assert [e["step"] for e in ckpts] == [5, 10]
    assert all(
        e["uri"].startswith("file://") and e["uri"].endswith(f"checkpoint_{e['step']:09d}") for e in ckpts
    )
    assert first.latest_checkpoint_uri == ckpts[-1]["uri"]
    assert any(e["type"] == "progress" for e in events)

    # Same run name and storage, a longer schedule: Ray Train hands back checkpoint 10.
    longer = spec.model_copy(
        update={"hyperparameters": spec.hyperparameters.model_copy(update={"max_steps": 20})}
    )
    t0 = time.monotonic()
    second = run_training(
        longer,
        job_id="j1",
        itype=CPU2,
        pool=None,
        store_uri=store_uri,
        control=control,
        run_name="j1",
        progress_interval_s=0.5,
    )
    print(f"resumed fit: {time.monotonic() - t0:.1f}s")
    assert second.start_step == 10 and second.steps == 20
    # The token count is restored from the checkpoint, so it keeps adding up across attempts.
    assert second.tokens_trained > first.tokens_trained
    assert second.tokens_this_attempt == second.tokens_trained - first.tokens_trained
    events = _events(control)
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and min(e["step"] for e in progress) > 10
    assert progress[-1]["step"] == 20 and progress[-1]["total_steps"] == 20
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [15, 20]

    # keep=2: Ray Train deleted the older checkpoints from the store.
    store = open_store(store_uri)
    dirs = {
        k.split("/")[4]
        for k in store.list("jobs/j1/checkpoints/j1")
        if k.split("/")[4].startswith("checkpoint_0")
    }
    assert dirs == {"checkpoint_000000015", "checkpoint_000000020"}
    assert second.checkpoint_uris == [store.uri_for(f"jobs/j1/checkpoints/j1/{d}") for d in sorted(dirs)]

    # The final model is a plain save_pretrained directory.
    assert second.final_model_uri == store.uri_for("jobs/j1/final")
    local = store.download_dir("jobs/j1/final", tmp_path / "final")
    model = AutoModelForCausalLM.from_pretrained(local)
    tokenizer = AutoTokenizer.from_pretrained(local)
    out = model(**tokenizer("the cat sees a box", return_tensors="pt"))
    assert out.logits.shape[-1] == len(tokenizer)


@pytest.mark.ray
def test_lora_classification_stops_on_request(ray_session, tiny_assets, tmp_path: Path) -> None:
    from trainyard.workers.control import create_run_control
    from trainyard.workers.launch import run_training

    store_uri = f"file://{tmp_path / 'store'}"
    spec = _spec(
        base_model=str(tiny_assets["cls"]),
        task="sequence_classification",
        method="lora",
        training_file=str(tiny_assets["cls_train"]),
        validation_file=f"file://{tiny_assets['cls_valid']}",
        hyperparameters={
            "batch_size": 4,
            "seq_len": 32,
            "learning_rate": 1e-3,
            "max_steps": 500,
            "lora_r": 4,
        },
        checkpoint={"every_steps": 100, "keep": 2},
    )
    control = create_run_control()

    # Ask for a stop once training is visibly under way, like the daemon does on cancel.
    def stop_when_running() -> None:
        import ray

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            p = ray.get(control.latest_progress.remote())
            if p and p["step"] >= 3:
                control.request_stop.remote("cancelled")
                return
            time.sleep(0.2)

    stopper = threading.Thread(target=stop_when_running, daemon=True)
    stopper.start()
    t0 = time.monotonic()
    result = run_training(
        spec,
        job_id="j2",
        itype=CPU2,
        pool=None,
        store_uri=store_uri,
        control=control,
        run_name="j2",
        progress_interval_s=0.2,
        stop_poll_interval_s=0.2,
    )
    print(f"lora fit with stop: {time.monotonic() - t0:.1f}s")
    stopper.join(timeout=5)
    assert result.stopped_early and result.stop_reason == "cancelled"
    assert 3 <= result.steps < 500
    assert result.final_model_uri is None
    ckpts = [e for e in _events(control) if e["type"] == "checkpoint"]
    # The stop saved a checkpoint at the step where every rank stopped.
    assert ckpts and ckpts[-1]["step"] == result.steps
    assert ckpts[-1]["uri"] == result.latest_checkpoint_uri
    assert open_store(store_uri).exists(
        f"jobs/j2/checkpoints/j2/checkpoint_{result.steps:09d}/adapter_model.safetensors"
    )


@pytest.mark.ray
@pytest.mark.skipif(
    not os.environ.get("TRAINYARD_SWEEP_TEST"),
    reason="about a minute more on 2 cores; set TRAINYARD_SWEEP_TEST=1 to run",
)
def test_sweep_best_trial_gives_final_model(ray_session, tiny_assets, tmp_path: Path) -> None:
    from trainyard.workers.control import create_run_control
    from trainyard.workers.launch import run_training

    store_uri = f"file://{tmp_path / 'store'}"
    spec = _spec(
        base_model=str(tiny_assets["lm"]),
        training_file=str(tiny_assets["lm_train"]),
        validation_file=str(tiny_assets["lm_train"]),
        hyperparameters={"batch_size": 4, "seq_len": 32, "max_steps": 6},
        checkpoint={"every_steps": 3, "keep": 1},
        sweep={"param_space": {"learning_rate": [1e-5, 3e-3]}, "asha": True},
    )
    one_worker = dataclasses.replace(CPU2, workers=1)
    result = run_training(
        spec,
        job_id="j3",
        itype=one_worker,
        pool=None,
        store_uri=store_uri,
        control=create_run_control(),
        run_name="j3",
    )
    assert len(result.trials) == 2 and all(t["final_model_uri"] for t in result.trials)
    best = min(result.trials, key=lambda t: t["metric"])
    assert result.best_trial == best["trial"] and best["config"] == {"learning_rate": 3e-3}
    assert result.final_model_uri == best["final_model_uri"]
    assert result.latest_checkpoint_uri and result.latest_checkpoint_uri.endswith("checkpoint_000000006")


# ---------------------------------------------------------------------------------------------
# scaling_for, RunControlState, checkpoint_uri: no Ray instance needed
# ---------------------------------------------------------------------------------------------


def test_scaling_cpu() -> None:
    from trainyard.workers.scaling import scaling_for

    sc = scaling_for(_itype(workers=4), Pool("x", ray_resource={"pool-cpu": 1}))
    assert sc.num_workers == 4 and not sc.use_gpu
    assert sc.resources_per_worker == {"CPU": 1.0, "pool-cpu": 1.0}


def test_scaling_gpu_and_multi_gpu() -> None:
    from trainyard.workers.scaling import scaling_for

    one = scaling_for(_itype(kind="gpu", accelerator="L4", accelerator_count=1, workers=1))
    assert one.num_workers == 1 and one.use_gpu and one.accelerator_type == "L4"
    assert one.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}

    eight = scaling_for(_itype(kind="multi_gpu", accelerator="A100-80GB", accelerator_count=8, workers=8))
    assert eight.num_workers == 8 and eight.accelerator_type == "A100"

    # Two nodes of 8 GPUs with no worker count given: one worker per GPU across nodes.
    multi = scaling_for(
        _itype(kind="multi_gpu", accelerator="H100", accelerator_count=8, nodes=2, workers=0),
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
    slice_ = scaling_for(_itype(kind="tpu", accelerator="TPU-v6e", accelerator_count=8, tpu_topology="2x4"))
    assert slice_.use_tpu and slice_.topology == "2x4" and slice_.accelerator_type == "TPU-V6E"
    # Ray runs one worker per TPU host; a v6e 2x4 is one host with 8 chips.
    assert slice_.num_workers == 1 and slice_.resources_per_worker["TPU"] == 8
    pod = scaling_for(
        _itype(kind="tpu", accelerator="TPU-v6e", accelerator_count=16, tpu_topology="4x4"),
        Pool("x", ray_resource={"pool-tpu": 1}),
    )
    assert pod.num_workers == 4 and pod.resources_per_worker["TPU"] == 4
    assert pod.resources_per_worker["pool-tpu"] == 1.0
    single = scaling_for(_itype(kind="tpu", accelerator="TPU-v6e", accelerator_count=1, tpu_topology=None))
    assert single.num_workers == 1 and single.resources_per_worker["TPU"] == 1.0


def test_scaling_unknown_kind() -> None:
    from trainyard.workers.scaling import scaling_for

    with pytest.raises(ValueError, match="unknown kind"):
        scaling_for(_itype(kind="fpga"))


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
    }
    assert TrainingOutcome.from_dict(json.loads(json.dumps(out.to_dict()))) == out
    with pytest.raises(RuntimeError, match="no outcome"):
        outcome_of(
            SimpleNamespace(return_value=None, checkpoint=None, best_checkpoints=None),  # type: ignore[arg-type]
            store_uri=store.root_uri,
            checkpoints="jobs/j/checkpoints",
        )
