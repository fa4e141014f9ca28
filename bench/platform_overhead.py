"""Figures 1 and 2: what the platform costs a training run, end to end and in steady state.

The same small fine-tune (a tiny GPT-2 built on the spot, the same data, steps, batch, checkpoint
schedule and two Ray Train workers of the ``local-cpu`` instance type) runs two ways, one after
the other on the same Ray cluster:

- **direct**: ``run_training(spec, ...)`` called in this Python process, with no platform around
  it (no API, database, worker daemon, attempt process, heartbeats or RunControl mailbox);
- **platform**: submitted over HTTP to the embedded stack (``LocalStack``: API + worker daemon, a
  scratch Postgres database, a ``file://`` store) and followed until the job is ``succeeded``.

Figures (median over the repeats; the two ways take turns going first):

1. wall time, submit (or call) -> ``succeeded`` (or return). Goal: platform/direct <= 1.10.
   Also the time to the first training step, for information.
2. steady-state training throughput in tokens/s, with heartbeats, progress and checkpoint uploads
   on. Goal: platform/direct >= 0.97.

Both runs are timed the same way from what they leave in the store: each persisted checkpoint's
``trainer_state.json`` gives its step and token count, and its files' modification time says when
it was persisted. Throughput is tokens between the first and the last checkpoint over the time
between them (a window that includes the checkpoint uploads); the start of training is that
steady line extrapolated back to step 0. The platform run also records what the platform itself
saw (claim time, the first step visible in ``jobs.progress``, attempt start and end).

    python -m bench.platform_overhead [--quick] [--repeats N]

On a real cluster, ``RAY_ADDRESS`` selects the Ray cluster (no local one is started) and
``TRAINYARD_STORAGE_URI`` (with ``AWS_ENDPOINT_URL_S3`` and ``AWS_*``) the store; the database is
a scratch one on the server of ``TRAINYARD_BENCH_ADMIN_URL`` or ``TRAINYARD_DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import ProcSampler, figure, format_table, scratch_database
from trainyard.testing.ray_cluster import ray_cluster

GOAL_WALL = 1.10
GOAL_THROUGHPUT = 0.97


@dataclass(frozen=True)
class Params:
    steps: int  # optimizer steps per run (a multiple of every_steps, so the last step checkpoints)
    every_steps: int
    batch_size: int
    records: int
    n_embd: int
    n_layer: int
    n_head: int
    repeats: int


# About 90 s per run on 2 cores, half of it Ray Train starting up; 3 repeats of each side.
FULL = Params(
    steps=80, every_steps=10, batch_size=16, records=2000, n_embd=256, n_layer=4, n_head=4, repeats=3
)
QUICK = Params(
    steps=40, every_steps=10, batch_size=16, records=500, n_embd=128, n_layer=2, n_head=2, repeats=2
)


def job_spec(params: Params, model_dir: str, train_uri: str) -> dict[str, Any]:
    return {
        "name": "bench-platform-overhead",
        "base_model": model_dir,
        "task": "causal_lm",
        "method": "full",
        "training_file": train_uri,
        "hyperparameters": {
            "max_steps": params.steps,
            "batch_size": params.batch_size,
            "seq_len": 64,
            "learning_rate": 1e-3,
        },
        # Keep every checkpoint: the timing reads them all from the store afterwards.
        "checkpoint": {"every_steps": params.every_steps, "keep": 1000},
        "instance_type": "local-cpu",
        "policy": {"objective": "cheapest", "spot": "never"},
        "max_attempts": 1,
        "metadata": {"source": "bench"},
    }


# ---------------------------------------------------------------------------------------------
# Ray


# ---------------------------------------------------------------------------------------------
# Reading a run back from the store


def checkpoint_stamps(store_uri: str, job_id: str) -> list[dict[str, float]]:
    """Each persisted checkpoint of a job's first attempt: step, tokens seen, and when its last file
    landed."""
    import pyarrow.fs

    from trainyard.platform.storage import checkpoints_prefix, open_store

    path, fs = open_store(store_uri).ray_storage(checkpoints_prefix(job_id, 1))  # a first attempt
    landed: dict[str, float] = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type != pyarrow.fs.FileType.File:
            continue
        parent = info.path.rsplit("/", 1)[0]
        if not parent.rsplit("/", 1)[-1].startswith("checkpoint_"):
            continue
        landed[parent] = max(landed.get(parent, 0.0), info.mtime_ns / 1e9)
    stamps = []
    for directory, when in landed.items():
        with fs.open_input_stream(f"{directory}/trainer_state.json") as f:
            state = json.loads(f.read())
        stamps.append(
            {"step": state["global_step"], "tokens": state.get("num_input_tokens_seen", 0), "time": when}
        )
    return sorted(stamps, key=lambda s: s["step"])


def timeline(stamps: list[dict[str, float]], t0: float, t_end: float) -> dict[str, float]:
    """Startup, steady-state rates and tail of one run, from its checkpoint stamps."""
    if len(stamps) < 2:
        raise RuntimeError(f"need at least two checkpoints to time a run, found {len(stamps)}")
    first, last = stamps[0], stamps[-1]
    span = last["time"] - first["time"]
    steps_per_s = (last["step"] - first["step"]) / span
    tokens_per_s = (last["tokens"] - first["tokens"]) / span
    train_start = first["time"] - first["step"] / steps_per_s
    return {
        "t0": t0,
        "train_start_at": train_start,
        "first_checkpoint_at": first["time"],
        "last_checkpoint_at": last["time"],
        "wall_s": t_end - t0,
        "first_step_s": train_start - t0,
        "training_s": last["time"] - train_start,
        "tail_s": t_end - last["time"],
        "tokens_per_s": tokens_per_s,
        "steps_per_s": steps_per_s,
        "tokens": last["tokens"],
        "steps": last["step"],
    }


# ---------------------------------------------------------------------------------------------
# The two ways to run


def run_direct(spec: dict[str, Any], store_uri: str, run_id: str) -> dict[str, Any]:
    from trainyard.platform.deployment import load_deployment
    from trainyard.platform.spec import JobSpec
    from trainyard.settings import get_settings
    from trainyard.workers.launch import run_training

    deployment = load_deployment(get_settings())
    itype = deployment.instance_type(spec["instance_type"])
    job_spec_ = JobSpec.model_validate(spec)
    t0 = time.time()
    result = run_training(
        job_spec_,
        job_id=run_id,
        itype=itype,
        pool=deployment.pool(itype.name),
        store_uri=store_uri,
        control=None,
        run_name=run_id,
        attempt=1,
    )
    t_end = time.time()
    if result.stopped_early or result.steps != spec["hyperparameters"]["max_steps"]:
        raise RuntimeError(f"direct run did not finish: {result}")
    out = timeline(checkpoint_stamps(store_uri, run_id), t0, t_end)
    out["tokens_reported"] = result.tokens_trained
    return out


def _wait_idle(stack: Any, timeout: float = 300.0) -> float:
    """Wait until the stack's worker daemon runs no attempt; returns the seconds waited."""
    t0 = time.monotonic()
    while stack.busy:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the worker daemon still runs an attempt")
        time.sleep(0.1)
    return time.monotonic() - t0


