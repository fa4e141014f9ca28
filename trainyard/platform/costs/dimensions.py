"""The dimensions spend is grouped and filtered by, and the SQL each one reads.

A dimension's SQL comes only from the fixed table below; a label's key and every filter value
are bound parameters, never text in the statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from trainyard.platform.errors import InvalidRequest

# Dimension name -> SQL expression over job_attempts a, jobs j, teams t, api_keys k. Each yields
# text so that filters and CSV treat every dimension alike. What an attempt ran on (instance
# type, accelerator, spot) is the attempt's own record.
DIMENSIONS: dict[str, str] = {
    "team": "t.name",
    "user": "coalesce(k.name || ' (' || k.key_prefix || ')', '(deleted key)')",
    "instance_type": "coalesce(a.instance_type, j.instance_type)",
    "accelerator": "coalesce(a.accelerator, 'none')",
    "model": "j.spec ->> 'base_model'",
    "status": "j.status",
    "spot": "CASE WHEN a.spot THEN 'spot' ELSE 'on_demand' END",
    "job": "j.id",
}
# The same dimensions over the rollup (`rollup`): cost_rollup_keys rk, teams t, api_keys k. A
# dimension missing here (a job's status, the job, a label) is read from the attempts.
ROLLUP_DIMENSIONS: dict[str, str] = {
    "team": "t.name",
    "user": DIMENSIONS["user"],
    "instance_type": "nullif(rk.instance_type, '')",
    "accelerator": "coalesce(nullif(rk.accelerator, ''), 'none')",
    "model": "nullif(rk.model, '')",
    "spot": "CASE WHEN rk.spot THEN 'spot' ELSE 'on_demand' END",
}
# What an attempt ran on, rather than what its job is: the bit of each in an attempt's `firsts`
# (see `jobs_bits`).
ATTEMPT_DIMENSIONS: dict[str, int] = {"instance_type": 1, "accelerator": 2, "spot": 4}
LABEL_PREFIX = "label:"
MAX_DIMENSIONS = 4

_LABEL_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,64}$")


def parse_dimension(name: str, *, param: str) -> str:
    dim = name.strip()
    if dim in DIMENSIONS:
        return dim
    if dim.startswith(LABEL_PREFIX):
        key = dim[len(LABEL_PREFIX) :]
        if not _LABEL_KEY.match(key):
            raise InvalidRequest(
                f"{param}: label keys are 1-64 letters, digits or . _ - /; got {key!r}", param=param
            )
        return dim
    known = ", ".join([*DIMENSIONS, "label:<key>"])
    raise InvalidRequest(f"{param}: unknown dimension {dim!r}; use one of {known}", param=param)


def parse_aggregate(value: str | list[str]) -> list[str]:
    parts = value if isinstance(value, list) else value.split(",")
    dims = [parse_dimension(p, param="aggregate") for p in parts if p.strip()]
    if not dims:
        raise InvalidRequest("aggregate needs at least one dimension, e.g. aggregate=team", param="aggregate")
    if len(set(dims)) != len(dims):
        raise InvalidRequest("aggregate names a dimension twice", param="aggregate")
    if len(dims) > MAX_DIMENSIONS:
        raise InvalidRequest("aggregate takes at most four dimensions", param="aggregate")
    return dims


def in_rollup(dims: list[str], filters: dict[str, str] | None) -> bool:
    """Whether every grouped and filtered dimension is one the rollup keeps."""
    names = [*dims, *(f.strip() for f in (filters or {}))]
    return all(name in ROLLUP_DIMENSIONS for name in names)


def jobs_bits(dims: list[str], filters: dict[str, str] | None) -> tuple[int, int]:
    """Which count of jobs started answers a row and which the totals: the set (as bits) of
    attempt dimensions grouped or filtered by, and of those filtered by only. A job is counted
    where its first attempt with the same values of those dimensions started: by instance type,
    a job that moved to another type counts for each; in the totals, once."""
    filtered = sum(ATTEMPT_DIMENSIONS.get(f.strip(), 0) for f in set(filters or {}))
    grouped = sum(ATTEMPT_DIMENSIONS.get(d, 0) for d in dims)
    return grouped | filtered, filtered


@dataclass
class Selection:
    """What an allocation query groups by and keeps: one SQL expression per grouped dimension
    (in `aggregate` order), the conditions every attempt must meet, and the values they bind.
    `table` is the SQL of each dimension (`DIMENSIONS` over attempts, `ROLLUP_DIMENSIONS`)."""

    columns: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    table: dict[str, str] = field(default_factory=lambda: DIMENSIONS)

    def expression(self, dim: str, slot: int) -> str:
        """The SQL for a parsed dimension; a label's key is bound as `label_<slot>`."""
        if dim.startswith(LABEL_PREFIX):
            self.params[f"label_{slot}"] = dim[len(LABEL_PREFIX) :]
            return f"(j.metadata ->> CAST(:label_{slot} AS text))"
        return f"({self.table[dim]})"


# Label keys of filters are bound from this slot on, clear of the grouped dimensions' slots.
_FILTER_SLOTS = 100


def select_dimensions(
    dims: list[str], *, team_id: str | None, filters: dict[str, str] | None, rollup: bool = False
) -> Selection:
    """The selection for parsed `dims`, held to `team_id` when set, with each `filter[dim]=value`
    (dimension names parsed here) as an equality on that dimension; over the rollup's keys when
    `rollup` (see `in_rollup`), else over attempts."""
    sel = Selection(table=ROLLUP_DIMENSIONS if rollup else DIMENSIONS)
    if team_id is not None:
        sel.conditions.append(f"{'rk' if rollup else 'j'}.team_id = :team_id")
        sel.params["team_id"] = team_id
    sel.columns = [sel.expression(d, i) for i, d in enumerate(dims)]
    for i, (name, value) in enumerate(sorted((filters or {}).items())):
        dim = parse_dimension(name, param=f"filter[{name}]")
        expr = sel.expression(dim, _FILTER_SLOTS + i)
        sel.conditions.append(f"{expr} = CAST(:filter_{i} AS text)")
        sel.params[f"filter_{i}"] = value
    return sel
