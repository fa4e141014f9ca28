"""Sweeps: Ray Tune over Ray Train. Every combination of ``spec.sweep.param_space`` is a trial
(repeated ``num_samples`` times), each a Tune driver that runs one TorchTrainer on the job's
instance type; ASHA may stop the weak ones early. The best trial gives the job's final model.

    jobs/{job_id}/sweep/{run_name}/          the Tune experiment (restored by a later attempt)
    jobs/{job_id}/sweep/{trial}/final/       each finished trial's model
    jobs/{job_id}/checkpoints/{run_name}-{trial}/   each trial's Train checkpoints

At most ``sweep.max_concurrent_trials`` trials run at once: the job's plan holds an instance for
each, and the attempt is billed for them. Every event a trial reports carries its trial id, so
its checkpoints are recorded as its own and its progress adds to the sweep's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ray.train.v2.api.config import ScalingConfig

from trainyard.platform.spec import Hyperparameters, JobSpec
from trainyard.platform.storage import checkpoints_prefix, job_prefix, open_store, safe_key
from trainyard.workers.control import MESSAGE, RunControlHandle
from trainyard.workers.outcome import TrainingOutcome
from trainyard.workers.trainer import (
    DEFAULT_PROGRESS_INTERVAL_S,
    DEFAULT_STOP_POLL_INTERVAL_S,
    checkpoint_uri,
    train,
)

SWEEP_DRIVER_MEMORY = 256 * 1024 * 1024  # bytes of Ray "memory" per Tune trial driver

_REPORTED_METRICS = frozenset(
    {"step", "epoch", "tokens_seen", "loss", "eval_loss", "eval_accuracy", "learning_rate", "grad_norm"}
)


@dataclass(frozen=True)
class SweepSetup:
    """What every trial driver shares (handed to Tune once, with ``with_parameters``)."""

    spec: dict[str, Any]  # JobSpec.model_dump(mode="json"); each trial overrides hyperparameters
    job_id: str
    store_uri: str
    run_name: str
    scaling: ScalingConfig
    control: RunControlHandle | None
    progress_interval_s: float
    stop_poll_interval_s: float
    keep: int


def _trial_spec(base: dict[str, Any], overrides: dict[str, Any]) -> JobSpec:
    """The spec one trial trains: the job's, with this trial's hyperparameters and no sweep."""
    data = dict(base)
    data["hyperparameters"] = {**data.get("hyperparameters", {}), **overrides}
    data["sweep"] = None
    return JobSpec.model_validate(data)


def _trial_final_prefix(job_id: str, trial_id: str) -> str:
    return safe_key(job_prefix(job_id), "sweep", trial_id, "final")


def _sweep_driver(config: dict[str, Any], setup: SweepSetup) -> None:
    """A Tune trial: one TorchTrainer run with this trial's hyperparameters."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    result = train(
        _trial_spec(setup.spec, config),
        scaling=setup.scaling,
        store_uri=setup.store_uri,
        checkpoints=checkpoints_prefix(setup.job_id),
        run_name=f"{setup.run_name}-{trial_id}",
        final_prefix=_trial_final_prefix(setup.job_id, trial_id),
        control=setup.control,
        extra_callbacks=[TuneReportCallback()],
        tags={"trial": trial_id},
        progress_interval_s=setup.progress_interval_s,
        stop_poll_interval_s=setup.stop_poll_interval_s,
        # Trials resume through Tune's restored experiment, each from its own Train run's record.
        keep=setup.keep,
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
    scaling: ScalingConfig,
    store_uri: str,
    control: RunControlHandle | None,
    run_name: str,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
) -> TrainingOutcome:
    """Run (or restore and finish) the sweep of ``spec`` and wait for it.

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
                {"type": MESSAGE, "level": "warning", "message": "no validation_file: sweep ranks by loss"}
            )
    # A stop-triggered checkpoint can arrive before the first evaluation; without this Tune would
    # fail the trial for a result that lacks the metric.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

    setup = SweepSetup(
        spec=spec.model_dump(mode="json"),
        job_id=job_id,
        store_uri=store_uri,
        run_name=run_name,
        scaling=scaling,
        control=control,
        progress_interval_s=progress_interval_s,
        stop_poll_interval_s=stop_poll_interval_s,
        keep=spec.checkpoint.keep,
    )
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
                # As many at once as the sweep was planned, budgeted and is billed for.
                max_concurrent_trials=sweep.concurrency,
            ),
            # verbose=0: the platform reports progress itself; Tune's tables would only fill logs.
            run_config=ray.tune.RunConfig(
                name=run_name, storage_path=storage_path, storage_filesystem=filesystem, verbose=0
            ),
        )
    grid = tuner.fit()
    return _sweep_outcome(grid, job_id=job_id, store_uri=store_uri, metric=metric, mode=sweep.mode)


def _sweep_outcome(grid: Any, *, job_id: str, store_uri: str, metric: str, mode: str) -> TrainingOutcome:
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
    return TrainingOutcome(
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
