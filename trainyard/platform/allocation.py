"""Cost allocation: who spent what, on what, when; team budgets; the queue at a glance.

Dollars come from attempt rows. A finished attempt's exact metered figures (`cost_usd`,
`billable_seconds`, `tokens_trained`) are spread evenly over [started_at, ended_at]; a running
attempt accrues at its price up to now. A window or step bucket gets the share of each attempt
that overlaps it, so an attempt that runs across midnight is billed to both days in proportion.
The split, the grouping and the sums all happen in one SQL statement (buckets come from
`generate_series` per attempt), so the work grows with the attempts in the window, never with
rows copied into Python.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from trainyard.platform.auth import Principal, get_team_by_name, require_admin
from trainyard.platform.errors import Conflict, InvalidRequest, NotFound
from trainyard.platform.models import Team

# The same attempts the per-job cost report counts as wasted (costs.cost_report): everything
# that ended without producing the result or being stopped on purpose.
WASTE_OUTCOMES = ("failed", "preempted", "crashed", "lost", "handed_back")

# Dimension name -> SQL expression over job_attempts a, jobs j, teams t, api_keys k. Each yields
# text so that filters and CSV treat every dimension alike.
DIMENSIONS: dict[str, str] = {
    "team": "t.name",
    "user": "coalesce(k.name || ' (' || k.key_prefix || ')', '(deleted key)')",
    "instance_type": "coalesce(a.instance_type, j.instance_type)",
    "accelerator": "coalesce(j.plan ->> 'accelerator', 'none')",
    "model": "j.spec ->> 'base_model'",
    "status": "j.status",
    "spot": "CASE WHEN a.spot THEN 'spot' ELSE 'on_demand' END",
    "job": "j.id",
}
LABEL_PREFIX = "label:"

NAMED_WINDOWS = ("24h", "7d", "30d", "month")
MAX_WINDOW = timedelta(days=3660)
MAX_BUCKETS = 1000
MIN_STEP = timedelta(minutes=1)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
# Sort memory for one allocation query: the sort that marks each job's first piece holds about
# 170 bytes a piece (a million attempts over two windows make ~1.3M pieces, ~225 MB). Beyond it
# the sort spills to disk and still works, only slower.
QUERY_WORK_MEM = "256MB"

_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_LABEL_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,64}$")

METRICS = (
    "cost_usd",
    "billable_hours",
    "gpu_hours",
    "jobs",
    "tokens_trained",
    "usd_per_million_tokens",
    "spot_savings_usd",
    "waste_usd",
    "estimated_usd",
    "estimate_actual_usd",
    "estimate_error",
    "estimate_jobs",
)


class BudgetExhausted(Conflict):
    """A new job's estimate does not fit in what is left of its team's monthly budget."""

    code = "budget_exhausted"


# --- parsing -------------------------------------------------------------------------------


def parse_duration(value: str, *, param: str) -> timedelta:
    m = _DURATION.match(value.strip())
    if not m or int(m.group(1)) == 0:
        raise InvalidRequest(
            f"{param} must be a positive duration such as 15m, 6h, 1d or 1w, not {value!r}", param=param
        )
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def _parse_instant(value: str, *, param: str) -> datetime:
    raw = value.strip()
    try:
        parsed = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise InvalidRequest(f"{param}: {value!r} is not an RFC 3339 timestamp", param=param) from None
    if parsed.tzinfo is None:
        # RFC 3339 requires an offset; guessing the server's zone would shift every bucket.
        raise InvalidRequest(f"{param}: {value!r} needs a UTC offset (Z or +hh:mm)", param=param)
    return parsed.astimezone(UTC)


def month_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def parse_window(value: str, now: datetime) -> tuple[datetime, datetime]:
    """`24h`, `7d`, `30d` (or any `<n>h`/`<n>d`), `month` (this calendar month so far, UTC), or an
    RFC 3339 `start,end` pair. Relative windows end now."""
    raw = (value or "").strip()
    if raw == "month":
        start, end = month_start(now), now
    elif "," in raw:
        left, _, right = raw.partition(",")
        start, end = _parse_instant(left, param="window"), _parse_instant(right, param="window")
        if end <= start:
            raise InvalidRequest("window: the end must come after the start", param="window")
    else:
        m = _DURATION.match(raw)
        if not m or m.group(2) not in "hdw" or int(m.group(1)) == 0:
            raise InvalidRequest(
                f"window must be one of {', '.join(NAMED_WINDOWS)}, another '<n>h'/'<n>d', or an "
                f"RFC 3339 'start,end' pair; got {value!r}",
                param="window",
            )
        length = timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        if length > MAX_WINDOW:
            raise InvalidRequest("window is longer than ten years", param="window")
        start, end = now - length, now
    if end - start > MAX_WINDOW:
        raise InvalidRequest("window is longer than ten years", param="window")
    if start.year < 1971 or end.year > 9000:
        raise InvalidRequest("window is outside the range this service keeps", param="window")
    return start, end


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
    if len(dims) > 4:
        raise InvalidRequest("aggregate takes at most four dimensions", param="aggregate")
    return dims


# --- the query -----------------------------------------------------------------------------


def _num(path: str) -> str:
    """A numeric plan field, or NULL when absent or not a number (a bad plan must not 500)."""
    return f"CASE WHEN jsonb_typeof(j.plan -> '{path}') = 'number' THEN (j.plan ->> '{path}')::float8 END"


_PLAN_NUMBER = re.compile(r"\{num:([a-z_]+)\}")


def _plan_numbers(sql: str, *, checked: bool) -> str:
    """Fill `{num:field}` markers. Unchecked, a field is a plain cast of `plan ->> field`, about
    four times cheaper per row than checking its JSON type first, which matters at a million
    attempts; plans are written by the scheduler, so the check only matters for a hand-edited
    or foreign plan, and `_execute_plan_sql` falls back to it when the cast fails."""
    if checked:
        return _PLAN_NUMBER.sub(lambda m: _num(m.group(1)), sql)
    return _PLAN_NUMBER.sub(lambda m: f"(j.plan ->> '{m.group(1)}')::float8", sql)


def _execute_plan_sql(session: Session, sql: str, params: dict[str, Any]) -> list[Any]:
    try:
        with session.begin_nested():
            return list(session.execute(text(_plan_numbers(sql, checked=False)), params).mappings().all())
    except DataError:
        # A plan field that is not a number (or is out of float range): do it the careful way.
        pass
    return list(session.execute(text(_plan_numbers(sql, checked=True)), params).mappings().all())


_SPAN = "coalesce(date_part('epoch', a.ended_at), CAST(:nowe AS float8)) - date_part('epoch', a.started_at)"
_RUNNING_SECONDS = "greatest(CAST(:nowe AS float8) - date_part('epoch', a.started_at), 0)"

# One row per attempt that touches [p0, w1): its span in epoch seconds (date_part gives float8;
# extract() would give numeric, several times slower) and what it cost in all. OFFSET 0 keeps
# the planner from folding this into the outer query, so each expression is worked out once per
# attempt rather than once per use.
_BASE = f"""
    SELECT a.job_id,
           date_part('epoch', a.started_at) AS s,
           greatest(coalesce(date_part('epoch', a.ended_at), CAST(:nowe AS float8)),
                    date_part('epoch', a.started_at)) AS e,
           CASE WHEN a.ended_at IS NULL THEN a.usd_per_hour * {_RUNNING_SECONDS} / 3600.0
                ELSE a.cost_usd END AS usd,
           CASE WHEN a.ended_at IS NULL THEN {_RUNNING_SECONDS}
                ELSE a.billable_seconds END AS secs,
           a.tokens_trained::float8 AS tokens,
           coalesce(a.outcome IN ({", ".join(f"'{o}'" for o in WASTE_OUTCOMES)}), false) AS wasted,
           a.spot,
           coalesce({{num:on_demand_usd_per_hour}}, 0) AS od_rate,
           coalesce({{num:accelerator_count}}, 0) AS accel_n,
           CASE WHEN j.status = 'succeeded' AND j.cost_usd > 0
                THEN nullif(greatest({{num:estimated_cost_usd}}, 0), 0) / j.cost_usd END AS est_ratio,
           j.seq AS job_seq
           {{dims}}
    FROM job_attempts a
    JOIN jobs j ON j.id = a.job_id
    JOIN teams t ON t.id = j.team_id
    LEFT JOIN api_keys k ON k.id = j.api_key_id
    WHERE a.started_at < CAST(:w1 AS timestamptz)
      AND (a.ended_at >= CAST(:p0 AS timestamptz) OR a.ended_at IS NULL)
      {{where}}
    OFFSET 0
