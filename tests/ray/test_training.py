"""Training on Ray: a tiny GPT-2 on local CPU workers, checkpoints in a file:// store.

The Ray tests are few and small on purpose (a 2-worker fit costs most of a minute on 2 cores).
unit/test_training_parts.py covers what needs no Ray instance.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import instance_type

from trainyard.cli.tiny_model import make_dataset, make_tiny_model_dir
from trainyard.platform.spec import JobSpec
from trainyard.platform.storage import open_store

CPU2 = instance_type(name="local-cpu", vcpus=2)


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
        attempt=1,
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

    # A second attempt with a longer schedule, from the checkpoint the first recorded last.
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
        attempt=2,
        resume_from=ckpts[-1]["uri"],
        progress_interval_s=0.5,
    )
    print(f"resumed fit: {time.monotonic() - t0:.1f}s")
    assert second.start_step == 10 and second.steps == 20
    # The token count is restored from the checkpoint, so it keeps adding up across attempts.
    assert second.tokens_trained > first.tokens_trained
    assert second.tokens_this_attempt == second.tokens_trained - first.tokens_trained
    events = _events(control)
    # Phase reports (loading the model, saving) carry no step; the step reports resume past 10.
    progress = [e for e in events if e["type"] == "progress" and "step" in e]
    assert progress and min(e["step"] for e in progress) > 10
    assert progress[-1]["step"] == 20 and progress[-1]["total_steps"] == 20
    assert {e.get("phase") for e in events if e["type"] == "progress"} >= {"loading_model", "training"}
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [15, 20]

    # Each attempt wrote under its own prefix; the first one's files are as it left them (the
    # platform, not Ray Train, retires recorded checkpoints beyond keep).
    store = open_store(store_uri)

    def dirs(attempt: str) -> set[str]:
        keys = [k.split("/") for k in store.list(f"jobs/j1/attempts/{attempt}/checkpoints/j1")]
        return {parts[6] for parts in keys if len(parts) > 7}

    assert dirs("001") == {"checkpoint_000000005", "checkpoint_000000010"}
    assert dirs("002") == {"checkpoint_000000015", "checkpoint_000000020"}

    # The final model is a plain save_pretrained directory, under the attempt that trained it.
    assert second.final_model_uri == store.uri_for("jobs/j1/attempts/002/final")
    local = store.download_dir("jobs/j1/attempts/002/final", tmp_path / "final")
    model = AutoModelForCausalLM.from_pretrained(local)
    tokenizer = AutoTokenizer.from_pretrained(local)
    out = model(**tokenizer("the cat sees a box", return_tensors="pt"))
    assert out.logits.shape[-1] == len(tokenizer)


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
        attempt=1,
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
        f"jobs/j2/attempts/001/checkpoints/j2/checkpoint_{result.steps:09d}/adapter_model.safetensors"
    )


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
        attempt=1,
    )
    assert len(result.trials) == 2 and all(t["final_model_uri"] for t in result.trials)
    best = min(result.trials, key=lambda t: t["metric"])
    assert result.best_trial == best["trial"] and best["config"] == {"learning_rate": 3e-3}
    assert result.final_model_uri == best["final_model_uri"]
    assert result.latest_checkpoint_uri and result.latest_checkpoint_uri.endswith("checkpoint_000000006")
