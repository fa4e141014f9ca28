"""The allocation query: spend split over time and dimensions in one SQL statement.

Dollars come from attempt rows, the ledger (`ledger`). Each attempt's metered figures
(`cost_usd`, `billable_seconds`, its new tokens, waste) are spread evenly over its billed span,
[started_at, started_at + billable_seconds]: a running attempt is billed up to its last heartbeat
and a lost one up to its last sign of life, so time when nothing ran is never billed, and a
figure for a past window never changes as time goes by. A window or step bucket gets the share
of each attempt's span that overlaps it, so an attempt that runs across midnight is billed to
both days in proportion. Two figures are counted at an instant instead: a job where its first
attempt (with the same values of the attempt dimensions grouped or filtered by) started, and a
succeeded job's estimate where the job finished. Every figure then adds up across buckets, which
is what lets the rollup (`rollup`, the same figures per hour and day) answer for the attempts.

This module reads attempts: for what the rollup does not keep (a job's status, the job, labels,
steps off the hour) the whole window, else only the parts of hours at a window's ends
(`segments`). Both give rows of the `fine` shape (period, bucket, d0.., the METRIC_COLUMNS) that
`allocation_sql` sums into grouping sets.

Each function here returns SQL for the dimension expressions and conditions it is given (from
`dimensions`, a fixed table) and the vocabulary of `states`; every value a caller supplies is a
bound parameter (`:name`), never text in the statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from trainyard.platform import states
from trainyard.platform.states import sql_list

# Sort memory for one allocation query over attempts (the grouping of a million pieces).
QUERY_WORK_MEM = "256MB"

# The numeric plan fields the queries read; a field name is put in the SQL, so only these. What
# an attempt is billed on (price, on-demand price, accelerators) is its own, never the plan's.
PLAN_NUMBERS = frozenset({"estimated_cost_usd"})

# What each fine row sums. c_jobs counts jobs started for a row's dimensions, c_jobs_f for the
# totals (`dimensions.jobs_bits`).
METRIC_COLUMNS = (
    "c_usd",
    "c_secs",
    "c_gpu",
    "c_tokens",
    "c_save",
    "c_startup",
    "c_recomputed",
    "c_lost",
    "c_est",
    "c_est_actual",
    "c_est_jobs",
    "c_jobs",
    "c_jobs_f",
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
# A succeeded job counts its estimate at the instant it finished (`estimates_sql`).
FINISHED = "coalesce(j.finished_at, j.created_at)"


def plan_number(name: str) -> str:
    """A numeric plan field, NULL when absent or not a number (a hand-edited plan must not 500);
    numbers beyond float range are held at 1e300."""
    if name not in PLAN_NUMBERS:
        raise ValueError(f"not a numeric plan field: {name!r}")
    return (
        f"CASE WHEN jsonb_typeof(j.plan -> '{name}') = 'number'"
        f" THEN least((j.plan ->> '{name}')::numeric, 1e300)::float8 END"
    )


def and_conditions(conditions: Sequence[str]) -> str:
    """` AND c1 AND c2 ...`, to follow a WHERE clause."""
    return "".join(f" AND {c}" for c in conditions)


def _dims(columns: Sequence[str]) -> str:
    return "".join(f", {c} AS d{i}" for i, c in enumerate(columns))


# What the dimensions read, over attempts: the job, its team and API key.
JOB_JOINS = """
    JOIN jobs j ON j.id = a.job_id
    JOIN teams t ON t.id = j.team_id
    LEFT JOIN api_keys k ON k.id = j.api_key_id"""
# The same over an attempt's rollup key (`dimensions.ROLLUP_DIMENSIONS`): no job row to read.
KEY_JOINS = """
    JOIN cost_rollup_keys rk ON rk.id = a.rollup_key_id
    JOIN teams t ON t.id = rk.team_id
    LEFT JOIN api_keys k ON k.id = nullif(rk.api_key_id, '')"""


def attempts_sql(
    columns: Sequence[str],
    conditions: Sequence[str],
    *,
    source: str = "job_attempts a",
    joins: str = JOB_JOINS,
) -> str:
    """One row per attempt of `source` meeting `conditions`: its billed span in epoch seconds
    (date_part gives float8; extract() would give numeric, several times slower), what it cost
    in all, and each of `columns` as d0, d1, ... OFFSET 0 keeps the planner from folding this
    into an outer query, so each expression is worked out once per attempt rather than once per
    use.

    Per attempt, as `ledger` has it: `tokens` are the tokens new to the job (past the furthest
    its earlier attempts got); `lost` says all its dollars are (a failed, crashed, lost or
    preempted attempt); else `startup_f` is the share of them before its first progress and
    `recomputed_f` that of its recomputed steps (in its time after start-up). `firsts` says of
    which sets of attempt dimensions it is its job's first attempt."""
    return f"""
    SELECT date_part('epoch', a.started_at) AS s,
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
           a.firsts
           {_dims(columns)}
    FROM {source} {joins}
    WHERE true {and_conditions(conditions)}
    OFFSET 0
    """


