"""Launch one training attempt on Ray: the instance type and pool give the ScalingConfig, the spec
gives one Train run (:mod:`.trainer`) or a sweep of them (:mod:`.sweep`).

The attempt process calls :func:`run_training` once it is connected to the Ray cluster.
Everything the attempt leaves behind goes to the job's store:

    jobs/{job_id}/checkpoints/{run_name}/checkpoint_000000010/   Ray Train checkpoints
    jobs/{job_id}/final/                                        the trained model (save_pretrained)

Resuming is Ray Train V2's own mechanism: there is no ``resume_from_checkpoint`` on the trainer
any more, so a later attempt passes the same ``run_name`` and storage; Ray Train restores its
checkpoint manager from the snapshot it keeps under ``{run_name}/`` and the loop continues from
``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

from trainyard.platform.scheduling.catalog import InstanceType
from trainyard.platform.scheduling.pools import Pool
from trainyard.platform.spec import JobSpec
from trainyard.platform.storage import checkpoints_prefix, final_model_prefix
from trainyard.workers.control import RunControlHandle
from trainyard.workers.outcome import TrainingOutcome
from trainyard.workers.scaling import scaling_for
from trainyard.workers.sweep import run_sweep
from trainyard.workers.trainer import DEFAULT_PROGRESS_INTERVAL_S, DEFAULT_STOP_POLL_INTERVAL_S, train


def run_training(
    spec: JobSpec,
    *,
    job_id: str,
    itype: InstanceType,
    pool: Pool | None,
    store_uri: str,
    control: RunControlHandle | None,
    run_name: str,
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    stop_poll_interval_s: float = DEFAULT_STOP_POLL_INTERVAL_S,
) -> TrainingOutcome:
    """Run (or resume) one attempt of ``spec`` on ``itype`` in ``pool`` and wait for it.

    Calling again with the same ``job_id`` and ``run_name`` continues from the latest checkpoint.
    Raises ``ray.train.TrainingFailedError`` when a worker fails (the daemon decides on retries).
    """
    scaling = scaling_for(itype, pool)
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
        checkpoints=checkpoints_prefix(job_id),
        run_name=run_name,
        final_prefix=final_model_prefix(job_id),
        control=control,
        progress_interval_s=progress_interval_s,
        stop_poll_interval_s=stop_poll_interval_s,
    )
