"""budget warnings: a team's warning threshold, and the warnings each job was given

`teams.budget_warn_fraction` is the share of a cap (the team's monthly budget, or a job's
`max_cost_usd`) at which a running job of the team gets a warning event, and GET /v1/budgets
flags the team. `jobs.budget_warnings` records which warnings the job was given (its cap; the
team's budget, per month), so that each is given once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "teams", sa.Column("budget_warn_fraction", sa.Double(), server_default=sa.text("0.8"), nullable=False)
    )
    op.create_check_constraint(
        "ck_teams_budget_warn_fraction", "teams", "budget_warn_fraction > 0 AND budget_warn_fraction <= 1"
    )
    op.add_column(
        "jobs", sa.Column("budget_warnings", JSONB(), server_default=sa.text("'{}'"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("jobs", "budget_warnings")
    op.drop_constraint("ck_teams_budget_warn_fraction", "teams")
    op.drop_column("teams", "budget_warn_fraction")
