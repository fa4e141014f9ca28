"""Migration 0005 fills the ledger of attempts written before it: billing terms from the job's
plan, where each attempt resumed and got to from checkpoints and progress, and tokens as deltas,
so a job that resumed once no longer reports its restored tokens twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text
from support import scratch_database

from trainyard.platform import db, migrate

PLAN = (
    '{"instance_type": "g5.xlarge", "accelerator": "A10G", "accelerator_count": 1, "spot": true,'
    ' "usd_per_hour": 0.45, "on_demand_usd_per_hour": 1.006}'
)


@pytest.fixture
def old_database(admin_db_url: str) -> Iterator[Engine]:
    """A fresh database at revision 0004."""
    with scratch_database(admin_db_url, "trainyard_ledger") as url:
        engine = db.make_engine(url)
        try:
            migrate.upgrade(engine, "0004")
            yield engine
        finally:
            engine.dispose()


def _attempts(engine: Engine, columns: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT {columns} FROM job_attempts ORDER BY number"))]


def test_existing_attempts_get_their_ledger(old_database: Engine) -> None:
    with old_database.begin() as conn:
        conn.execute(text("INSERT INTO teams (id, name) VALUES ('team_1', 'research')"))
        conn.execute(
            text(
                """
                INSERT INTO jobs (id, team_id, name, status, spec, plan, instance_type, attempt_count,
                                  progress, tokens_trained)
                VALUES ('job_1', 'team_1', 'j', 'succeeded', '{}', CAST(:plan AS jsonb), 'g5.xlarge', 2,
                        '{"step": 20, "total_steps": 20, "tokens": 2000}', 2000)
                """
            ),
            {"plan": PLAN},
        )
        # Before the ledger each attempt kept the run's cumulative count, restored tokens included.
        conn.execute(
            text(
                """
                INSERT INTO job_attempts (id, job_id, number, worker_id, spot, usd_per_hour, started_at,
                                          heartbeat_at, lease_expires_at, ended_at, outcome, start_step,
                                          tokens_trained, billable_seconds, cost_usd)
                VALUES ('att_1', 'job_1', 1, 'w', true, 0.45, now() - interval '3 h', now() - interval '2 h',
                        now(), now() - interval '2 h', 'crashed', 0, 1500, 3600, 0.45),
                       ('att_2', 'job_1', 2, 'w', true, 0.45, now() - interval '2 h', now() - interval '1 h',
                        now(), now() - interval '1 h', 'succeeded', 10, 2000, 3600, 0.45)
                """
            )
        )
        conn.execute(
            text(
                "INSERT INTO checkpoints (id, job_id, attempt_id, step, metrics, uri) "
                """VALUES ('ckpt_1', 'job_1', 'att_1', 10, '{"tokens_seen": 1000}', 'file:///c/10')"""
            )
        )
    migrate.upgrade(old_database)

    terms = _attempts(old_database, "instance_type, accelerator, accelerator_count, on_demand_usd_per_hour")
    assert terms == [("g5.xlarge", "A10G", 1, 1.006)] * 2
    got = _attempts(
        old_database,
        "start_step, start_tokens, end_step, end_tokens, prior_step, prior_tokens, tokens_trained,"
        " steps_recomputed, tokens_recomputed",
    )
    # The crashed attempt got to its checkpoint at 10 (1,500 tokens by its last heartbeat); the
    # second resumed there (1,000 tokens by the checkpoint's count) and finished at 20.
    assert got == [(0, 0, 10, 1500, 0, 0, 1500, 0, 0), (10, 1000, 20, 2000, 10, 1500, 1000, 0, 500)]
    # What the job trained, counted once: 1,500 then 500 more.
    with old_database.connect() as conn:
        new = conn.execute(
            text("SELECT sum(greatest(end_tokens - prior_tokens, 0)) FROM job_attempts")
        ).scalar()
    assert new == 2000

    cfg = migrate.alembic_config()
    with old_database.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
        conn.commit()
    assert _attempts(old_database, "tokens_trained") == [(1500,), (2000,)]