def estimates_sql(columns: Sequence[str], conditions: Sequence[str], *, keyed: bool = False) -> str:
    """One row per succeeded job with an estimate (and a cost): the instant it finished, its
    estimate and what it cost. What it ran on is read from its plan, standing in for an
    attempt's terms (`a`), so that every dimension reads the same; `keyed`, also as the rollup
    key it is counted under (`rk`)."""
    key = (
        """
    CROSS JOIN LATERAL (
        SELECT j.team_id, coalesce(j.api_key_id, '') AS api_key_id,
               coalesce(j.spec ->> 'base_model', '') AS model,
               coalesce(a.instance_type, '') AS instance_type, coalesce(a.accelerator, '') AS accelerator,
               a.spot, 'succeeded' AS outcome
    ) rk"""
        if keyed
        else ""
    )
    return f"""
    SELECT date_part('epoch', {FINISHED}) AS at, x.estimate, j.cost_usd AS actual {_dims(columns)}
    FROM jobs j
    CROSS JOIN LATERAL (SELECT {plan_number("estimated_cost_usd")} AS estimate) x
    CROSS JOIN LATERAL (
        SELECT j.instance_type,
               CASE WHEN jsonb_typeof(j.plan -> 'accelerator') = 'string'
                    THEN left(j.plan ->> 'accelerator', 64) END AS accelerator,
               coalesce(j.plan -> 'spot' = 'true'::jsonb, false) AS spot
    ) a {key}
    JOIN teams t ON t.id = j.team_id
    LEFT JOIN api_keys k ON k.id = j.api_key_id
    WHERE j.status = '{states.SUCCEEDED}' AND j.cost_usd > 0 AND x.estimate > 0 {and_conditions(conditions)}
    OFFSET 0
    """


def figures(f: str, first: str, bits: tuple[int, int]) -> str:
    """The METRIC_COLUMNS of attempt row `b` for share `f` of its span; `first` says the piece
    holds the attempt's start, where its job is counted (bits: which `firsts` bit counts for a
    row and for the totals)."""
    row, total = bits
    return f"""
           b.usd * {f} AS c_usd,
           b.secs * {f} AS c_secs,
           b.secs * {f} * b.accel_n AS c_gpu,
           b.tokens * {f} AS c_tokens,
           CASE WHEN b.spot AND b.od_rate > 0 THEN (b.od_rate * b.secs / 3600.0 - b.usd) * {f}
                ELSE 0 END AS c_save,
           CASE WHEN b.lost THEN 0 ELSE b.usd * b.startup_f * {f} END AS c_startup,
           CASE WHEN b.lost THEN 0 ELSE b.usd * b.recomputed_f * {f} END AS c_recomputed,
           CASE WHEN b.lost THEN b.usd * {f} ELSE 0 END AS c_lost,
           0.0 AS c_est, 0.0 AS c_est_actual, 0 AS c_est_jobs,
           CASE WHEN {first} THEN (b.firsts >> {row}) & 1 ELSE 0 END AS c_jobs,
           CASE WHEN {first} THEN (b.firsts >> {total}) & 1 ELSE 0 END AS c_jobs_f"""


def estimate_figures() -> str:
    """The METRIC_COLUMNS of estimate row `x` (`estimates_sql`)."""
    zeros = ", ".join(f"0.0 AS {c}" for c in METRIC_COLUMNS[:8])
    return (
        f"{zeros}, x.estimate AS c_est, x.actual AS c_est_actual, 1 AS c_est_jobs, 0 AS c_jobs, 0 AS c_jobs_f"
    )


def share(lo: str, hi: str) -> str:
    """The share of attempt b's span [s, e] inside [lo, hi); an instant attempt (e = s) is wholly
    in the interval holding it."""
    return (
        f"CASE WHEN b.e > b.s THEN greatest(least(b.e, {hi}) - greatest(b.s, {lo}), 0) / (b.e - b.s)"
        f" WHEN b.s >= {lo} AND b.s < {hi} THEN 1.0 ELSE 0.0 END"
    )


