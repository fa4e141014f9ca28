"""The accelerator table (``accelerators.yaml``): peak FLOPs, memory and bandwidth per chip."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from trainyard.platform.scheduling.catalog_files import HERE, CatalogError, load_yaml, positive

DEFAULT_ACCELERATORS_PATH = HERE / "accelerators.yaml"


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


def load_accelerators(path: str | Path | None = None) -> dict[str, Accelerator]:
    acc_path = Path(path) if path is not None else DEFAULT_ACCELERATORS_PATH
    doc = load_yaml(acc_path)
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
            values[fld] = positive(raw.get(fld), path=str(acc_path), row=row, field=fld)
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