def _epoch(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def run_platform(stack: Any, spec: dict[str, Any], store_uri: str, timeout: float = 1200.0) -> dict[str, Any]:
    from sqlalchemy import select

    from trainyard.platform import db
    from trainyard.platform.models import Job, JobAttempt
    from trainyard.sdk import Trainyard

    engine = db.make_engine(stack.settings.database_url, pool_size=1, max_overflow=0)
    sessions = db.make_sessionmaker(engine)
    _wait_idle(stack)
    try:
        with Trainyard(stack.base_url, stack.api_key) as client:
            t0 = time.time()
            job_id = client.jobs.create(**spec).id
        t_created = time.time()
        seen: dict[str, float] = {}
        status = "queued"
        deadline = time.monotonic() + timeout
        while True:
            with sessions() as s:
                row = s.execute(select(Job.status, Job.progress).where(Job.id == job_id)).one_or_none()
            now = time.time()
            if row is None:
                # Not visible to another connection yet (or gone): give it a little time.
                if now - t_created > 30:
                    raise RuntimeError(
                        f"job {job_id} (created in {t_created - t0:.1f}s) is not in the database"
                    )
                time.sleep(0.1)
                continue
            status, progress = row
            if status != "queued":
                seen.setdefault("running", now)
            if (progress or {}).get("step"):
                seen.setdefault("first_progress", now)
            if status in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status} after {timeout:.0f}s")
            time.sleep(0.1)
        t_end = now
        with sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None
            attempts = s.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)).all()
        if status != "succeeded":
            raise RuntimeError(f"platform job {job_id} ended {status}: {job.error_code} {job.error_message}")
        # The attempt process goes on after `succeeded` (cost report, Ray disconnect); the daemon
        # claims nothing new for the pool until it has reaped it.
        exit_after = _wait_idle(stack)
        attempt = attempts[0]
        out = timeline(checkpoint_stamps(store_uri, job_id), t0, t_end)
        created = _epoch(job.created_at) or t0
        claimed = _epoch(attempt.started_at) or created
        out.update(
            {
                "job_id": job_id,
                "attempts": len(attempts),
                "submit_http_s": t_created - t0,
                "queue_wait_s": claimed - created,
                "claim_to_first_step_s": out["first_step_s"] - (claimed - t0),
                # None: no progress reached the database before the job succeeded.
                "first_progress_visible_s": seen["first_progress"] - t0 if "first_progress" in seen else None,
                "attempt_end_to_succeeded_s": t_end - (_epoch(attempt.ended_at) or t_end),
                "attempt_process_gone_after_succeeded_s": exit_after,
            }
        )
        return out
    finally:
        engine.dispose()


