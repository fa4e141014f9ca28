"""Figure 3: queue claims. Jobs claimed and finished per second by 8 concurrent claimers.

Each claimer is a thread with its own database connection that loops ``queue.claim(n=1)`` then
``queue.finish(attempt, "succeeded")`` (two transactions, each committed at once) against a scratch
database holding a deep queue of ready jobs. The baseline is ``pgbench``'s simple-update
transactions per second (``pgbench -N -c 8 -j 2``) on the same server, in a scratch database of its
own; the two take turns going first. Goal: ours >= 0.5 x pgbench.

A second figure runs the same loop through the pool-capacity path that the worker daemon uses
when pools have a concurrency limit (``claim(pools=..., capacity=...)``: an advisory lock per pool
held to commit, so claimers of one pool take turns). It is reported for information.

A third, also for information, is the harness's own ceiling: the same 8 threads, sessions and
connection checkouts, each "job" two transactions of ``SELECT 1`` where claim and finish would
be. It is what one Python process of 8 threads can reach with two committed transactions per job
through this session layer at all, whatever the queue does; the goal's ratio is against pgbench,
whose client is C.

    python -m bench.queue_claims [--quick]

On a real cluster, ``TRAINYARD_BENCH_ADMIN_URL`` (or ``TRAINYARD_DATABASE_URL``'s server) selects
the Postgres server; the bench creates and drops its scratch databases there.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from typing import Any

from sqlalchemy import text

from bench.common import CpuMeter, figure, format_table, libpq_args, run_quiet, scratch_database, which
from trainyard.platform.states import AttemptOutcome, JobStatus

GOAL = 0.5
CLAIMERS = 8
POOL = "local-cpu"


def _fill(engine: Any, n: int) -> None:
    """Add `n` ready jobs to the queue (with a team and a key for them to belong to)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO teams (id, name) VALUES ('team_bench', 'bench') ON CONFLICT DO NOTHING;
                INSERT INTO api_keys (id, team_id, name, role, key_hash, key_prefix)
                VALUES ('key_bench', 'team_bench', 'bench', 'admin', md5('bench') || md5('bench'), 'ty_bench')
                ON CONFLICT DO NOTHING;
                """
            )
        )
        conn.execute(
            text(
                f"""
                INSERT INTO jobs (id, team_id, api_key_id, name, status, spec, plan, instance_type, pool)
                SELECT 'job_' || md5(random()::text || g), 'team_bench', 'key_bench', 'bench-' || g,
                       '{JobStatus.QUEUED}',
                       jsonb_build_object('name', 'bench-' || g, 'base_model', 'file:///m',
                                          'training_file', 'file:///d.jsonl'),
                       jsonb_build_object('instance_type', CAST(:pool AS text), 'accelerator_count', 0,
                                          'spot', false, 'usd_per_hour', 0.05),
                       :pool, :pool
                FROM generate_series(1, :n) g
                """
            ),
            {"n": n, "pool": POOL},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))


def _queued(engine: Any) -> int:
    with engine.connect() as conn:
        queued = text(f"SELECT count(*) FROM jobs WHERE status = '{JobStatus.QUEUED}'")
        return int(conn.execute(queued).scalar_one())


def run_claimers(
    url: str, seconds: float, *, with_capacity: bool = False, floor: bool = False
) -> dict[str, Any]:
    """8 threads, each with its own connection, claim and finish for `seconds`; returns jobs/s.
    `floor`: two transactions of `SELECT 1` in their place (the harness's ceiling)."""
    from sqlalchemy import event

    from trainyard.platform import db, queue

    engines = [db.make_engine(url, pool_size=1, max_overflow=0) for _ in range(CLAIMERS)]
    statements = [0] * CLAIMERS
    for i, engine in enumerate(engines):

        def count(*_: Any, i: int = i) -> None:
            statements[i] += 1

        event.listen(engine, "before_cursor_execute", count)
    done = [0] * CLAIMERS
    empty = [0] * CLAIMERS
    errors: list[BaseException] = []
    start = threading.Barrier(CLAIMERS + 1)
    stop = threading.Event()
    kwargs: dict[str, Any] = {"pools": [POOL], "capacity": {POOL: 10_000}} if with_capacity else {}

    def claimer(i: int) -> None:
        sessions = db.make_sessionmaker(engines[i])
        # Connect before the clock starts.
        with sessions() as s:
            s.execute(text("SELECT 1"))
        start.wait()
        try:
            while not stop.is_set():
                if floor:
                    for _ in range(2):
                        with sessions() as s:
                            s.execute(text("SELECT 1"))
                            s.commit()
                    done[i] += 1
                    continue
                with sessions() as s:
                    claims = queue.claim(s, worker_id=f"bench-{i}", n=1, lease_seconds=600, **kwargs)
                if not claims:
                    empty[i] += 1
                    continue
                with sessions() as s:
                    queue.finish(s, claims[0].attempt_id, AttemptOutcome.SUCCEEDED)
                done[i] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,), daemon=True) for i in range(CLAIMERS)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    meter = CpuMeter().start()
    counted = sum(statements)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.perf_counter() - t0
    cpu = meter.stop()
    counted = sum(statements) - counted
    for e in engines:
        e.dispose()
    if errors:
        raise errors[0]
    if sum(empty):
        raise RuntimeError(f"the queue ran dry during the run ({sum(empty)} empty claims): fill it deeper")
    jobs = max(1, sum(done))
    return {
        "jobs_per_s": sum(done) / elapsed,
        "jobs": sum(done),
        "seconds": elapsed,
        "statements_per_job": counted / jobs,
        "client_cpu_ms_per_job": 1000 * cpu["client_cpu_s"] / jobs,
        "client_cores_busy": cpu["client_cpu_s"] / elapsed,
        "postgres_cpu_ms_per_job": (
            1000 * cpu["postgres_cpu_s"] / jobs if cpu["postgres_cpu_s"] is not None else None
        ),
    }


