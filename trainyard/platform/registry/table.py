"""The packaged table of base models (`base_models.yaml`): what the platform knows of common open
models without asking a hub. Pure: a file in the package, read once per process."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from trainyard.platform.scheduling.catalog_files import CatalogError, load_yaml
from trainyard.platform.scheduling.model_info import ModelInfo, model_info_from_config

TABLE_PATH = Path(__file__).with_name("base_models.yaml")


@dataclass(frozen=True, slots=True)
class BaseModelEntry:
    """One hub id the table knows: its size and architecture (`info`, source "registry") and what
    its model page publishes."""

    id: str
    owned_by: str
    info: ModelInfo
    context_length: int | None
    license: str | None
    released: date | None
    source: str | None

    @property
    def created(self) -> int:
        """The release date as Unix seconds (OpenAI's `created`); 0 when the table has none."""
        if self.released is None:
            return 0
        day = self.released
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


class ModelTable:
    """Hub ids -> entries, looked up without regard to case (the hub resolves ids that way)."""

    def __init__(self, entries: list[BaseModelEntry], aliases: Mapping[str, str] | None = None) -> None:
        self._entries = entries
        self._by_key = {e.id.lower(): e for e in entries}
        for alias, target in (aliases or {}).items():
            self._by_key.setdefault(alias.lower(), self._by_key[target.lower()])

    def __iter__(self) -> Iterator[BaseModelEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model_id: str) -> BaseModelEntry | None:
        """The entry for a hub id (or one of its aliases), a revision (`@rev`) ignored."""
        return self._by_key.get(model_id.split("@", 1)[0].lower())


def _entry(raw: Mapping[str, Any], model_id: str, index: int, path: str) -> BaseModelEntry:
    row = f"{index} ({model_id})"
    config = raw.get("config")
    if not isinstance(config, Mapping):
        raise CatalogError("needs a config mapping", path=path, row=row, field="config")
    info = model_info_from_config(config)
    if info is None:
        raise CatalogError("config does not give a parameter count", path=path, row=row, field="config")
    parameters = raw.get("parameters")
    if isinstance(parameters, bool) or not isinstance(parameters, int) or parameters <= 0:
        raise CatalogError(
            f"{parameters!r} is not a positive integer", path=path, row=row, field="parameters"
        )
    released = raw.get("released")
    if released is not None and not isinstance(released, date):
        raise CatalogError(f"{released!r} is not a date (YYYY-MM-DD)", path=path, row=row, field="released")
    context = raw.get("context_length")
    return BaseModelEntry(
        id=model_id,
        owned_by=str(raw.get("owned_by") or model_id.partition("/")[0] or "hub"),
        # The published count: the estimator's formula stands in only where no one published one.
        info=replace(info, parameters=parameters, source="registry"),
        context_length=int(context) if isinstance(context, int) and context > 0 else None,
        license=str(raw["license"]) if raw.get("license") else None,
        released=released,
        source=str(raw["source"]) if raw.get("source") else None,
    )


def load_table(path: str | Path | None = None) -> ModelTable:
    """Read and check a table; raise CatalogError naming the row that is wrong."""
    where = Path(path) if path is not None else TABLE_PATH
    data = load_yaml(where)
    rows = data.get("models") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        raise CatalogError("needs a top-level 'models' list", path=str(where))
    entries: list[BaseModelEntry] = []
    aliases: dict[str, str] = {}
    seen: set[str] = set()
    for index, raw in enumerate(rows, start=1):
        ids = raw.get("ids") if isinstance(raw, Mapping) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise CatalogError("needs a non-empty 'ids' list", path=str(where), row=str(index), field="ids")
        for model_id in ids:
            if model_id.lower() in seen:
                raise CatalogError(
                    f"{model_id} is listed twice", path=str(where), row=str(index), field="ids"
                )
            seen.add(model_id.lower())
            entries.append(_entry(raw, model_id, index, str(where)))
        for alias in raw.get("aliases") or ():
            aliases[str(alias)] = ids[0]
    clash = sorted(a for a in aliases if a.lower() in seen)
    if clash:
        raise CatalogError(f"aliases {clash} are also ids", path=str(where), field="aliases")
    return ModelTable(entries, aliases)


@functools.cache
def packaged_table() -> ModelTable:
    """The table that ships with the package, read once per process."""
    return load_table()
