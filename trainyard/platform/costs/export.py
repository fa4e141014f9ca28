"""CSV export of a cost allocation answer: the same rows and figures as the JSON."""

from __future__ import annotations

import csv
import io
from typing import Any

from trainyard.platform.costs.figures import METRICS

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    # A team or label that starts like a formula would run as one in a spreadsheet.
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def to_csv(result: dict[str, Any]) -> str:
    """The rows of a `query_costs` result as CSV: one line per row (per bucket and row when the
    query has a step), dimension columns first, then the same figures as the JSON."""
    dims = list(result["aggregate"])
    stepped = "series" in result
    extra = ["job_name", "job_status"] if "job" in dims else []
    header = [
        *(["bucket_start", "bucket_end"] if stepped else []),
        *dims,
        *extra,
        *METRICS,
        # Per bucket there is no previous window to compare with.
        *([] if stepped else ["previous_cost_usd"]),
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)

    def write(row: dict[str, Any], prefix: list[Any]) -> None:
        writer.writerow(
            [
                *prefix,
                *(_cell(row["key"].get(d)) for d in dims),
                *(_cell(row.get(x)) for x in extra),
                *(_cell(row.get(m)) for m in METRICS),
                *([] if stepped else [_cell(row.get("previous_cost_usd"))]),
            ]
        )

    if stepped:
        for bucket in result["series"]:
            for row in bucket["data"]:
                write(row, [bucket["start"], bucket["end"]])
    else:
        for row in result["data"]:
            write(row, [])
    return out.getvalue()
