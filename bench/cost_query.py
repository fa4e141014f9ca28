"""Benchmark: the cost allocation query over a million attempts.

The query the dashboard makes on load: 30 days by team with a daily step (which also sums the
previous 30 days for the change figures), over 1,000,000 generated attempt rows spread across
62 days. It reads the cost rollup (whole days and hours) and the attempts billed in the parts of
hours at the windows' ends. The rows are loaded with the rollup's triggers off and the rollup
rebuilt from them (`cost_rollup_rebuild()`, what migration 0006 runs on an existing database),
which ends where metering them one by one would. The baseline is a plain `SELECT count(*)` of
the same attempts: the cost of merely reading them once. Goal: at most 200 ms per query.

Runs in a scratch database on the Postgres at 127.0.0.1:5432 (or `TRAINYARD_BENCH_ADMIN_URL`),
created and dropped here. Rows are made with `INSERT ... SELECT generate_series` for speed.

    python bench/cost_query.py [--rows 1000000] [--repeat 5]

prints `name ours baseline ratio goal` lines; `results()` returns the same as dicts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from trainyard.platform import costs, db, migrate, states
from trainyard.platform.auth import Principal

ADMIN_URL = os.environ.get(
    "TRAINYARD_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
GOAL_SECONDS = 0.2
TEAMS = 20

_INSTANCE_TYPES = """
    (VALUES (0, 'g5.xlarge', 'A10G', 1, 1.006, 0.45),
            (1, 'g5.12xlarge', 'A10G', 4, 5.672, 2.10),
            (2, 'p4d.24xlarge', 'A100-40GB', 8, 32.77, 11.57),
            (3, 'c7i.2xlarge', NULL, 0, 0.357, 0.14),
            (4, 'g6e.xlarge', 'L40S', 1, 1.861, 0.80))
    AS it(n, name, accel, accel_n, od, spot_rate)
