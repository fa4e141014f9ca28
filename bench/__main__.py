"""``python -m bench`` (``make bench``): run the benchmarks, print one line per figure, write JSON.

Each figure compares our value with a baseline measured in the same run on the same machine
(absolute numbers say little on a shared 2-core box; the ratio does). The table shows the median
of the repeats with their spread (half the min-max range, relative to the median), the ratio of
the medians, the goal and whether it was met. ``bench/results/latest.json`` holds the same plus
every sample, the details each benchmark records (breakdowns, CPU per operation), the machine and
how long each benchmark took.

    python -m bench                      # everything (under 20 minutes on 2 cores)
    python -m bench --quick              # fewer rows, shorter runs, fewer repeats
    python -m bench --only queue_claims --only api_throughput
    python -m bench --list
"""

from __future__ import annotations

import os

# Ray reads this when it is first imported; set it before anything imports ray (see
# bench/platform_overhead.py).
os.environ.setdefault("RAY_AUTH_MODE", "token")

import argparse
import importlib
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import admin_url, format_table, machine_info, postgres_version, stats

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


# ---------------------------------------------------------------------------------------------
# Adapters: the three stand-alone scripts return their own shapes; make them figures.


def _spread(samples: list[float] | None) -> float | None:
    return stats(samples)["spread"] if samples else None


def _scheduler_ok(f: dict[str, Any]) -> bool | None:
    goal, ours, base, ratio = f["goal"], f["ours"], f["baseline"], f["ratio"]
    if goal.startswith("< 1 s"):
        return bool(ours < 1.0)
    m = re.match(r"ratio <= ([0-9.]+)", goal)
    if m:
        return bool(ratio <= float(m.group(1)))
    if goal.startswith("ours << baseline"):
        # "Much fewer": read as at most half the baseline's count.
        return bool(ours <= 0.5 * base)
    if goal.startswith("ours < baseline"):
        return bool(ours < base)
    return None  # "-", "close to 0", "refused: ...": for information


def _scheduler_unit(name: str) -> str:
    if name.endswith("_s"):
        return "s"
    if "usd" in name:
        return "$"
    if "hours" in name:
        return "h"
    return "jobs"


def run_scheduler(quick: bool) -> list[dict[str, Any]]:
    module = importlib.import_module("bench.scheduler")
    rows = []
    for name, f in module.results().items():
        rows.append(
            {
                "name": f"scheduler_{name}",
                "unit": _scheduler_unit(name),
                "ours": f["ours"],
                "baseline": f["baseline"],
                "ratio": f["ratio"],
                "goal": f["goal"],
                "ok": _scheduler_ok(f),
                # Decision times are the best of 3 runs; the quality figures are deterministic.
                "repeats": 3 if name.startswith("decision_time") else 1,
                "ours_spread": None,
                "baseline_spread": None,
                "detail": {"statistic": "best of 3"} if name.startswith("decision_time") else {},
            }
        )
    return rows


def run_checkpoint_io(quick: bool) -> list[dict[str, Any]]:
    module = importlib.import_module("bench.checkpoint_io")
    size_mb, repeats = (50, 3) if quick else (200, 3)
    rows = []
    for r in module.results(size_mb=size_mb, repeats=repeats):
        ours_s, base_s = r.get("ours_samples_mb_s"), r.get("baseline_samples_mb_s")
        rows.append(
            {
                "name": "checkpoint_" + r["name"].replace(" ", "_"),
                "unit": "MB/s",
                "ours": r["ours_mb_s"],
                "baseline": r["baseline_mb_s"],
                "ratio": r["ratio"],
                "goal": f"ratio >= {r['goal']}",
                "ok": r["ok"],
                "repeats": r["repeats"],
                "ours_spread": _spread(ours_s),
                "baseline_spread": _spread(base_s),
                "ours_samples": ours_s,
                "baseline_samples": base_s,
                "detail": {"baseline": "boto3 upload_file/download_file, default TransferConfig, moto"},
            }
        )
    return rows


