"""Apply Alembic migrations under a Postgres advisory lock, so that API replicas and workers
starting together migrate once and the rest wait."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

# Any constant works; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 7_406_201_117


def migrations_dir() -> Path:
    """The Alembic scripts. An installed wheel carries them inside the package (`trainyard/migrations`,
    built from the top-level `migrations/`); a source checkout, installed editable or not, has them
    beside the package, which is the copy to use even when another checkout is installed."""
    package = files("trainyard")
    if not isinstance(package, Path):
        raise RuntimeError(f"trainyard must be installed as files for Alembic to read its scripts: {package}")
    shipped = package / "migrations"
    return shipped if (shipped / "env.py").is_file() else package.parent / "migrations"


def alembic_config() -> Config:
    # What alembic.ini says for a checkout, built here so that an installed wheel needs no ini file.
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config()
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            conn.commit()