"""

# Bucket k of the current window is [a0 + k*st, a0 + (k+1)*st) clipped to [w0, w1). An attempt
# touches buckets k0..k1 of it (k1 = k0 when it fits in one).
_BUCKET_RANGE = """
    SELECT r.*,
           floor((greatest(r.s, :w0e) - :a0e) / :st)::int AS k0,
           greatest(floor((greatest(r.s, :w0e) - :a0e) / :st)::int,
                    ceil((least(r.e, :w1e) - :a0e) / :st)::int - 1) AS k1
    FROM ({base}) r
    OFFSET 0
"""


def _share(lo: str, hi: str) -> str:
    """The share of attempt b's span [s, e] inside [lo, hi); an instant attempt (e = s) is wholly
    in the interval holding it."""
    return (
        f"CASE WHEN b.e > b.s THEN greatest(least(b.e, {hi}) - greatest(b.s, {lo}), 0) / (b.e - b.s)"
        f" WHEN b.s >= {lo} AND b.s < {hi} THEN 1.0 ELSE 0.0 END"
    )


def _bucket_lo(k: str) -> str:
    return f"greatest(:a0e + {k} * :st, :w0e)"


def _bucket_hi(k: str) -> str:
    return f"least(:a0e + ({k} + 1) * :st, :w1e)"


# Each attempt's share of the previous window and of its first and last bucket, worked out once.
_SHARES = f"""
    SELECT b.*,
           {_share(":p0e", ":w0e")} AS f_prev,
           {_share(_bucket_lo("b.k0"), _bucket_hi("b.k0"))} AS f_first,
           CASE WHEN b.k1 > b.k0 THEN {_share(_bucket_lo("b.k1"), _bucket_hi("b.k1"))} ELSE 0.0 END AS f_last
    FROM ({{ranged}}) b
    OFFSET 0
