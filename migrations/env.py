"""Alembic environment. Run through `trainyard migrate` (which holds an advisory lock) or alembic."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from trainyard.platform import (
    models_files,  # noqa: F401  (puts File on Base.metadata)
    models_registry,  # noqa: F401  (puts ModelSize on Base.metadata)
)
from trainyard.platform.db import normalize_url
from trainyard.platform.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ["TRAINYARD_DATABASE_URL"]
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
