"""The instance catalog: instance types with prices, the accelerator table and the estimator's constants.

All three are data files shipped in this package (``instance_types.yaml``, ``accelerators.yaml``,
``estimator_constants.yaml``) so prices and assumptions can be replaced without touching code.
Every row is validated on load and a bad row is rejected with an error that names the file, the
row and the field (see ``catalog_files``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from trainyard.platform.scheduling.accelerators import Accelerator, load_accelerators
from trainyard.platform.scheduling.catalog_files import HERE, YAML_LOADER, CatalogError
from trainyard.platform.scheduling.constants import EstimatorConstants, load_constants
from trainyard.platform.scheduling.estimate_cache import EstimateCache
from trainyard.platform.scheduling.instance_types import InstanceType, parse_instance_type

DEFAULT_CATALOG_PATH = HERE / "instance_types.yaml"


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
        # Per-(job shape, instance type, learned-throughput version) results of the estimator, so
        # planning many similar jobs does the memory and throughput arithmetic once. Owned here
        # because it is only valid for this catalog's prices and constants.
        self.estimate_cache = EstimateCache()

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
        itype = parse_instance_type(raw, index, accelerators, str(cat_path))
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
        doc = yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}", path=str(path)) from exc
    rows = doc.get("instance_types") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CatalogError("expected a list of rows under 'instance_types'", path=str(path))
    return rows


__all__ = [
    "DEFAULT_CATALOG_PATH",
    "Accelerator",
    "Catalog",
    "CatalogError",
    "EstimatorConstants",
    "InstanceType",
    "load_catalog",
]