"""

# Each attempt becomes one piece per bucket it overlaps (period 1) plus one for the previous
# window (period 0); `f` is the share of the attempt inside the piece. Nearly every attempt fits
# in one or two buckets, so those pieces come from a three-row VALUES list per attempt; only
# attempts longer than a step are joined to the buckets between their first and last. (A
# per-attempt generate_series would be shorter, but the planner guesses 1,000 rows for each
# call and then plans everything after it, sorts and aggregates, for a thousand times the real
# row count.) Each piece carries its own dollars, hours and tokens, so the sums add up columns.
_PIECES = f"""
    SELECT period, bucket, job_seq, {{dcols}},
           usd * f AS c_usd,
           secs * f AS c_secs,
           secs * f * accel_n AS c_gpu,
           tokens * f AS c_tokens,
           CASE WHEN spot AND od_rate > 0 THEN (od_rate * secs / 3600.0 - usd) * f ELSE 0 END AS c_save,
           CASE WHEN wasted THEN usd * f ELSE 0 END AS c_waste,
           coalesce(usd * f * est_ratio, 0) AS c_est,
           CASE WHEN est_ratio IS NOT NULL THEN usd * f ELSE 0 END AS c_est_actual,
           (est_ratio IS NOT NULL)::int AS est
    FROM (
        SELECT b.*, p.period, p.bucket, p.f
        FROM base b
        CROSS JOIN LATERAL (VALUES (0, -1, b.f_prev), (1, b.k0, b.f_first), (1, b.k1, b.f_last))
            AS p(period, bucket, f)
        WHERE p.f > 0
        UNION ALL
        SELECT b.*, 1, p.k, {_share("p.lo", "p.hi")}
        FROM long_base b
        JOIN buckets p ON p.k > b.k0 AND p.k < b.k1
        OFFSET 0
    ) x
"""

_METRIC_COLUMNS = ("c_usd", "c_secs", "c_gpu", "c_tokens", "c_save", "c_waste", "c_est", "c_est_actual")


@dataclass
class _Plan:
    start: datetime
    end: datetime
    prev_start: datetime
    step: timedelta | None
    aligned: float
    step_seconds: float
    n_buckets: int
    dims: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    where: list[str] = field(default_factory=list)


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _bucket_bounds(plan: _Plan, k: int) -> tuple[datetime, datetime]:
    lo = max(plan.aligned + k * plan.step_seconds, _epoch(plan.start))
    hi = min(plan.aligned + (k + 1) * plan.step_seconds, _epoch(plan.end))
    return datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _db_now(session: Session) -> datetime:
    now = session.scalar(select(text("now()")))
    assert isinstance(now, datetime)
    return now


def _visible_team_id(session: Session, principal: Principal, team: str | None) -> str | None:
    """Members are held to their own team; another team's name reads as unknown, as jobs do."""
    if team is None or not team.strip():
        return None if principal.is_admin else principal.team_id
    if not principal.is_admin and team != principal.team_name:
        raise NotFound(f"no team named {team!r}", param="team")
    return get_team_by_name(session, team).id


