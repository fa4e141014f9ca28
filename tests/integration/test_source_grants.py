"""Grants (the admin route and CLI) and the attempt's own check of its sources before it reads."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from sources_world import (
    RECORDS,
    OpenAudit,
    World,
    body_for,
    world_fixture,  # noqa: F401  (the `world` fixture)
)
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from support import headers, make_key
from typer.testing import CliRunner

from trainyard.platform import queue
from trainyard.platform.models import Job, SourceGrant
from trainyard.platform.states import JobStatus
from trainyard.workers.attempt import AttemptRunner


def _run_attempt(settings: Any, sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as s:
        (claim,) = queue.claim(s, worker_id="w1")
    assert claim.job_id == job_id
    sigterm = signal.getsignal(signal.SIGTERM)
    runner = AttemptRunner(settings, claim.attempt_id)
    try:
        assert runner.run() == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        runner.engine.dispose()
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_the_attempt_checks_again_before_it_reads(world: World, sessions: sessionmaker[Session]) -> None:
    w = world
    admin, mine = headers(w.keys["admin"]), headers(w.keys["mine"])
    granted_file = f"s3://{w.granted}/datasets/ok.jsonl"
    r = w.client.post("/v1/jobs", json=body_for("/v1/jobs", "training_file", granted_file, w), headers=mine)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    # The grant goes while the job waits: its attempt refuses the source and reads nothing of it.
    r = w.client.delete(
        "/v1/teams/vision/grants", params={"uri": f"s3://{w.granted}/datasets"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["deleted"] is True
    with sessions.begin() as s:  # only this job is left to claim
        s.execute(update(Job).where(Job.id != job_id).values(status=JobStatus.CANCELLED))
    w.proxy.take()
    done = _run_attempt(w.settings, sessions, job_id)
    assert (done.status, done.error_code) == ("failed", "source_not_allowed"), done.error_message
    assert "training_file" in (done.error_message or "")
    assert not [p for _, p in w.proxy.take() if p.startswith(f"/{w.granted}/")]

    # A local file swapped for a link out of the root after submit: refused, the FIFO never opened.
    swapped = w.root / "swapped.jsonl"
    swapped.write_bytes(RECORDS)
    r = w.client.post("/v1/jobs", json=body_for("/v1/jobs", "training_file", str(swapped), w), headers=mine)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    swapped.unlink()
    swapped.symlink_to(w.outside / "planted")
    OpenAudit.seen = []
    OpenAudit.watched = (os.path.realpath(w.outside),)
    try:
        done = _run_attempt(w.settings, sessions, job_id)
    finally:
        OpenAudit.watched = ()
    assert (done.status, done.error_code) == ("failed", "source_not_allowed"), done.error_message
    assert OpenAudit.seen == []


def test_grants_are_admin_only_and_never_reach_into_the_store(
    world: World, sessions: sessionmaker[Session]
) -> None:
    w = world
    admin, mine = headers(w.keys["admin"]), headers(w.keys["mine"])
    url = "/v1/teams/vision/grants"
    [listed] = w.client.get(url, headers=admin).json()["data"]
    assert listed["uri"] == f"s3://{w.granted}/datasets" and listed["object"] == "source_grant"
    again = w.client.put(url, json={"uri": f"s3://{w.granted}/datasets/"}, headers=admin)
    assert again.status_code == 200 and again.json()["id"] == listed["id"], (
        "a trailing slash is the same prefix"
    )
    for method, kwargs in (
        ("PUT", {"json": {"uri": f"s3://{w.other}"}}),
        ("GET", {}),
        ("DELETE", {"params": {"uri": "s3://x-y/z"}}),
    ):
        r = w.client.request(method, url, headers=mine, **kwargs)
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        r = w.client.request(method, "/v1/teams/nobody/grants", headers=admin, **kwargs)
        assert r.status_code == 404 and r.json()["error"]["param"] == "team"
    for uri in (
        f"s3://{w.store_bucket}",
        w.store,
        f"{w.store}/jobs",
        "file:///data",
        "/data",
        "org/name",
        " s3://a-b/c",
    ):
        r = w.client.put(url, json={"uri": uri}, headers=admin)
        assert r.status_code == 400 and r.json()["error"]["param"] == "uri", (uri, r.text)
    r = w.client.delete(url, params={"uri": f"s3://{w.other}"}, headers=admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "grant_not_found"
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(SourceGrant)) == 1


def test_admin_cli_grants_lists_and_revokes(
    sessions: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainyard.cli import app

    monkeypatch.setenv("TRAINYARD_DATABASE_URL", db_url)
    monkeypatch.setenv("TRAINYARD_STORAGE_URI", "s3://platform/store")
    make_key(sessions, "vision")
    runner = CliRunner()
    r = runner.invoke(app, ["admin", "grant-source", "vision", "S3://shared-models/llama/"])
    assert r.exit_code == 0 and "granted s3://shared-models/llama to team vision" in r.output
    assert runner.invoke(app, ["admin", "list-sources", "vision"]).output.split() == [
        "s3://shared-models/llama"
    ]
    for args in (["vision", "s3://platform/store/jobs"], ["vision", "file:///etc"], ["nobody", "s3://a-b/c"]):
        assert runner.invoke(app, ["admin", "grant-source", *args]).exit_code == 2
    assert runner.invoke(app, ["admin", "revoke-source", "vision", "s3://shared-models/llama"]).exit_code == 0
    assert runner.invoke(app, ["admin", "revoke-source", "vision", "s3://shared-models/llama"]).exit_code == 2
    assert runner.invoke(app, ["admin", "list-sources", "vision"]).output.split() == []
