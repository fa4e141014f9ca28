"""The instance catalog: instance types with prices, accelerator specs and the estimator's constants.

All three are data files shipped in this package (``instance_types.yaml``, ``accelerators.yaml``,
``estimator_constants.yaml``) so prices and assumptions can be replaced without touching code.
Every row is validated on load and a bad row is rejected with an error that names the file, the
row and the field: public price lists carry placeholder prices, spot prices equal to on-demand and
duplicate rows, and a silent bad price would steer every scheduling decision.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

Kind = Literal["cpu", "gpu", "multi_gpu", "tpu"]
KINDS: tuple[str, ...] = ("cpu", "gpu", "multi_gpu", "tpu")
INTERCONNECTS: tuple[str, ...] = ("none", "host", "pcie", "nvlink", "ici", "network")

_HERE = Path(__file__).resolve().parent
DEFAULT_CATALOG_PATH = _HERE / "instance_types.yaml"
DEFAULT_ACCELERATORS_PATH = _HERE / "accelerators.yaml"
DEFAULT_CONSTANTS_PATH = _HERE / "estimator_constants.yaml"

# The C loader is several times faster on the catalog files; PyYAML without libyaml lacks it.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Public price lists use sentinel prices where a type is not offered in a region (SkyPilot's
# catalogs carry 700.0); a real price never lands exactly on these.
_PLACEHOLDER_PRICES = frozenset({700.0, 9999.0, 99999.0, 999999.0})


class CatalogError(ValueError):
    """A catalog, accelerator or constants file is malformed; names the file, row and field."""

    code = "catalog_invalid"

    def __init__(
        self, message: str, *, path: str | None = None, row: str | None = None, field: str | None = None
    ):
        self.path = path
        self.row = row
        self.field = field
        where = ", ".join(
            part
            for part in (path and Path(path).name, row and f"row {row}", field and f"field '{field}'")
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.message = str(self)


@dataclass(frozen=True, slots=True)
class Accelerator:
    name: str
    family: str
    kind: Literal["gpu", "tpu"]
    peak_bf16_tflops: float
    memory_gb: float
    bandwidth_gb_s: float
    source: str
    as_of: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


@dataclass(frozen=True, slots=True)
class EstimatorConstants:
    """The estimator's assumptions, loaded from ``estimator_constants.yaml``."""

    full_flops_per_param_token: float
    lora_flops_per_param_token: float
    recompute_flops_per_param_token: float
    attention_flops_factor: float
    utilisation_by_accelerator: Mapping[str, float]
    utilisation_default_gpu: float
    utilisation_default_tpu: float
    small_model_params_per_peak_tflop: float
    small_model_exponent: float
    small_model_floor: float
    cpu_effective_gflops_per_vcpu: float
    scaling_efficiency: Mapping[str, float]
    fsdp_efficiency: float
    full_bytes_weights: float
    full_bytes_gradients: float
    full_bytes_optimizer: float
    lora_frozen_bytes: float
    lora_trainable_bytes_weights: float
    lora_trainable_bytes_gradients: float
    lora_trainable_bytes_optimizer: float
    lora_trainable_fraction_at_r16: float
    activation_factor: float
    checkpointed_activation_factor: float
    logits_bytes_per_element: float
    usable_memory_fraction: float
    framework_overhead_gb: float
    cpu_framework_overhead_gb: float
    fsdp_gathered_layers: float
    startup_seconds_by_kind: Mapping[str, float]
    startup_seconds_by_instance: Mapping[str, float]
    model_load_gb_per_s: float
    spot_preemptions_per_hour: Mapping[str, float]
    spot_restart_overhead_seconds: float
    spot_max_overhead_fraction: float
    min_billed_seconds: float
    chars_per_token: float
    chat_overhead_tokens_per_message: float
    learning_max_parameter_ratio: float
    source: str = ""
    as_of: str = ""

    def utilisation(self, accelerator: str, kind: str) -> float:
        if accelerator in self.utilisation_by_accelerator:
            return self.utilisation_by_accelerator[accelerator]
        return self.utilisation_default_tpu if kind == "tpu" else self.utilisation_default_gpu