def _dim_sql(dim: str, plan: _Plan, i: int) -> str:
    if dim.startswith(LABEL_PREFIX):
        plan.params[f"label_{i}"] = dim[len(LABEL_PREFIX) :]
        return f"(j.metadata ->> CAST(:label_{i} AS text))"
    return f"({DIMENSIONS[dim]})"


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
) -> dict[str, Any]:
    """Spend over `window` grouped by `aggregate`, optionally per `step`, with totals and the
    change against the previous window of the same length."""
    dims = parse_aggregate(aggregate)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    now = now or _db_now(session)
    start, end = parse_window(window, now)
    # `month` asked at the very first instant of a month would be empty; give it a second.
    end = max(end, start + timedelta(seconds=1))
    length = end - start
    step_td = parse_duration(step, param="step") if step else None
    if step_td is not None:
        if step_td < MIN_STEP:
            raise InvalidRequest("step must be at least 1m", param="step")
        if "job" in dims:
            raise InvalidRequest("aggregate=job cannot be combined with step", param="step")
        step_seconds = step_td.total_seconds()
        # Buckets sit on UTC multiples of the step, so days start at midnight whatever the window.
        aligned = math.floor(_epoch(start) / step_seconds) * step_seconds
        n_buckets = math.ceil((_epoch(end) - aligned) / step_seconds)
        if n_buckets > MAX_BUCKETS:
            raise InvalidRequest(
                f"step {step} makes {n_buckets} buckets over this window; the most is {MAX_BUCKETS}",
                param="step",
            )
    else:
        step_seconds = length.total_seconds()
        aligned = _epoch(start)
        n_buckets = 1
    plan = _Plan(start, end, start - length, step_td, aligned, step_seconds, n_buckets, dims)

    team_id = _visible_team_id(session, principal, team)
    if team_id is not None:
        plan.where.append("AND j.team_id = :team_id")
        plan.params["team_id"] = team_id
    dim_sql = [_dim_sql(d, plan, i) for i, d in enumerate(dims)]
    for i, (name, value) in enumerate(sorted((filters or {}).items())):
        dim = parse_dimension(name, param=f"filter[{name}]")
        expr = _dim_sql(dim, plan, 100 + i)
        plan.where.append(f"AND {expr} = CAST(:filter_{i} AS text)")
        plan.params[f"filter_{i}"] = value

    rows = _run(session, plan, dim_sql, limit, now)
    result = _shape(plan, rows, limit)
    if "job" in dims:
        _name_jobs(session, result)
    result["filters"] = {"team": team, **(filters or {})}
    return result