def run_cost_query(quick: bool) -> list[dict[str, Any]]:
    admin_url()  # the module reads TRAINYARD_BENCH_ADMIN_URL when imported
    module = importlib.import_module("bench.cost_query")
    rows_n, repeat = (100_000, 3) if quick else (1_000_000, 5)
    rows = []
    for r in module.results(rows=rows_n, repeat=repeat):
        ours_s, base_s = r.get("ours_samples"), r.get("baseline_samples")
        rows.append(
            {
                "name": r["name"],
                "unit": "s",
                "ours": r["ours"],
                "baseline": r["baseline"],
                "ratio": r["ours"] / r["baseline"] if r["baseline"] else math.nan,
                "goal": r["goal"],
                "ok": r["met"],
                "repeats": repeat,
                "ours_spread": _spread(ours_s),
                "baseline_spread": _spread(base_s),
                "ours_samples": ours_s,
                "baseline_samples": base_s,
                "detail": {
                    "baseline": "SELECT count(*) FROM job_attempts",
                    "rollup_rows": r.get("rollup_rows"),
                },
            }
        )
    return rows


def _module_runner(name: str) -> Callable[[bool], list[dict[str, Any]]]:
    def run(quick: bool) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = importlib.import_module(f"bench.{name}").results(quick=quick)
        return rows

    return run


BENCHMARKS: dict[str, tuple[Callable[[bool], list[dict[str, Any]]], str]] = {
    "scheduler": (run_scheduler, "scheduler decision time and quality (bench/scheduler.py)"),
    "queue_claims": (_module_runner("queue_claims"), "claim + finish per second, 8 claimers, vs pgbench -N"),
    "api_throughput": (_module_runner("api_throughput"), "job creates per second over HTTP vs /healthz"),
    "checkpoint_io": (run_checkpoint_io, "checkpoint write/read through the store vs boto3 (moto)"),
    "cost_query": (run_cost_query, "the dashboard's cost allocation query over 1M attempts"),
    "spot_contract": (
        _module_runner("spot_contract"),
        "a month of spot interruption traces: dollars and deadline misses, on-demand / spot / contract",
    ),
    "platform_overhead": (
        _module_runner("platform_overhead"),
        "a small fine-tune through the embedded stack vs run_training directly (figures 1, 2)",
    ),
}


# ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rows, shorter runs, fewer repeats")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this benchmark (repeatable, or comma-separated); see --list",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, (_run, about) in BENCHMARKS.items():
            print(f"{name:18} {about}")
        return 0
    only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    selected = [n for n in BENCHMARKS if not only or n in only]

    started = datetime.now(UTC)
    t0 = time.monotonic()
    machine = machine_info()
    print(
        f"machine: {machine['cores']} cores ({machine['cpu_model']}), {machine['memory_gb']} GB memory, "
        f"load {machine['load_average']}"
    )
    server = admin_url()
    database = {"server": _safe_url(server), "version": postgres_version(server)}
    print(f"postgres: {database['server']} (version {database['version']})")
    print(f"running: {', '.join(selected)}{' (quick)' if args.quick else ''}", flush=True)

    figures: list[dict[str, Any]] = []
    modules: dict[str, Any] = {}
    for name in selected:
        run, _about = BENCHMARKS[name]
        print(f"\n== {name} ==", flush=True)
        m0 = time.monotonic()
        try:
            rows = run(args.quick)
            for row in rows:
                row["benchmark"] = name
            modules[name] = {"wall_s": time.monotonic() - m0, "figures": len(rows)}
        except Exception as exc:
            rows = [{"name": name, "benchmark": name, "error": f"{type(exc).__name__}: {exc}"}]
            modules[name] = {
                "wall_s": time.monotonic() - m0,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            traceback.print_exc()
        figures += rows
        print(format_table(rows), flush=True)
        print(f"({name}: {modules[name]['wall_s']:.0f}s)", flush=True)

    wall = time.monotonic() - t0
    print(f"\n== all figures ({wall / 60:.1f} min) ==")
    print(format_table(figures))
    report = {
        "started_at": started.isoformat(),
        "wall_s": wall,
        "quick": args.quick,
        "only": only,
        "machine": machine,
        "machine_after": {"load_average": machine_info()["load_average"]},
        "database": database,
        "modules": modules,
        "figures": figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    print(f"\nwrote {args.out}")
    missed = [f["name"] for f in figures if f.get("ok") is False]
    if missed:
        print(f"goals missed: {', '.join(missed)}")
    errors = [n for n, m in modules.items() if "error" in m]
    if errors:
        print(f"benchmarks that failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
