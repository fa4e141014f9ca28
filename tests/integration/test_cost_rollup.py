"""The cost rollup against real Postgres: whatever writes attempts (step by step as the queue
does, the queue itself, a rescue, a deletion, a migration of old rows, a rebuild), the rollup
holds what the attempts say; and /v1/costs read from it answers what it answers read from the
attempts, for any window (cut mid-hour or not), step and dimension it keeps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rollup_check
from alembic import command
from attempt_histories import History, histories
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, text
from sqlalchemy.orm import Session, sessionmaker
from support import job_body, make_key, principal_for, scratch_database

from trainyard.platform import attempts, auth, costs, db, jobs, migrate, queue
from trainyard.platform.auth import Principal
from trainyard.platform.costs import rollup
from trainyard.platform.costs.windows import ts
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.spec import JobSpec

BASE = datetime(2026, 3, 1, tzinfo=UTC)
# Attempt terms the queue writes at claim; the rest comes as the attempt runs and ends.
TERMS = (
    "number",
    "worker_id",
    "started_at",
    "instance_type",
    "spot",
    "usd_per_hour",
    "on_demand_usd_per_hour",
    "accelerator",
    "accelerator_count",
    "prior_step",
    "prior_tokens",
)
PROGRESS = (
    "heartbeat_at",
    "lease_expires_at",
    "ended_at",
    "outcome",
    "start_step",
    "start_tokens",
    "end_step",
    "end_tokens",
    "tokens_trained",
    "steps_recomputed",
    "tokens_recomputed",
    "pace_step",
    "pace_at",
    "billable_seconds",
    "cost_usd",
)
SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def worlds(draw: st.DrawFn) -> list[tuple[int, History]]:
    """Up to four jobs of two teams, starting in the first three days of March."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        start = BASE + timedelta(hours=draw(st.floats(0, 72, allow_nan=False)))
        out.append((draw(st.integers(0, 1)), draw(histories(start))))
    return out


def _empty(session: Session) -> None:
    session.execute(
        text(
            "TRUNCATE checkpoints, job_events, job_attempts, jobs, api_keys, teams, cost_rollup,"
            " cost_rollup_keys CASCADE"
        )
    )


def _seed(session: Session, world: list[tuple[int, History]]) -> tuple[Principal, list[str]]:
    """Write each history as the queue does: an attempt claimed on its terms, heartbeats
    metering it half-way, then its end; the job's totals and status after."""
    _empty(session)
    teams = [auth.create_team(session, name) for name in ("research", "vision")]
    keys = [auth.create_key(session, team) for team in teams]
    admin = auth.create_key(session, teams[0], role="admin")
    job_ids = []
    for n, (team, history) in enumerate(world):
        key = auth.authenticate(session, f"Bearer {keys[team]}")
        job = Job(
            team_id=teams[team].id,
            api_key_id=key.key_id,
            name=f"job-{n}",
            status="running",
            spec={"name": "j", "base_model": f"s3://models/m{n % 2}"},
            plan=history.plan,
            instance_type=history.plan["instance_type"],
        )
        session.add(job)
        session.flush()
        for done in history.attempts:
            attempt = JobAttempt(
                job_id=job.id, lease_expires_at=done.started_at, heartbeat_at=done.started_at
            )
            for name in TERMS:
                setattr(attempt, name, getattr(done, name))
            session.add(attempt)
            session.flush()
            # Half-way: metered to the middle of its span, no outcome yet.
            attempt.billable_seconds, attempt.cost_usd = done.billable_seconds / 2, done.cost_usd / 2
            attempt.start_step, attempt.start_tokens = done.start_step, done.start_tokens
            attempt.end_step, attempt.end_tokens = done.start_step, done.start_tokens
            session.flush()
            for name in PROGRESS:
                setattr(attempt, name, getattr(done, name))
            session.flush()
        job.cost_usd = sum(a.cost_usd for a in history.attempts)
        job.status = history.status
        job.finished_at = history.end if history.status in ("succeeded", "failed") else None
        job_ids.append(job.id)
    session.commit()
    return auth.authenticate(session, f"Bearer {admin}"), job_ids


@SETTINGS
@given(world=worlds(), gone=st.integers(0, 3))
def test_the_rollup_is_what_the_attempts_say(
    sessions: sessionmaker[Session], world: list[tuple[int, History]], gone: int
) -> None:
    with sessions() as s:
        _, job_ids = _seed(s, world)
        rollup_check.assert_matches(s)
        # A job deleted takes its spend with it (its attempts go by cascade).
        if gone < len(job_ids):
            s.execute(delete(Job).where(Job.id == job_ids[gone]))
            s.commit()
            rollup_check.assert_matches(s)
        # Rebuilt from the attempts, it is the same.
        rollup.rebuild(s)
        s.commit()
        rollup_check.assert_matches(s)


