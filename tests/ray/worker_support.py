"""What the worker tests share: a job body over the S3 assets, a grant to read them, and waits."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import headers

from trainyard.platform import auth
from trainyard.platform.models import SourceGrant


def job_body(assets: dict[str, str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "tiny-e2e",
        "base_model": assets["model"],
        "training_file": assets["train"],
        "hyperparameters": {"max_steps": 24, "batch_size": 4, "seq_len": 32, "learning_rate": 1e-3},
        "checkpoint": {"every_steps": 6, "keep": 2},
    }
    body.update(overrides)
    return body


def grant_assets(sessions: sessionmaker[Session], team: str = "research") -> None:
    """Let the team's jobs read the assets bucket: the API and every attempt check sources."""
    with sessions.begin() as s:
        s.add(SourceGrant(team_id=auth.get_team_by_name(s, team).id, uri="s3://assets"))


def wait_for(client: Any, key: str, job_id: str, until: Any, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers(key)).json()
        if until(job):
            return job
        time.sleep(0.5)
    pytest.fail(f"timed out waiting on {job_id}: {job}")


def checkpoints(client: Any, key: str, job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/checkpoints", headers=headers(key)).json()["data"]
