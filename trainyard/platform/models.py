"""The data model (SQLAlchemy 2.0 typed ORM). All timestamps are timezone-aware UTC.

Ordering columns (`seq`) are identity integers: they give a stable age order for claims and a
cheap keyset cursor for pagination without relying on clock ties.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    FetchedValue,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from trainyard.platform import events
from trainyard.platform.states import ACTIVE, OUTCOMES, STATUSES, sql_list


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("team"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    monthly_budget_usd: Mapped[float | None] = mapped_column(Double)
    # The share of a cap (this budget, or a job's max_cost_usd) at which running jobs are warned.
    budget_warn_fraction: Mapped[float] = mapped_column(Double, server_default=text("0.8"))
    max_concurrent_gpus: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "budget_warn_fraction > 0 AND budget_warn_fraction <= 1", name="ck_teams_budget_warn_fraction"
        ),
    )


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))  # member | admin
    # Only a SHA-256 of the secret is kept; the prefix lets people tell keys apart.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]

    team: Mapped[Team] = relationship(lazy="joined")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'"))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    attempt_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The scheduler's decision (instance type, estimate, reason); null until scheduled.
    plan: Mapped[dict[str, Any] | None]
    instance_type: Mapped[str | None] = mapped_column(String(64))
    pool: Mapped[str | None] = mapped_column(String(64))
    current_attempt_id: Mapped[str | None] = mapped_column(String(40))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Asked for while running; the worker hands the job back and it waits as `paused`.
    pause_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    run_after: Mapped[datetime] = mapped_column(server_default=func.now())
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    cost_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    billable_seconds: Mapped[float] = mapped_column(Double, server_default=text("0"))
    tokens_trained: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The budget warnings the job was given, each once: {"job": when} for its own cap,
    # {"team:2026-12": when} for its team's budget that month (`costs.budgets.warn`).
    budget_warnings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("team_id", "idempotency_key", name="uq_jobs_team_idempotency_key"),
        # The claim scans only queued rows, in claim order.
        Index(
            "ix_jobs_queued_claim_order",
            text("priority DESC"),
            "seq",
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_jobs_team_seq", "team_id", "seq"),
        Index("ix_jobs_active_pool", "pool", postgresql_where=text(f"status IN ({sql_list(ACTIVE)})")),
        # Where a succeeded job's estimate is counted in cost queries.
        Index(
            "ix_jobs_succeeded_finished",
            text("coalesce(finished_at, created_at)"),
            postgresql_where=text("status = 'succeeded'"),
        ),
        CheckConstraint(f"status IN ({sql_list(STATUSES)})", name="ck_jobs_status"),
    )


class JobAttempt(Base):
    """One run of a job, and its line in the ledger (`costs.ledger`): what it is billed on is
    recorded when it is claimed, what it did as it reports progress and when it ends. Figures of
    an attempt never read its job's plan afterwards: dispatch may have changed the plan since."""

    __tablename__ = "job_attempts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("att"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str] = mapped_column(String(200))
    # Billed on (at claim): instance, spot or not, price, on-demand price (0: none known), accelerators.
    instance_type: Mapped[str | None] = mapped_column(String(64))
    spot: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    usd_per_hour: Mapped[float] = mapped_column(Double, server_default=text("0"))
    on_demand_usd_per_hour: Mapped[float] = mapped_column(Double, server_default=text("0"))
    accelerator: Mapped[str | None] = mapped_column(String(64))
    accelerator_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(server_default=func.now())
    lease_expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # succeeded | failed | cancelled | preempted | crashed | lost | handed_back; null while running.
    outcome: Mapped[str | None] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Where it resumed (the checkpoint's step and cumulative tokens) and the furthest it got.
    start_step: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    start_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    end_step: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    end_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The furthest the job's earlier attempts got (at claim): work up to there done again is
    # recomputation.
    prior_step: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    prior_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # Trained in this attempt (a delta, end_tokens - start_tokens), and how much of it was redone.
    tokens_trained: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    steps_recomputed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tokens_recomputed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    tokens_per_second: Mapped[float | None] = mapped_column(Double)
    # The first progress it reported (step, when): its training pace is measured from there, so
    # start-up (provisioning, model load) does not count as slow training.
    pace_step: Mapped[int | None] = mapped_column(Integer)
    pace_at: Mapped[datetime | None]
    # Billed from started_at for billable_seconds: up to its last heartbeat while it runs, and up
    # to its last sign of life when it was lost.
    billable_seconds: Mapped[float] = mapped_column(Double, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    # Kept by the database (migration 0006), never written here: the end of the billed span
    # (started_at + billable_seconds), which sets of attempt dimensions (bits: 1 instance type,
    # 2 accelerator, 4 spot) this is its job's first attempt with, and its key in the cost rollup.
    billed_until: Mapped[datetime | None] = mapped_column(
        server_default=FetchedValue(), server_onupdate=FetchedValue()
    )
    firsts: Mapped[int] = mapped_column(
        SmallInteger, server_default=text("0"), server_onupdate=FetchedValue()
    )
    rollup_key_id: Mapped[int | None] = mapped_column(
        Integer, server_default=FetchedValue(), server_onupdate=FetchedValue()
    )

    __table_args__ = (
        UniqueConstraint("job_id", "number", name="uq_job_attempts_job_number"),
        # The attempts billed in an interval (the ends of a cost query's window).
        Index(
            "ix_job_attempts_billed_span",
            text("tstzrange(started_at, billed_until, '[]')"),
            postgresql_using="gist",
        ),
        # The rescuer scans only live attempts by lease.
        Index("ix_job_attempts_live_lease", "lease_expires_at", postgresql_where=text("ended_at IS NULL")),
        Index("ix_job_attempts_ended_at", "ended_at"),
        CheckConstraint(
            f"outcome IS NULL OR outcome IN ({sql_list(OUTCOMES)})", name="ck_job_attempts_outcome"
        ),
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt_id: Mapped[str | None] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(16))  # status | metrics | checkpoint | cost | message
    level: Mapped[str] = mapped_column(String(8), server_default=text("'info'"))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_job_events_job_id_id", "job_id", "id"),
        CheckConstraint(f"type IN ({sql_list(events.TYPES)})", name="ck_job_events_type"),
        CheckConstraint(f"level IN ({sql_list(events.LEVELS)})", name="ck_job_events_level"),
    )


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ckpt"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt_id: Mapped[str] = mapped_column(String(40))
    # A sweep's trial ('' for a job that is not a sweep): every trial counts its own steps.
    trial: Mapped[str] = mapped_column(String(64), server_default=text("''"))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (UniqueConstraint("job_id", "trial", "step", name="uq_checkpoints_job_trial_step"),)


class CostRollupKey(Base):
    """What spend is rolled up by: a team, API key, model, instance type, accelerator, spot or
    not, and outcome ('' for none: no key, a running attempt). Made by the database's triggers."""

    __tablename__ = "cost_rollup_keys"

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[str] = mapped_column(String(40), server_default=text("''"))
    model: Mapped[str] = mapped_column(Text, server_default=text("''"))
    instance_type: Mapped[str] = mapped_column(String(64), server_default=text("''"))
    accelerator: Mapped[str] = mapped_column(String(64), server_default=text("''"))
    spot: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str] = mapped_column(String(16), server_default=text("''"))

    # A model URI can be longer than a B-tree entry allows; its hash is not.
    __table_args__ = (
        Index(
            "uq_cost_rollup_keys",
            "team_id",
            "api_key_id",
            text("md5(model)"),
            "instance_type",
            "accelerator",
            "spot",
            "outcome",
            unique=True,
        ),
    )


