"""What an attempt asks of the Ray cluster before it starts a run: that the run's workers carry the
platform's own configuration, and that the cluster can hold the run at all.

Training workers run in the environment their node was started with, which need not have the
object store's endpoint or keys (those are the platform's settings, not the node's). The attempt
hands them over in the run's runtime environment: every task and actor of the run, on any node,
gets them. Values are never logged.

A worker group that cannot be placed would wait forever (Ray Train keeps asking for its
placement group), so a plan the live nodes cannot hold fails the attempt at once as
`insufficient_resources`, naming what it needs and what the cluster has.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

# What the training loop reads from its environment: the object store (boto3's own resolution)
# and the model hub. The store's root travels in the loop's config, not here.
_FORWARDED = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_CA_BUNDLE",
    "AWS_PROFILE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of this (attempt) process that every training worker must see as well."""
    env = os.environ if environ is None else environ
    return {name: env[name] for name in _FORWARDED if env.get(name)}


def runtime_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Ray runtime environment of an attempt's run (``ray.init(runtime_env=...)``)."""
    return {"env_vars": worker_env(environ)}


def _live(nodes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The resources of each live node of ``ray.nodes()``."""
    return [node.get("Resources") or {} for node in nodes if node.get("Alive", False)]


def worker_slots(need: Mapping[str, float], nodes: Iterable[Mapping[str, Any]]) -> int:
    """How many workers asking for ``need`` each the live ``nodes`` (``ray.nodes()``) can hold."""
    asked = [(r, amount) for r, amount in need.items() if amount > 0]
    if not asked:
        return 0
    return sum(
        min(math.floor(float(have.get(r, 0.0)) / amount + 1e-9) for r, amount in asked)
        for have in _live(nodes)
    )


def shortfall(num_workers: int, need: Mapping[str, float], nodes: list[Mapping[str, Any]]) -> str | None:
    """Why ``num_workers`` workers asking for ``need`` each cannot all be placed, or None if they can."""
    slots = worker_slots(need, nodes)
    if slots >= num_workers:
        return None
    live = _live(nodes)
    total = {r: sum(float(have.get(r, 0.0)) for have in live) for r in need}
    alive = len(live)
    asks = ", ".join(f"{r}: {v:g}" for r, v in sorted(need.items()))
    has = ", ".join(f"{r}: {v:g}" for r, v in sorted(total.items()))
    return (
        f"the plan needs {num_workers} worker(s) of {{{asks}}} each; the Ray cluster's {alive} live "
        f"node(s) can hold {slots} (they have {{{has}}} in all)"
    )


class InsufficientResources(Exception):
    """The live Ray nodes cannot hold the run's worker group: it would wait forever."""


def check_fits(scaling: Any, nodes: list[Mapping[str, Any]], what: str) -> None:
    """Raise InsufficientResources unless the live ``nodes`` can hold the run ``scaling`` describes
    (a Ray Train ``ScalingConfig``); ``what`` names the plan in the message."""
    need = {str(k): float(v) for k, v in (scaling.resources_per_worker or {"CPU": 1.0}).items()}
    missing = shortfall(int(scaling.num_workers), need, nodes)
    if missing is not None:
        raise InsufficientResources(f"{what}: {missing}")


def alive_nodes() -> set[str]:
    """The ids of the Ray nodes alive now (this process is connected to the cluster)."""
    import ray

    return {str(n["NodeID"]) for n in ray.nodes() if n.get("Alive")}


def lost_nodes(started_with: set[str], *, wait_s: float) -> set[str]:
    """The nodes of ``started_with`` that are gone, waiting up to ``wait_s`` for the cluster to
    mark them dead: a run can fail before the node's health checks have run out. Empty when
    none went away, or when Ray cannot say."""
    if not started_with:
        return set()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lost = started_with - alive_nodes()
        except Exception:
            return set()
        if lost or time.monotonic() > deadline:
            return lost
        time.sleep(1.0)
