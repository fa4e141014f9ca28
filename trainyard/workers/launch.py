"""Launch one training attempt on Ray: the instance type and pool give the ScalingConfig, the spec
gives one Train run (:mod:`.trainer`) or a sweep of them (:mod:`.sweep`).

The attempt process calls :func:`run_training` once it is connected to the Ray cluster.
An attempt writes under its own prefix in the job's store (a sweep: see :mod:`.sweep`):

    jobs/{job_id}/attempts/{n}/checkpoints/{run_name}/checkpoint_000000010/   Ray Train checkpoints
    jobs/{job_id}/attempts/{n}/final/                  the trained model (save_pretrained)

A checkpoint becomes the job's once the attempt records it in the database (fenced), and a later
attempt resumes from the latest recorded one (``resume_from``), never from whatever a stale
attempt left in the store. Ray Train V2 has no ``resume_from_checkpoint`` on the trainer any more;
the loop downloads that checkpoint and hands it to the Hugging Face Trainer. The job's ``keep``
applies to its recorded checkpoints across attempts, so Ray Train keeps all of a run's own.
"""

from __future__ import annotations

from typing import Any

from trainyard.platform.scheduling.catalog import InstanceType
from trainyard.platform.scheduling.pools import Pool
from trainyard.platform.spec import JobSpec
from trainyard.platform.storage import checkpoints_prefix, final_model_prefix
from trainyard.workers.cluster import check_fits, runtime_env
from trainyard.workers.control import RunControlHandle
from trainyard.workers.outcome import TrainingOutcome
from trainyard.workers.scaling import scaling_for
from trainyard.workers.sweep import run_sweep
from trainyard.workers.trainer import DEFAULT_PROGRESS_INTERVAL_S, DEFAULT_STOP_POLL_INTERVAL_S, train


def connect(address: str | None) -> None:
    """Join the Ray cluster as this attempt's driver; the run's workers get the platform's store
    and hub settings through its runtime environment, not whatever their node was started with."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address or "auto", configure_logging=False, log_to_driver=True, runtime_env=runtime_env()
        )


def run_training(
    spec: JobSpec,
    *,
    job_id: str,
    itype: InstanceType,
    pool: Pool | None,
    store_uri: str,
    control: RunControlHandle | None,
    run_name: str,
    attempt: int,
    resume_from: str | None = None,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
    plan: dict[str, Any] | None = None,
    spot: bool = False,
) -> TrainingOutcome:
    """Run attempt number ``attempt`` of ``spec`` on ``itype`` in ``pool`` (on its spot nodes when
    ``spot``, where the pool tells them apart) and wait for it,
    starting from the recorded checkpoint ``resume_from`` if there is one, batched as the job's
    ``plan`` says (micro-batch, accumulation, gradient checkpointing).

    Raises ``InsufficientResources`` when the live nodes cannot hold the run, and
    ``ray.train.TrainingFailedError`` when a worker fails (the daemon decides on retries).
    """
    import ray

    scaling = scaling_for(itype, pool, spot=spot)
    # A worker group the cluster cannot place would wait forever: fail now, saying why.
    check_fits(scaling, ray.nodes(), itype.name)
    if spec.sweep is not None:
        return run_sweep(
            spec,
            job_id=job_id,
            scaling=scaling,
            store_uri=store_uri,
            control=control,
            run_name=run_name,
            progress_interval_s=progress_interval_s,
            stop_poll_interval_s=stop_poll_interval_s,
        )
    return train(
        spec,
        scaling=scaling,
        store_uri=store_uri,
        checkpoints=checkpoints_prefix(job_id, attempt),
        run_name=run_name,
        final_prefix=final_model_prefix(job_id, attempt),
        control=control,
        progress_interval_s=progress_interval_s,
        stop_poll_interval_s=stop_poll_interval_s,
        keep=None,
        resume_from=resume_from,
        plan=plan,
    )
