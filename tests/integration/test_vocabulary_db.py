"""One vocabulary: the database refuses a status, outcome or event type the platform does not spell."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import events


def _team_and_job(s: Session) -> str:
    s.execute(text("INSERT INTO teams (id, name) VALUES ('team_v', 'vocab')"))
    s.execute(
        text(
            "INSERT INTO jobs (id, team_id, name, status, spec) "
            "VALUES ('job_v', 'team_v', 'v', 'queued', '{}'::jsonb)"
        )
    )
    return "job_v"


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("UPDATE jobs SET status = 'runing' WHERE id = 'job_v'", "ck_jobs_status"),
        (
            "INSERT INTO job_attempts (id, job_id, number, worker_id, lease_expires_at, outcome) "
            "VALUES ('att_v', 'job_v', 1, 'w', now(), 'exploded')",
            "ck_job_attempts_outcome",
        ),
        (
            "INSERT INTO job_events (job_id, type, message) VALUES ('job_v', 'gossip', 'x')",
            "ck_job_events_type",
        ),
    ],
)
def test_the_database_refuses_unknown_words(
    sessions: sessionmaker[Session], statement: str, constraint: str
) -> None:
    with sessions() as s:
        _team_and_job(s)
        s.commit()
        with pytest.raises(IntegrityError, match=constraint):
            s.execute(text(statement))
        s.rollback()


def test_events_add_checks_the_type(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        job_id = _team_and_job(s)
        with pytest.raises(ValueError, match="unknown event type"):
            events.add(s, job_id, "gossip", "x")
        event = events.add(s, job_id, events.MESSAGE, "x" * 5000, level="loud")
        s.commit()
        assert len(event.message) == events.MAX_MESSAGE_CHARS
        assert event.level == "info"
