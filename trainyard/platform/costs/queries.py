"""The allocation query: spend split over time and dimensions in one SQL statement.

Dollars come from attempt rows, the ledger (`ledger`). Each attempt's metered figures
(`cost_usd`, `billable_seconds`, its new tokens, waste) are spread evenly over its billed span,
[started_at, started_at + billable_seconds]: a running attempt is billed up to its last heartbeat
and a lost one up to its last sign of life, so time when nothing ran is never billed, and a
figure for a past window never changes as time goes by. A window or step bucket gets the share
of each attempt's span that overlaps it, so an attempt that runs across midnight is billed to
both days in proportion.
The split, the grouping and the sums all happen in one statement, so the work grows with the
attempts in the window, never with rows copied into Python.

Each function here returns SQL for the dimension expressions and conditions it is given (from
`dimensions`, a fixed table) and the vocabulary of `states`; every value a caller supplies is a
bound parameter (`:name`), never text in the statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.states import sql_list

# Sort memory for one allocation query: the sort that marks each job's first piece holds about
# 170 bytes a piece (a million attempts over two windows make ~1.3M pieces, ~225 MB). Beyond it
# the sort spills to disk and still works, only slower.
QUERY_WORK_MEM = "256MB"

# The numeric plan fields the queries read; a field name is put in the SQL, so only these. What
# an attempt is billed on (price, on-demand price, accelerators) is its own, never the plan's.
PLAN_NUMBERS = frozenset({"estimated_cost_usd"})

METRIC_COLUMNS = (
    "c_usd",
    "c_secs",
    "c_gpu",
    "c_tokens",
    "c_save",
    "c_waste",
    "c_startup",
    "c_recomputed",
    "c_lost",
    "c_est",
    "c_est_actual",
)

# An attempt's billed span in seconds.
SPAN = "greatest(a.billable_seconds, 0)"
# `ledger.startup_fraction`.
_STARTUP_FRACTION = (
    "CASE WHEN a.billable_seconds <= 0 THEN 0.0"
    " WHEN a.pace_at IS NULL THEN"
    " CASE WHEN a.end_step > a.start_step OR a.tokens_trained > 0 THEN 0.0 ELSE 1.0 END"
    " ELSE least(greatest(date_part('epoch', a.pace_at) - date_part('epoch', a.started_at), 0)"
    " / a.billable_seconds, 1.0) END"
)
# `ledger.recomputed_fraction`.
_RECOMPUTED_FRACTION = (
    "CASE WHEN a.end_step > a.start_step"
    " THEN least(a.steps_recomputed::float8 / (a.end_step - a.start_step), 1.0) ELSE 0.0 END"
)


def plan_number(name: str, *, checked: bool) -> str:
    """A numeric plan field. Checked, it is NULL when absent or not a number (a bad plan must not
    500). Unchecked, it is a plain cast, about four times cheaper per row, which matters at a
    million attempts; plans are written by the scheduler, so the check only matters for a
    hand-edited or foreign plan, and `run` falls back to it when the cast fails."""
    if name not in PLAN_NUMBERS:
        raise ValueError(f"not a numeric plan field: {name!r}")
    if checked:
        return f"CASE WHEN jsonb_typeof(j.plan -> '{name}') = 'number' THEN (j.plan ->> '{name}')::float8 END"
    return f"(j.plan ->> '{name}')::float8"


def and_conditions(conditions: Sequence[str]) -> str:
    """` AND c1 AND c2 ...`, to follow a WHERE clause."""
    return "".join(f" AND {c}" for c in conditions)


def attempts_sql(columns: Sequence[str], conditions: Sequence[str], *, checked: bool) -> str:
    """One row per attempt that touches [p0, w1): its billed span in epoch seconds (date_part
    gives float8; extract() would give numeric, several times slower), what it cost in all, and
    each of `columns` as d0, d1, ... OFFSET 0 keeps the planner from folding this into an outer
    query, so each expression is worked out once per attempt rather than once per use.

    Per attempt, as `ledger` has it: `tokens` are the tokens new to the job (past the furthest
    its earlier attempts got); `lost` says all its dollars are (a failed, crashed, lost or
    preempted attempt); else `startup_f` is the share of them before its first progress and
    `recomputed_f` that of its recomputed steps (in its time after start-up). Every attempt that
    ends after p0 is read, a superset of those whose billed span does (that ends no later); the
    shares below give the others nothing."""
    dims = "".join(f", {c} AS d{i}" for i, c in enumerate(columns))
    return f"""
    SELECT a.job_id,
           date_part('epoch', a.started_at) AS s,
           date_part('epoch', a.started_at) + {SPAN} AS e,
           a.cost_usd AS usd,
           {SPAN} AS secs,
           greatest(a.end_tokens - a.prior_tokens, 0)::float8 AS tokens,
           coalesce(a.outcome IN ({sql_list(states.WASTED)}), false) AS lost,
           {_STARTUP_FRACTION} AS startup_f,
           CASE WHEN a.steps_recomputed > 0 THEN {_RECOMPUTED_FRACTION} * (1.0 - {_STARTUP_FRACTION})
                ELSE 0.0 END AS recomputed_f,
           a.spot,
           a.on_demand_usd_per_hour AS od_rate,
           a.accelerator_count AS accel_n,
           CASE WHEN j.status IN ({sql_list((states.SUCCEEDED,))}) AND j.cost_usd > 0
                THEN nullif(greatest({plan_number("estimated_cost_usd", checked=checked)}, 0), 0)
                     / j.cost_usd END AS est_ratio,
           j.seq AS job_seq
           {dims}
    FROM job_attempts a
    JOIN jobs j ON j.id = a.job_id
    JOIN teams t ON t.id = j.team_id
    LEFT JOIN api_keys k ON k.id = j.api_key_id
    WHERE a.started_at < CAST(:w1 AS timestamptz)
      AND (a.ended_at >= CAST(:p0 AS timestamptz) OR a.ended_at IS NULL)
      {and_conditions(conditions)}
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


