"""Factory functions for test data."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import auth
from trainyard.platform.auth import Principal
from trainyard.platform.models import ApiKey


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


__all__ = ["ApiKey", "headers", "job_body", "make_key", "principal_for"]
