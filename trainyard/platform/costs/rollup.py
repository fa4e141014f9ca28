"""The cost rollup: every figure of /v1/costs per UTC hour and day and per key (team, API key,
model, instance type, accelerator, spot, outcome), so a query reads a few rows per day rather
than every attempt.

The database keeps it (migration 0006): a trigger on `job_attempts` adds, in the transaction
that changes an attempt, the difference between what the row contributed before and after (a
claim, a heartbeat, a checkpoint, a resume, a finish, a rescue, or any other write), and one
on `jobs` counts a succeeded job's estimate. So the rollup is never behind the attempts, and no
writer has to remember it. Triggers run under the writer's locks (job row, then attempt row);
rollup rows are written in key order, after both.

Here: the SQL that reads it (`fine_sql`: rollup rows for whole hours and days, the attempts for
the parts of hours at a window's ends), `spend` (what budgets read), and `rebuild`, which
recomputes it from the attempts (after a bulk load with the triggers off, or to repair it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from trainyard.platform.costs import queries
from trainyard.platform.costs.dimensions import Selection
from trainyard.platform.costs.segments import HOUR, Segment, split
from trainyard.platform.costs.windows import db_now, epoch

# A rollup row's figures, clamped at zero: the sums of many differences can leave -1e-13 where
# an attempt's dollars moved to another key. Spot savings are left alone (they may be negative).
_CLAMPED = {
    "c_usd": "usd",
    "c_secs": "billable_seconds",
    "c_gpu": "gpu_seconds",
    "c_tokens": "tokens",
    "c_startup": "startup_usd",
    "c_recomputed": "recomputed_usd",
    "c_lost": "lost_usd",
    "c_est": "estimated_usd",
    "c_est_actual": "estimate_actual_usd",
}


def _dims(columns: Sequence[str]) -> str:
    return "".join(f", {c} AS d{i}" for i, c in enumerate(columns))


def _group(n: int) -> str:
    return ", ".join(str(i) for i in range(1, n + 3))


def rollup_fine_sql(sel: Selection, bits: tuple[int, int]) -> str:
    """Fine rows from the rollup rows of the whole-hour and whole-day segments (:r_*)."""
    row, total = bits
    column = {**_CLAMPED, "c_save": "spot_savings_usd", "c_est_jobs": "estimate_jobs"}
    column |= {"c_jobs": f"jobs_{row}", "c_jobs_f": f"jobs_{total}"}
    sums = ", ".join(
        f"sum(greatest(r.{column[c]}, 0)) AS {c}" if c in _CLAMPED else f"sum(r.{column[c]}) AS {c}"
        for c in queries.METRIC_COLUMNS
    )
    # Each grain's rows by their index. A whole row lies inside one period and bucket, so both
    # follow from its start (a join to the segments instead makes the planner guess a few dozen
    # rows, and join them to the keys row by row).
    at = "date_part('epoch', r.bucket)"
    return f"""
    SELECT CASE WHEN {at} < :w0e THEN 0 ELSE 1 END AS period,
           CASE WHEN {at} < :w0e THEN -1 ELSE floor(({at} - :a0e) / :st)::int END AS bucket
           {_dims(sel.columns)}, {sums}
    FROM (
        SELECT * FROM cost_rollup WHERE grain = 'd' AND bucket = ANY(CAST(:r_days AS timestamptz[]))
        UNION ALL
        SELECT * FROM cost_rollup WHERE grain = 'h' AND bucket = ANY(CAST(:r_hours AS timestamptz[]))
    ) r
    JOIN cost_rollup_keys rk ON rk.id = r.key_id
    JOIN teams t ON t.id = rk.team_id
    LEFT JOIN api_keys k ON k.id = nullif(rk.api_key_id, '')
    WHERE true {queries.and_conditions(sel.conditions)}
    GROUP BY {_group(len(sel.columns))}
    """


def partial_fine_sql(sel: Selection, bits: tuple[int, int]) -> str:
    """Fine rows from the attempts billed in each part of an hour (:a_*), shared out to the
    second, and the estimates of jobs that finished in it; their dimensions are read from their
    rollup keys, as the rollup's own rows are."""
    segments = """unnest(CAST(:a_period AS int[]), CAST(:a_bucket AS int[]), CAST(:a_lo AS timestamptz[]),
                       CAST(:a_hi AS timestamptz[]), CAST(:a_hour AS timestamptz[]))
                  AS seg(period, bucket, lo, hi, hour)"""
    # The attempts of each hour holding a segment are read once: a window's start splits one
    # hour between the previous window and this one.
    overlap = "tstzrange(a.started_at, a.billed_until, '[]') && tstzrange(h.hour, h.hour + interval '1 hour')"
    attempts = queries.attempts_sql(sel.columns, [overlap, *sel.conditions], joins=queries.KEY_JOINS)
    by_hour = f"""(
        SELECT h.hour AS hour_at, x.*
        FROM unnest(CAST(:a_hours AS timestamptz[])) AS h(hour)
        CROSS JOIN LATERAL ({attempts}) x
        OFFSET 0
    ) b"""
    finished = [f"{queries.FINISHED} >= seg.lo", f"{queries.FINISHED} < seg.hi"]
    estimates = queries.estimates_sql(sel.columns, [*finished, *sel.conditions], keyed=True)
    lo, hi = "date_part('epoch', seg.lo)", "date_part('epoch', seg.hi)"
    dlist = "".join(f", d{i}" for i in range(len(sel.columns)))
    sums = ", ".join(f"sum({c}) AS {c}" for c in queries.METRIC_COLUMNS)
    return f"""
    SELECT period, bucket {dlist}, {sums}
    FROM (
        SELECT seg.period, seg.bucket {dlist},
               {queries.figures(queries.share(lo, hi), queries.within("b.s", lo, hi), bits)}
        FROM {by_hour}
        JOIN {segments} ON seg.hour = b.hour_at
        WHERE {queries.share(lo, hi)} > 0 OR {queries.within("b.s", lo, hi)}
        UNION ALL
        SELECT seg.period, seg.bucket {dlist}, {queries.estimate_figures()}
        FROM {segments}
        CROSS JOIN LATERAL ({estimates}) x
    ) p
    GROUP BY {_group(len(sel.columns))}
    """


