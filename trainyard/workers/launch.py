"""Launch one training attempt on Ray: instance type -> ScalingConfig, spec -> TorchTrainer.fit().

The worker daemon calls :func:`run_training` from a per-attempt process that is connected to the
Ray cluster. Everything the attempt leaves behind goes to the job's store:

    jobs/{job_id}/checkpoints/{run_name}/checkpoint_000000010/   Ray Train checkpoints
    jobs/{job_id}/final/                                        the trained model (save_pretrained)

Resuming is Ray Train V2's own mechanism: there is no ``resume_from_checkpoint`` on the trainer
any more, so a later attempt passes the same ``run_name`` and storage; Ray Train restores its
checkpoint manager from the snapshot it keeps under ``{run_name}/`` and the loop continues from
``ray.train.get_checkpoint()``.

Checkpoint URIs reach the platform through :class:`CheckpointEvents`, a Ray Train ``UserCallback``
that runs on the Train controller. Its ``after_report`` fires after Ray Train has persisted the
checkpoint *and* registered it with the checkpoint manager (the manager is the first report
callback, user callbacks come after it), and gets the persisted ``Checkpoint`` whose ``path`` is
on the storage filesystem; that path, made relative to the ``storage_path`` we passed in, gives
the store key and hence the URI. ``ray.train.report`` itself returns nothing on the workers, and
listing the store after it would race with the controller's registration.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, UserCallback

from trainyard.platform.spec import Hyperparameters, JobSpec
from trainyard.platform.storage import (
    checkpoints_prefix,
    final_model_prefix,
    job_prefix,
    open_store,
    safe_key,
)
from trainyard.workers.training import train_loop_per_worker

logger = logging.getLogger(__name__)

DEFAULT_PROGRESS_INTERVAL_S = 2.0
DEFAULT_STOP_POLL_INTERVAL_S = 2.0
SWEEP_DRIVER_MEMORY = 256 * 1024 * 1024  # bytes of Ray "memory" per Tune trial driver


# ---------------------------------------------------------------------------------------------
# Instance type -> ScalingConfig
# ---------------------------------------------------------------------------------------------

# Catalog accelerator names that differ from the names Ray detects and schedules on
# (``ray.util.accelerators``). Ray reports an A100-SXM4-80GB as "A100"; a v5e as "TPU-V5LITEPOD".
_RAY_ACCELERATOR_ALIASES = {
    "TPU-V5E": "TPU-V5LITEPOD",
    "TPU-V5LITE": "TPU-V5LITEPOD",
}


def ray_accelerator_type(name: str | None) -> str | None:
    """Map a catalog accelerator name to the accelerator type Ray labels nodes with, or None."""
    if not name:
        return None
    # The submodule has every name; the package re-exports only some (no H200, B200, ...).
    from ray.util.accelerators import accelerators

    # Sized variants (A100-40G/80G) exist as constants but Ray never adds them to a node by
    # itself, so asking for one would leave the run unschedulable; use what Ray detects.
    undetected = {accelerators.NVIDIA_A100_40G, accelerators.NVIDIA_A100_80G}
    known = {v for k, v in vars(accelerators).items() if k.isupper() and isinstance(v, str)} - undetected
    upper = name.upper()
    candidates = [name, upper, _RAY_ACCELERATOR_ALIASES.get(upper, "")]
    if not upper.startswith("TPU"):
        # Ray names NVIDIA GPUs by family: "NVIDIA A100-SXM4-80GB" is "A100".
        candidates.append(upper.split("-")[0])
    return next((c for c in candidates if c in known), None)


def _pool(itype: Any, pool_resource: dict[str, float] | None) -> dict[str, float]:
    pool = pool_resource if pool_resource is not None else getattr(itype, "ray_resource", None)
    return {str(k): float(v) for k, v in (pool or {}).items()}


def scaling_for(itype: Any, pool_resource: dict[str, float] | None = None) -> ScalingConfig:
    """A ScalingConfig for an instance type (duck-typed: name, kind, accelerator, accelerator_count,
    nodes, workers, vcpus, tpu_topology, and optionally ray_resource).

    ``pool_resource`` (or ``itype.ray_resource``) is a per-worker custom resource request such as
    ``{"pool-a100": 1}``: the node group of that pool advertises the resource, so the request pins
    every worker there and tells the autoscaler which group to grow. Node groups should advertise
    it generously (one unit per worker slot, or more) so it never becomes the binding limit.
    """
    pool = _pool(itype, pool_resource)
    kind = itype.kind
    nodes = max(1, int(getattr(itype, "nodes", 1) or 1))
    declared_workers = int(getattr(itype, "workers", 0) or 0)

    if kind == "cpu":
        # One CPU each: Ray then sets OMP_NUM_THREADS=1 per worker, and the plan (itype.workers)
        # fits on a node whatever else is running there.
        return ScalingConfig(
            num_workers=max(1, declared_workers),
            use_gpu=False,
            resources_per_worker={"CPU": 1.0, **pool},
        )

    if kind in ("gpu", "multi_gpu"):
        gpus = int(getattr(itype, "accelerator_count", 0) or 0)
        workers = declared_workers or max(1, gpus) * nodes
        # With a pool resource the node group is pinned already; an accelerator_type on top would
        # only add a way to be unschedulable (names detected on the node may differ from ours).
        accel = None if pool else ray_accelerator_type(getattr(itype, "accelerator", None))
        return ScalingConfig(
            num_workers=workers,
            use_gpu=True,
            resources_per_worker={"CPU": 1.0, "GPU": 1.0, **pool},
            accelerator_type=accel,
        )

    if kind == "tpu":
        accel = ray_accelerator_type(getattr(itype, "accelerator", None))
        topology = getattr(itype, "tpu_topology", None)
        if topology and accel:
            from ray.util.tpu import get_tpu_worker_resources

            # Ray runs TPUs SPMD-style: one worker per TPU host holding all of its chips.
            workers, per_worker = get_tpu_worker_resources(topology=topology, accelerator_type=accel)
            return ScalingConfig(
                num_workers=workers,
                use_tpu=True,
                topology=topology,
                accelerator_type=accel,
                resources_per_worker={**per_worker, **pool},
            )
        chips = max(1, int(getattr(itype, "accelerator_count", 1) or 1))
        return ScalingConfig(
            num_workers=1,
            use_tpu=True,
            accelerator_type=accel,
            resources_per_worker={"CPU": 1.0, "TPU": float(chips), **pool},
        )

    raise ValueError(f"instance type {getattr(itype, 'name', itype)!r} has unknown kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# Results and checkpoint events
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    """What one attempt produced."""

    final_model_uri: str | None
    latest_checkpoint_uri: str | None
    checkpoint_uris: list[str]  # the checkpoints Ray Train still keeps, oldest first
    metrics: dict[str, Any]  # the outcome of the last step (loss, eval_loss, epoch, ...)
    steps: int  # optimizer steps done, counting those of earlier attempts
    start_step: int  # the step this attempt resumed from (0 for a fresh start)
    total_steps: int
    tokens_trained: int  # non-padding tokens over all workers, earlier attempts included
    tokens_this_attempt: int  # the part of tokens_trained this attempt did (throughput, metering)
    stopped_early: bool  # stopped on RunControl.request_stop; no final model then
    stop_reason: str | None = None
    best_trial: str | None = None  # sweeps: the trial whose model became the final model
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the attempt's ``result`` column)."""
        return asdict(self)


