"""Instance types: one row of the catalog (kind, accelerators, prices, topology) and its checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from trainyard.platform.scheduling.accelerators import Accelerator
from trainyard.platform.scheduling.catalog_files import CatalogError

Kind = Literal["cpu", "gpu", "multi_gpu", "tpu"]
KINDS: tuple[str, ...] = ("cpu", "gpu", "multi_gpu", "tpu")
INTERCONNECTS: tuple[str, ...] = ("none", "host", "pcie", "nvlink", "ici", "network")

# Public price lists use sentinel prices where a type is not offered in a region (SkyPilot's
# catalogs carry 700.0); a real price never lands exactly on these.
_PLACEHOLDER_PRICES = frozenset({700.0, 9999.0, 99999.0, 999999.0})


@dataclass(frozen=True, slots=True)
class InstanceType:
    name: str
    kind: Kind
    accelerator: str | None
    accelerator_count: int
    accelerator_memory_gb: float | None
    vcpus: int
    ram_gb: float
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None
    nodes: int
    interconnect: str
    workers: int
    tpu_topology: str | None
    source: str
    as_of: str
    provider: str | None = None
    region: str | None = None
    note: str | None = None

    @property
    def devices(self) -> int:
        """Devices the training FLOPs are spread over (accelerators; 1 for a CPU machine)."""
        return self.accelerator_count if self.accelerator_count > 0 else 1

    @property
    def has_spot(self) -> bool:
        return self.spot_usd_per_hour is not None

    def price(self, spot: bool) -> float:
        if spot:
            if self.spot_usd_per_hour is None:
                raise ValueError(f"{self.name} has no spot price")
            return self.spot_usd_per_hour
        return self.on_demand_usd_per_hour

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ROW_FIELDS = {
    "name",
    "kind",
    "accelerator",
    "accelerator_count",
    "accelerator_memory_gb",
    "vcpus",
    "ram_gb",
    "on_demand_usd_per_hour",
    "spot_usd_per_hour",
    "nodes",
    "interconnect",
    "workers",
    "tpu_topology",
    "source",
    "as_of",
    "provider",
    "region",
    "note",
}


def parse_instance_type(
    raw: dict[str, Any], index: int, accelerators: Mapping[str, Accelerator], path: str
) -> InstanceType:
    name = raw.get("name")
    row = f"{index} ({name})" if name else str(index)

    def fail(message: str, fld: str) -> CatalogError:
        return CatalogError(message, path=path, row=row, field=fld)

    unknown = sorted(set(raw) - _ROW_FIELDS)
    if unknown:
        raise fail(f"unknown field(s) {unknown}", unknown[0])
    if not isinstance(name, str) or not name.strip():
        raise fail("a non-empty name is required", "name")

    def text(fld: str, *, required: bool = True) -> str | None:
        value = raw.get(fld)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise fail("is required", fld)
            return None
        return str(value).strip()

    def number(fld: str, *, required: bool = True) -> float | None:
        value = raw.get(fld)
        if value is None:
            if required:
                raise fail("is required", fld)
            return None
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise fail(f"{value!r} is not a number", fld) from None
        if not math.isfinite(out):
            raise fail(f"{value!r} is not a finite number", fld)
        return out

    def count(fld: str, *, minimum: int) -> int:
        value = number(fld)
        assert value is not None
        if value != int(value) or value < minimum:
            raise fail(f"must be a whole number >= {minimum}, got {raw.get(fld)!r}", fld)
        return int(value)

    kind = text("kind")
    if kind not in KINDS:
        raise fail(f"must be one of {list(KINDS)}, got {kind!r}", "kind")
    interconnect = text("interconnect")
    if interconnect not in INTERCONNECTS:
        raise fail(f"must be one of {list(INTERCONNECTS)}, got {interconnect!r}", "interconnect")

    accelerator = text("accelerator", required=False)
    accelerator_count = count("accelerator_count", minimum=0)
    accel_mem = number("accelerator_memory_gb", required=False)
    if kind == "cpu":
        if accelerator is not None or accelerator_count != 0:
            raise fail("a cpu type has no accelerator (null, count 0)", "accelerator")
        if accel_mem is not None:
            raise fail("a cpu type has no accelerator memory", "accelerator_memory_gb")
    else:
        if accelerator is None:
            raise fail(f"a {kind} type needs an accelerator", "accelerator")
        if accelerator not in accelerators:
            raise fail(f"unknown accelerator {accelerator!r}; known: {sorted(accelerators)}", "accelerator")
        spec = accelerators[accelerator]
        if (kind == "tpu") != (spec.kind == "tpu"):
            raise fail(f"kind {kind!r} does not match accelerator {accelerator} ({spec.kind})", "kind")
        if accelerator_count < 1:
            raise fail("must be >= 1 for an accelerated type", "accelerator_count")
        if kind == "gpu" and accelerator_count != 1:
            raise fail("kind 'gpu' means one GPU; use 'multi_gpu'", "accelerator_count")
        if kind == "multi_gpu" and accelerator_count < 2:
            raise fail("kind 'multi_gpu' needs at least two GPUs", "accelerator_count")
        if accel_mem is None:
            accel_mem = spec.memory_gb
        if accel_mem <= 0:
            raise fail("must be positive", "accelerator_memory_gb")

    vcpus = count("vcpus", minimum=1)
    ram_gb = number("ram_gb")
    assert ram_gb is not None
    if ram_gb <= 0:
        raise fail("must be positive", "ram_gb")
    nodes = count("nodes", minimum=1)
    workers = count("workers", minimum=1)
    if kind in ("gpu", "multi_gpu") and workers != accelerator_count:
        raise fail(f"one Ray Train worker per GPU: expected {accelerator_count}, got {workers}", "workers")

    on_demand = number("on_demand_usd_per_hour")
    spot = number("spot_usd_per_hour", required=False)
    assert on_demand is not None
    for fld, price in (("on_demand_usd_per_hour", on_demand), ("spot_usd_per_hour", spot)):
        if price is None:
            continue
        if price <= 0:
            raise fail(f"price must be positive, got {price}", fld)
        if price in _PLACEHOLDER_PRICES:
            raise fail(f"{price} is a placeholder price, not a real one", fld)
    if spot is not None:
        if spot > on_demand:
            raise fail(f"spot price {spot} exceeds on-demand {on_demand}", "spot_usd_per_hour")
        if spot == on_demand:
            raise fail(
                f"spot price equals on-demand ({spot}); leave it empty if there is no spot price",
                "spot_usd_per_hour",
            )

    topology = text("tpu_topology", required=False)
    if kind == "tpu":
        if topology is None:
            raise fail("a tpu type needs its topology, e.g. '2x4'", "tpu_topology")
        dims = topology.lower().split("x")
        if (
            not all(d.isdigit() and int(d) > 0 for d in dims)
            or math.prod(int(d) for d in dims) != accelerator_count
        ):
            raise fail(
                f"topology {topology!r} does not multiply to {accelerator_count} chips", "tpu_topology"
            )
    elif topology is not None:
        raise fail("only tpu types have a topology", "tpu_topology")

    source = text("source")
    as_of = text("as_of")
    assert source is not None and as_of is not None
    return InstanceType(
        name=name.strip(),
        kind=kind,  # type: ignore[arg-type]
        accelerator=accelerator,
        accelerator_count=accelerator_count,
        accelerator_memory_gb=accel_mem,
        vcpus=vcpus,
        ram_gb=ram_gb,
        on_demand_usd_per_hour=on_demand,
        spot_usd_per_hour=spot,
        nodes=nodes,
        interconnect=interconnect,  # type: ignore[arg-type]
        workers=workers,
        tpu_topology=topology,
        source=source,
        as_of=as_of,
        provider=text("provider", required=False),
        region=text("region", required=False),
        note=text("note", required=False),
    )
