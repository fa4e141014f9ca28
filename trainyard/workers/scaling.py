"""Instance type -> Ray Train ``ScalingConfig``: how many workers, what each asks Ray for."""

from __future__ import annotations

# Ray Train V2 (the default in Ray 2.60) under its own module path: ``ray.train`` re-exports these
# names at run time, but a type checker reads its V1 fallback, which lacks the TPU fields.
from ray.train.v2.api.config import ScalingConfig

from trainyard.platform.scheduling.catalog import InstanceType
from trainyard.platform.scheduling.pools import Pool

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


def pool_resources(pool: Pool | None, *, spot: bool = False) -> dict[str, float]:
    """The custom Ray resources each worker of a job in ``pool`` asks for, on spot capacity or
    not (none without a pool)."""
    return {} if pool is None else pool.resources_for(spot=spot)


def scaling_for(itype: InstanceType, pool: Pool | None = None, *, spot: bool = False) -> ScalingConfig:
    """A ScalingConfig for one run of ``itype`` in ``pool``, on spot capacity when ``spot``.

    The pool's ``ray_resource`` (such as ``{"pool-a100": 1}``) is requested by every worker: the
    node group of that pool advertises the resource, so the request pins every worker there and
    tells the autoscaler which group to grow. Node groups should advertise it generously (one unit
    per worker slot, or more) so it never becomes the binding limit. A pool's capacity resources
    add the marker of spot or on-demand nodes, so an attempt runs on the capacity it is billed as.
    """
    resources = pool_resources(pool, spot=spot)
    kind = itype.kind
    nodes = max(1, itype.nodes)

    if kind == "cpu":
        # One CPU each: Ray then sets OMP_NUM_THREADS=1 per worker, and the plan (itype.workers)
        # fits on a node whatever else is running there.
        return ScalingConfig(
            num_workers=max(1, itype.workers),
            use_gpu=False,
            resources_per_worker={"CPU": 1.0, **resources},
        )

    if kind in ("gpu", "multi_gpu"):
        workers = itype.workers or max(1, itype.accelerator_count) * nodes
        # With a pool resource the node group is pinned already; an accelerator_type on top would
        # only add a way to be unschedulable (names detected on the node may differ from ours).
        accel = None if resources else ray_accelerator_type(itype.accelerator)
        return ScalingConfig(
            num_workers=workers,
            use_gpu=True,
            resources_per_worker={"CPU": 1.0, "GPU": 1.0, **resources},
            accelerator_type=accel,
        )

    if kind == "tpu":
        accel = ray_accelerator_type(itype.accelerator)
        if itype.tpu_topology and accel:
            from ray.util.tpu import get_tpu_worker_resources

            # Ray runs TPUs SPMD-style: one worker per TPU host holding all of its chips.
            tpu_workers, per_worker = get_tpu_worker_resources(
                topology=itype.tpu_topology, accelerator_type=accel
            )
            return ScalingConfig(
                num_workers=tpu_workers,
                use_tpu=True,
                topology=itype.tpu_topology,
                accelerator_type=accel,
                resources_per_worker={**per_worker, **resources},
            )
        return ScalingConfig(
            num_workers=1,
            use_tpu=True,
            accelerator_type=accel,
            resources_per_worker={"CPU": 1.0, "TPU": float(max(1, itype.accelerator_count)), **resources},
        )

    raise ValueError(f"instance type {itype.name!r} has unknown kind {kind!r}")