_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_LAT = re.compile(r"latency average = ([0-9.]+) ms")


def run_pgbench(pgbench: str, url: str, seconds: int) -> dict[str, float]:
    from sqlalchemy.engine import make_url

    args, env = libpq_args(url)
    name = str(make_url(url).database)
    meter = CpuMeter().start()
    done = run_quiet(
        [pgbench, *args, "-N", "-c", str(CLAIMERS), "-j", "2", "-T", str(seconds), "-n", name], env=env
    )
    cpu = meter.stop()
    match = _TPS.search(done.stdout)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr.strip() or done.stdout[-500:]}")
    latency = _LAT.search(done.stdout)
    tps = float(match.group(1))
    txns = max(1.0, tps * seconds)
    return {
        "tps": tps,
        "latency_ms": float(latency.group(1)) if latency else float("nan"),
        "client_cpu_ms_per_txn": 1000 * cpu["child_cpu_s"] / txns,
        "postgres_cpu_ms_per_txn": (
            1000 * cpu["postgres_cpu_s"] / txns if cpu["postgres_cpu_s"] is not None else None
        ),
    }


def results(quick: bool = False, repeats: int | None = None) -> list[dict[str, Any]]:
    from trainyard.platform import db

    pgbench = which("pgbench")
    if pgbench is None:
        raise RuntimeError("pgbench not found: install the postgresql-client (or postgresql-contrib) package")
    repeats = repeats or (2 if quick else 3)
    seconds = 3 if quick else 10
    capacity_seconds = 3 if quick else 5
    ours: list[dict[str, Any]] = []
    ours_capacity: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    with (
        scratch_database("trainyard_bench_queue") as url,
        scratch_database("trainyard_bench_pgbench", migrate=False) as pg_url,
    ):
        args, env = libpq_args(pg_url)
        from sqlalchemy.engine import make_url

        init = run_quiet([pgbench, *args, "-i", "-q", str(make_url(pg_url).database)], env=env)
        if init.returncode != 0:
            raise RuntimeError(f"pgbench -i failed: {init.stderr.strip()}")
        engine = db.make_engine(url, pool_size=1, max_overflow=0)
        try:
            # Deep enough that the queue never runs dry; topped up before each round.
            depth = 8_000 if quick else 25_000
            for i in range(repeats):
                missing = depth - _queued(engine)
                if missing > 0:
                    _fill(engine, missing)
                order = ["ours", "pgbench"] if i % 2 == 0 else ["pgbench", "ours"]
                for side in order:
                    if side == "ours":
                        ours.append(run_claimers(url, seconds))
                    else:
                        base.append(run_pgbench(pgbench, pg_url, seconds))
                missing = depth - _queued(engine)
                if missing > 0:
                    _fill(engine, missing)
                ours_capacity.append(run_claimers(url, capacity_seconds, with_capacity=True))
                floors.append(run_claimers(url, capacity_seconds, floor=True))
        finally:
            engine.dispose()
    shape = {
        "claimers": CLAIMERS,
        "seconds_per_round": seconds,
        "pgbench": f"-N -c {CLAIMERS} -j 2 -T {seconds}",
    }
    base_tps = [b["tps"] for b in base]
    return [
        figure(
            "queue_claim_finish_per_s",
            [r["jobs_per_s"] for r in ours],
            base_tps,
            unit="jobs/s vs tps",
            goal=f"ratio >= {GOAL}",
            higher_is_better=True,
            goal_ratio=GOAL,
            detail={**shape, "ours": ours, "pgbench": base},
        ),
        figure(
            "queue_claim_finish_per_s_pool_capacity",
            [r["jobs_per_s"] for r in ours_capacity],
            base_tps,
            unit="jobs/s vs tps",
            goal="info",
            detail={**shape, "seconds_per_round": capacity_seconds, "ours": ours_capacity},
        ),
        figure(
            "queue_claim_finish_per_s_harness_floor",
            [r["jobs_per_s"] for r in floors],
            base_tps,
            unit="jobs/s vs tps",
            goal="info",
            detail={**shape, "seconds_per_round": capacity_seconds, "ours": floors},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    rows = results(quick=args.quick, repeats=args.repeats)
    print(format_table(rows))
    print(json.dumps({r["name"]: r["detail"] for r in rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