def checkpoint_uri(store_uri: str, prefix: str, storage_path: str, checkpoint_path: str) -> str:
    """The store URI of a checkpoint that Ray Train persisted at ``checkpoint_path``.

    ``checkpoint_path`` is a path on the storage filesystem (``bucket/root/jobs/j/checkpoints/run/
    checkpoint_000000010`` for S3, an absolute path for a local store) under ``storage_path``,
    which ``ObjectStore.ray_storage(prefix)`` returned.
    """
    # Ray normalises storage_path with Path(...).as_posix(); do the same before comparing.
    base = PurePosixPath(PurePosixPath(storage_path).as_posix())
    relative = PurePosixPath(checkpoint_path).relative_to(base).as_posix()
    return open_store(store_uri).uri_for(safe_key(prefix, relative))


class CheckpointEvents(UserCallback):
    """Runs on the Ray Train controller: tells RunControl about each persisted checkpoint."""

    def __init__(
        self,
        control: Any,
        *,
        store_uri: str,
        prefix: str,
        storage_path: str,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self._control = control
        self._store_uri = store_uri
        self._prefix = prefix
        self._storage_path = storage_path
        self._tags = dict(tags or {})

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is None or self._control is None:
            return
        rank0 = dict(metrics[0]) if metrics else {}
        try:
            uri = checkpoint_uri(self._store_uri, self._prefix, self._storage_path, checkpoint.path)
        except ValueError:
            logger.warning("checkpoint %s is outside %s", checkpoint.path, self._storage_path)
            return
        self._control.report.remote(
            {"type": "checkpoint", "step": rank0.get("step"), "metrics": rank0, "uri": uri, **self._tags}
        )

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        if self._control is None:
            return
        for rank, exc in sorted(worker_exceptions.items()):
            self._control.report.remote(
                {
                    "type": "message",
                    "level": "error",
                    "message": f"worker {rank} failed: {type(exc).__name__}: {exc}"[:4000],
                    **self._tags,
                }
            )


# ---------------------------------------------------------------------------------------------
# Building and running a trainer
# ---------------------------------------------------------------------------------------------


def loop_config(
    spec: JobSpec,
    *,
    store_uri: str,
    final_prefix: str | None,
    control: Any,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
) -> dict[str, Any]:
    """The plain dict ``train_loop_per_worker`` receives (pickled to every worker)."""
    return {
        "spec": spec.model_dump(mode="json"),
        "store_uri": store_uri,
        "final_prefix": final_prefix,
        "control": control,
        "progress_interval_s": progress_interval_s,
        "stop_poll_interval_s": stop_poll_interval_s,
    }


def build_trainer(
    spec: JobSpec,
    *,
    scaling: ScalingConfig,
    store_uri: str,
    checkpoints: str,
    run_name: str,
    final_prefix: str | None,
    control: Any,
    extra_callbacks: list[UserCallback] | None = None,
    tags: dict[str, Any] | None = None,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
) -> Any:
    """A TorchTrainer for one run whose checkpoints live under the store prefix ``checkpoints``."""
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = open_store(store_uri).ray_storage(checkpoints)
    config = loop_config(
        spec,
        store_uri=store_uri,
        final_prefix=final_prefix,
        control=control,
        progress_interval_s=progress_interval_s,
        stop_poll_interval_s=stop_poll_interval_s,
    )
    if tags:
        config["tags"] = dict(tags)
    events = CheckpointEvents(
        control, store_uri=store_uri, prefix=checkpoints, storage_path=storage_path, tags=tags
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling,
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
            # The platform retries attempts itself (new lease, maybe another instance type), so
            # Ray Train must not retry inside an attempt.
            failure_config=FailureConfig(max_failures=0),
            callbacks=[events, *(extra_callbacks or [])],
        ),
    )


