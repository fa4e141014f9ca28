"""the cost rollup: spend per hour and per day, kept by the database as attempts are metered

`cost_rollup` holds, per grain ('h' hour, 'd' UTC day), bucket and key (`cost_rollup_keys`: team,
API key, model, instance type, accelerator, spot, outcome), the figures /v1/costs sums: dollars,
billable and GPU seconds, new tokens, spot savings, the goodput parts, the estimate of succeeded
jobs, and jobs started. Triggers keep it in the transaction that changes an attempt (claim,
heartbeat, checkpoint, finish, rescue; any writer, ORM or not) or a succeeded job, by adding the
difference between the row's contribution before and after. Each attempt's figures are spread
evenly over its billed span, as the allocation query over attempts spreads them
(`trainyard.platform.costs.queries`); a property test holds the two to each other.

Jobs are counted where they start: `jobs_<s>` counts the attempts that were the first of their
job with the same values of the attempt dimensions in bit set s (1 instance type, 2
accelerator, 4 spot), in the bucket holding the attempt's start; `firsts` on the attempt is that
bit mask. The estimate of a succeeded job is counted once, at the hour it finished.

`billed_until` (start + billable seconds, kept by a trigger) and its GiST index let a query find
the attempts billed inside a part of an hour, where a window starts or ends.

Setting `trainyard.rollup_off` to 'on' in a transaction makes the triggers leave the rollup
alone (bulk loads); `cost_rollup_rebuild()` then recomputes it from the attempts. The upgrade
builds it from existing attempts that way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_F = sa.Double()
_ZERO = sa.text("0")
_EMPTY = sa.text("''")

# The figures of the rollup, in the order every function below yields them.
FIGURES = (
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
COUNTS = ("estimate_jobs", *(f"jobs_{s}" for s in range(8)))
ALL = (*FIGURES, *COUNTS)
_COLUMNS = ", ".join(ALL)
_WASTED = "'crashed', 'failed', 'lost', 'preempted'"
_NONZERO = " OR ".join(f"sum({c}) <> 0" for c in ALL)
_SUMS = ", ".join(f"sum(p.{c})" for c in ALL)
_ADD = ", ".join(f"{c} = r.{c} + EXCLUDED.{c}" for c in ALL)
# An attempt counts its job, in the bucket holding its start, for each set of attempt dimensions
# it is the first of its job with (bit s of `firsts`).
_JOB_COUNTS = ", ".join(
    f"CASE WHEN f.first AND (a.firsts & {1 << s}) <> 0 THEN sign::int ELSE 0 END" for s in range(8)
)

_KEY_FUNCTION = """
CREATE FUNCTION cost_rollup_key(p_team text, p_api_key text, p_model text, p_instance text,
                                p_accelerator text, p_spot boolean, p_outcome text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    found integer;
BEGIN
    SELECT id INTO found FROM cost_rollup_keys
    WHERE team_id = p_team AND api_key_id = coalesce(p_api_key, '') AND model = coalesce(p_model, '')
      AND instance_type = coalesce(p_instance, '') AND accelerator = coalesce(p_accelerator, '')
      AND spot = coalesce(p_spot, false) AND outcome = coalesce(p_outcome, '');
    IF found IS NULL THEN
        INSERT INTO cost_rollup_keys (team_id, api_key_id, model, instance_type, accelerator, spot, outcome)
        VALUES (p_team, coalesce(p_api_key, ''), coalesce(p_model, ''), coalesce(p_instance, ''),
                coalesce(p_accelerator, ''), coalesce(p_spot, false), coalesce(p_outcome, ''))
        ON CONFLICT DO NOTHING
        RETURNING id INTO found;
        IF found IS NULL THEN  -- another transaction made it first
            SELECT id INTO found FROM cost_rollup_keys
            WHERE team_id = p_team AND api_key_id = coalesce(p_api_key, '') AND model = coalesce(p_model, '')
              AND instance_type = coalesce(p_instance, '') AND accelerator = coalesce(p_accelerator, '')
              AND spot = coalesce(p_spot, false) AND outcome = coalesce(p_outcome, '');
        END IF;
    END IF;
    RETURN found;
END
$$
"""

# One attempt's figures per hour and per day: each figure spread evenly over the billed span
# [s, s + len] (all of it in the bucket holding s when len is 0), as `queries.attempts_sql` has it.
_PIECES_FUNCTION = f"""
CREATE FUNCTION cost_attempt_pieces(a job_attempts, sign float8)
RETURNS TABLE (grain text, bucket timestamptz, key_id integer,
               {", ".join(f"{c} float8" for c in FIGURES)}, {", ".join(f"{c} integer" for c in COUNTS)})
LANGUAGE sql STABLE AS $$
    SELECT g.grain, to_timestamp(k.k * g.size), a.rollup_key_id,
           sign * v.usd * f.f,
           sign * v.len * f.f,
           sign * v.len * a.accelerator_count * f.f,
           sign * v.tokens * f.f,
           sign * v.save * f.f,
           CASE WHEN v.lost THEN 0.0 ELSE sign * v.usd * v.startup_f * f.f END,
           CASE WHEN v.lost THEN 0.0 ELSE sign * v.usd * v.recomputed_f * f.f END,
           CASE WHEN v.lost THEN sign * v.usd * f.f ELSE 0.0 END,
           0.0, 0.0, 0,
           {_JOB_COUNTS}
    FROM (
        SELECT date_part('epoch', a.started_at) AS s,
               greatest(a.billable_seconds, 0) AS len,
               a.cost_usd AS usd,
               greatest(a.end_tokens - a.prior_tokens, 0)::float8 AS tokens,
               CASE WHEN a.spot AND a.on_demand_usd_per_hour > 0
                    THEN a.on_demand_usd_per_hour * greatest(a.billable_seconds, 0) / 3600.0 - a.cost_usd
                    ELSE 0.0 END AS save,
               coalesce(a.outcome IN ({_WASTED}), false) AS lost,
               sf.f AS startup_f,
               CASE WHEN a.steps_recomputed > 0 AND a.end_step > a.start_step
                    THEN least(a.steps_recomputed::float8 / (a.end_step - a.start_step), 1.0) * (1.0 - sf.f)
                    ELSE 0.0 END AS recomputed_f
        FROM (SELECT CASE WHEN a.billable_seconds <= 0 THEN 0.0
                     WHEN a.pace_at IS NULL THEN
                          CASE WHEN a.end_step > a.start_step OR a.tokens_trained > 0 THEN 0.0 ELSE 1.0 END
                     ELSE least(greatest(date_part('epoch', a.pace_at) - date_part('epoch', a.started_at), 0)
                                / a.billable_seconds, 1.0) END AS f) sf
    ) v
    CROSS JOIN (VALUES ('h', 3600), ('d', 86400)) AS g(grain, size)
    CROSS JOIN LATERAL generate_series(
        floor(v.s / g.size)::bigint,
        CASE WHEN v.len > 0
             THEN greatest(floor(v.s / g.size)::bigint, ceil((v.s + v.len) / g.size)::bigint - 1)
             ELSE floor(v.s / g.size)::bigint END
    ) AS k(k)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN v.len > 0
                    THEN greatest(least(v.s + v.len, (k.k + 1) * g.size) - greatest(v.s, k.k * g.size), 0)
                         / v.len
                    ELSE 1.0 END AS f,
               k.k = floor(v.s / g.size)::bigint AS first
    ) f
    WHERE a.rollup_key_id IS NOT NULL
