"""Shared pieces of the benchmark harness: figures, statistics, machine facts, scratch databases.

A figure is a plain dict, the same in the printed table and in ``bench/results/latest.json``:

    {"name", "unit", "ours", "baseline", "ratio", "goal", "ok", "repeats",
     "ours_spread", "baseline_spread", "detail"}

``ok`` is True/False where the goal can be judged and None for figures that only inform.
``*_spread`` is the relative half-range of the repeats around their median ((max - min) / 2 / median).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

LOCAL_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# ---------------------------------------------------------------------------------------------
# Statistics and figures


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the relative half-range of repeated measurements."""
    values = [float(v) for v in samples]
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "spread": math.nan, "n": 0}
    median = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / abs(median) if median else math.nan
    return {"median": median, "min": min(values), "max": max(values), "spread": spread, "n": len(values)}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def figure(
    name: str,
    ours: Sequence[float] | float,
    baseline: Sequence[float] | float | None,
    *,
    goal: str,
    unit: str = "",
    higher_is_better: bool | None = None,
    goal_ratio: float | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One figure from repeated samples (or single values) of ours and the baseline.

    With ``goal_ratio`` the figure is judged on the ratio of the medians: ``ratio >= goal_ratio``
    when higher is better, ``ratio <= goal_ratio`` otherwise. Without it, ``ok`` is None.
    """
    ours_s = stats([ours] if isinstance(ours, int | float) else ours)
    base_s = (
        stats([baseline] if isinstance(baseline, int | float) else baseline) if baseline is not None else None
    )
    ratio = (
        ours_s["median"] / base_s["median"]
        if base_s is not None and math.isfinite(base_s["median"]) and base_s["median"] != 0
        else math.nan
    )
    ok: bool | None = None
    if goal_ratio is not None and higher_is_better is not None and math.isfinite(ratio):
        ok = ratio >= goal_ratio if higher_is_better else ratio <= goal_ratio
    return {
        "name": name,
        "unit": unit,
        "ours": ours_s["median"],
        "baseline": base_s["median"] if base_s else None,
        "ratio": ratio,
        "goal": goal,
        "ok": ok,
        "repeats": ours_s["n"],
        "ours_spread": ours_s["spread"],
        "baseline_spread": base_s["spread"] if base_s else None,
        "ours_samples": [float(v) for v in ([ours] if isinstance(ours, int | float) else ours)],
        "baseline_samples": (
            [float(v) for v in ([baseline] if isinstance(baseline, int | float) else baseline)]
            if baseline is not None
            else None
        ),
        "detail": detail or {},
    }


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "inf" if value > 0 else ("-" if math.isnan(value) else "-inf")
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def _ratio(value: Any) -> str:
    # Three decimals near 1, so that 1.102 against a goal of 1.10 does not print as "1.1".
    if isinstance(value, float) and math.isfinite(value) and 0.01 <= abs(value) < 10:
        return f"{value:.3f}"
    return _num(value)


def _with_spread(value: Any, spread: Any) -> str:
    text = _num(value)
    if isinstance(spread, float) and math.isfinite(spread) and spread > 0:
        text += f" ±{spread * 100:.0f}%"
    return text


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The figures as a fixed-width table: name, ours, baseline, ratio, goal, verdict."""
    header = ("figure", "unit", "ours", "baseline", "ratio", "goal", "")
    lines = [header]
    for r in rows:
        if r.get("error"):
            lines.append((r["name"], "", "ERROR", "", "", r["error"][:60], ""))
            continue
        verdict = {True: "ok", False: "MISSED", None: ""}[r.get("ok")]
        lines.append(
            (
                r["name"],
                r.get("unit", ""),
                _with_spread(r.get("ours"), r.get("ours_spread")),
                _with_spread(r.get("baseline"), r.get("baseline_spread")),
                _ratio(r.get("ratio")),
                str(r.get("goal", "")),
                verdict,
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    right = {2, 3, 4}
    out = []
    for line in lines:
        cells = [
            str(cell).rjust(widths[i]) if i in right else str(cell).ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The machine


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: they only compare within one run on one machine."""
    mem = _meminfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": round(mem.get("MemTotal", 0) / 2**30, 1),
        "memory_available_gb": round(mem.get("MemAvailable", 0) / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {m: _version(m) for m in ("ray", "torch", "transformers", "sqlalchemy", "psycopg")},
    }


# ---------------------------------------------------------------------------------------------
# Scratch databases


def _answers(url: str) -> bool:
    import psycopg
    from sqlalchemy.engine import make_url

    from trainyard.platform import db

    u = make_url(db.normalize_url(url)).set(drivername="postgresql")
    try:
        with psycopg.connect(u.render_as_string(hide_password=False), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


_EMBEDDED: dict[str, Any] = {}


def admin_url() -> str:
    """A server where the benchmarks may create and drop databases.

    ``TRAINYARD_BENCH_ADMIN_URL``; else the server of ``TRAINYARD_DATABASE_URL`` (its ``postgres``
    database); else the Postgres at 127.0.0.1:5432 when it answers; else an embedded Postgres that
    lives as long as this process. The choice is exported as ``TRAINYARD_BENCH_ADMIN_URL`` so that
    every module (and subprocess) uses the same server.
    """
    from sqlalchemy.engine import make_url

    from trainyard.platform import db

    url = os.environ.get("TRAINYARD_BENCH_ADMIN_URL")
    if not url and os.environ.get("TRAINYARD_DATABASE_URL"):
        server = make_url(db.normalize_url(os.environ["TRAINYARD_DATABASE_URL"]))
        url = server.set(database="postgres").render_as_string(hide_password=False)
    if not url and _answers(LOCAL_ADMIN_URL):
        url = LOCAL_ADMIN_URL
    if not url:
        if "url" not in _EMBEDDED:
            from trainyard.platform import embedded_pg

            tmp = tempfile.mkdtemp(prefix="trainyard-bench-pg-")
            _EMBEDDED["url"], _EMBEDDED["handle"] = embedded_pg.start(tmp, cleanup="stop")
        url = _EMBEDDED["url"]
    url = db.normalize_url(url)
    os.environ["TRAINYARD_BENCH_ADMIN_URL"] = url
    return url


@contextlib.contextmanager
def scratch_database(prefix: str = "trainyard_bench", *, migrate: bool = True) -> Iterator[str]:
    """Create a database on the admin server (migrated to head unless told otherwise), yield its
    URL, and drop it afterwards."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from trainyard.platform import db
    from trainyard.platform import migrate as migrations

    server = admin_url()
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = db.make_engine(server, pool_size=1, max_overflow=0).execution_options(
        isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            engine = db.make_engine(url, pool_size=1, max_overflow=0)
            try:
                migrations.upgrade(engine)
            finally:
                engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def libpq_args(url: str) -> tuple[list[str], dict[str, str]]:
    """Command-line arguments and environment for libpq tools (psql, pgbench) from a URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    host = u.host or str(u.query.get("host") or "")
    args = []
    if host:
        args += ["-h", host]
    if u.port:
        args += ["-p", str(u.port)]
    if u.username:
        args += ["-U", u.username]
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return args, env


def postgres_version(url: str) -> str | None:
    from sqlalchemy import text

    from trainyard.platform import db

    engine = db.make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    except Exception:
        return None
    finally:
        engine.dispose()


def which(tool: str) -> str | None:
    """A tool on PATH, or in the usual Debian Postgres bin directories."""
    import shutil

    found = shutil.which(tool)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), reverse=True):
        return str(candidate)
    return None


def run_quiet(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# CPU accounting


def _proc_stat(pid: str) -> tuple[str, int, float] | None:
    """(comm, parent pid, CPU seconds incl. reaped children) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return comm, int(fields[1]), (utime + stime + cutime + cstime) / ticks


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by the Postgres server(s) on this machine, exited backends
    included (the postmaster reaps them into its children's time). None when none is visible,
    e.g. a remote server. Every database on the server counts, other users' work too."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(entry)
            if stat is not None and stat[0].startswith("postgres"):
                procs[int(entry)] = stat
    if not procs:
        return None
    return sum(cpu for _comm, _parent, cpu in procs.values())


class CpuMeter:
    """CPU seconds spent by this process (all threads), its waited-for children, and the local
    Postgres server between ``start()`` and ``stop()``."""

    def start(self) -> CpuMeter:
        import resource

        self._self = time_process()
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._pg = postgres_cpu_seconds()
        return self

    def stop(self) -> dict[str, float | None]:
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        pg = postgres_cpu_seconds()
        return {
            "client_cpu_s": time_process() - self._self,
            "child_cpu_s": (children.ru_utime + children.ru_stime)
            - (self._children.ru_utime + self._children.ru_stime),
            "postgres_cpu_s": pg - self._pg if pg is not None and self._pg is not None else None,
        }


def time_process() -> float:
    import time

    return time.process_time()


def _label(pid: int, comm: str, cmdline: str) -> str:
    """A short name for what a process is, so CPU can be grouped by role."""
    if pid == os.getpid():
        return "harness (this process)"
    if comm.startswith("postgres"):
        return "postgres"
    if cmdline.startswith("ray::"):
        # Ray renames its worker processes after what they run: ray::RayTrainWorker, ray::IDLE, ...
        return cmdline.split()[0].split("(")[0][:40]
    if "trainyard.workers.attempt" in cmdline:
        return "trainyard attempt process"
    if "default_worker.py" in cmdline:
        return "ray worker (starting)"
    for system in (
        "raylet",
        "gcs_server",
        "dashboard",
        "log_monitor",
        "runtime_env",
        "monitor.py",
        "ray start",
    ):
        if system in cmdline:
            return "ray system processes"
    return f"other: {comm}"


class ProcSampler:
    """Samples the CPU time of every process on the machine every `interval` seconds, so that the
    CPU of any time window can be split by role (training workers, attempt process, Postgres, ...).
    On a 2-core machine this is where throughput goes: whatever else runs takes it from training."""

    def __init__(self, interval: float = 2.0) -> None:
        import threading

        self.interval = interval
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        ticks = os.sysconf("SC_CLK_TCK")
        seen: dict[int, tuple[int, str, str, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                raw = Path(f"/proc/{pid}/stat").read_text()
                # Read every time: Ray workers change their title when they take on a role.
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2 :].split()
            seen[pid] = (int(fields[1]), comm, cmd.strip(), (int(fields[11]) + int(fields[12])) / ticks)
        # This benchmark's processes descend from this one (Ray's included: it is started from
        # here); anything else on the machine, another user's Ray or tests, is counted apart.
        children: dict[int, list[int]] = {}
        for pid, (parent, *_rest) in seen.items():
            children.setdefault(parent, []).append(pid)
        ours: set[int] = set()
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid not in ours:
                ours.add(pid)
                todo += children.get(pid, [])
        out: dict[int, tuple[str, float]] = {}
        for pid, (_parent, comm, cmd, cpu) in seen.items():
            if pid in ours or comm.startswith("postgres"):
                label = _label(pid, comm, cmd)
            else:
                label = "not this benchmark (other work on the machine)"
            out[pid] = (label, cpu)
        return out

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            self.samples.append((time.time(), self._snapshot()))
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def window(self, start: float, end: float) -> dict[str, float]:
        """Cores busy per role (CPU seconds per second) between two wall-clock times, to the
        sampling interval. A process that started inside the window counts from its start."""
        inside = [
            (t, snap) for t, snap in self.samples if start - self.interval / 2 <= t <= end + self.interval / 2
        ]
        if len(inside) < 2:
            return {}
        first_sample = inside[0][1]
        began: dict[int, float] = {}
        ended: dict[int, tuple[str, float]] = {}
        for _t, snap in inside:
            for pid, (label, cpu) in snap.items():
                began.setdefault(pid, first_sample[pid][1] if pid in first_sample else 0.0)
                ended[pid] = (label, cpu)
        used: dict[str, float] = {}
        for pid, (label, cpu) in ended.items():
            used[label] = used.get(label, 0.0) + max(0.0, cpu - began[pid])
        span = inside[-1][0] - inside[0][0]
        busy = {label: cpu / span for label, cpu in used.items() if cpu / span >= 0.01}
        return dict(sorted(busy.items(), key=lambda kv: -kv[1]))
