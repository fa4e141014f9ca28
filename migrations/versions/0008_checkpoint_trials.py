"""checkpoints keyed by trial: a sweep's trials each keep their own checkpoint rows

Every trial of a sweep reports the same step numbers; keyed by (job, step) they overwrote each
other's rows. `trial` is the Tune trial's id ('' for a job that is not a sweep), and the rows
are unique by (job, trial, step).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "checkpoints", sa.Column("trial", sa.String(length=64), server_default=sa.text("''"), nullable=False)
    )
    op.drop_constraint("uq_checkpoints_job_step", "checkpoints", type_="unique")
    op.create_unique_constraint("uq_checkpoints_job_trial_step", "checkpoints", ["job_id", "trial", "step"])


def downgrade() -> None:
    # Keep one row per (job, step): a trial's row is dropped where another holds its step.
    op.execute(
        "DELETE FROM checkpoints c USING checkpoints d WHERE c.job_id = d.job_id AND c.step = d.step "
        "AND (c.trial, c.id) > (d.trial, d.id)"
    )
    op.drop_constraint("uq_checkpoints_job_trial_step", "checkpoints", type_="unique")
    op.create_unique_constraint("uq_checkpoints_job_step", "checkpoints", ["job_id", "step"])
    op.drop_column("checkpoints", "trial")