def _result(
    fit_result: Any,
    *,
    store_uri: str,
    checkpoints: str,
    storage_path: str,
) -> TrainingResult:
    outcome: dict[str, Any] = dict(fit_result.return_value or {})

    def uri(ckpt: Any) -> str:
        return checkpoint_uri(store_uri, checkpoints, storage_path, ckpt.path)

    kept = [uri(c) for c, _m in (fit_result.best_checkpoints or [])]
    latest = uri(fit_result.checkpoint) if fit_result.checkpoint is not None else None
    metrics = {
        k: v
        for k, v in outcome.items()
        if k not in {"stopped", "stop_reason", "final_model_uri", "start_step", "start_tokens", "total_steps"}
    }
    return TrainingResult(
        final_model_uri=outcome.get("final_model_uri") or None,
        latest_checkpoint_uri=latest,
        checkpoint_uris=kept,
        metrics=metrics,
        steps=int(outcome.get("step", 0)),
        start_step=int(outcome.get("start_step", 0)),
        total_steps=int(outcome.get("total_steps", 0)),
        tokens_trained=int(outcome.get("tokens_seen", 0)),
        tokens_this_attempt=int(outcome.get("tokens_seen", 0)) - int(outcome.get("start_tokens", 0)),
        stopped_early=bool(outcome.get("stopped", False)),
        stop_reason=outcome.get("stop_reason") or None,
    )


