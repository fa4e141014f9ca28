"""Factories and helpers shared by the tests of every kind (fixtures live in conftest.py).

Test modules import these as ``from support import ...``: the root conftest puts this folder on
``sys.path`` (pytest's ``prepend`` import mode), for tests under unit/, integration/ and ray/ alike.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import auth, db, queue
from trainyard.platform.auth import Principal
from trainyard.platform.models import Checkpoint
from trainyard.platform.scheduling import Catalog, load_catalog
from trainyard.platform.scheduling.catalog import InstanceType
from trainyard.platform.states import AttemptOutcome
from trainyard.platform.storage import ObjectStore, checkpoints_prefix, final_model_prefix
from trainyard.sdk import Trainyard

ROOT = Path(__file__).resolve().parents[1]
"""The repository checkout the tests run from."""

BASE = "http://testserver"
"""The base URL of the app behind Starlette's TestClient."""

CHAT = [
    {
        "messages": [
            {"role": "user", "content": f"What is {i}+{i}?"},
            {"role": "assistant", "content": f"{2 * i}"},
        ]
    }
    for i in range(8)
]
"""Eight chat records in OpenAI's fine-tuning format."""

TWO_POOLS = json.dumps(
    [
        {"instance_type": "local-cpu", "max_concurrent": 1},
        {"instance_type": "c7i.2xlarge", "max_concurrent": 1},
    ]
)
"""`TRAINYARD_POOLS` for two CPU pools of one slot each; local-cpu is the cheaper."""


# --- teams, keys, jobs ----------------------------------------------------------------------


def make_key(sessions: sessionmaker[Session], team: str = "research", role: str = "member") -> str:
    """Create the team if needed and a key for it; returns the secret."""
    with sessions.begin() as s:
        try:
            t = auth.get_team_by_name(s, team)
        except Exception:
            t = auth.create_team(s, team)
        return auth.create_key(s, t, role=role)


def principal_for(sessions: sessionmaker[Session], secret: str) -> Principal:
    with sessions() as s:
        return auth.authenticate(s, f"Bearer {secret}")


def headers(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}


def job_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "tiny-gpt2",
        "base_model": "file:///models/tiny-gpt2",
        "task": "causal_lm",
        "method": "full",
        "training_file": "s3://data/train.jsonl",
        "hyperparameters": {"max_steps": 20, "batch_size": 4, "seq_len": 64},
        "instance_type": "local-cpu",
        "model_parameters": 2_000_000,
        "metadata": {"project": "demo"},
    }
    body.update(overrides)
    return body


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def run_job(
    sessions: sessionmaker[Session],
    outcome: str = AttemptOutcome.SUCCEEDED,
    *,
    progress: dict[str, Any] | None = None,
    checkpoints: tuple[int, ...] = (),
) -> str:
    """Play a worker: claim the oldest queued job, report progress and checkpoints, finish it."""
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="test-worker")
    with sessions() as s:
        if progress:
            queue.heartbeat(s, claim.attempt_id, progress=progress)
    with sessions.begin() as s:
        for step in checkpoints:
            s.add(
                Checkpoint(
                    job_id=claim.job_id,
                    attempt_id=claim.attempt_id,
                    step=step,
                    uri=f"file:///ckpt/{step}",
                    metrics={"loss": 1.0 / step},
                )
            )
    succeeded = outcome == AttemptOutcome.SUCCEEDED
    with sessions() as s:
        queue.finish(
            s,
            claim.attempt_id,
            outcome,
            error_code=None if succeeded else "user_error",
            error_message=None if succeeded else "bad data",
            retryable=False,
        )
    return claim.job_id