def _run(session: Session, plan: _Plan, dim_sql: list[str], limit: int, now: datetime) -> list[Any]:
    n = len(dim_sql)
    dlist = ", ".join(f"d{i}" for i in range(n))
    with_dims = _BASE.replace("{dims}", "".join(f", {e} AS d{i}" for i, e in enumerate(dim_sql)))
    base = with_dims.replace("{where}", " ".join(plan.where))
    # Attempts longer than a step, the only ones with buckets between their first and last.
    long_base = with_dims.replace("{where}", " ".join([*plan.where, f"AND {_SPAN} > :st"]))
    if plan.step is not None:
        sets = f"(bucket, {dlist}), (bucket), ({dlist}), ()"
    else:
        # One bucket: the whole window. Its rows are the per-dimension rows.
        sets = f"(bucket, {dlist}), (bucket)"
    # GROUPING() bits: bucket is the highest, then d0..dn-1; all dimensions come and go together.
    dims_mask = (1 << n) - 1
    bucket_bit = 1 << n
    sums = ", ".join(f"sum({c}) AS {c}" for c in _METRIC_COLUMNS)
    # Counting distinct jobs per grouping set with count(DISTINCT) sorts within every group (slow
    # at a million pieces). Instead one window pass, over each job's pieces in order, marks the
    # piece that is the job's first in its period, first with its dimensions, and first with its
    # dimensions in its bucket; every count is then a plain sum, and the grouping sets run over
    # the small per-bucket, per-dimension rows. With a step, a bucket's total job count adds up
    # its per-row counts, which is exact for job-level dimensions (team, user, model, ...) and
    # counts a job twice in a bucket where it ran on two instance types (or spot and on demand);
    # window totals and per-row counts are always exact.
    # Partitioned by the job's integer seq rather than its text id: the sort compares integers.
    lags = ", ".join(f"lag(d{i}) OVER w AS prev_d{i}" for i in range(n))
    new_dims = " OR ".join(f"d{i} IS DISTINCT FROM prev_d{i}" for i in range(n))
    # Without a step there is one bucket per period, so its total is the period's, exactly.
    jobs_b, est_b = ("j_bd", "e_bd") if plan.step is not None else ("j_all", "e_all")

    sql = f"""
        WITH base AS ({_SHARES.replace("{ranged}", _BUCKET_RANGE.replace("{base}", base))}),
        long_base AS ({_SHARES.replace("{ranged}", _BUCKET_RANGE.replace("{base}", long_base))}),
        buckets AS (
            SELECT k, greatest(:a0e + k * :st, :w0e) AS lo, least(:a0e + (k + 1) * :st, :w1e) AS hi
            FROM generate_series(0, CAST(:n_buckets AS int) - 1) AS k
        ),
        pieces AS ({_PIECES.replace("{dcols}", dlist)}),
        lagged AS (
            SELECT p.*, row_number() OVER w AS rn, lag(bucket) OVER w AS prev_bucket, {lags}
            FROM pieces p
            WINDOW w AS (PARTITION BY period, job_seq ORDER BY {dlist}, bucket)
        ),
        marked AS (
            SELECT l.*,
                   (rn = 1)::int AS j_all,
                   (rn = 1 OR {new_dims})::int AS j_d,
                   (rn = 1 OR {new_dims} OR bucket <> prev_bucket)::int AS j_bd
            FROM lagged l
        ),
        fine AS (
            SELECT period, bucket, {dlist}, {sums},
                   sum(j_bd) AS j_bd, sum(j_d) AS j_d, sum(j_all) AS j_all,
                   sum(j_bd * est) AS e_bd, sum(j_d * est) AS e_d, sum(j_all * est) AS e_all
            FROM marked
            GROUP BY period, bucket, {dlist}
        ),
        agg AS (
            SELECT period, bucket, {dlist}, GROUPING(bucket, {dlist}) AS g,
                   sum(c_usd) AS cost_usd,
                   sum(c_secs) / 3600.0 AS billable_hours,
                   sum(c_gpu) / 3600.0 AS gpu_hours,
                   sum(c_tokens) AS tokens_trained,
                   sum(c_save) AS spot_savings_usd,
                   sum(c_waste) AS waste_usd,
                   sum(c_est) AS estimated_usd,
                   sum(c_est_actual) AS estimate_actual_usd,
                   CASE GROUPING(bucket, {dlist})
                        WHEN 0 THEN sum(j_bd) WHEN {dims_mask} THEN sum({jobs_b})
                        WHEN {bucket_bit} THEN sum(j_d) ELSE sum(j_all)
                   END AS jobs,
                   CASE GROUPING(bucket, {dlist})
                        WHEN 0 THEN sum(e_bd) WHEN {dims_mask} THEN sum({est_b})
                        WHEN {bucket_bit} THEN sum(e_d) ELSE sum(e_all)
                   END AS estimate_jobs
            FROM fine
            GROUP BY period, GROUPING SETS ({sets})
        )
        SELECT * FROM (
            SELECT agg.*,
                   row_number() OVER (part ORDER BY cost_usd DESC, {dlist}) AS rn,
                   count(*) OVER part AS n_rows
            FROM agg
            WINDOW part AS (PARTITION BY period, g, bucket)
        ) ranked
        WHERE (g & {dims_mask}) <> 0 OR rn <= :limit
    """
    params = {
        **plan.params,
        "nowe": _epoch(now),
        "w1": plan.end,
        "p0": plan.prev_start,
        "p0e": _epoch(plan.prev_start),
        "w0e": _epoch(plan.start),
        "w1e": _epoch(plan.end),
        "a0e": plan.aligned,
        "st": plan.step_seconds,
        "n_buckets": plan.n_buckets,
        "limit": limit,
    }
    # JIT compiling costs more than it saves at these sizes (and once cost a second on its own);
    # the sort behind the job marks is wide, so let it stay in memory.
    session.execute(text("SET LOCAL jit = off"))
    session.execute(text(f"SET LOCAL work_mem = '{QUERY_WORK_MEM}'"))
    return _execute_plan_sql(session, sql, params)


