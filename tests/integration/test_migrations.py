"""Migrations build the schema the models describe, from an empty database, and ship in the wheel."""

from __future__ import annotations

import fnmatch
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from support import ROOT, scratch_database

from trainyard.platform import db, migrate, models_files, models_registry  # noqa: F401  (part of the schema)
from trainyard.platform.models import Base


def test_upgrade_from_empty_matches_models(admin_db_url: str) -> None:
    with scratch_database(admin_db_url, "trainyard_mig") as url:
        engine = db.make_engine(url)
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


# What a wheel is built from; the build runs on a copy so the checkout gets no build/ or egg-info.
WHEEL_SOURCES = ("pyproject.toml", "setup.py", "README.md", "trainyard", "migrations")


def _run(args: list[str | Path], *, env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=180, env=env, cwd=cwd
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_migrates_a_fresh_database(
    admin_db_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in WHEEL_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    offline = ["--no-deps", "--no-index"]
    _run([*pip, "wheel", *offline, "--no-build-isolation", "-w", tmp_path / "dist", src], env=env)
    [wheel] = (tmp_path / "dist").glob("trainyard-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        shipped = whl.namelist()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, patterns in package_data.items():
        for pattern in patterns:
            where = f"{package.replace('.', '/')}/{pattern}"
            assert any(fnmatch.fnmatch(name, where) for name in shipped), (
                f"package data {where} ships nothing"
            )
    assert "trainyard/migrations/env.py" in shipped

    # A fresh virtualenv holding only the wheel; the dependencies come from this environment's
    # site-packages through a .pth line (which does not run that directory's own .pth files, so
    # an editable install of the checkout stays out of it).
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], env=env)
    _run([*pip, "--python", python, "install", *offline, wheel], env=env)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env)
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site.strip()) / "trainyard_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = _run([python, "-c", "import trainyard; print(trainyard.__file__)"], cwd=elsewhere, env=env)
    assert Path(imported.strip()).is_relative_to(venv), imported

    name = f"trainyard_wheel_{secrets.token_hex(4)}"
    admin = db.make_engine(admin_db_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_db_url).set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    try:
        said = _run(
            [venv / "bin" / "trainyard", "migrate"], cwd=elsewhere, env={**env, "TRAINYARD_DATABASE_URL": url}
        )
        assert "latest schema" in said
        head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
        assert "jobs" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