$$
"""

# A succeeded job's estimate and what it cost, counted once at the hour (and day) it finished,
# under its plan's instance type, accelerator and spot choice; no row for any other job.
_ESTIMATE_FUNCTION = """
CREATE FUNCTION cost_job_estimate(j jobs)
RETURNS TABLE (at float8, estimate float8, actual float8, accelerator text, spot boolean)
LANGUAGE sql STABLE AS $$
    SELECT date_part('epoch', coalesce(j.finished_at, j.created_at)), e.estimate, j.cost_usd,
           CASE WHEN jsonb_typeof(j.plan -> 'accelerator') = 'string'
                THEN left(j.plan ->> 'accelerator', 64) END,
           coalesce(j.plan -> 'spot' = 'true'::jsonb, false)
    FROM (SELECT CASE WHEN jsonb_typeof(j.plan -> 'estimated_cost_usd') = 'number'
                      THEN least((j.plan ->> 'estimated_cost_usd')::numeric, 1e300)::float8 END AS estimate) e
    WHERE j.status = 'succeeded' AND j.cost_usd > 0 AND e.estimate > 0
$$
"""

_ESTIMATE_APPLY_FUNCTION = f"""
CREATE FUNCTION cost_job_estimate_apply(j jobs, sign float8) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    e record;
    key integer;
