"""Admin commands and `trainyard api` against a migrated database."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import free_port, job_body
from typer.testing import CliRunner

from trainyard.cli import app


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", db_url)
    return db_url


def test_migrate_create_team_and_key(sessions: sessionmaker[Session], env: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    r = runner.invoke(app, ["admin", "create-team", "nlp"])
    assert r.exit_code == 0 and "created team nlp" in r.output
    assert runner.invoke(app, ["admin", "create-team", "nlp"]).exit_code == 2
    r = runner.invoke(app, ["admin", "create-key", "--team", "nlp", "--admin"])
    assert r.exit_code == 0 and r.output.strip().startswith("ty_")
    assert runner.invoke(app, ["admin", "create-key", "--team", "nope"]).exit_code == 2


def test_trainyard_api_serves_the_job_api(sessions: sessionmaker[Session], env: str) -> None:
    runner = CliRunner()
    runner.invoke(app, ["admin", "create-team", "served"])
    key = runner.invoke(app, ["admin", "create-key", "--team", "served"]).output.strip()
    for prefix in ("s3://models", "s3://data"):
        assert runner.invoke(app, ["admin", "grant-source", "served", prefix]).exit_code == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainyard.cli", "api", "--port", str(port)],
        env={**os.environ, "TRAINYARD_DATABASE_URL": env},  # local paths stay refused by default
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("API did not come up")
        auth = {"Authorization": f"Bearer {key}"}
        local = httpx.post(f"{base}/v1/jobs", json=job_body(), headers=auth, timeout=10)
        assert local.status_code == 400 and local.json()["error"]["code"] == "source_not_allowed"
        body = job_body(base_model="s3://models/tiny-gpt2")
        created = httpx.post(f"{base}/v1/jobs", json=body, headers=auth, timeout=10)
        assert created.status_code == 201, created.text
        assert (
            httpx.get(f"{base}/v1/jobs", headers=auth, timeout=10).json()["data"][0]["id"]
            == created.json()["id"]
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
