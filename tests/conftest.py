"""Shared fixtures: a real Postgres per test session, emptied per test; the app, a live server
and API keys; the shipped catalog; a real S3 server (moto over HTTP). Factories and helpers that
are not fixtures live in support.py."""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from browser import Browser, binary_or_skip, open_browser
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from support import free_port, make_key, shipped_catalog

from trainyard.platform import db, embedded_pg, migrate
from trainyard.platform.scheduling import Catalog
from trainyard.testing.moto import start_moto_server

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


@pytest.fixture(scope="module")
def own_pg() -> Iterator[Any]:
    """A Postgres server of the module's own, which its fault tests may stop and start: never the
    shared server the other tests use."""
    from live import OwnPostgres

    pg = OwnPostgres()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = db.make_engine(db_url, pool_size=20, max_overflow=20)
    yield eng
    eng.dispose()


TABLES = (
    "files",
    "checkpoints",
    "job_events",
    "job_attempts",
    "jobs",
    "api_keys",
    "teams",
    "cost_rollup",
    "cost_rollup_keys",
)


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
        # Any local path and the made-up buckets of support.job_body, as before sources were
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


@pytest.fixture
def key(sessions: sessionmaker[Session]) -> str:
    """A member key of the team `research`."""
    return make_key(sessions, "research")


@pytest.fixture
def live_server(sessions: sessionmaker[Session], settings: Any) -> Iterator[str]:
    """The app served by uvicorn over real HTTP on a free port, in a thread; yields its URL."""
    import uvicorn

    from trainyard.api.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read the developer's own SDK credentials or environment (use with `usefixtures`)."""
    monkeypatch.delenv("TRAINYARD_BASE_URL", raising=False)
    monkeypatch.delenv("TRAINYARD_API_KEY", raising=False)
    monkeypatch.setenv("TRAINYARD_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    # Wide enough that CLI tables never truncate ids.
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The shipped catalog."""
    return shipped_catalog()


# --- S3 ---------------------------------------------------------------------------------------
# - `s3_server` (session): starts `moto.server` in a subprocess on 127.0.0.1 and a free port and
#   yields its endpoint URL. A subprocess, so that Ray workers and pyarrow's S3 client in other
#   processes reach it like any S3 endpoint.
# - `s3_env` (session): points the standard AWS variables at that server for the whole session
#   (restored at the end) and yields them. Session scope on purpose: a Ray instance shared by the
#   session inherits the environment it was started with, so the variables must not change under
#   it. It also hides ~/.aws files and disables the EC2 metadata lookup so a developer's profile
#   can neither leak in nor stall pyarrow.
# - `s3_client` (session): a boto3 S3 client for that server, to set up or inspect objects directly.
# - `s3_bucket` (function): creates a fresh bucket and returns `s3://<bucket>/<prefix>`.


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    server = start_moto_server("127.0.0.1")
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_env(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    no_aws_files = tmp_path_factory.mktemp("aws") / "absent"
    values = {
        "AWS_ENDPOINT_URL_S3": s3_server,
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(no_aws_files),
        "AWS_SHARED_CREDENTIALS_FILE": str(no_aws_files),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    patch = pytest.MonkeyPatch()
    try:
        for name in (
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        ):
            patch.delenv(name, raising=False)
        for name, value in values.items():
            patch.setenv(name, value)
        yield values
    finally:
        patch.undo()


@pytest.fixture(scope="session")
def s3_client(s3_env: dict[str, str]) -> Any:
    import boto3

    return boto3.session.Session().client("s3")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"trainyard-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return f"s3://{name}/store"


# --- a browser --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_binary() -> str:
    """Chromium's path (installed with apt-get where missing, as root); skips without one."""
    return binary_or_skip()


@pytest.fixture
def browser(browser_binary: str) -> Iterator[Browser]:
    """A headless Chromium with one page, driven over the DevTools pipe (tests/browser.py)."""
    with open_browser(browser_binary) as b:
        yield b