BEGIN
    FOR e IN SELECT * FROM cost_job_estimate(j) LOOP
        key := cost_rollup_key(j.team_id, j.api_key_id, j.spec ->> 'base_model', j.instance_type,
                               e.accelerator, e.spot, 'succeeded');
        INSERT INTO cost_rollup AS r (grain, bucket, key_id, {_COLUMNS})
        SELECT g.grain, to_timestamp(floor(e.at / g.size) * g.size), key,
               {", ".join("0.0" for _ in FIGURES[:8])}, sign * e.estimate, sign * e.actual, sign::int,
               {", ".join("0" for _ in range(8))}
        FROM (VALUES ('d', 86400), ('h', 3600)) AS g(grain, size)
        ORDER BY 1, 2
        ON CONFLICT (grain, bucket, key_id) DO UPDATE SET {_ADD};
    END LOOP;
END
$$
"""

_ATTEMPT_TERMS_TRIGGER = """
CREATE FUNCTION cost_rollup_attempt_terms() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    job record;
BEGIN
    NEW.billed_until := NEW.started_at + greatest(NEW.billable_seconds, 0) * interval '1 second';
    IF current_setting('trainyard.rollup_off', true) = 'on' THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.rollup_key_id IS NULL OR NEW.job_id <> OLD.job_id
       OR NEW.outcome IS DISTINCT FROM OLD.outcome OR NEW.instance_type IS DISTINCT FROM OLD.instance_type
       OR NEW.accelerator IS DISTINCT FROM OLD.accelerator OR NEW.spot IS DISTINCT FROM OLD.spot THEN
        SELECT j.team_id, j.api_key_id, j.spec ->> 'base_model' AS model, j.instance_type
        INTO job FROM jobs j WHERE j.id = NEW.job_id;
        NEW.rollup_key_id := cost_rollup_key(job.team_id, job.api_key_id, job.model,
                                             coalesce(NEW.instance_type, job.instance_type),
                                             NEW.accelerator, NEW.spot, NEW.outcome);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.job_id <> OLD.job_id OR NEW.number <> OLD.number
       OR NEW.instance_type IS DISTINCT FROM OLD.instance_type
       OR NEW.accelerator IS DISTINCT FROM OLD.accelerator OR NEW.spot IS DISTINCT FROM OLD.spot THEN
        -- Bit s: no earlier attempt of the job has the same values of the dimensions in set s.
        NEW.firsts := (
            SELECT coalesce(sum(1 << s), 0) FROM generate_series(0, 7) AS s
            WHERE NOT EXISTS (
                SELECT 1 FROM job_attempts p
                WHERE p.job_id = NEW.job_id AND p.number < NEW.number
                  AND ((s & 1) = 0 OR p.instance_type IS NOT DISTINCT FROM NEW.instance_type)
                  AND ((s & 2) = 0 OR p.accelerator IS NOT DISTINCT FROM NEW.accelerator)
                  AND ((s & 4) = 0 OR p.spot = NEW.spot)
            )
        );
    END IF;
    RETURN NEW;