class Catalog:
    """Instance types by name, the accelerator table and the estimator constants."""

    def __init__(
        self,
        types: tuple[InstanceType, ...],
        accelerators: Mapping[str, Accelerator],
        constants: EstimatorConstants,
        *,
        path: str | None = None,
    ) -> None:
        self._types = types
        self._by_name = {t.name: t for t in types}
        self._accelerators = MappingProxyType(dict(accelerators))
        self.constants = constants
        self.path = path
        # Per-(job shape, instance type) results of the estimator, so planning many similar jobs
        # does the memory and throughput arithmetic once. Owned here because it is only valid
        # for this catalog's prices and constants.
        self.estimate_cache: dict[Any, Any] = {}

    @property
    def types(self) -> tuple[InstanceType, ...]:
        return self._types

    @property
    def accelerators(self) -> Mapping[str, Accelerator]:
        return self._accelerators

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> InstanceType | None:
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> InstanceType:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown instance type {name!r}; known: {', '.join(self._by_name)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[InstanceType]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def accelerator_for(self, itype: InstanceType) -> Accelerator | None:
        return self._accelerators[itype.accelerator] if itype.accelerator else None

    def __repr__(self) -> str:
        return f"Catalog({len(self._types)} types from {self.path or 'memory'})"


# --------------------------------------------------------------------------------------------
# Loading


def load_catalog(
    path: str | Path | None = None,
    *,
    accelerators_path: str | Path | None = None,
    constants_path: str | Path | None = None,
) -> Catalog:
    """Load and validate the catalog. ``path`` is a YAML or CSV file; None means the shipped one."""
    accelerators = load_accelerators(accelerators_path)
    constants = load_constants(constants_path)
    cat_path = Path(path) if path is not None else DEFAULT_CATALOG_PATH
    rows = _read_rows(cat_path)
    types: list[InstanceType] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(rows, start=1):
        itype = _parse_instance_type(raw, index, accelerators, str(cat_path))
        if itype.name in seen:
            raise CatalogError(
                f"duplicate instance type name (first at row {seen[itype.name]})",
                path=str(cat_path),
                row=f"{index} ({itype.name})",
                field="name",
            )
        seen[itype.name] = str(index)
        types.append(itype)
    if not types:
        raise CatalogError("the catalog lists no instance types", path=str(cat_path))
    missing = sorted(k for k in {t.interconnect for t in types} if k not in constants.scaling_efficiency)
    if missing:
        raise CatalogError(
            f"no scaling_efficiency for interconnect(s) {missing}", path=str(constants_path or "constants")
        )
    return Catalog(tuple(types), accelerators, constants, path=str(cat_path))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc}", path=str(path)) from exc
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        # CSV has no null: an empty cell means "not given".
        return [
            {k.strip(): (v.strip() if v and v.strip() else None) for k, v in row.items() if k}
            for row in reader
        ]
    try:
        doc = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}", path=str(path)) from exc
    rows = doc.get("instance_types") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CatalogError("expected a list of rows under 'instance_types'", path=str(path))
    return rows


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


