"""Reading the catalog's data files and checking their values, with errors that name the place.

Every row of the catalog, accelerator and constants files is checked on load: public price lists
carry placeholder prices, spot prices equal to on-demand and duplicate rows, and a silent bad value
would steer every scheduling decision.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# The C loader is several times faster on the catalog files; PyYAML without libyaml lacks it.
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def load_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc}", path=str(path)) from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}", path=str(path)) from exc


def number(value: Any, *, path: str, row: str | None = None, field: str) -> float:
    if isinstance(value, bool):
        raise CatalogError(f"{value!r} is not a number", path=path, row=row, field=field)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise CatalogError(f"{value!r} is not a number", path=path, row=row, field=field) from None
    if not math.isfinite(out):
        raise CatalogError(f"{value!r} is not a finite number", path=path, row=row, field=field)
    return out


def positive(value: Any, *, path: str, row: str | None = None, field: str) -> float:
    out = number(value, path=path, row=row, field=field)
    if out <= 0:
        raise CatalogError(f"must be positive, got {value!r}", path=path, row=row, field=field)
    return out


def non_negative(value: Any, *, path: str, row: str | None = None, field: str) -> float:
    out = number(value, path=path, row=row, field=field)
    if out < 0:
        raise CatalogError(f"must not be negative, got {value!r}", path=path, row=row, field=field)
    return out
