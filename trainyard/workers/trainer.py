"""One Ray Train run: a ``TorchTrainer`` over the per-worker loop, its run config, the callback
that reports persisted checkpoints, and Ray's ``Result`` turned into a :class:`TrainingOutcome`.

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
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any, cast

from ray.train import Checkpoint

# Ray Train V2 (the default in Ray 2.60) under its own module paths: ``ray.train`` and
# ``ray.train.torch`` re-export these at run time, but a type checker reads their V1 fallbacks.
from ray.train.v2.api.callback import UserCallback
from ray.train.v2.api.config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.v2.api.result import Result
from ray.train.v2.torch.torch_trainer import TorchTrainer

from trainyard.platform.spec import JobSpec
from trainyard.platform.storage import open_store, safe_key
from trainyard.workers.control import CHECKPOINT, MESSAGE, RunControlHandle
from trainyard.workers.outcome import TrainingOutcome
from trainyard.workers.training import LoopConfig, train_loop_per_worker

logger = logging.getLogger(__name__)

DEFAULT_PROGRESS_INTERVAL_S = 2.0
DEFAULT_STOP_POLL_INTERVAL_S = 2.0


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
        control: RunControlHandle | None,
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

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None
    ) -> None:
        if checkpoint is None or self._control is None:
            return
        rank0 = dict(metrics[0]) if metrics else {}
        try:
            uri = checkpoint_uri(self._store_uri, self._prefix, self._storage_path, checkpoint.path)
        except ValueError:
            logger.warning("checkpoint %s is outside %s", checkpoint.path, self._storage_path)
            return
        self._control.report.remote(
            {"type": CHECKPOINT, "step": rank0.get("step"), "metrics": rank0, "uri": uri, **self._tags}
        )

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        if self._control is None:
            return
        for rank, exc in sorted(worker_exceptions.items()):
            self._control.report.remote(
                {
                    "type": MESSAGE,
                    "level": "error",
                    "message": f"worker {rank} failed: {type(exc).__name__}: {exc}"[:4000],
                    **self._tags,
                }
            )


def loop_config(
    spec: JobSpec,
    *,
    store_uri: str,
    final_prefix: str | None,
    control: RunControlHandle | None,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
    tags: dict[str, Any] | None = None,
    resume_from: str | None = None,
    plan: dict[str, Any] | None = None,
) -> LoopConfig:
    """The plain dict ``train_loop_per_worker`` receives (pickled to every worker). ``plan``: the
    job's plan, whose memory plan (micro-batch, accumulation, checkpointing) the loop trains with."""
    config: LoopConfig = {
        "spec": spec.model_dump(mode="json"),
        "store_uri": store_uri,
        "final_prefix": final_prefix,
        "control": control,
        "progress_interval_s": progress_interval_s,
        "stop_poll_interval_s": stop_poll_interval_s,
    }
    if tags:
        config["tags"] = dict(tags)
    if resume_from:
        config["resume_from"] = resume_from
    if plan:
        config["plan"] = dict(plan)
    return config


def build_trainer(
    spec: JobSpec,
    *,
    scaling: ScalingConfig,
    store_uri: str,
    checkpoints: str,
    run_name: str,
    final_prefix: str | None,
    control: RunControlHandle | None,
    extra_callbacks: list[UserCallback] | None = None,
    tags: dict[str, Any] | None = None,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
    keep: int | None = None,
    resume_from: str | None = None,
    plan: dict[str, Any] | None = None,
) -> TorchTrainer:
    """A TorchTrainer for one run whose checkpoints live under the store prefix ``checkpoints``.

    ``keep``: how many of this run's checkpoints Ray Train keeps (None: all of them, when the
    platform prunes the job's recorded checkpoints itself). ``resume_from``: a recorded checkpoint's
    URI the loop starts from when Ray Train has none of this run's own to give back.
    """
    storage_path, filesystem = open_store(store_uri).ray_storage(checkpoints)
    config = loop_config(
        spec,
        store_uri=store_uri,
        final_prefix=final_prefix,
        control=control,
        progress_interval_s=progress_interval_s,
        stop_poll_interval_s=stop_poll_interval_s,
        tags=tags,
        resume_from=resume_from,
        plan=plan,
    )
    events = CheckpointEvents(
        control, store_uri=store_uri, prefix=checkpoints, storage_path=storage_path, tags=tags
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=dict(config),
        scaling_config=scaling,
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
            # The platform retries attempts itself (new lease, maybe another instance type), so
            # Ray Train must not retry inside an attempt.
            failure_config=FailureConfig(max_failures=0),
            callbacks=[events, *(extra_callbacks or [])],
        ),
    )


def outcome_of(fit_result: Result, *, store_uri: str, checkpoints: str) -> TrainingOutcome:
    """Rank 0's outcome (Ray's ``return_value``) with the checkpoints Ray Train kept."""
    if fit_result.return_value is None:
        raise RuntimeError("the training run returned no outcome")
    trained = TrainingOutcome.from_dict(fit_result.return_value)
    storage_path, _fs = open_store(store_uri).ray_storage(checkpoints)

    def uri(ckpt: Checkpoint) -> str:
        return checkpoint_uri(store_uri, checkpoints, storage_path, ckpt.path)

    return replace(
        trained,
        latest_checkpoint_uri=uri(fit_result.checkpoint) if fit_result.checkpoint is not None else None,
        checkpoint_uris=[uri(c) for c, _m in (fit_result.best_checkpoints or [])],
    )


def train(
    spec: JobSpec,
    *,
    scaling: ScalingConfig,
    store_uri: str,
    checkpoints: str,
    run_name: str,
    final_prefix: str | None,
    control: RunControlHandle | None,
    extra_callbacks: list[UserCallback] | None = None,
    tags: dict[str, Any] | None = None,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
    keep: int | None = None,
    resume_from: str | None = None,
    plan: dict[str, Any] | None = None,
) -> TrainingOutcome:
    """Run one Train run and wait for it: resumed from ``resume_from`` (a recorded checkpoint), or,
    with the same ``run_name`` and ``checkpoints`` as an earlier run, from Ray Train's own record.

    Raises ``ray.train.TrainingFailedError`` when a worker fails.
    """
    trainer = build_trainer(
        spec,
        scaling=scaling,
        store_uri=store_uri,
        checkpoints=checkpoints,
        run_name=run_name,
        final_prefix=final_prefix,
        control=control,
        extra_callbacks=extra_callbacks,
        tags=tags,
        progress_interval_s=progress_interval_s,
        stop_poll_interval_s=stop_poll_interval_s,
        keep=keep,
        resume_from=resume_from,
        plan=plan,
    )
    # fit() is annotated with V1's Result; under V2 it returns V2's, which has return_value.
    fit_result = cast(Result, trainer.fit())
    return outcome_of(fit_result, store_uri=store_uri, checkpoints=checkpoints)