def _round(value: float | None, places: int = 6) -> float:
    return round(float(value or 0.0), places)


def _metrics(row: Any | None) -> dict[str, Any]:
    if row is None:
        row = {
            "cost_usd": 0.0,
            "billable_hours": 0.0,
            "gpu_hours": 0.0,
            "jobs": 0,
            "tokens_trained": 0.0,
            "spot_savings_usd": 0.0,
            "waste_usd": 0.0,
            "estimated_usd": 0.0,
            "estimate_actual_usd": 0.0,
            "estimate_jobs": 0,
        }
    cost = float(row["cost_usd"] or 0.0)
    tokens = round(float(row["tokens_trained"] or 0.0))
    estimated = float(row["estimated_usd"] or 0.0)
    actual = float(row["estimate_actual_usd"] or 0.0)
    return {
        "cost_usd": _round(cost),
        "billable_hours": _round(row["billable_hours"]),
        "gpu_hours": _round(row["gpu_hours"]),
        "jobs": int(row["jobs"] or 0),
        "tokens_trained": tokens,
        "usd_per_million_tokens": _round(cost / tokens * 1e6) if tokens else None,
        "spot_savings_usd": _round(row["spot_savings_usd"]),
        "waste_usd": _round(row["waste_usd"]),
        "estimated_usd": _round(estimated),
        "estimate_actual_usd": _round(actual),
        # Signed: +0.10 means jobs cost 10% more than estimated.
        "estimate_error": round((actual - estimated) / estimated, 6) if estimated > 0 else None,
        "estimate_jobs": int(row["estimate_jobs"] or 0),
    }