def _parse_instance_type(
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


def load_accelerators(path: str | Path | None = None) -> dict[str, Accelerator]:
    acc_path = Path(path) if path is not None else DEFAULT_ACCELERATORS_PATH
    doc = _load_yaml(acc_path)
    table = doc.get("accelerators") if isinstance(doc, dict) else None
    if not isinstance(table, dict) or not table:
        raise CatalogError("expected a mapping under 'accelerators'", path=str(acc_path))
    out: dict[str, Accelerator] = {}
    for name, raw in table.items():
        row = str(name)
        if not isinstance(raw, dict):
            raise CatalogError("expected a mapping", path=str(acc_path), row=row)
        values: dict[str, Any] = {}
        for fld in ("peak_bf16_tflops", "memory_gb", "bandwidth_gb_s"):
            values[fld] = _positive(raw.get(fld), path=str(acc_path), row=row, field=fld)
        kind = raw.get("kind")
        if kind not in ("gpu", "tpu"):
            raise CatalogError(
                f"must be 'gpu' or 'tpu', got {kind!r}", path=str(acc_path), row=row, field="kind"
            )
        for fld in ("source", "as_of"):
            if not raw.get(fld):
                raise CatalogError("is required", path=str(acc_path), row=row, field=fld)
        out[row] = Accelerator(
            name=row,
            family=str(raw.get("family") or row),
            kind=kind,
            source=str(raw["source"]),
            as_of=str(raw["as_of"]),
            note=raw.get("note"),
            **values,
        )
    return out


def load_constants(path: str | Path | None = None) -> EstimatorConstants:
    const_path = Path(path) if path is not None else DEFAULT_CONSTANTS_PATH
    doc = _load_yaml(const_path)
    p = str(const_path)

    def get(dotted: str) -> Any:
        node: Any = doc
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise CatalogError("is required", path=p, field=dotted)
            node = node[part]
        return node

    def pos(dotted: str) -> float:
        return _positive(get(dotted), path=p, field=dotted)

    def frac(dotted: str) -> float:
        value = pos(dotted)
        if value > 1:
            raise CatalogError(f"must be a fraction in (0, 1], got {value}", path=p, field=dotted)
        return value

    def table(dotted: str, *, fraction: bool = False, keys: tuple[str, ...] = ()) -> Mapping[str, float]:
        raw = get(dotted)
        if not isinstance(raw, dict):
            raise CatalogError("expected a mapping", path=p, field=dotted)
        out = {}
        for key, value in raw.items():
            fld = f"{dotted}.{key}"
            out[str(key)] = (
                _positive(value, path=p, field=fld) if fraction else _non_negative(value, path=p, field=fld)
            )
            if fraction and out[str(key)] > 1:
                raise CatalogError(f"must be a fraction in (0, 1], got {value}", path=p, field=fld)
        for key in keys:
            if key not in out:
                raise CatalogError("is required", path=p, field=f"{dotted}.{key}")
        return MappingProxyType(out)

    return EstimatorConstants(
        full_flops_per_param_token=pos("flops.full_per_param_token"),
        lora_flops_per_param_token=pos("flops.lora_per_param_token"),
        recompute_flops_per_param_token=_non_negative(
            get("flops.recompute_per_param_token"), path=p, field="flops.recompute_per_param_token"
        ),
        attention_flops_factor=_non_negative(
            get("flops.attention_per_layer_seq_hidden"), path=p, field="flops.attention_per_layer_seq_hidden"
        ),
        utilisation_by_accelerator=table("utilisation.by_accelerator", fraction=True),
        utilisation_default_gpu=frac("utilisation.default_gpu"),
        utilisation_default_tpu=frac("utilisation.default_tpu"),
        small_model_params_per_peak_tflop=pos("utilisation.small_model_params_per_peak_tflop"),
        small_model_exponent=pos("utilisation.small_model_exponent"),
        small_model_floor=frac("utilisation.small_model_floor"),
        cpu_effective_gflops_per_vcpu=pos("cpu_effective_gflops_per_vcpu"),
        scaling_efficiency=table("scaling_efficiency", fraction=True),
        fsdp_efficiency=frac("fsdp_efficiency"),
        full_bytes_weights=pos("memory.full.weights"),
        full_bytes_gradients=pos("memory.full.gradients"),
        full_bytes_optimizer=pos("memory.full.optimizer"),
        lora_frozen_bytes=pos("memory.lora_frozen_weights"),
        lora_trainable_bytes_weights=pos("memory.lora_trainable.weights"),
        lora_trainable_bytes_gradients=pos("memory.lora_trainable.gradients"),
        lora_trainable_bytes_optimizer=pos("memory.lora_trainable.optimizer"),
        lora_trainable_fraction_at_r16=frac("memory.lora_trainable_fraction_at_r16"),
        activation_factor=pos("memory.activation_factor"),
        checkpointed_activation_factor=pos("memory.checkpointed_activation_factor"),
        logits_bytes_per_element=pos("memory.logits_bytes_per_element"),
        usable_memory_fraction=frac("memory.usable_fraction"),
        framework_overhead_gb=_non_negative(
            get("memory.framework_overhead_gb"), path=p, field="memory.framework_overhead_gb"
        ),
        cpu_framework_overhead_gb=_non_negative(
            get("memory.cpu_framework_overhead_gb"), path=p, field="memory.cpu_framework_overhead_gb"
        ),
        fsdp_gathered_layers=pos("memory.fsdp_gathered_layers"),
        startup_seconds_by_kind=table("startup_seconds.by_kind", keys=KINDS),
        startup_seconds_by_instance=table("startup_seconds.by_instance"),
        model_load_gb_per_s=pos("model_load_gb_per_s"),
        spot_preemptions_per_hour=table("spot.preemptions_per_hour", keys=KINDS),
        spot_restart_overhead_seconds=_non_negative(
            get("spot.restart_overhead_seconds"), path=p, field="spot.restart_overhead_seconds"
        ),
        spot_max_overhead_fraction=frac("spot.max_overhead_fraction"),
        min_billed_seconds=_non_negative(
            get("billing.min_billed_seconds"), path=p, field="billing.min_billed_seconds"
        ),
        chars_per_token=pos("dataset.chars_per_token"),
        chat_overhead_tokens_per_message=_non_negative(
            get("dataset.chat_overhead_tokens_per_message"),
            path=p,
            field="dataset.chat_overhead_tokens_per_message",
        ),
        learning_max_parameter_ratio=pos("learning.max_parameter_ratio"),
        source=str(doc.get("source", "")),
        as_of=str(doc.get("as_of", "")),
    )


_DEFAULT_CONSTANTS: list[EstimatorConstants] = []


def default_constants() -> EstimatorConstants:
    """The shipped constants, loaded once on first use (never at import)."""
    if not _DEFAULT_CONSTANTS:
        _DEFAULT_CONSTANTS.append(load_constants())
    return _DEFAULT_CONSTANTS[0]


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc}", path=str(path)) from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}", path=str(path)) from exc


def _number(value: Any, *, path: str, row: str | None = None, field: str) -> float:
    if isinstance(value, bool):
        raise CatalogError(f"{value!r} is not a number", path=path, row=row, field=field)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise CatalogError(f"{value!r} is not a number", path=path, row=row, field=field) from None
    if not math.isfinite(out):
        raise CatalogError(f"{value!r} is not a finite number", path=path, row=row, field=field)
    return out


def _positive(value: Any, *, path: str, row: str | None = None, field: str) -> float:
    out = _number(value, path=path, row=row, field=field)
    if out <= 0:
        raise CatalogError(f"must be positive, got {value!r}", path=path, row=row, field=field)
    return out


def _non_negative(value: Any, *, path: str, row: str | None = None, field: str) -> float:
    out = _number(value, path=path, row=row, field=field)
    if out < 0:
        raise CatalogError(f"must not be negative, got {value!r}", path=path, row=row, field=field)
    return out


__all__ = [
    "DEFAULT_CATALOG_PATH",
    "Accelerator",
    "Catalog",
    "CatalogError",
    "EstimatorConstants",
    "InstanceType",
    "default_constants",
    "load_accelerators",
    "load_catalog",
    "load_constants",
]