_ATTEMPT_STARTUP = """
import time
t0 = time.time()
import trainyard.workers.attempt, trainyard.platform.scheduling, trainyard.workers.control
t1 = time.time()
import trainyard.workers.launch
t2 = time.time()
import ray
ray.init(address="auto", configure_logging=False, log_to_driver=False)
t3 = time.time()
from trainyard.workers.control import create_run_control
control = create_run_control()
ray.get(control.stop_requested.remote())
t4 = time.time()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def attempt_startup_parts(repeats: int = 2) -> dict[str, float]:
    """What an attempt process does before it calls ``run_training``, timed in a fresh interpreter
    on the same cluster: interpreter start, imports, connecting to Ray, the RunControl actor."""
    samples: list[list[float]] = []
    for _ in range(repeats):
        t0 = time.time()
        done = subprocess.run(
            [sys.executable, "-c", _ATTEMPT_STARTUP], check=True, capture_output=True, text=True
        )
        total = time.time() - t0
        parts = [float(x) for x in done.stdout.split()[-4:]]
        samples.append([total, *parts])
    names = (
        "total_s",
        "import_platform_s",
        "import_launch_torch_transformers_s",
        "ray_init_s",
        "run_control_s",
    )
    return {name: statistics.median(s[i] for s in samples) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------
# The benchmark


@contextlib.contextmanager
def _saved_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _summary(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs]


def results(quick: bool = False, repeats: int | None = None) -> list[dict[str, Any]]:
    from trainyard.cli.local import LocalStack, free_port
    from trainyard.cli.tiny_model import make_dataset, make_tiny_model_dir
    from trainyard.platform import storage

    params = QUICK if quick else FULL
    if repeats:
        params = Params(**{**asdict(params), "repeats": repeats})
    direct: list[dict[str, Any]] = []
    platform: list[dict[str, Any]] = []
    with (
        _saved_environ(),
        tempfile.TemporaryDirectory(prefix="trainyard-bench-overhead-") as tmp,
        scratch_database("trainyard_bench_overhead") as db_url,
    ):
        work = Path(tmp)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ["TRAINYARD_CREDENTIALS"] = str(work / "credentials.json")  # leave the user's alone
        os.environ["TRAINYARD_DATABASE_URL"] = db_url
        store_uri = os.environ.get("TRAINYARD_STORAGE_URI") or f"file://{work / 'store'}"
        os.environ["TRAINYARD_STORAGE_URI"] = store_uri
        os.environ["TRAINYARD_LOCAL_ROOTS"] = str(work)  # the model below is read where it is made
        store = storage.open_store(store_uri)
        model_dir = make_tiny_model_dir(
            work / "model", n_embd=params.n_embd, n_layer=params.n_layer, n_head=params.n_head
        )
        dataset = make_dataset(work / "train.jsonl", params.records)
        train_uri = store.put_file(storage.dataset_key("bench", "train.jsonl"), dataset)
        spec = job_spec(params, str(model_dir), train_uri)

        with ray_cluster(num_cpus=os.cpu_count() or 2), ProcSampler(interval=2.0) as sampler:
            stack = LocalStack(data_dir=work / "stack", port=free_port(8790))
            stack.start()
            try:
                # One short run first, so neither side meets a cold cluster (worker processes,
                # page cache, torch's first-use costs).
                for i in range(params.repeats):
                    order = ["direct", "platform"] if i % 2 == 0 else ["platform", "direct"]
                    for side in order:
                        if side == "direct":
                            direct.append(run_direct(spec, store_uri, f"bench-direct-{i}"))
                        else:
                            platform.append(run_platform(stack, spec, store_uri))
                        latest = (direct if side == "direct" else platform)[-1]
                        latest["cpu_cores_busy_startup"] = sampler.window(
                            latest["t0"], latest["train_start_at"]
                        )
                        latest["cpu_cores_busy_steady"] = sampler.window(
                            latest["first_checkpoint_at"], latest["last_checkpoint_at"]
                        )
                        print(
                            f"  [platform_overhead] {side} run {i + 1}/{params.repeats}: "
                            f"wall {latest['wall_s']:.1f}s, first step {latest['first_step_s']:.1f}s, "
                            f"{latest['tokens_per_s']:.0f} tok/s",
                            flush=True,
                        )
                startup_parts = attempt_startup_parts()
            finally:
                stack.stop()

    def med(runs: list[dict[str, Any]], key: str) -> float | None:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    def cpu(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
        labels = {label for r in runs for label in r[key]}
        med_ = {label: statistics.median(r[key].get(label, 0.0) for r in runs) for label in labels}
        return {k: round(v, 3) for k, v in sorted(med_.items(), key=lambda kv: -kv[1]) if v >= 0.01}

    for r in direct + platform:
        steady = r["cpu_cores_busy_steady"]
        workers = sum(v for k, v in steady.items() if k.startswith("ray::RayTrainWorker"))
        others = sum(v for k, v in steady.items() if not k.startswith(("ray::RayTrainWorker", "not this")))
        r["training_worker_cores"] = workers
        # Everything of this benchmark that is not a training worker: the platform's own cost
        # (API, daemon, attempt process, RunControl, Postgres, Ray's own) plus the sampler.
        r["non_training_cores"] = others
        r["tokens_per_worker_cpu_s"] = r["tokens_per_s"] / workers if workers else None

    cpu_busy = {
        phase: {
            "direct": cpu(direct, f"cpu_cores_busy_{phase}"),
            "platform": cpu(platform, f"cpu_cores_busy_{phase}"),
        }
        for phase in ("startup", "steady")
    }
    breakdown = {
        "direct": {k: med(direct, k) for k in ("first_step_s", "training_s", "tail_s", "wall_s")},
        "platform": {
            k: med(platform, k)
            for k in (
                "submit_http_s",
                "queue_wait_s",
                "claim_to_first_step_s",
                "first_step_s",
                "first_progress_visible_s",
                "training_s",
                "tail_s",
                "attempt_end_to_succeeded_s",
                "attempt_process_gone_after_succeeded_s",
                "wall_s",
            )
        },
        "attempt_process_startup_s": startup_parts,
    }
    run_shape = {
        "steps": params.steps,
        "checkpoint_every": params.every_steps,
        "batch_size_per_worker": params.batch_size,
        "workers": 2,
        "model": f"gpt2 n_embd={params.n_embd} n_layer={params.n_layer}",
        "tokens_per_run": direct[0]["tokens"] if direct else None,
    }
    return [
        figure(
            "platform_wall_submit_to_succeeded",
            _summary(platform, "wall_s"),
            _summary(direct, "wall_s"),
            unit="s",
            goal=f"ratio <= {GOAL_WALL}",
            higher_is_better=False,
            goal_ratio=GOAL_WALL,
            detail={
                # The platform's fixed cost in seconds, pair by pair: the ratio depends on the run's
                # length, this does not.
                "extra_s_per_pair": [
                    p["wall_s"] - d["wall_s"] for p, d in zip(platform, direct, strict=True)
                ],
                "breakdown_median_s": breakdown,
                "cpu_cores_busy_median": cpu_busy,
                "run": run_shape,
            },
        ),
        figure(
            "platform_time_to_first_step",
            _summary(platform, "first_step_s"),
            _summary(direct, "first_step_s"),
            unit="s",
            goal="info",
            detail={"platform_first_progress_visible_s": [r["first_progress_visible_s"] for r in platform]},
        ),
        figure(
            "platform_steady_tokens_per_s",
            _summary(platform, "tokens_per_s"),
            _summary(direct, "tokens_per_s"),
            unit="tok/s",
            goal=f"ratio >= {GOAL_THROUGHPUT}",
            higher_is_better=True,
            goal_ratio=GOAL_THROUGHPUT,
            detail={"runs": {"direct": direct, "platform": platform}},
        ),
        # Throughput per CPU second the training workers got: on a shared machine other work takes
        # cores from training, and this figure does not move with it. With it, the CPU the
        # platform's own processes used in steady state, in cores.
        figure(
            "platform_tokens_per_worker_cpu_s",
            [r["tokens_per_worker_cpu_s"] for r in platform if r["tokens_per_worker_cpu_s"]],
            [r["tokens_per_worker_cpu_s"] for r in direct if r["tokens_per_worker_cpu_s"]],
            unit="tok/cpu-s",
            goal="info",
            detail={
                "training_worker_cores": {
                    "direct": [r["training_worker_cores"] for r in direct],
                    "platform": [r["training_worker_cores"] for r in platform],
                },
                "non_training_cores": {
                    "direct": [r["non_training_cores"] for r in direct],
                    "platform": [r["non_training_cores"] for r in platform],
                },
            },
        ),
        figure(
            "platform_non_training_cores_steady",
            [r["non_training_cores"] for r in platform],
            [r["non_training_cores"] for r in direct],
            unit="cores",
            goal="info",
        ),
    ]


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    rows = results(quick=args.quick, repeats=args.repeats)
    print(format_table(rows))
    print(json.dumps(rows[0]["detail"], indent=2, default=str))


if __name__ == "__main__":
    main()
