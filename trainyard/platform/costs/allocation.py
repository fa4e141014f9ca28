"""Cost allocation: who spent what, on what, when — the answer of `/v1/costs`.

`query_costs` parses the question, runs the one allocation statement and shapes its grouping-set
rows into the window's rows, totals, previous window and series. The statement reads the rollup
(`rollup`) where it keeps every dimension asked for and the buckets start on whole hours, with
the attempts only for the parts of hours at the window's ends (`segments`); else it reads the
attempts (`queries`). Both give the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, select
from sqlalchemy.orm import Session

from trainyard.platform.auth import Principal, visible_team_id
from trainyard.platform.costs import queries, rollup, segments
from trainyard.platform.costs.dimensions import in_rollup, jobs_bits, parse_aggregate, select_dimensions
from trainyard.platform.costs.figures import change, metrics, rounded
from trainyard.platform.costs.windows import Window, db_now, make_window, parse_step, parse_window, ts
from trainyard.platform.errors import InvalidRequest
from trainyard.platform.models import Job

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def query_costs(
    session: Session,
    principal: Principal,
    *,
    window: str,
    aggregate: list[str] | str,
    step: str | None = None,
    team: str | None = None,
    filters: dict[str, str] | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
    from_attempts: bool = False,
) -> dict[str, Any]:
    """Spend over `window` grouped by `aggregate`, optionally per `step`, with totals and the
    change against the previous window of the same length. `from_attempts` reads the attempts
    even where the rollup could answer (the two agree; tests hold them to it)."""
    dims = parse_aggregate(aggregate)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    now = now or db_now(session)
    start, end = parse_window(window, now)
    step_td = parse_step(step)
    if step_td is not None and "job" in dims:
        raise InvalidRequest("aggregate=job cannot be combined with step", param="step")
    span = make_window(start, end, step_td, step_text=step or "")
    team_id = visible_team_id(session, principal, team)
    bits = jobs_bits(dims, filters)
    over_attempts = select_dimensions(dims, team_id=team_id, filters=filters)
    params: dict[str, Any] = {**over_attempts.params, "limit": limit}
    if (
        not from_attempts
        and in_rollup(dims, filters)
        and segments.hourly(span.step_seconds if span.step else None)
    ):
        over_rollup = select_dimensions(dims, team_id=team_id, filters=filters, rollup=True)
        fine = rollup.fine_sql(over_rollup, bits)
        params |= over_rollup.params | segments_params(span, db_now(session))
    else:
        dlist = ", ".join(f"d{i}" for i in range(len(dims)))
        fine = queries.window_fine_sql(over_attempts.columns, over_attempts.conditions, bits, dlist)
        params |= span.params()
    queries.tune_for_allocation(session)
    sql = queries.allocation_sql(fine, len(dims), stepped=span.step is not None)
    result = _shape(span, dims, queries.run(session, sql, params), limit)
    if "job" in dims:
        _name_jobs(session, result)
    result["filters"] = {"team": team, **(filters or {})}
    return result


def segments_params(span: Window, now: datetime) -> dict[str, Any]:
    """The window's segments (`segments.plan`) as the rollup statement binds them."""
    return rollup.segment_params(segments.plan(span, now), span.params())


def _shape(span: Window, dims: list[str], rows: Sequence[RowMapping], limit: int) -> dict[str, Any]:
    n = len(dims)
    dims_mask = (1 << n) - 1
    bucket_bit = 1 << n

    def key(row: RowMapping) -> dict[str, Any]:
        return {d: row[f"d{i}"] for i, d in enumerate(dims)}

    def with_metrics(row: RowMapping) -> dict[str, Any]:
        return {"key": key(row), **metrics(row)}

    current_rows: list[RowMapping] = []
    previous_rows: list[RowMapping] = []
    totals_row = prev_totals_row = None
    bucket_rows: dict[int, list[RowMapping]] = {}
    bucket_totals: dict[int, RowMapping] = {}
    truncated = False
    for row in rows:
        g, period = row["g"], row["period"]
        has_dims = (g & dims_mask) == 0
        has_bucket = (g & bucket_bit) == 0
        if has_dims and period == 1 and row["n_rows"] > limit:
            truncated = True
        if period == 0:
            if has_dims:
                previous_rows.append(row)
            else:
                prev_totals_row = row
            continue
        whole_window = not has_bucket or span.step is None
        if has_dims and whole_window:
            current_rows.append(row)
        elif has_dims:
            bucket_rows.setdefault(row["bucket"], []).append(row)
        elif whole_window:
            totals_row = row
        else:
            bucket_totals[row["bucket"]] = row

    previous_by_key = {tuple(key(r).values()): rounded(r["cost_usd"]) for r in previous_rows}

    def order(items: list[RowMapping]) -> list[RowMapping]:
        return sorted(items, key=lambda r: (-float(r["cost_usd"] or 0), [str(v) for v in key(r).values()]))

    data = []
    for row in order(current_rows):
        item = with_metrics(row)
        item["previous_cost_usd"] = previous_by_key.get(tuple(item["key"].values()), 0.0)
        data.append(item)
    totals = metrics(totals_row)
    previous = metrics(prev_totals_row)
    result: dict[str, Any] = {
        "object": "cost_allocation",
        "currency": "usd",
        "window": {
            "start": ts(span.start),
            "end": ts(span.end),
            "step": None if span.step is None else int(span.step.total_seconds()),
        },
        "aggregate": dims,
        "data": data,
        "totals": totals,
        "previous": {"start": ts(span.prev_start), "end": ts(span.start), **previous},
        "change": change(totals, previous),
        "truncated": truncated,
    }
    if span.step is not None:
        series = []
        for k in range(span.n_buckets):
            lo, hi = span.bucket_bounds(k)
            series.append(
                {
                    "start": ts(lo),
                    "end": ts(hi),
                    "totals": metrics(bucket_totals.get(k)),
                    "data": [with_metrics(r) for r in order(bucket_rows.get(k, []))],
                }
            )
        result["series"] = series
    return result


def _name_jobs(session: Session, result: dict[str, Any]) -> None:
    rows = [*result["data"], *(r for b in result.get("series", []) for r in b["data"])]
    ids = list({r["key"]["job"] for r in rows if r["key"].get("job")})
    if not ids:
        return
    found = session.execute(select(Job.id, Job.name, Job.status).where(Job.id.in_(ids))).all()
    names = {i: (name, status) for i, name, status in found}
    for r in rows:
        name, status = names.get(r["key"].get("job"), (None, None))
        r["job_name"], r["job_status"] = name, status