def run_training(
    spec: JobSpec,
    *,
    job_id: str,
    itype: Any,
    pool_resource: dict[str, float] | None,
    store_uri: str,
    control: Any,
    run_name: str,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
) -> TrainingResult:
    """Run (or resume) one attempt of ``spec`` and wait for it; sweeps go through :func:`run_sweep`.

    Calling again with the same ``job_id`` and ``run_name`` continues from the latest checkpoint.
    Raises ``ray.train.TrainingFailedError`` when a worker fails (the daemon decides on retries).
    """
    if spec.sweep is not None:
        return run_sweep(
            spec,
            job_id=job_id,
            itype=itype,
            pool_resource=pool_resource,
            store_uri=store_uri,
            control=control,
            run_name=run_name,
            progress_interval_s=progress_interval_s,
            stop_poll_interval_s=stop_poll_interval_s,
        )
    checkpoints = checkpoints_prefix(job_id)
    trainer = build_trainer(
        spec,
        scaling=scaling_for(itype, pool_resource),
        store_uri=store_uri,
        checkpoints=checkpoints,
        run_name=run_name,
        final_prefix=final_model_prefix(job_id),
        control=control,
        progress_interval_s=progress_interval_s,
        stop_poll_interval_s=stop_poll_interval_s,
    )
    fit_result = trainer.fit()
    storage_path, _fs = open_store(store_uri).ray_storage(checkpoints)
    return _result(fit_result, store_uri=store_uri, checkpoints=checkpoints, storage_path=storage_path)


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------


def _trial_spec(base: dict[str, Any], overrides: dict[str, Any]) -> JobSpec:
    data = dict(base)
    data["hyperparameters"] = {**data.get("hyperparameters", {}), **overrides}
    data["sweep"] = None
    return JobSpec.model_validate(data)


_REPORTED_METRICS = frozenset(
    {"step", "epoch", "tokens_seen", "loss", "eval_loss", "eval_accuracy", "learning_rate", "grad_norm"}
)


def _trial_final_prefix(job_id: str, trial_id: str) -> str:
    return safe_key(job_prefix(job_id), "sweep", trial_id, "final")


