"""the attempt ledger: what each attempt is billed on and what it did

Each attempt row records, at claim, its on-demand price and accelerators (next to the instance
type, spot flag and price it already had), and as it runs, where it resumed and how far it got,
so that `tokens_trained` is what the attempt trained (it was the cumulative count, restored
tokens included) and recomputed work can be told apart.

Existing rows are filled from what is known: the job's plan for the billing terms (the only
record of them), the checkpoints for where each attempt resumed and got to, and the old
cumulative `tokens_trained` for how far it got in tokens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ZERO = sa.text("0")

# A plan field that is a finite number, else NULL (plans can be hand-edited).
_NUMBER = (
    "CASE WHEN jsonb_typeof(j.plan -> '{f}') = 'number' AND (j.plan ->> '{f}')::float8 >= 0 "
    "THEN (j.plan ->> '{f}')::float8 END"
)

_TERMS = f"""
UPDATE job_attempts a
SET instance_type = coalesce(a.instance_type, j.instance_type),
    accelerator = CASE WHEN jsonb_typeof(j.plan -> 'accelerator') = 'string'
                       THEN left(j.plan ->> 'accelerator', 64) END,
    accelerator_count = least(coalesce({_NUMBER.format(f="accelerator_count")}, 0), 1000000)::int,
    on_demand_usd_per_hour = coalesce(
        nullif({_NUMBER.format(f="on_demand_usd_per_hour")}, 0),
        CASE WHEN a.spot THEN 0 ELSE a.usd_per_hour END
    )
FROM jobs j
WHERE j.id = a.job_id
"""

# How far each attempt got: its own checkpoints (those still listed), the step the next attempt
# resumed from (a checkpoint no later than this attempt's reach: each attempt resumes from the
# latest), and for a job's latest attempt the job's last progress; in tokens, the old
# cumulative count.
_REACH = """
UPDATE job_attempts a
SET end_step = greatest(
        a.start_step,
        coalesce((SELECT max(c.step) FROM checkpoints c WHERE c.attempt_id = a.id), 0),
        coalesce((SELECT n.start_step FROM job_attempts n
                  WHERE n.job_id = a.job_id AND n.number = a.number + 1), 0),
        CASE WHEN a.number = j.attempt_count AND jsonb_typeof(j.progress -> 'step') = 'number'
             THEN least((j.progress ->> 'step')::float8, 2000000000)::int ELSE 0 END
    ),
    end_tokens = greatest(a.tokens_trained, 0)
FROM jobs j
WHERE j.id = a.job_id
"""

# Where each resumed attempt started in tokens: the checkpoint's own count where the trainer
# recorded one, else in proportion to its steps.
_START = """
UPDATE job_attempts a
SET start_tokens = least(a.end_tokens, coalesce(
        (SELECT CASE WHEN jsonb_typeof(c.metrics -> 'tokens_seen') = 'number'
                     THEN (c.metrics ->> 'tokens_seen')::float8::bigint END
         FROM checkpoints c WHERE c.job_id = a.job_id AND c.step = a.start_step),
        CASE WHEN a.end_step > 0 THEN round(a.end_tokens::float8 * a.start_step / a.end_step)::bigint END,
        0))
WHERE a.start_step > 0
"""

_PRIOR = """
UPDATE job_attempts a
SET prior_step = p.prior_step, prior_tokens = p.prior_tokens
FROM (
    SELECT id,
           coalesce(max(end_step) OVER w, 0) AS prior_step,
           coalesce(max(end_tokens) OVER w, 0) AS prior_tokens
    FROM job_attempts
    WINDOW w AS (PARTITION BY job_id ORDER BY number ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) p
WHERE p.id = a.id
"""

_DERIVED = """
UPDATE job_attempts
SET tokens_trained = greatest(end_tokens - start_tokens, 0),
    steps_recomputed = greatest(least(end_step, prior_step) - start_step, 0),
    tokens_recomputed = greatest(least(end_tokens, prior_tokens) - start_tokens, 0)
"""


def upgrade() -> None:
    add = op.add_column
    od = sa.Column("on_demand_usd_per_hour", sa.Double(), server_default=_ZERO, nullable=False)
    add("job_attempts", od)
    add("job_attempts", sa.Column("accelerator", sa.String(length=64), nullable=True))
    add("job_attempts", sa.Column("accelerator_count", sa.Integer(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("start_tokens", sa.BigInteger(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("end_step", sa.Integer(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("end_tokens", sa.BigInteger(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("prior_step", sa.Integer(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("prior_tokens", sa.BigInteger(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("steps_recomputed", sa.Integer(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("tokens_recomputed", sa.BigInteger(), server_default=_ZERO, nullable=False))
    add("job_attempts", sa.Column("pace_step", sa.Integer(), nullable=True))
    add("job_attempts", sa.Column("pace_at", sa.DateTime(timezone=True), nullable=True))
    for statement in (_TERMS, _REACH, _START, _PRIOR, _DERIVED):
        op.execute(statement)


def downgrade() -> None:
    # Back to the cumulative count the old code kept.
    op.execute("UPDATE job_attempts SET tokens_trained = end_tokens")
    for column in (
        "pace_at",
        "pace_step",
        "tokens_recomputed",
        "steps_recomputed",
        "prior_tokens",
        "prior_step",
        "end_tokens",
        "end_step",
        "start_tokens",
        "accelerator_count",
        "accelerator",
        "on_demand_usd_per_hour",
    ):
        op.drop_column("job_attempts", column)
