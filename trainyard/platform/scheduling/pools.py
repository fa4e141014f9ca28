"""Pools: which instance types this deployment can actually run, and how many jobs at once.

A pool is one instance type with a concurrency limit and the Ray resource that places a job's
workers on that pool's nodes (a KubeRay worker group advertises e.g. ``{"pool-a10g": 1}``). The
scheduler only chooses among types that have a pool. Configured with ``TRAINYARD_POOLS`` as JSON:
``[{"instance_type": "g5.xlarge", "max_concurrent": 4, "ray_resource": {"pool-a10g": 1}}]``.

Where a pool's node group mixes spot and on-demand nodes, ``capacity_resources`` names the resource
that marks each kind (``{"spot": {"spot-node": 1}, "on_demand": {"on-demand-node": 1}}``): an
attempt on spot capacity then runs only on spot nodes, and one moved to on-demand only on the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from trainyard.platform.scheduling.catalog import Catalog

DEFAULT_POOL_TYPE = "local-cpu"
_POOL_FIELDS = {"instance_type", "max_concurrent", "ray_resource", "node_labels", "capacity_resources"}
CAPACITIES = ("spot", "on_demand")


class PoolConfigError(ValueError):
    """The pools setting is malformed; names the pool and field."""

    code = "pools_invalid"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Pool:
    instance_type: str
    max_concurrent: int = 1
    # Custom Ray resources each worker of a job in this pool asks for, e.g. {"pool-a10g": 1};
    # None means no placement constraint (a local Ray instance).
    ray_resource: Mapping[str, float] | None = None
    # Node labels to select, for clusters that place by label rather than by custom resource.
    node_labels: Mapping[str, str] | None = None
    # Capacity ("spot" / "on_demand") -> the extra resources a worker on that capacity asks for.
    capacity_resources: Mapping[str, Mapping[str, float]] | None = None

    def resources_for(self, *, spot: bool) -> dict[str, float]:
        """What each worker of an attempt on this pool asks Ray for, beyond CPUs and devices."""
        out = {str(k): float(v) for k, v in (self.ray_resource or {}).items()}
        extra = (self.capacity_resources or {}).get("spot" if spot else "on_demand") or {}
        return {**out, **{str(k): float(v) for k, v in extra.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "max_concurrent": self.max_concurrent,
            "ray_resource": dict(self.ray_resource) if self.ray_resource is not None else None,
            "node_labels": dict(self.node_labels) if self.node_labels is not None else None,
            "capacity_resources": (
                {k: dict(v) for k, v in self.capacity_resources.items()}
                if self.capacity_resources is not None
                else None
            ),
        }


def default_pools() -> list[Pool]:
    return [Pool(DEFAULT_POOL_TYPE, 1, None, None)]


def parse_pools(value: str | list | None, catalog: Catalog) -> list[Pool]:
    """Pools from the JSON setting (a string) or an already-parsed list; None/empty -> local-cpu."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if DEFAULT_POOL_TYPE not in catalog:
            raise PoolConfigError(
                f"no pools configured and the catalog has no {DEFAULT_POOL_TYPE!r} type", param="pools"
            )
        return default_pools()
    raw: Any = value
    if isinstance(value, str):
        try:
            raw = json.loads(value)
        except ValueError as exc:
            raise PoolConfigError(f"pools is not valid JSON: {exc}", param="pools") from exc
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PoolConfigError("pools must be a non-empty JSON list of objects", param="pools")
    pools: list[Pool] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"pools[{index}]"
        if not isinstance(entry, dict):
            raise PoolConfigError(f"{where} must be an object", param=where)
        unknown = sorted(set(entry) - _POOL_FIELDS)
        if unknown:
            raise PoolConfigError(f"{where}: unknown field(s) {unknown}", param=f"{where}.{unknown[0]}")
        name = entry.get("instance_type")
        if not isinstance(name, str) or not name:
            raise PoolConfigError(f"{where}.instance_type is required", param=f"{where}.instance_type")
        if name not in catalog:
            raise PoolConfigError(
                f"{where}.instance_type {name!r} is not in the catalog; known: {', '.join(catalog.names)}",
                param=f"{where}.instance_type",
            )
        if name in seen:
            raise PoolConfigError(f"{where}: a second pool for {name!r}", param=f"{where}.instance_type")
        seen.add(name)
        limit = entry.get("max_concurrent", 1)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise PoolConfigError(
                f"{where}.max_concurrent must be a whole number >= 1, got {limit!r}",
                param=f"{where}.max_concurrent",
            )
        pools.append(
            Pool(
                name,
                limit,
                _resources(entry.get("ray_resource"), f"{where}.ray_resource"),
                _labels(entry.get("node_labels"), f"{where}.node_labels"),
                _capacities(entry.get("capacity_resources"), f"{where}.capacity_resources"),
            )
        )
    return pools


def _resources(value: Any, where: str) -> Mapping[str, float] | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        # Shorthand: a resource name means one unit of it per worker.
        return MappingProxyType({value: 1.0})
    if not isinstance(value, dict) or not value:
        raise PoolConfigError(f"{where} must be a resource name or an object of name -> amount", param=where)
    out: dict[str, float] = {}
    for key, amount in value.items():
        if (
            not isinstance(key, str)
            or not key
            or isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount <= 0
        ):
            raise PoolConfigError(f"{where}: {key!r} needs a positive amount, got {amount!r}", param=where)
        out[key] = float(amount)
    return MappingProxyType(out)


def _capacities(value: Any, where: str) -> Mapping[str, Mapping[str, float]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise PoolConfigError(
            f"{where} must be an object of capacity ({', '.join(CAPACITIES)}) -> resources", param=where
        )
    unknown = sorted(str(k) for k in value if k not in CAPACITIES)
    if unknown:
        raise PoolConfigError(
            f"{where}: unknown capacity {unknown[0]!r}; known: {', '.join(CAPACITIES)}",
            param=f"{where}.{unknown[0]}",
        )
    out: dict[str, Mapping[str, float]] = {}
    for capacity, resources in value.items():
        parsed = _resources(resources, f"{where}.{capacity}")
        if parsed is None:
            raise PoolConfigError(f"{where}.{capacity} must name a resource", param=f"{where}.{capacity}")
        out[capacity] = parsed
    return MappingProxyType(out)


def _labels(value: Any, where: str) -> Mapping[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in value.items())
    ):
        raise PoolConfigError(f"{where} must be an object of label -> value strings", param=where)
    return MappingProxyType(dict(value))


def available_types(pools: list[Pool]) -> frozenset[str]:
    """Instance-type names the scheduler may choose among (the ``available`` of ``choose``)."""
    return frozenset(p.instance_type for p in pools)
