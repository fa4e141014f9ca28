"""the database refuses a job status, attempt outcome or event type the platform does not spell

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:00:00.000000

The values are written out here, as they were when this revision was made: a later change to
`trainyard.platform.states` or `events` comes with its own revision (a test compares them).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATUSES = ("cancelled", "cancelling", "failed", "paused", "queued", "running", "succeeded")
OUTCOMES = ("cancelled", "crashed", "failed", "handed_back", "lost", "preempted", "succeeded")
EVENT_TYPES = ("checkpoint", "cost", "message", "metrics", "status")
EVENT_LEVELS = ("debug", "error", "info", "warning")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    op.create_check_constraint("ck_jobs_status", "jobs", f"status IN ({_in(STATUSES)})")
    op.create_check_constraint(
        "ck_job_attempts_outcome", "job_attempts", f"outcome IS NULL OR outcome IN ({_in(OUTCOMES)})"
    )
    op.create_check_constraint("ck_job_events_type", "job_events", f"type IN ({_in(EVENT_TYPES)})")
    op.create_check_constraint("ck_job_events_level", "job_events", f"level IN ({_in(EVENT_LEVELS)})")


def downgrade() -> None:
    op.drop_constraint("ck_job_events_level", "job_events", type_="check")
    op.drop_constraint("ck_job_events_type", "job_events", type_="check")
    op.drop_constraint("ck_job_attempts_outcome", "job_attempts", type_="check")
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