def _sweep_driver(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """A Tune trial: one TorchTrainer run with this trial's hyperparameters."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    spec = _trial_spec(setup["spec"], config)
    job_id = setup["job_id"]
    checkpoints = checkpoints_prefix(job_id)
    run_name = f"{setup['run_name']}-{trial_id}"
    tags = {"trial": trial_id}
    trainer = build_trainer(
        spec,
        scaling=setup["scaling"],
        store_uri=setup["store_uri"],
        checkpoints=checkpoints,
        run_name=run_name,
        final_prefix=_trial_final_prefix(job_id, trial_id),
        control=setup["control"],
        extra_callbacks=[TuneReportCallback()],
        tags=tags,
        progress_interval_s=setup["progress_interval_s"],
        stop_poll_interval_s=setup["stop_poll_interval_s"],
    )
    fit_result = trainer.fit()
    storage_path, _fs = open_store(setup["store_uri"]).ray_storage(checkpoints)
    result = _result(
        fit_result, store_uri=setup["store_uri"], checkpoints=checkpoints, storage_path=storage_path
    )
    # One last result with the outcome, so the Tuner's ResultGrid carries the trial's final model.
    ray.tune.report(
        {
            **result.metrics,
            "trial_final_model_uri": result.final_model_uri or "",
            "trial_latest_checkpoint_uri": result.latest_checkpoint_uri or "",
            "trial_start_step": result.start_step,
            "trial_tokens_this_attempt": result.tokens_this_attempt,
            "trial_total_steps": result.total_steps,
            "trial_stopped": result.stopped_early,
            "trial_stop_reason": result.stop_reason or "",
        }
    )


def _asha(spec: JobSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    # Trials report at each checkpoint, so rungs are counted in optimizer steps from there.
    every = spec.checkpoint.every_steps
    # max_t past the last step: ASHA stops a trial that reaches max_t at once, which would cut
    # off the final-model save that follows the last checkpoint.
    return ASHAScheduler(
        time_attr="step",
        grace_period=every,
        max_t=max(every, spec.hyperparameters.max_steps or 10_000_000) + 1,
    )


def run_sweep(
    spec: JobSpec,
    *,
    job_id: str,
    itype: Any,
    pool_resource: dict[str, float] | None,
    store_uri: str,
    control: Any,
    run_name: str,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
    max_concurrent_trials: int | None = None,
) -> TrainingResult:
    """Ray Tune over Ray Train: every combination of ``spec.sweep.param_space`` is a trial
    (repeated ``num_samples`` times), each a TorchTrainer run on the job's instance type.

    The best trial by ``sweep.metric`` / ``sweep.mode`` gives the job's final model (its URI is
    returned; each trial saved under ``jobs/{job_id}/sweep/{trial}/final``). Re-running with the same
    ``run_name`` restores the Tune experiment, and each unfinished trial resumes its Train run.
    """
    import ray.tune

    sweep = spec.sweep
    if sweep is None:
        raise ValueError("spec has no sweep")
    unknown = sorted(set(sweep.param_space) - set(Hyperparameters.model_fields))
    if unknown:
        raise ValueError(f"sweep.param_space names unknown hyperparameters: {unknown}")
    # Fail before launching anything if some combination is invalid (e.g. lora_r=0).
    for key, values in sweep.param_space.items():
        for value in values:
            _trial_spec(spec.model_dump(mode="json"), {key: value})

    metric = sweep.metric
    if metric == "eval_loss" and spec.validation_file is None:
        # No validation data, no eval_loss: rank trials by training loss rather than failing.
        metric = "loss"
        if control is not None:
            control.report.remote(
                {"type": "message", "level": "warning", "message": "no validation_file: sweep ranks by loss"}
            )
    # A stop-triggered checkpoint can arrive before the first evaluation; without this Tune would
    # fail the trial for a result that lacks the metric.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

    scaling = scaling_for(itype, pool_resource)
    setup = {
        "spec": spec.model_dump(mode="json"),
        "job_id": job_id,
        "store_uri": store_uri,
        "run_name": run_name,
        "scaling": scaling,
        "control": control,
        "progress_interval_s": progress_interval_s,
        "stop_poll_interval_s": stop_poll_interval_s,
    }
    # The trial function only drives a Train run (its workers hold the resources), so it asks
    # for no CPU: otherwise it could take the very CPU a worker of its own run needs. Tune refuses
    # a request of nothing at all, so it asks for a little heap memory instead.
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_sweep_driver, setup=setup), {"CPU": 0, "memory": SWEEP_DRIVER_MEMORY}
    )
    store = open_store(store_uri)
    tune_prefix = safe_key(job_prefix(job_id), "sweep")
    storage_path, filesystem = store.ray_storage(tune_prefix)
    experiment = f"{storage_path.rstrip('/')}/{run_name}"
    if ray.tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
        tuner = ray.tune.Tuner.restore(
            experiment, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=filesystem
        )
    else:
        tuner = ray.tune.Tuner(
            trainable,
            param_space={key: ray.tune.grid_search(values) for key, values in sweep.param_space.items()},
            tune_config=ray.tune.TuneConfig(
                metric=metric,
                mode=sweep.mode,
                num_samples=sweep.num_samples,
                scheduler=_asha(spec) if sweep.asha else None,
                max_concurrent_trials=max_concurrent_trials,
            ),
            # verbose=0: the platform reports progress itself; Tune's tables would only fill logs.
            run_config=ray.tune.RunConfig(
                name=run_name, storage_path=storage_path, storage_filesystem=filesystem, verbose=0
            ),
        )
    grid = tuner.fit()
    return _sweep_result(grid, job_id=job_id, store_uri=store_uri, metric=metric, mode=sweep.mode)


def _sweep_result(grid: Any, *, job_id: str, store_uri: str, metric: str, mode: str) -> TrainingResult:
    """Pick the best trial that left a final model; everything else is read from the store.

    A trial's own closing ``tune.report`` is not relied on: Tune drops it when a scheduler has
    already stopped the trial, and a restored experiment may not have it.
    """
    store = open_store(store_uri)
    checkpoints = checkpoints_prefix(job_id)
    ckpt_storage, _fs = store.ray_storage(checkpoints)
    trials: list[dict[str, Any]] = []
    for r in grid:
        m = dict(r.metrics or {})
        trial_id = m.get("trial_id")
        final = _trial_final_prefix(job_id, trial_id) if trial_id else None
        # The driver's closing report carries the URI; Train results relayed by TuneReportCallback
        # carry the persisted checkpoint's filesystem path instead.
        ckpt_path = m.get("checkpoint_path")
        latest = m.get("trial_latest_checkpoint_uri") or (
            checkpoint_uri(store_uri, checkpoints, ckpt_storage, ckpt_path) if ckpt_path else None
        )
        trials.append(
            {
                "trial": trial_id,
                "config": dict(r.config or {}),
                "metric": m.get(metric),
                "step": int(m.get("step", 0) or 0),
                "tokens_seen": int(m.get("tokens_seen", 0) or 0),
                "tokens_this_attempt": int(m.get("trial_tokens_this_attempt", m.get("tokens_seen", 0)) or 0),
                "final_model_uri": store.uri_for(final)
                if final and store.exists(f"{final}/config.json")
                else None,
                "latest_checkpoint_uri": latest,
                "stopped": bool(m.get("trial_stopped", False)),
                "stop_reason": m.get("trial_stop_reason") or None,
                "start_step": int(m.get("trial_start_step", 0) or 0),
                "total_steps": int(m.get("trial_total_steps", 0) or 0),
                "metrics": {k: v for k, v in m.items() if k in _REPORTED_METRICS},
                "error": str(r.error) if r.error else None,
            }
        )
    finished = [t for t in trials if t["final_model_uri"] and isinstance(t["metric"], int | float)]
    stopped = next((t for t in trials if t["stopped"]), None)
    if not finished and stopped is None:
        errors = "; ".join(t["error"] for t in trials if t["error"])
        raise RuntimeError(
            f"no sweep trial finished with a model and a {metric!r} value: {errors or 'no errors'}"
        )
    pick = min if mode == "min" else max
    best = pick(finished, key=lambda t: t["metric"]) if finished else None
    summary = best or stopped
    assert summary is not None
    return TrainingResult(
        final_model_uri=best["final_model_uri"] if best else None,
        latest_checkpoint_uri=summary["latest_checkpoint_uri"],
        checkpoint_uris=[t["latest_checkpoint_uri"] for t in trials if t["latest_checkpoint_uri"]],
        metrics=summary["metrics"],
        steps=summary["step"],
        start_step=summary["start_step"],
        total_steps=summary["total_steps"],
        tokens_trained=sum(t["tokens_seen"] for t in trials),
        tokens_this_attempt=sum(t["tokens_this_attempt"] for t in trials),
        # A stop request reaches every trial; with no finished trial the sweep is incomplete.
        stopped_early=stopped is not None and best is None,
        stop_reason=stopped["stop_reason"] if stopped else None,
        best_trial=best["trial"] if best else None,
        trials=trials,
    )