COMPARED = (
    "cost_usd",
    "billable_hours",
    "gpu_hours",
    "jobs",
    "tokens_trained",
    "spot_savings_usd",
    "waste_usd",
    "productive_usd",
    "startup_usd",
    "recomputed_usd",
    "lost_usd",
    "estimated_usd",
    "estimate_actual_usd",
    "estimate_jobs",
)


def _same(a: dict[str, Any], b: dict[str, Any], where: str) -> None:
    for name in COMPARED:
        assert a[name] == pytest.approx(b[name], rel=1e-7, abs=2e-5), (where, name)


def _compare(rolled: dict[str, Any], scanned: dict[str, Any]) -> None:
    _same(rolled["totals"], scanned["totals"], "totals")
    _same(rolled["previous"], scanned["previous"], "previous")
    rows = {tuple(r["key"].values()): r for r in scanned["data"]}
    assert sorted(map(str, rows)) == sorted(str(tuple(r["key"].values())) for r in rolled["data"])
    for r in rolled["data"]:
        _same(r, rows[tuple(r["key"].values())], f"row {r['key']}")
    for mine, theirs in zip(rolled.get("series", []), scanned.get("series", []), strict=True):
        assert (mine["start"], mine["end"]) == (theirs["start"], theirs["end"])
        _same(mine["totals"], theirs["totals"], f"bucket {mine['start']}")


@SETTINGS
@given(
    world=worlds(),
    dims=st.lists(
        st.sampled_from(["team", "user", "instance_type", "accelerator", "model", "spot"]),
        min_size=1,
        max_size=2,
        unique=True,
    ),
    start=st.floats(-24, 96, allow_nan=False),
    hours=st.floats(0.1, 200, allow_nan=False),
    step=st.sampled_from([None, "1h", "3h", "1d"]),
    spot_only=st.booleans(),
)
def test_the_rollup_answers_as_the_attempts_do(
    sessions: sessionmaker[Session],
    world: list[tuple[int, History]],
    dims: list[str],
    start: float,
    hours: float,
    step: str | None,
    spot_only: bool,
) -> None:
    with sessions() as s:
        admin, _ = _seed(s, world)
    lo = BASE + timedelta(hours=start)
    window = f"{ts(lo)},{ts(lo + timedelta(hours=hours))}"
    if step and hours / {"1h": 1, "3h": 3, "1d": 24}[step] > 1000:
        step = None
    filters = {"spot": "spot"} if spot_only else None
    answers = []
    for from_attempts in (False, True):
        with sessions() as s:
            answers.append(
                costs.query_costs(
                    s,
                    admin,
                    window=window,
                    aggregate=dims,
                    step=step,
                    filters=filters,
                    from_attempts=from_attempts,
                )
            )
    _compare(*answers)


def test_the_current_hour_ends_the_window_now(sessions: sessionmaker[Session]) -> None:
    """A window that ends now reads its last hour's row whole: nothing is billed past now."""
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        jobs.create_job(s, principal, JobSpec(**job_body()), plan=_plan())
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="w")
    _age(sessions, claim.attempt_id, 5400)
    with sessions() as s:
        queue.heartbeat(s, claim.attempt_id, progress={"step": 3, "tokens": 300})
    for window in ("24h", "2h", "7d"):
        answers = []
        for from_attempts in (False, True):
            with sessions() as s:
                answers.append(
                    costs.query_costs(
                        s, principal, window=window, aggregate="team", from_attempts=from_attempts
                    )
                )
        assert answers[0]["totals"]["cost_usd"] == pytest.approx(1.5, abs=1e-3)
        _compare(*answers)


def _plan(**kw: Any) -> dict[str, Any]:
    return {
        "instance_type": "g5.xlarge",
        "accelerator": "A10G",
        "accelerator_count": 1,
        "spot": False,
        "usd_per_hour": 1.0,
        "on_demand_usd_per_hour": 1.0,
        "estimated_cost_usd": 5.0,
        **kw,
    }


def _age(sessions: sessionmaker[Session], attempt_id: str, seconds: float) -> None:
    """Move the attempt's start `seconds` into the past: time passing without waiting for it."""
    with sessions.begin() as s:
        s.execute(
            text("UPDATE job_attempts SET started_at = started_at - make_interval(secs => :s) WHERE id = :a"),
            {"s": seconds, "a": attempt_id},
        )