def _change(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in (
        "cost_usd",
        "billable_hours",
        "gpu_hours",
        "jobs",
        "tokens_trained",
        "waste_usd",
        "spot_savings_usd",
    ):
        cur, prev = float(current[m] or 0), float(previous[m] or 0)
        out[m] = {
            "delta": _round(cur - prev),
            "percent": round((cur - prev) / prev * 100.0, 2) if prev else None,
        }
    return out


def _shape(plan: _Plan, rows: list[Any], limit: int) -> dict[str, Any]:
    n = len(plan.dims)
    dims_mask = (1 << n) - 1
    bucket_bit = 1 << n

    def key(row: Any) -> dict[str, Any]:
        return {d: row[f"d{i}"] for i, d in enumerate(plan.dims)}

    def with_metrics(row: Any) -> dict[str, Any]:
        return {"key": key(row), **_metrics(row)}

    current_rows: list[Any] = []
    previous_rows: list[Any] = []
    totals_row = prev_totals_row = None
    bucket_rows: dict[int, list[Any]] = {}
    bucket_totals: dict[int, Any] = {}
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
        whole_window = not has_bucket or plan.step is None
        if has_dims and whole_window:
            current_rows.append(row)
        elif has_dims:
            bucket_rows.setdefault(row["bucket"], []).append(row)
        elif whole_window:
            totals_row = row
        else:
            bucket_totals[row["bucket"]] = row

    previous_by_key = {tuple(key(r).values()): _round(r["cost_usd"]) for r in previous_rows}

    def order(items: list[Any]) -> list[Any]:
        return sorted(items, key=lambda r: (-float(r["cost_usd"] or 0), [str(v) for v in key(r).values()]))

    data = []
    for row in order(current_rows):
        item = with_metrics(row)
        item["previous_cost_usd"] = previous_by_key.get(tuple(item["key"].values()), 0.0)
        data.append(item)
    totals = _metrics(totals_row)
    previous = _metrics(prev_totals_row)
    result: dict[str, Any] = {
        "object": "cost_allocation",
        "currency": "usd",
        "window": {
            "start": _ts(plan.start),
            "end": _ts(plan.end),
            "step": None if plan.step is None else int(plan.step.total_seconds()),
        },
        "aggregate": plan.dims,
        "data": data,
        "totals": totals,
        "previous": {"start": _ts(plan.prev_start), "end": _ts(plan.start), **previous},
        "change": _change(totals, previous),
        "truncated": truncated,
    }
    if plan.step is not None:
        series = []
        for k in range(plan.n_buckets):
            lo, hi = _bucket_bounds(plan, k)
            series.append(
                {
                    "start": _ts(lo),
                    "end": _ts(hi),
                    "totals": _metrics(bucket_totals.get(k)),
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
    found = session.execute(
        text("SELECT id, name, status FROM jobs WHERE id = ANY(CAST(:ids AS text[]))"), {"ids": ids}
    ).all()
    names = {i: (name, status) for i, name, status in found}
    for r in rows:
        name, status = names.get(r["key"].get("job"), (None, None))
        r["job_name"], r["job_status"] = name, status


# --- CSV -----------------------------------------------------------------------------------

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


# --- budgets -------------------------------------------------------------------------------

_SPEND_SQL = f"""
    WITH base AS ({_BASE.replace("{dims}", ", j.team_id AS d0")})
    SELECT d0 AS team_id,
           sum(CASE WHEN e > s THEN usd * (least(e, :w1e) - greatest(s, :w0e)) / (e - s) ELSE usd END) AS usd
    FROM base
    WHERE s < :w1e AND (e > :w0e OR s >= :w0e)
    GROUP BY d0
"""

# What queued and running jobs are still expected to spend: their estimate less what they have
# spent so far. Counted against the budget so that many jobs queued at once cannot each fit in
# the same remaining dollars.
_COMMITTED_SQL = f"""
    SELECT j.team_id, sum(greatest({_num("estimated_cost_usd")} - j.cost_usd, 0)) AS usd
    FROM jobs j
    WHERE j.status IN ('queued', 'running', 'cancelling', 'paused') {{where}}
    GROUP BY j.team_id
"""


def _month_spend(
    session: Session, now: datetime, team_id: str | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    start = month_start(now)
    where = "AND j.team_id = :team_id" if team_id else ""
    params: dict[str, Any] = {
        "nowe": _epoch(now),
        "w1": now,
        "p0": start,
        "w0e": _epoch(start),
        "w1e": _epoch(now),
        "team_id": team_id,
    }
    spent = [
        (r["team_id"], r["usd"])
        for r in _execute_plan_sql(session, _SPEND_SQL.replace("{where}", where), params)
    ]
    committed = session.execute(
        text(_COMMITTED_SQL.replace("{where}", where)), {"team_id": team_id} if team_id else {}
    ).all()
    return (
        {t: float(v or 0.0) for t, v in spent},
        {t: float(v or 0.0) for t, v in committed},
    )


def _status(team: Team, spent: float, committed: float, now: datetime) -> dict[str, Any]:
    start, end = month_start(now), next_month_start(now)
    elapsed = (now - start).total_seconds()
    budget = team.monthly_budget_usd
    # A straight-line projection; before an hour has passed it says nothing useful.
    projected = spent * (end - start).total_seconds() / elapsed if elapsed >= 3600 else None
    return {
        "object": "team_budget",
        "team": team.name,
        "team_id": team.id,
        "budget": budget,
        "monthly_budget_usd": budget,
        "spent_this_month": _round(spent),
        "committed_usd": _round(committed),
        "remaining": None if budget is None else _round(budget - spent),
        "available": None if budget is None else _round(budget - spent - committed),
        "used_fraction": round(spent / budget, 6) if budget else None,
        "projected_month_usd": _round(projected) if projected is not None else None,
        "month_start": _ts(start),
        "month_end": _ts(end),
    }


def budget_status(session: Session, team_id: str, now: datetime | None = None) -> dict[str, Any]:
    """`budget` (None when unset), `spent_this_month` (UTC calendar month, pro-rated), `remaining`
    (budget less spent; negative once overspent), plus what queued and running jobs still expect
    to spend (`committed_usd`) and what is `available` after them."""
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"no team {team_id!r}", param="team")
    now = now or _db_now(session)
    spent, committed = _month_spend(session, now, team_id)
    return _status(team, spent.get(team_id, 0.0), committed.get(team_id, 0.0), now)


def list_budgets(session: Session, principal: Principal, now: datetime | None = None) -> list[dict[str, Any]]:
    """Budget status for every team the caller may see (admins: all; members: their own)."""
    now = now or _db_now(session)
    query = select(Team).order_by(Team.name)
    if not principal.is_admin:
        query = query.where(Team.id == principal.team_id)
    teams = list(session.scalars(query))
    only = None if principal.is_admin else principal.team_id
    spent, committed = _month_spend(session, now, only)
    return [_status(t, spent.get(t.id, 0.0), committed.get(t.id, 0.0), now) for t in teams]


def set_team_budget(
    session: Session, principal: Principal, team_name: str, monthly_budget_usd: float | None
) -> dict[str, Any]:
    """Set (or clear, with None) a team's monthly budget; admin keys only."""
    require_admin(principal)
    if monthly_budget_usd is not None and (
        not math.isfinite(monthly_budget_usd) or not 0 <= monthly_budget_usd <= 1e12
    ):
        raise InvalidRequest(
            "monthly_budget_usd must be a number from 0 to 1e12, or null to clear it",
            param="monthly_budget_usd",
        )
    team = get_team_by_name(session, team_name)
    team.monthly_budget_usd = monthly_budget_usd
    session.flush()
    return budget_status(session, team.id)


def check_budget(
    session: Session, team_id: str, estimated_cost_usd: float | None, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """Refuse a new job whose estimate does not fit in what its team has left this month.

    Call it in the transaction that creates the job: it locks the team row until commit, so two
    jobs created at once cannot both take the last dollars. Running jobs are never stopped for
    the team budget; this only gates new work. Returns the budget status (None when the team has
    no budget); a job without an estimate is refused only once the budget is used up.
    """
    team = session.execute(
        select(Team).where(Team.id == team_id).with_for_update(key_share=True)
    ).scalar_one_or_none()
    if team is None:
        raise NotFound(f"no team {team_id!r}", param="team")
    if team.monthly_budget_usd is None:
        return None
    status = budget_status(session, team_id, now)
    budget = float(team.monthly_budget_usd)
    spent, committed = status["spent_this_month"], status["committed_usd"]
    estimate = float(estimated_cost_usd) if estimated_cost_usd is not None else 0.0
    over = spent + committed + estimate > budget if estimated_cost_usd is not None else spent >= budget
    if over:
        left = max(0.0, budget - spent - committed)
        what = (
            f"this job's estimate is ${estimate:,.2f}" if estimated_cost_usd is not None else "it is used up"
        )
        raise BudgetExhausted(
            f"team {team.name!r} has ${left:,.2f} left of its ${budget:,.2f} monthly budget "
            f"(spent ${spent:,.2f} this month, ${committed:,.2f} expected by queued and running jobs); "
            f"{what}. An admin can raise it with PUT /v1/teams/{team.name}/budget.",
            param="estimated_cost_usd",
        )
    return status


def list_teams(session: Session, principal: Principal) -> list[Team]:
    query = select(Team).order_by(Team.name)
    if not principal.is_admin:
        query = query.where(Team.id == principal.team_id)
    return list(session.scalars(query))


# --- the queue now -------------------------------------------------------------------------


def queue_summary(session: Session, principal: Principal, team: str | None = None) -> dict[str, Any]:
    """Waiting and running jobs by pool, for the caller's view (admins: all teams or `team`)."""
    team_id = _visible_team_id(session, principal, team)
    rows = session.execute(
        text(
            f"""
            SELECT j.pool,
                   count(*) FILTER (WHERE j.status = 'queued') AS waiting,
                   count(*) FILTER (WHERE j.status IN ('running', 'cancelling')) AS running,
                   coalesce(sum({_num("accelerator_count")})
                            FILTER (WHERE j.status IN ('running', 'cancelling')), 0) AS gpus_in_use,
                   extract(epoch FROM now() - min(j.created_at) FILTER (WHERE j.status = 'queued'))
                       AS oldest_waiting_seconds
            FROM jobs j
            WHERE j.status IN ('queued', 'running', 'cancelling')
              AND (CAST(:team_id AS text) IS NULL OR j.team_id = CAST(:team_id AS text))
            GROUP BY j.pool
            ORDER BY j.pool NULLS FIRST
            """
        ),
        {"team_id": team_id},
    ).mappings()
    pools = [
        {
            "pool": r["pool"],
            "waiting": int(r["waiting"]),
            "running": int(r["running"]),
            "gpus_in_use": float(r["gpus_in_use"] or 0),
            "oldest_waiting_seconds": (
                round(float(r["oldest_waiting_seconds"]), 3)
                if r["oldest_waiting_seconds"] is not None
                else None
            ),
        }
        for r in rows
    ]
    return {
        "object": "queue_summary",
        "waiting": sum(p["waiting"] for p in pools),
        "running": sum(p["running"] for p in pools),
        "gpus_in_use": sum(p["gpus_in_use"] for p in pools),
        "pools": pools,
        "as_of": _ts(_db_now(session)),
    }
