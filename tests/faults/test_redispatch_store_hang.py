"""Dispatch re-plans a job waiting behind a full pool, which reads the store (the dataset's size).
With the store hung behind a TCP proxy mid-read, the waiting job's row is not locked: its
owner's cancel is answered at once, and once the store answers the cancelled job stays where it
was, not moved."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from live import Proxy
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from support import TWO_POOLS, job_body, jsonl, make_key, principal_for

from trainyard.platform import jobs, queue, states
from trainyard.platform.deployment import load_deployment
from trainyard.platform.models import Job
from trainyard.platform.planning import Planner
from trainyard.platform.spec import JobSpec
from trainyard.settings import get_settings

# A cancel that waited on a row lock longer than this fails instead (lock_timeout).
CANCEL_LOCK_TIMEOUT_S = 2


def test_a_store_hung_under_redispatch_holds_no_lock_on_the_waiting_job(
    sessions: sessionmaker[Session], s3_server: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = urlsplit(s3_server)
    assert upstream.hostname and upstream.port
    proxy = Proxy((upstream.hostname, upstream.port))
    bucket = f"hang-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key="train.jsonl", Body=jsonl([{"text": "hello world"}] * 50))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(name, proxy.url)
    planner = Planner(load_deployment(get_settings(catalog_path=None, pools=TWO_POOLS)))
    principal = principal_for(sessions, make_key(sessions))

    def submit() -> str:
        # No dataset_tokens: the planner sizes the file in the store, at submit and at dispatch.
        spec = JobSpec(**job_body(instance_type=None, training_file=f"s3://{bucket}/train.jsonl"))
        with sessions.begin() as s:
            plan, pool = planner.plan(s, spec)
            job, _ = jobs.create_job(s, principal, spec, plan=plan, pool=pool)
            return job.id

    first, waiting = submit(), submit()
    with sessions.begin() as s:
        [claim] = queue.claim(s, worker_id="w", capacity=planner.capacity)
    assert claim.job_id == first  # local-cpu, the cheaper pool, is full; `waiting` waits there

    moved: list[list[str]] = []

    def redispatch() -> None:
        with sessions() as s:
            moved.append(planner.redispatch(s, waited_seconds=0))

    proxy.stall()
    thread = threading.Thread(target=redispatch, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 30
        while proxy.held == 0:  # the re-plan of `waiting` is now waiting on the store
            assert time.monotonic() < deadline and thread.is_alive(), "dispatch never read the store"
            time.sleep(0.05)
        started = time.monotonic()
        with sessions.begin() as s:
            s.execute(text(f"SET LOCAL lock_timeout = '{CANCEL_LOCK_TIMEOUT_S}s'"))
            jobs.cancel_job(s, principal, waiting)
        took = time.monotonic() - started
        still_reading = thread.is_alive()
    finally:
        proxy.restore()
        thread.join(timeout=120)
        proxy.close()
    print(f"\ncancel while dispatch waited on a hung store: {took:.2f} s; dispatch moved {moved}")
    assert still_reading, "dispatch had finished before the cancel: the store was not hung under it"
    assert moved == [[]], "a job cancelled while it was re-planned was moved"
    with sessions() as s:
        job = s.get(Job, waiting)
        assert job is not None and job.status == states.CANCELLED and job.pool == "local-cpu"
