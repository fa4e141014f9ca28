"""Figure 4: the API. Job creates per second over HTTP with 16 concurrent clients, and latency.

The API runs as it is deployed: ``python -m trainyard.cli api`` (uvicorn) in a subprocess against a
scratch database. Sixteen client threads, each with its own keep-alive ``httpx.Client``, send
``POST /v1/jobs`` (a realistic body: a 124M-parameter model with a dataset size hint, so the
planner estimates every catalog option without reading files) with a fresh ``Idempotency-Key``
each. The baseline is the same load on the same server's ``GET /healthz`` (one ``SELECT 1``); the
two take turns going first. Goal: creates/s >= 0.5 x healthz/s. p50/p99 latencies are reported.

CPU seconds per request of the server process, this (client) process and the local Postgres show
where the time goes; with 2 cores the client threads compete with the server for them.

    python -m bench.api_throughput [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import CpuMeter, figure, format_table, percentile, scratch_database

GOAL = 0.5
CLIENTS = 16

JOB_BODY: dict[str, Any] = {
    "name": "bench-gpt2-ft",
    "base_model": "s3://models/gpt2",
    "training_file": "s3://data/train.jsonl",
    "model_parameters": 124_439_808,
    "dataset_tokens": 20_000_000,
    "hyperparameters": {"epochs": 1, "batch_size": 8, "seq_len": 1024},
    "policy": {"objective": "cheapest", "spot": "auto"},
    "metadata": {"source": "bench"},
}
# The same job with a base model the planner finds nothing to read for (a hub id, with the server
# offline, that is not in its cache): what a create costs without the S3 model-config lookup.
# Reported for information.
NO_READ_BODY: dict[str, Any] = {**JOB_BODY, "base_model": "bench/no-such-model"}


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_key(url: str) -> str:
    from trainyard.platform import auth, db
    from trainyard.platform.models import SourceGrant

    engine = db.make_engine(url, pool_size=1, max_overflow=0)
    try:
        with db.make_sessionmaker(engine).begin() as s:
            team = auth.create_team(s, "bench")
            # The made-up buckets JOB_BODY names: refused unless granted, as on any deployment.
            s.add_all(SourceGrant(team_id=team.id, uri=uri) for uri in ("s3://models", "s3://data"))
            return auth.create_key(s, team, role="member", name="bench")
    finally:
        engine.dispose()


def load(
    base_url: str,
    key: str,
    kind: str,
    seconds: float,
    clients: int = CLIENTS,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`clients` threads send requests back to back for `seconds`; rate and latencies."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    ready = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(i: int) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
            http.get("/healthz")  # open the connection before the clock starts
            ready.wait()
            mine = latencies[i]
            while not stop.is_set():
                t0 = time.perf_counter()
                if kind == "create":
                    r = http.post(
                        "/v1/jobs", json=body or JOB_BODY, headers={"Idempotency-Key": uuid.uuid4().hex}
                    )
                else:
                    r = http.get("/healthz")
                mine.append(time.perf_counter() - t0)
                if r.status_code >= 300:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    stop.set()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{kind} requests failed: {failures[0]}")
    flat = [x for per in latencies for x in per]
    return {"per_s": len(flat) / elapsed, "requests": len(flat), "latencies": flat, "seconds": elapsed}


def _measured(server_pid: int, fn: Any) -> dict[str, Any]:
    meter = CpuMeter().start()
    server0 = _proc_cpu(server_pid)
    out = fn()
    cpu = meter.stop()
    server = _proc_cpu(server_pid) - server0
    n = max(1, out["requests"])
    lat = out.pop("latencies")
    client_cpu = cpu["client_cpu_s"]
    assert client_cpu is not None  # always measured; only the Postgres figure may be missing
    out.update(
        {
            "p50_ms": 1000 * percentile(lat, 50),
            "p99_ms": 1000 * percentile(lat, 99),
            "server_cpu_ms_per_req": 1000 * server / n,
            "server_cores_busy": server / out["seconds"],
            "client_cpu_ms_per_req": 1000 * client_cpu / n,
            "client_cores_busy": client_cpu / out["seconds"],
            "postgres_cpu_ms_per_req": (
                1000 * cpu["postgres_cpu_s"] / n if cpu["postgres_cpu_s"] is not None else None
            ),
        }
    )
    return out


def results(quick: bool = False, repeats: int | None = None) -> list[dict[str, Any]]:
    import httpx

    repeats = repeats or (2 if quick else 3)
    seconds = 3.0 if quick else 10.0
    creates: list[dict[str, Any]] = []
    health: list[dict[str, Any]] = []
    no_read: list[dict[str, Any]] = []
    with (
        scratch_database("trainyard_bench_api") as url,
        tempfile.TemporaryDirectory(prefix="trainyard-bench-api-") as tmp,
    ):
        key = _make_key(url)
        port = _free_port()
        env = {
            **os.environ,
            "TRAINYARD_DATABASE_URL": url,
            "TRAINYARD_STORAGE_URI": f"file://{tmp}/store",
            "TRAINYARD_DATA_DIR": tmp,
            "HF_HUB_OFFLINE": "1",
        }
        log_path = Path(tmp) / "api.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "trainyard.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            # Warm both paths (imports, the planner's first estimate, the connection pool).
            load(base_url, key, "create", 1.0)
            load(base_url, key, "healthz", 1.0)
            for i in range(repeats):
                order = ["create", "healthz"] if i % 2 == 0 else ["healthz", "create"]
                for kind in order:
                    got = _measured(server.pid, lambda kind=kind: load(base_url, key, kind, seconds))
                    (creates if kind == "create" else health).append(got)
                no_read.append(
                    _measured(
                        server.pid,
                        lambda: load(base_url, key, "create", seconds / 2, body=NO_READ_BODY),
                    )
                )
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)

    shape = {
        "clients": CLIENTS,
        "seconds_per_round": seconds,
        "server": "python -m trainyard.cli api (uvicorn)",
    }
    return [
        figure(
            "api_job_creates_per_s",
            [r["per_s"] for r in creates],
            [r["per_s"] for r in health],
            unit="req/s",
            goal=f"ratio >= {GOAL}",
            higher_is_better=True,
            goal_ratio=GOAL,
            detail={**shape, "creates": creates, "healthz": health},
        ),
        figure(
            "api_job_creates_per_s_no_model_read",
            [r["per_s"] for r in no_read],
            [r["per_s"] for r in health],
            unit="req/s",
            goal="info",
            detail={**shape, "seconds_per_round": seconds / 2, "creates": no_read},
        ),
        figure(
            "api_job_create_p50_latency",
            [r["p50_ms"] for r in creates],
            [r["p50_ms"] for r in health],
            unit="ms",
            goal="info",
        ),
        figure(
            "api_job_create_p99_latency",
            [r["p99_ms"] for r in creates],
            [r["p99_ms"] for r in health],
            unit="ms",
            goal="info",
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
    print(json.dumps(rows[0]["detail"], indent=2, default=str))


if __name__ == "__main__":
    main()
