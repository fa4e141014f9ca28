"""Shared fixtures: a real Postgres per test session, emptied per test; the app; API keys."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fixtures_s3 import *  # noqa: F403
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import db, embedded_pg, migrate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray 2.60 turns token auth on for local clusters when a token exists, and caches the mode the
# first time any module reads its config: set it before anything imports ray, so the test
# cluster, this process and every worker process agree (the token lives in ~/.ray).
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    u = make_url(url)
    try:
        with psycopg.connect(
            host=u.host,
            port=u.port or 5432,
            user=u.username,
            dbname=u.database or "postgres",
            connect_timeout=2,
        ):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def admin_db_url() -> Iterator[str]:
    """A server to create the session's database on: env, then the local server, then embedded."""
    url = os.environ.get("TRAINYARD_TEST_DATABASE_URL")
    if url:
        yield db.normalize_url(url)
        return
    if _answers(LOCAL_SERVER):
        yield LOCAL_SERVER
        return
    with tempfile.TemporaryDirectory(prefix="trainyard-pg-") as tmp:
        url, handle = embedded_pg.start(tmp, cleanup="stop")
        yield url
        del handle


@pytest.fixture(scope="session")
def db_url(admin_db_url: str) -> Iterator[str]:
    """A fresh database for this test session, migrated to head, dropped at the end."""
    name = f"trainyard_test_{secrets.token_hex(4)}"
    admin = make_url(admin_db_url)
    admin_engine = db.make_engine(admin_db_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin_engine.dispose()


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = db.make_engine(db_url, pool_size=20, max_overflow=20)
    yield eng
    eng.dispose()


TABLES = ("files", "checkpoints", "job_events", "job_attempts", "jobs", "api_keys", "teams")


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory over an emptied database."""
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    return db.make_sessionmaker(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


@pytest.fixture
def settings(db_url: str, tmp_path: Any) -> Any:
    from trainyard.settings import get_settings

    return get_settings(
        database_url=db_url,
        storage_uri=f"file://{tmp_path}/store",
        data_dir=str(tmp_path),
        max_body_bytes=64 * 1024,
        allow_local_paths=True,
        # Any local path and the made-up buckets of factories.job_body, as before sources were
        # checked; tests/integration/test_sources.py checks the policy with its own settings.
        local_roots=["/"],
        shared_sources=["s3://data", "s3://models"],
    )


@pytest.fixture
def client(sessions: sessionmaker[Session], settings: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from trainyard.api.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def ray_address(s3_env: Any) -> Iterator[str]:
    """One Ray cluster for the session, started with `ray start --head` so workers connect by
    address. It inherits the S3 test environment."""
    from trainyard.testing.ray_cluster import ray_cluster

    with ray_cluster(num_cpus=2) as address:
        yield address
