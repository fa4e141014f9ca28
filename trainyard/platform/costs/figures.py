"""The figures every row of a cost answer carries, as the JSON and the CSV give them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METRICS = (
    "cost_usd",
    "billable_hours",
    "gpu_hours",
    "jobs",
    "tokens_trained",
    "usd_per_million_tokens",
    "spot_savings_usd",
    "waste_usd",
    "productive_usd",
    "startup_usd",
    "recomputed_usd",
    "lost_usd",
    "goodput",
    "estimated_usd",
    "estimate_actual_usd",
    "estimate_error",
    "estimate_jobs",
)

# The figures the change against the previous window is given for.
COMPARED = (
    "cost_usd",
    "billable_hours",
    "gpu_hours",
    "jobs",
    "tokens_trained",
    "waste_usd",
    "spot_savings_usd",
)

_EMPTY: dict[str, float] = {
    "cost_usd": 0.0,
    "billable_hours": 0.0,
    "gpu_hours": 0.0,
    "jobs": 0,
    "tokens_trained": 0.0,
    "spot_savings_usd": 0.0,
    "waste_usd": 0.0,
    "startup_usd": 0.0,
    "recomputed_usd": 0.0,
    "lost_usd": 0.0,
    "estimated_usd": 0.0,
    "estimate_actual_usd": 0.0,
    "estimate_jobs": 0,
}


def rounded(value: float | None, places: int = 6) -> float:
    # + 0.0 turns a -0.0 (a sum of differences that came to -1e-13) into 0.0.
    return round(float(value or 0.0), places) + 0.0


def metrics(row: Mapping[Any, Any] | None) -> dict[str, Any]:
    """The METRICS of one row of sums (None: nothing was spent)."""
    if row is None:
        row = _EMPTY
    cost = float(row["cost_usd"] or 0.0)
    tokens = round(float(row["tokens_trained"] or 0.0))
    estimated = float(row["estimated_usd"] or 0.0)
    actual = float(row["estimate_actual_usd"] or 0.0)
    # Goodput's parts (`ledger.goodput_parts`); productive is what the others leave.
    startup, recomputed, lost = (float(row[k] or 0.0) for k in ("startup_usd", "recomputed_usd", "lost_usd"))
    productive = max(0.0, cost - startup - recomputed - lost)
    return {
        "cost_usd": rounded(cost),
        "billable_hours": rounded(row["billable_hours"]),
        "gpu_hours": rounded(row["gpu_hours"]),
        "jobs": int(row["jobs"] or 0),
        "tokens_trained": tokens,
        "usd_per_million_tokens": rounded(cost / tokens * 1e6) if tokens else None,
        "spot_savings_usd": rounded(row["spot_savings_usd"]),
        "waste_usd": rounded(row["waste_usd"]),
        "productive_usd": rounded(productive),
        "startup_usd": rounded(startup),
        "recomputed_usd": rounded(recomputed),
        "lost_usd": rounded(lost),
        "goodput": round(productive / cost, 6) if cost > 0 else None,
        "estimated_usd": rounded(estimated),
        "estimate_actual_usd": rounded(actual),
        # Signed: +0.10 means jobs cost 10% more than estimated.
        "estimate_error": round((actual - estimated) / estimated, 6) if estimated > 0 else None,
        "estimate_jobs": int(row["estimate_jobs"] or 0),
    }


def change(current: Mapping[Any, Any], previous: Mapping[Any, Any]) -> dict[str, Any]:
    """Each COMPARED figure's delta against the previous window, and as a percent of it."""
    out: dict[str, Any] = {}
    for m in COMPARED:
        cur, prev = float(current[m] or 0), float(previous[m] or 0)
        out[m] = {
            "delta": rounded(cur - prev),
            "percent": round((cur - prev) / prev * 100.0, 2) if prev else None,
        }
    return out