END
$$
"""

_ATTEMPT_TRIGGER = f"""
CREATE FUNCTION cost_rollup_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('trainyard.rollup_off', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO cost_rollup AS r (grain, bucket, key_id, {_COLUMNS})
    SELECT p.grain, p.bucket, p.key_id, {_SUMS}
    FROM (
        SELECT * FROM cost_attempt_pieces(OLD, -1.0) WHERE TG_OP <> 'INSERT'
        UNION ALL
        SELECT * FROM cost_attempt_pieces(NEW, 1.0) WHERE TG_OP <> 'DELETE'
    ) p
    GROUP BY p.grain, p.bucket, p.key_id
    HAVING {_NONZERO}
    ORDER BY p.grain, p.bucket, p.key_id
    ON CONFLICT (grain, bucket, key_id) DO UPDATE SET {_ADD};
    IF TG_OP <> 'INSERT' AND (TG_OP = 'DELETE' OR OLD.rollup_key_id IS DISTINCT FROM NEW.rollup_key_id) THEN
        -- What the attempt left under its old key (a running one's, once it ends) may now be
        -- nothing but rounding: drop those rows rather than keep them forever.
        DELETE FROM cost_rollup r
        USING (SELECT DISTINCT grain, bucket FROM cost_attempt_pieces(OLD, 1.0)) o
        WHERE r.grain = o.grain AND r.bucket = o.bucket AND r.key_id = OLD.rollup_key_id
          AND abs(r.billable_seconds) < 1e-6 AND r.estimate_jobs = 0
          AND {" AND ".join(f"r.jobs_{s} = 0" for s in range(8))};
    END IF;
    RETURN NULL;
END
$$
"""

_JOB_TRIGGER = """
CREATE FUNCTION cost_rollup_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('trainyard.rollup_off', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM cost_job_estimate_apply(OLD, -1.0);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM cost_job_estimate_apply(NEW, 1.0);
    END IF;
    RETURN NULL;
END
$$
"""

# Bit s of an attempt's `firsts`: it is its job's first (by number) with the same values of the
# attempt dimensions in set s.
_FIRSTS = " + ".join(
    "(row_number() OVER (PARTITION BY a.job_id"
    + (", a.instance_type" if s & 1 else "")
    + (", a.accelerator" if s & 2 else "")
    + (", a.spot" if s & 4 else "")
    + f" ORDER BY a.number) = 1)::int * {1 << s}"
    for s in range(8)
)

_REBUILD_FUNCTION = f"""
CREATE FUNCTION cost_rollup_rebuild() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Writers of attempts and jobs wait; so does another rebuild.
    LOCK TABLE cost_rollup IN EXCLUSIVE MODE;
    LOCK TABLE jobs, job_attempts IN SHARE MODE;
    PERFORM set_config('trainyard.rollup_off', 'on', true);
    PERFORM set_config('work_mem', '256MB', true);
    INSERT INTO cost_rollup_keys (team_id, api_key_id, model, instance_type, accelerator, spot, outcome)
    SELECT DISTINCT j.team_id, coalesce(j.api_key_id, ''), coalesce(j.spec ->> 'base_model', ''),
           coalesce(a.instance_type, j.instance_type, ''), coalesce(a.accelerator, ''), a.spot,
           coalesce(a.outcome, '')
    FROM job_attempts a JOIN jobs j ON j.id = a.job_id
    ON CONFLICT DO NOTHING;
    -- Each attempt's key values and firsts worked out once (OFFSET 0), then matched to the keys:
    -- joined row by row instead, the planner guesses one match and rescans the jobs per key.
    UPDATE job_attempts a
    SET billed_until = a.started_at + greatest(a.billable_seconds, 0) * interval '1 second',
        rollup_key_id = x.key_id,
        firsts = x.firsts
    FROM (
        SELECT v.id, k.id AS key_id, v.firsts
        FROM (
            SELECT a.id, j.team_id, coalesce(j.api_key_id, '') AS api_key_id,
                   coalesce(j.spec ->> 'base_model', '') AS model,
                   coalesce(a.instance_type, j.instance_type, '') AS instance_type,
                   coalesce(a.accelerator, '') AS accelerator, a.spot, coalesce(a.outcome, '') AS outcome,
                   {_FIRSTS} AS firsts
            FROM job_attempts a JOIN jobs j ON j.id = a.job_id
            OFFSET 0
        ) v
        JOIN cost_rollup_keys k
          ON k.team_id = v.team_id AND k.api_key_id = v.api_key_id AND k.model = v.model
         AND k.instance_type = v.instance_type AND k.accelerator = v.accelerator AND k.spot = v.spot
         AND k.outcome = v.outcome
        OFFSET 0
    ) x
    WHERE x.id = a.id;
    DELETE FROM cost_rollup;
    INSERT INTO cost_rollup (grain, bucket, key_id, {_COLUMNS})
    SELECT p.grain, p.bucket, p.key_id, {_SUMS}
    FROM job_attempts a CROSS JOIN LATERAL cost_attempt_pieces(a, 1.0) p
    GROUP BY p.grain, p.bucket, p.key_id
    ORDER BY p.grain, p.bucket, p.key_id;  -- a day's rows together on disk, as queries read them
    INSERT INTO cost_rollup_keys (team_id, api_key_id, model, instance_type, accelerator, spot, outcome)
    SELECT DISTINCT j.team_id, coalesce(j.api_key_id, ''), coalesce(j.spec ->> 'base_model', ''),
           coalesce(j.instance_type, ''), coalesce(e.accelerator, ''), e.spot, 'succeeded'
    FROM jobs j CROSS JOIN LATERAL cost_job_estimate(j) e
    WHERE j.status = 'succeeded'
    ON CONFLICT DO NOTHING;
    INSERT INTO cost_rollup AS r (grain, bucket, key_id, {_COLUMNS})
    SELECT g.grain, to_timestamp(floor(e.at / g.size) * g.size), k.id,
           {", ".join("0.0" for _ in FIGURES[:8])}, sum(e.estimate), sum(e.actual), count(*),
           {", ".join("0" for _ in range(8))}
    FROM jobs j
    CROSS JOIN LATERAL cost_job_estimate(j) e
    JOIN cost_rollup_keys k
      ON k.team_id = j.team_id AND k.api_key_id = coalesce(j.api_key_id, '')
     AND k.model = coalesce(j.spec ->> 'base_model', '') AND k.instance_type = coalesce(j.instance_type, '')
     AND k.accelerator = coalesce(e.accelerator, '') AND k.spot = e.spot AND k.outcome = 'succeeded'
    CROSS JOIN (VALUES ('d', 86400), ('h', 3600)) AS g(grain, size)
    WHERE j.status = 'succeeded'
    GROUP BY 1, 2, 3
    ON CONFLICT (grain, bucket, key_id) DO UPDATE SET {_ADD};
    PERFORM set_config('trainyard.rollup_off', 'off', true);
END
$$
"""

# What an attempt contributes depends on these columns only; an update that changes none of
# them leaves the rollup alone.
_ATTEMPT_FIGURE_COLUMNS = (
    "job_id",
    "started_at",
    "billable_seconds",
    "cost_usd",
    "end_tokens",
    "prior_tokens",
    "start_step",
    "end_step",
    "steps_recomputed",
    "tokens_trained",
    "pace_at",
    "outcome",
    "spot",
    "on_demand_usd_per_hour",
    "accelerator_count",
    "firsts",
    "rollup_key_id",
)
_JOB_ESTIMATE_COLUMNS = (
    "status",
    "cost_usd",
    "plan",
    "finished_at",
    "instance_type",
    "api_key_id",
    "team_id",
    "spec",
)


def _changed(columns: tuple[str, ...]) -> str:
    return " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)


_TRIGGERS = (
    "CREATE TRIGGER cost_rollup_attempt_terms BEFORE INSERT OR UPDATE ON job_attempts "
    "FOR EACH ROW EXECUTE FUNCTION cost_rollup_attempt_terms()",
    "CREATE TRIGGER cost_rollup_attempt AFTER INSERT OR DELETE ON job_attempts "
    "FOR EACH ROW EXECUTE FUNCTION cost_rollup_attempt()",
    "CREATE TRIGGER cost_rollup_attempt_update AFTER UPDATE ON job_attempts "
    f"FOR EACH ROW WHEN ({_changed(_ATTEMPT_FIGURE_COLUMNS)}) EXECUTE FUNCTION cost_rollup_attempt()",
    # Only a succeeded job (before or after the change) has an estimate in the rollup.
    "CREATE TRIGGER cost_rollup_job_insert AFTER INSERT ON jobs "
    "FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION cost_rollup_job()",
    "CREATE TRIGGER cost_rollup_job_delete AFTER DELETE ON jobs "
    "FOR EACH ROW WHEN (OLD.status = 'succeeded') EXECUTE FUNCTION cost_rollup_job()",
    "CREATE TRIGGER cost_rollup_job_update AFTER UPDATE ON jobs FOR EACH ROW "
    f"WHEN ((OLD.status = 'succeeded' OR NEW.status = 'succeeded') AND ({_changed(_JOB_ESTIMATE_COLUMNS)})) "
    "EXECUTE FUNCTION cost_rollup_job()",
)

_FUNCTIONS = (
    "cost_rollup_rebuild()",
    "cost_rollup_job()",
    "cost_rollup_attempt()",
    "cost_rollup_attempt_terms()",
    "cost_job_estimate_apply(jobs, float8)",
    "cost_job_estimate(jobs)",
    "cost_attempt_pieces(job_attempts, float8)",
    "cost_rollup_key(text, text, text, text, text, boolean, text)",
)


def upgrade() -> None:
    op.create_table(
        "cost_rollup_keys",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), primary_key=True),
        sa.Column("team_id", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), server_default=_EMPTY, nullable=False),
        sa.Column("model", sa.Text(), server_default=_EMPTY, nullable=False),
        sa.Column("instance_type", sa.String(length=64), server_default=_EMPTY, nullable=False),
        sa.Column("accelerator", sa.String(length=64), server_default=_EMPTY, nullable=False),
        sa.Column("spot", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=16), server_default=_EMPTY, nullable=False),
    )
    # A model URI may be longer than a B-tree entry allows; its hash is not.
    op.execute(
        "CREATE UNIQUE INDEX uq_cost_rollup_keys ON cost_rollup_keys "
        "(team_id, api_key_id, md5(model), instance_type, accelerator, spot, outcome)"
    )
    op.create_table(
        "cost_rollup",
        sa.Column("grain", sa.String(length=1), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        *(sa.Column(c, _F, server_default=_ZERO, nullable=False) for c in FIGURES),
        *(sa.Column(c, sa.Integer(), server_default=_ZERO, nullable=False) for c in COUNTS),
        sa.PrimaryKeyConstraint("grain", "bucket", "key_id", name="pk_cost_rollup"),
        sa.CheckConstraint("grain IN ('d', 'h')", name="ck_cost_rollup_grain"),
    )
    # Room on each page for a row's next version: every heartbeat rewrites its hour's and day's
    # rows, and a new version on the same page (no key changes) needs no index entry.
    op.execute("ALTER TABLE cost_rollup SET (fillfactor = 70)")
    op.add_column("job_attempts", sa.Column("billed_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "job_attempts", sa.Column("firsts", sa.SmallInteger(), server_default=_ZERO, nullable=False)
    )
    op.add_column("job_attempts", sa.Column("rollup_key_id", sa.Integer(), nullable=True))
    # Where a succeeded job's estimate is counted (`queries.FINISHED`).
    op.execute(
        "CREATE INDEX ix_jobs_succeeded_finished ON jobs (coalesce(finished_at, created_at)) "
        "WHERE status = 'succeeded'"
    )
    for statement in (
        _KEY_FUNCTION,
        _PIECES_FUNCTION,
        _ESTIMATE_FUNCTION,
        _ESTIMATE_APPLY_FUNCTION,
        _ATTEMPT_TERMS_TRIGGER,
        _ATTEMPT_TRIGGER,
        _JOB_TRIGGER,
        _REBUILD_FUNCTION,
    ):
        op.execute(statement)
    op.execute("SELECT cost_rollup_rebuild()")
    # Built after the rebuild has filled billed_until: once, not row by row.
    op.execute(
        "CREATE INDEX ix_job_attempts_billed_span ON job_attempts "
        "USING gist (tstzrange(started_at, billed_until, '[]'))"
    )
    for statement in _TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    for trigger, table in (
        ("cost_rollup_job_update", "jobs"),
        ("cost_rollup_job_delete", "jobs"),
        ("cost_rollup_job_insert", "jobs"),
        ("cost_rollup_attempt_update", "job_attempts"),
        ("cost_rollup_attempt", "job_attempts"),
        ("cost_rollup_attempt_terms", "job_attempts"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP INDEX IF EXISTS ix_jobs_succeeded_finished")
    op.execute("DROP INDEX IF EXISTS ix_job_attempts_billed_span")
    for column in ("rollup_key_id", "firsts", "billed_until"):
        op.drop_column("job_attempts", column)
    op.drop_table("cost_rollup")
    op.drop_table("cost_rollup_keys")