def finish_with_model(
    sessions: sessionmaker[Session], store: ObjectStore, model_dir: Path, *, steps: int = 20
) -> str:
    """Play a worker: claim the oldest queued job, upload its final model (`model_dir`) under
    the attempt's prefix, record checkpoints at steps 10 and 20, and finish it with a result,
    publishing the cost report to `store`."""
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="test-worker")
    with sessions() as s:
        queue.heartbeat(
            s, claim.attempt_id, progress={"step": steps, "total_steps": steps, "loss": 0.5, "tokens": 5120}
        )
    final = store.upload_dir(final_model_prefix(claim.job_id, claim.attempt_number), model_dir)
    ckpts = [store.uri_for(f"{checkpoints_prefix(claim.job_id, 1)}/step_{n}") for n in (10, 20)]
    with sessions.begin() as s:
        for step, uri in zip((10, 20), ckpts, strict=True):
            s.add(Checkpoint(job_id=claim.job_id, attempt_id=claim.attempt_id, step=step, uri=uri))
    result = {
        "final_model_uri": final,
        "metrics": {"loss": 0.5, "step": steps},
        "steps": steps,
        "start_step": 0,
        "total_steps": steps,
        "tokens_trained": 5120,
        "tokens_this_attempt": 5120,
        "stopped_early": False,
        "latest_checkpoint_uri": ckpts[-1],
        "checkpoint_uris": ckpts,
    }
    with sessions() as s:
        queue.finish(s, claim.attempt_id, "succeeded", result=result, store=store)
    return claim.job_id


# --- the catalog ----------------------------------------------------------------------------


@functools.cache
def shipped_catalog() -> Catalog:
    """The catalog that ships with the package, loaded once per test session."""
    return load_catalog()


def instance_type(**overrides: Any) -> InstanceType:
    """A local CPU instance type with two workers; `overrides` replace any field."""
    base: dict[str, Any] = {
        "name": "x",
        "kind": "cpu",
        "accelerator": None,
        "accelerator_count": 0,
        "accelerator_memory_gb": None,
        "vcpus": 8,
        "ram_gb": 16.0,
        "on_demand_usd_per_hour": 1.0,
        "spot_usd_per_hour": None,
        "nodes": 1,
        "interconnect": "host",
        "workers": 2,
        "tpu_topology": None,
        "source": "test",
        "as_of": "2025-01-01",
    }
    return InstanceType(**{**base, **overrides})


# --- HTTP -----------------------------------------------------------------------------------


def attempt_pids(worker_pid: int) -> list[int]:
    """The attempt processes a worker started: forked by its warm runner or started cold, they
    descend from it and show as `python -m trainyard.workers.attempt ID ...`."""
    import psutil

    found = []
    for proc in psutil.Process(worker_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "trainyard.workers.attempt" in " ".join(proc.cmdline()):
                found.append(proc.pid)
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def error_response(status: int, code: str, **headers: str) -> httpx.Response:
    """A response in Trainyard's error envelope."""
    return httpx.Response(
        status, json={"error": {"code": code, "message": f"{code}!", "param": None}}, headers=headers
    )


class AppTransport(httpx.BaseTransport):
    """Forwards httpx requests to the app through Starlette's TestClient.

    The TestClient is built on httpx2, not httpx, so it cannot be handed to the SDK as its
    http_client directly; this adapter keeps the SDK on plain httpx while the app, its lifespan
    and its database stay real. `seen` keeps every request, for assertions on headers.
    """

    def __init__(self, test_client: Any) -> None:
        self.test_client = test_client
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        drop = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in drop]
        r = self.test_client.request(
            request.method, str(request.url), headers=headers, content=request.read()
        )
        out = [
            (k, v)
            for k, v in r.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length")
        ]
        return httpx.Response(r.status_code, headers=out, content=r.content, request=request)


def make_sdk(transport: httpx.BaseTransport, key: str | None, **kwargs: Any) -> Trainyard:
    sdk = Trainyard(base_url=BASE, api_key=key, http_client=httpx.Client(transport=transport), **kwargs)
    sdk._sleep = lambda _seconds: None  # retries and polls without real waiting
    return sdk


__all__ = [
    "BASE",
    "CHAT",
    "ROOT",
    "TWO_POOLS",
    "AppTransport",
    "error_response",
    "finish_with_model",
    "free_port",
    "headers",
    "instance_type",
    "job_body",
    "jsonl",
    "make_key",
    "make_sdk",
    "principal_for",
    "run_job",
    "shipped_catalog",
]


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server at `admin_url`; yields its URL and drops it after."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = db.make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