def _shares_sql(attempts: str) -> str:
    """Each attempt's buckets k0..k1 of the current window (k1 = k0 when it fits in one), and its
    share of the previous window and of its first and last bucket, worked out once."""
    ranged = f"""
    SELECT r.*,
           floor((greatest(r.s, :w0e) - :a0e) / :st)::int AS k0,
           greatest(floor((greatest(r.s, :w0e) - :a0e) / :st)::int,
                    ceil((least(r.e, :w1e) - :a0e) / :st)::int - 1) AS k1
    FROM ({attempts}) r
    OFFSET 0
    """
    return f"""
    SELECT b.*,
           {_share(":p0e", ":w0e")} AS f_prev,
           {_share(_bucket_lo("b.k0"), _bucket_hi("b.k0"))} AS f_first,
           CASE WHEN b.k1 > b.k0 THEN {_share(_bucket_lo("b.k1"), _bucket_hi("b.k1"))} ELSE 0.0 END AS f_last
    FROM ({ranged}) b
    OFFSET 0
    """


def _pieces_sql(dlist: str) -> str:
    """Each attempt becomes one piece per bucket it overlaps (period 1) plus one for the previous
    window (period 0); `f` is the share of the attempt inside the piece. Nearly every attempt
    fits in one or two buckets, so those pieces come from a three-row VALUES list per attempt;
    only attempts longer than a step are joined to the buckets between their first and last. (A
    per-attempt generate_series would be shorter, but the planner guesses 1,000 rows for each
    call and then plans everything after it, sorts and aggregates, for a thousand times the real
    row count.) Each piece carries its own dollars, hours and tokens, so the sums add up columns."""
    return f"""
    SELECT period, bucket, job_seq, {dlist},
           usd * f AS c_usd,
           secs * f AS c_secs,
           secs * f * accel_n AS c_gpu,
           tokens * f AS c_tokens,
           CASE WHEN spot AND od_rate > 0 THEN (od_rate * secs / 3600.0 - usd) * f ELSE 0 END AS c_save,
           CASE WHEN lost THEN usd * f ELSE usd * recomputed_f * f END AS c_waste,
           CASE WHEN lost THEN 0 ELSE usd * startup_f * f END AS c_startup,
           CASE WHEN lost THEN 0 ELSE usd * recomputed_f * f END AS c_recomputed,
           CASE WHEN lost THEN usd * f ELSE 0 END AS c_lost,
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


def allocation_sql(columns: Sequence[str], conditions: Sequence[str], *, stepped: bool, checked: bool) -> str:
    """Spend per period (0: previous window, 1: this one), bucket and dimension values, with the
    grouping sets for per-bucket and whole-window totals; `g` is GROUPING(bucket, d0, ...), and
    rows past `:limit` per group are cut (their count is in `n_rows`)."""
    n = len(columns)
    dlist = ", ".join(f"d{i}" for i in range(n))
    base = attempts_sql(columns, conditions, checked=checked)
    # Attempts longer than a step, the only ones with buckets between their first and last.
    long_base = attempts_sql(columns, [*conditions, f"{SPAN} > :st"], checked=checked)
    # Without a step there is one bucket, the whole window: its rows are the per-dimension rows.
    sets = f"(bucket, {dlist}), (bucket), ({dlist}), ()" if stepped else f"(bucket, {dlist}), (bucket)"
    # GROUPING() bits: bucket is the highest, then d0..dn-1; all dimensions come and go together.
    dims_mask = (1 << n) - 1
    bucket_bit = 1 << n
    sums = ", ".join(f"sum({c}) AS {c}" for c in METRIC_COLUMNS)
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
    jobs_b, est_b = ("j_bd", "e_bd") if stepped else ("j_all", "e_all")
    return f"""
        WITH base AS ({_shares_sql(base)}),
        long_base AS ({_shares_sql(long_base)}),
        buckets AS (
            SELECT k, {_bucket_lo("k")} AS lo, {_bucket_hi("k")} AS hi
            FROM generate_series(0, CAST(:n_buckets AS int) - 1) AS k
        ),
        pieces AS ({_pieces_sql(dlist)}),
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
                   sum(c_startup) AS startup_usd,
                   sum(c_recomputed) AS recomputed_usd,
                   sum(c_lost) AS lost_usd,
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


def tune_for_allocation(session: Session) -> None:
    """For the rest of the transaction: no JIT, which costs more than it saves at these sizes (and
    once cost a second on its own), and room for the wide sort behind the job marks."""
    session.execute(
        text("SELECT set_config('jit', 'off', true), set_config('work_mem', :work_mem, true)"),
        {"work_mem": QUERY_WORK_MEM},
    )


def run(session: Session, build: Callable[[bool], str], params: dict[str, Any]) -> list[RowMapping]:
    """Run the SQL `build(checked)` returns, first with plan numbers cast unchecked; a plan field
    that is not a number (or is out of float range) fails the cast, and then it runs checked."""
    try:
        with session.begin_nested():
            return list(session.execute(text(build(False)), params).mappings().all())
    except DataError:
        pass
    return list(session.execute(text(build(True)), params).mappings().all())
