"""Migrations build the schema the models describe, from an empty database."""

from __future__ import annotations

import secrets

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from trainyard.platform import db, migrate, models_files  # noqa: F401  (File is part of the schema)
from trainyard.platform.models import Base


def test_upgrade_from_empty_matches_models(admin_db_url: str) -> None:
    name = f"trainyard_mig_{secrets.token_hex(4)}"
    admin = db.make_engine(admin_db_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(make_url(admin_db_url).set(database=name).render_as_string(hide_password=False))
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)  # a second start finds nothing to do
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
            assert diff == [], diff
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() is not None
        indexes = {i["name"] for i in inspect(engine).get_indexes("jobs")}
        assert {"ix_jobs_queued_claim_order", "ix_jobs_active_pool"} <= indexes
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