ROLLUP_FIGURES = (
    "usd",
    "billable_seconds",
    "gpu_seconds",
    "tokens",
    "spot_savings_usd",
    "startup_usd",
    "recomputed_usd",
    "lost_usd",
    "estimated_usd",
    "estimate_actual_usd",
)
ROLLUP_COUNTS = ("estimate_jobs", *(f"jobs_{s}" for s in range(8)))


class CostRollup(Base):
    """Spend per grain ('h': hour, 'd': UTC day), bucket start and key, kept by the database in
    the transaction that meters an attempt (migration 0006; `costs.rollup`). `jobs_<s>` counts
    jobs whose first attempt with the same values of the attempt dimensions in bit set s
    started in the bucket; `estimate_jobs` succeeded jobs with an estimate that finished in it."""

    __tablename__ = "cost_rollup"

    grain: Mapped[str] = mapped_column(String(1))
    bucket: Mapped[datetime]
    key_id: Mapped[int] = mapped_column(Integer)
    usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    billable_seconds: Mapped[float] = mapped_column(Double, server_default=text("0"))
    gpu_seconds: Mapped[float] = mapped_column(Double, server_default=text("0"))
    tokens: Mapped[float] = mapped_column(Double, server_default=text("0"))
    spot_savings_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    startup_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    recomputed_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    lost_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    estimated_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    estimate_actual_usd: Mapped[float] = mapped_column(Double, server_default=text("0"))
    estimate_jobs: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_0: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_1: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_2: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_3: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_4: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_5: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_6: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jobs_7: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (
        PrimaryKeyConstraint("grain", "bucket", "key_id", name="pk_cost_rollup"),
        CheckConstraint("grain IN ('d', 'h')", name="ck_cost_rollup_grain"),
    )


class SourceGrant(Base):
    """An s3:// bucket or prefix an admin let one team's jobs read (`trainyard.platform.grants`)."""

    __tablename__ = "source_grants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("grant"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    # Canonical (as `sources.parse_source` spells it): s3://bucket or s3://bucket/prefix.
    uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    # Also the index the policy reads a team's grants by.
    __table_args__ = (UniqueConstraint("team_id", "uri", name="uq_source_grants_team_uri"),)