def within(x: str, lo: str, hi: str) -> str:
    return f"({x} >= {lo} AND {x} < {hi})"


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
           {share(":p0e", ":w0e")} AS f_prev,
           {share(_bucket_lo("b.k0"), _bucket_hi("b.k0"))} AS f_first,
           CASE WHEN b.k1 > b.k0 THEN {share(_bucket_lo("b.k1"), _bucket_hi("b.k1"))} ELSE 0.0 END AS f_last
    FROM ({ranged}) b
    OFFSET 0
    """


# The attempts billed in [p0, w1): started before its end, and billed up to at least its start.
_IN_WINDOW = (
    "tstzrange(a.started_at, a.billed_until, '[]')"
    " && tstzrange(CAST(:p0 AS timestamptz), CAST(:w1 AS timestamptz))"
)


def window_fine_sql(
    columns: Sequence[str], conditions: Sequence[str], bits: tuple[int, int], dlist: str
) -> str:
    """Fine rows of the whole window from attempts.

    Each attempt becomes one piece per bucket it overlaps (period 1) plus one for the previous
    window (period 0); `f` is the share of the attempt inside the piece. Nearly every attempt
    fits in one or two buckets, so those pieces come from a three-row VALUES list per attempt;
    only attempts longer than a step are joined to the buckets between their first and last. (A
    per-attempt generate_series would be shorter, but the planner guesses 1,000 rows for each
    call and then plans everything after it for a thousand times the real row count.)"""
    base = attempts_sql(columns, [_IN_WINDOW, *conditions])
    long_base = attempts_sql(columns, [_IN_WINDOW, *conditions, f"{SPAN} > :st"])
    # An attempt's start is in the previous window, in its first bucket k0 (when it started in
    # this window), or before both.
    in_prev = within("b.s", ":p0e", ":w0e")
    finished = [f"{FINISHED} >= CAST(:p0 AS timestamptz)", f"{FINISHED} < CAST(:w1 AS timestamptz)"]
    in_window = within("b.s", ":w0e", ":w1e")
    return f"""
    WITH base AS ({_shares_sql(base)}),
    long_base AS ({_shares_sql(long_base)}),
    buckets AS (
        SELECT k, {_bucket_lo("k")} AS lo, {_bucket_hi("k")} AS hi
        FROM generate_series(0, CAST(:n_buckets AS int) - 1) AS k
    ),
    pieces AS (
        SELECT p.period, p.bucket, {dlist}, {figures("p.f", "p.first", bits)}
        FROM base b
        CROSS JOIN LATERAL (
            VALUES (0, -1, b.f_prev, {in_prev}), (1, b.k0, b.f_first, {in_window}), (1, b.k1, b.f_last, false)
        ) AS p(period, bucket, f, first)
        WHERE p.f > 0 OR p.first
        UNION ALL
        SELECT 1, p.k, {dlist}, {figures(share("p.lo", "p.hi"), "false", bits)}
        FROM long_base b
        JOIN buckets p ON p.k > b.k0 AND p.k < b.k1
    ),
    estimates AS (
        SELECT CASE WHEN x.at < :w0e THEN 0 ELSE 1 END AS period,
               CASE WHEN x.at < :w0e THEN -1 ELSE floor((x.at - :a0e) / :st)::int END AS bucket,
               {dlist}, {estimate_figures()}
        FROM ({estimates_sql(columns, [*finished, *conditions])}) x
    )
    SELECT period, bucket, {dlist}, {", ".join(f"sum({c}) AS {c}" for c in METRIC_COLUMNS)}
    FROM (SELECT * FROM pieces UNION ALL SELECT * FROM estimates) u
    GROUP BY period, bucket, {dlist}
    """


def allocation_sql(fine: str, n: int, *, stepped: bool) -> str:
    """Spend per period (0: previous window, 1: this one), bucket and dimension values d0..d{n-1}
    from the `fine` rows, with the grouping sets for per-bucket and whole-window totals; `g` is
    GROUPING(bucket, d0, ...), and rows past `:limit` per group are cut (their count is in
    `n_rows`). Every figure adds up, so each grouping set is a plain sum."""
    dlist = ", ".join(f"d{i}" for i in range(n))
    # Without a step there is one bucket, the whole window: its rows are the per-dimension rows.
    sets = f"(bucket, {dlist}), (bucket), ({dlist}), ()" if stepped else f"(bucket, {dlist}), (bucket)"
    dims_mask = (1 << n) - 1
    return f"""
        WITH fine AS ({fine}),
        agg AS (
            SELECT period, bucket, {dlist}, GROUPING(bucket, {dlist}) AS g,
                   sum(c_usd) AS cost_usd,
                   sum(c_secs) / 3600.0 AS billable_hours,
                   sum(c_gpu) / 3600.0 AS gpu_hours,
                   sum(c_tokens) AS tokens_trained,
                   sum(c_save) AS spot_savings_usd,
                   sum(c_lost) + sum(c_recomputed) AS waste_usd,
                   sum(c_startup) AS startup_usd,
                   sum(c_recomputed) AS recomputed_usd,
                   sum(c_lost) AS lost_usd,
                   sum(c_est) AS estimated_usd,
                   sum(c_est_actual) AS estimate_actual_usd,
                   CASE WHEN GROUPING({dlist}) = 0 THEN sum(c_jobs) ELSE sum(c_jobs_f) END AS jobs,
                   sum(c_est_jobs) AS estimate_jobs
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
    once cost a second on its own), and room for the sorts of a query over attempts."""
    session.execute(
        text("SELECT set_config('jit', 'off', true), set_config('work_mem', :work_mem, true)"),
        {"work_mem": QUERY_WORK_MEM},
    )


def run(session: Session, sql: str, params: dict[str, Any]) -> list[RowMapping]:
    return list(session.execute(text(sql), params).mappings().all())