"""

# The states and outcomes the generated rows take (job statuses and attempt outcomes alike).
_VOCABULARY = {
    "running": str(states.RUNNING),
    "failed": str(states.FAILED),
    "succeeded": str(states.SUCCEEDED),
    "preempted": str(states.AttemptOutcome.PREEMPTED),
}


def _generate(engine: Engine, rows: int) -> None:
    jobs = rows // 2
    with engine.begin() as conn:
        # Row by row the triggers would take half an hour; the rebuild below gives the same rollup.
        conn.execute(text("SELECT set_config('trainyard.rollup_off', 'on', true)"))
        conn.execute(
            text(
                """
                INSERT INTO teams (id, name, monthly_budget_usd)
                SELECT 'team_' || i, 'team-' || lpad(i::text, 2, '0'), 50000 FROM generate_series(1, :t) i
                """
            ),
            {"t": TEAMS},
        )
        conn.execute(
            text(
                """
                INSERT INTO api_keys (id, team_id, name, role, key_hash, key_prefix)
                SELECT 'key_' || i, 'team_' || i, 'default', 'member',
                       md5(i::text) || md5(i::text), 'ty_' || i
                FROM generate_series(1, :t) i
                """
            ),
            {"t": TEAMS},
        )
        # Jobs: a team, an instance type, a spot flag and an estimate each.
        conn.execute(
            text(
                f"""
                INSERT INTO jobs (id, team_id, api_key_id, name, status, spec, metadata, plan, instance_type,
                                  pool, cost_usd)
                SELECT 'job_' || g, 'team_' || (1 + g % :t), 'key_' || (1 + g % :t), 'job-' || g,
                       CASE WHEN g % 50 = 0 THEN CAST(:running AS text)
                            WHEN g % 7 = 0 THEN CAST(:failed AS text)
                            ELSE CAST(:succeeded AS text) END,
                       jsonb_build_object('name', 'job-' || g, 'base_model', 's3://models/m' || (g % 9)),
                       jsonb_build_object('project', 'p' || (g % 13)),
                       jsonb_build_object('instance_type', it.name, 'accelerator', it.accel,
                                          'accelerator_count', it.accel_n, 'spot', g % 3 = 0,
                                          'usd_per_hour',
                                          CASE WHEN g % 3 = 0 THEN it.spot_rate ELSE it.od END,
                                          'on_demand_usd_per_hour', it.od,
                                          'estimated_cost_usd', 5 + (g % 40)),
                       it.name, it.name, 5 + (g % 40) * 1.1
                FROM generate_series(1, :jobs) g
                JOIN {_INSTANCE_TYPES} ON it.n = g % 5
                """
            ),
            {"t": TEAMS, "jobs": jobs, **_VOCABULARY},
        )
        # Attempts: two per job, starting anywhere in the last 62 days, 10 min to 12 h long; the
        # second attempt of a running job (one in fifty) is still running.
        conn.execute(
            text(
                """
                INSERT INTO job_attempts (id, job_id, number, worker_id, instance_type, spot, usd_per_hour,
                                          on_demand_usd_per_hour, accelerator, accelerator_count,
                                          started_at, heartbeat_at, lease_expires_at, ended_at, outcome,
                                          end_tokens, tokens_trained, billable_seconds, cost_usd)
                SELECT 'att_' || a.g, j.id, a.number, 'w', j.instance_type, (j.plan ->> 'spot')::boolean,
                       (j.plan ->> 'usd_per_hour')::float8, (j.plan ->> 'on_demand_usd_per_hour')::float8,
                       j.plan ->> 'accelerator', (j.plan ->> 'accelerator_count')::int,
                       a.started, a.started,
                       a.started + interval '1 min',
                       CASE WHEN a.running THEN NULL ELSE a.started + a.dur END,
                       CASE WHEN a.running THEN NULL
                            WHEN a.number = 1 AND a.g % 4 = 0 THEN CAST(:preempted AS text)
                            WHEN j.status = CAST(:failed AS text) THEN CAST(:failed AS text)
                            ELSE CAST(:succeeded AS text) END,
                       (extract(epoch FROM a.dur) * 2000)::bigint,
                       (extract(epoch FROM a.dur) * 2000)::bigint,
                       extract(epoch FROM a.dur),
                       extract(epoch FROM a.dur) / 3600 * (j.plan ->> 'usd_per_hour')::float8
                FROM (
                    SELECT g, 1 + (g - 1) / 2 AS job_n, 1 + (g - 1) % 2 AS number,
                           now() - interval '62 days' + (random() * interval '61 days') AS started,
                           interval '10 minutes' + random() * interval '12 hours' AS dur,
                           g % 100 = 0 AS running
                    FROM generate_series(1, :rows) g
                ) a
                JOIN jobs j ON j.id = 'job_' || a.job_n
                """
            ),
            {"rows": jobs * 2, **_VOCABULARY},
        )
        # A job that ended did so when its last attempt did (its estimate is counted then).
        conn.execute(
            text(
                """
                UPDATE jobs j SET finished_at = a.ended
                FROM (SELECT job_id, max(ended_at) AS ended FROM job_attempts GROUP BY job_id) a
                WHERE a.job_id = j.id AND j.status <> CAST(:running AS text)
                """
            ),
            _VOCABULARY,
        )
    with engine.begin() as conn:
        conn.execute(text("SELECT cost_rollup_rebuild()"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def _time(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm the cache and the plan
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def results(rows: int = 1_000_000, repeat: int = 5) -> list[dict[str, Any]]:
    name = f"trainyard_bench_{secrets.token_hex(4)}"
    admin = db.make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    try:
        migrate.upgrade(engine)
        _generate(engine, rows)
        factory = db.make_sessionmaker(engine)
        admin_principal = Principal(key_id="bench", team_id="team_1", team_name="team-01", role="admin")
        with engine.connect() as conn:
            n = conn.execute(text("SELECT count(*) FROM job_attempts")).scalar_one()
            rollup_rows = dict(
                conn.execute(text("SELECT grain, count(*) FROM cost_rollup GROUP BY grain")).tuples().all()
            )

        def ours() -> None:
            with factory() as session:
                result = costs.query_costs(
                    session, admin_principal, window="30d", aggregate=["team"], step="1d"
                )
                assert len(result["data"]) == TEAMS and len(result["series"]) in (30, 31)

        def baseline() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT count(*) FROM job_attempts")).scalar_one()

        s_ours, s_base = _time(ours, repeat), _time(baseline, repeat)
        t_ours, t_base = statistics.median(s_ours), statistics.median(s_base)
        return [
            {
                "name": f"cost_query_30d_team_daily_{n}_attempts",
                "ours": round(t_ours, 4),
                "baseline": round(t_base, 4),
                "ratio": round(t_ours / t_base, 1),
                "goal": f"ours<={GOAL_SECONDS:g}s",
                "met": t_ours <= GOAL_SECONDS,
                "ours_samples": s_ours,
                "baseline_samples": s_base,
                "rollup_rows": rollup_rows,
            }
        ]
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("name ours baseline ratio goal")
    for r in results(args.rows, args.repeat):
        missed = "" if r["met"] else " (missed)"
        print(f"{r['name']} {r['ours']:.4f}s {r['baseline']:.4f}s {r['ratio']}x {r['goal']}{missed}")


if __name__ == "__main__":
    main()