def test_the_queue_keeps_the_rollup(sessions: sessionmaker[Session]) -> None:
    """Claim, heartbeats, a checkpoint, a hand-back, a rescue and a finish: after each, the rollup
    holds what the attempts say; the job is counted once, where it started, and its estimate
    where it succeeded."""
    principal = principal_for(sessions, make_key(sessions))
    with sessions.begin() as s:
        job, _ = jobs.create_job(
            s, principal, JobSpec(**job_body(hyperparameters={"max_steps": 100})), plan=_plan()
        )
    job_id = job.id

    def check() -> None:
        with sessions() as s:
            rollup_check.assert_matches(s)

    with sessions() as s:
        [first] = queue.claim(s, worker_id="w", lease_seconds=60)
    check()
    _age(sessions, first.attempt_id, 7200)
    with sessions() as s:
        queue.heartbeat(s, first.attempt_id, progress={"step": 10, "tokens": 1000})
    check()
    with sessions() as s:
        attempts.record_checkpoint(
            s, first.attempt_id, step=20, uri="file:///c/20", metrics={"tokens_seen": 2000}
        )
    with sessions() as s:
        queue.finish(s, first.attempt_id, "handed_back")
    check()
    # The second attempt's worker goes quiet; the rescuer ends it at its last heartbeat.
    with sessions() as s:
        [second] = queue.claim(s, worker_id="w", lease_seconds=60)
    with sessions() as s:
        attempts.set_start_step(s, second.attempt_id, 20)
    _age(sessions, second.attempt_id, 3600)
    with sessions() as s:
        queue.heartbeat(s, second.attempt_id, progress={"step": 30, "tokens": 3000}, lease_seconds=0.01)
    check()
    time.sleep(0.05)
    with sessions() as s:
        assert queue.rescue(s, backoff_base=0) == [job_id]
    check()
    with sessions() as s:
        [third] = queue.claim(s, worker_id="w")
    _age(sessions, third.attempt_id, 1800)
    with sessions() as s:
        queue.finish(
            s,
            third.attempt_id,
            "succeeded",
            result={"steps": 100, "start_step": 20, "tokens_trained": 10_000, "tokens_this_attempt": 8000},
        )
    check()
    with sessions() as s:
        res = costs.query_costs(s, principal, window="24h", aggregate="team")
        cost = s.get(Job, job_id).cost_usd  # type: ignore[union-attr]
    assert res["totals"]["jobs"] == 1
    assert res["totals"]["estimate_jobs"] == 1
    assert res["totals"]["estimated_usd"] == pytest.approx(5.0)
    assert res["totals"]["cost_usd"] == pytest.approx(cost, abs=1e-4)
    assert res["totals"]["estimate_actual_usd"] == pytest.approx(cost, abs=1e-4)
    assert res["totals"]["tokens_trained"] == 10_000


@pytest.fixture
def old_database(admin_db_url: str) -> Iterator[Engine]:
    """A fresh database at revision 0005."""
    with scratch_database(admin_db_url, "trainyard_rollup") as url:
        engine = db.make_engine(url)
        try:
            migrate.upgrade(engine, "0005")
            yield engine
        finally:
            engine.dispose()


def test_the_migration_rolls_up_existing_attempts(old_database: Engine) -> None:
    factory = db.make_sessionmaker(old_database)
    with old_database.begin() as conn:
        conn.execute(text("INSERT INTO teams (id, name) VALUES ('team_1', 'research')"))
        conn.execute(
            text(
                """
                INSERT INTO jobs (id, team_id, name, status, spec, plan, instance_type, cost_usd, finished_at)
                VALUES ('job_1', 'team_1', 'j', 'succeeded', '{"base_model": "s3://m"}',
                        '{"instance_type": "g5.xlarge", "estimated_cost_usd": 2.0}', 'g5.xlarge', 1.5,
                        '2026-03-01 03:00+00'),
                       ('job_2', 'team_1', 'k', 'running', '{"base_model": "s3://m"}', '{}', 'g5.xlarge', 0.5,
                        NULL)
                """
            )
        )
        conn.execute(
            text(
                """
                INSERT INTO job_attempts (id, job_id, number, worker_id, instance_type, spot, usd_per_hour,
                                          started_at, heartbeat_at, lease_expires_at, ended_at, outcome,
                                          end_tokens, prior_tokens, billable_seconds, cost_usd)
                VALUES ('att_1', 'job_1', 1, 'w', 'g5.xlarge', false, 1.0, '2026-03-01 00:30+00',
                        '2026-03-01 01:30+00', '2026-03-01 01:31+00', '2026-03-01 01:30+00', 'preempted',
                        100, 0, 3600, 1.0),
                       ('att_2', 'job_1', 2, 'w', 'g5.xlarge', true, 1.0, '2026-03-01 02:00+00',
                        '2026-03-01 02:30+00', '2026-03-01 02:31+00', '2026-03-01 02:30+00', 'succeeded',
                        300, 100, 1800, 0.5),
                       ('att_3', 'job_2', 1, 'w', 'g5.xlarge', false, 1.0, '2026-03-01 23:45+00',
                        '2026-03-02 00:15+00', '2026-03-02 00:16+00', NULL, NULL, 50, 0, 1800, 0.5)
                """
            )
        )
    migrate.upgrade(old_database)
    with factory() as s:
        rollup_check.assert_matches(s)
        firsts = dict(s.execute(text("SELECT id, firsts FROM job_attempts")).tuples().all())
    # att_2 is job_1's second attempt but its first on spot: it counts by spot, not in totals.
    assert firsts == {"att_1": 255, "att_2": 0b11110000, "att_3": 255}

    cfg = migrate.alembic_config()
    with old_database.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
        conn.commit()
        assert conn.execute(text("SELECT to_regclass('cost_rollup')")).scalar() is None