def fine_sql(sel: Selection, bits: tuple[int, int]) -> str:
    """Fine rows of a window planned into segments (`segment_params`), for a selection over the
    rollup's keys (`dimensions.select_dimensions(..., rollup=True)`)."""
    return f"{rollup_fine_sql(sel, bits)} UNION ALL {partial_fine_sql(sel, bits)}"


def segment_params(segments: Sequence[Segment], window: dict[str, Any]) -> dict[str, Any]:
    """The segments as the statement binds them, with the window's `w0e`, `a0e` and `st` (its
    start, where its buckets are counted from, their length: `Window.params`), from which a
    whole row's period and bucket follow."""
    rows = [s for s in segments if s.grain != "a"]
    parts = [s for s in segments if s.grain == "a"]
    hours = [datetime.fromtimestamp(s.lo // HOUR * HOUR, UTC) for s in parts]
    return {
        "r_days": sorted({s.start for s in rows if s.grain == "d"}),
        "r_hours": sorted({s.start for s in rows if s.grain == "h"}),
        "a_period": [s.period for s in parts],
        "a_bucket": [s.bucket for s in parts],
        "a_lo": [s.start for s in parts],
        "a_hi": [s.end for s in parts],
        "a_hour": hours,
        "a_hours": sorted(set(hours)),
        **{name: window[name] for name in ("w0e", "a0e", "st")},
    }


def spend(session: Session, start: datetime, end: datetime, team_id: str | None = None) -> dict[str, float]:
    """Each team's dollars billed in [start, end) (attempts pro-rated by their time inside it)."""
    sel = Selection(columns=["rk.team_id"])
    params: dict[str, Any] = {}
    if team_id is not None:
        sel.conditions.append("rk.team_id = :team_id")
        params["team_id"] = team_id
    segments = split(1, 0, epoch(start), epoch(end), epoch(db_now(session)))
    window = {"w0e": epoch(start), "a0e": epoch(start), "st": max(1.0, epoch(end) - epoch(start))}
    sql = f"SELECT d0 AS team_id, sum(c_usd) AS usd FROM ({fine_sql(sel, (0, 0))}) f GROUP BY d0"
    rows = session.execute(text(sql), {**params, **segment_params(segments, window)}).all()
    return {team: float(usd or 0.0) for team, usd in rows}


def rebuild(session: Session) -> None:
    """Recompute the rollup from the attempts and jobs (in the caller's transaction); writers of
    attempts and jobs wait for it."""
    session.execute(text("SELECT cost_rollup_rebuild()"))
