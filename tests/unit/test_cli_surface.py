"""What `trainyard` shows before any server is involved: help without raw type hints, the
version, the global `--base-url`, one-line errors with exit codes, and the stack file that
`trainyard up` leaves for `trainyard admin`."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from support import free_port
from typer.testing import CliRunner

from trainyard.cli import app, stackfile
from trainyard.cli import client as cli_client
from trainyard.sdk import Trainyard, __version__

pytestmark = pytest.mark.usefixtures("isolated_config")

# What typer prints when a parameter has no metavar: `<str>`, `<list[str]>`, `<float range>`,
# `{job_id}` in the usage line, `x>=0.01` for a bound.
RAW_HINT = re.compile(r"<(str|int|float|bool|path|list\[|tuple|datetime|[a-z]+ range)|\{\w+\}|\bx[<>]=?")


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _command_paths(sub, (*path, name))


def test_no_help_page_shows_a_raw_type_hint() -> None:
    runner = CliRunner()
    paths = list(_command_paths(typer.main.get_command(app)))
    assert ("jobs", "list") in paths and ("admin", "create-team") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        hints = [line for line in result.output.splitlines() if RAW_HINT.search(line)]
        assert not hints, (path, hints)


def test_help_names_values_and_bounds_in_words() -> None:
    out = CliRunner().invoke(app, ["jobs", "list", "--help"], env={"COLUMNS": "80"}).output
    assert "--metadata KEY=VALUE" in out and "--limit N" in out and "at least 1" in out
    out = CliRunner().invoke(app, ["jobs", "events", "--help"], env={"COLUMNS": "80"}).output
    assert "Usage: root jobs events [OPTIONS] JOB_ID" in out and "--interval SECONDS" in out


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"trainyard {__version__}\n"
    installed = subprocess.run(
        [sys.executable, "-m", "trainyard.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert installed.stdout.strip() == f"trainyard {__version__}"


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_client, "client_factory", functools.partial(Trainyard, max_retries=0))
    monkeypatch.setattr(cli_client, "base_url", None)


@pytest.mark.usefixtures("no_retries")
@pytest.mark.parametrize("how", ["option", "env"])
def test_base_url_points_the_commands_at_a_server_and_an_absent_one_exits_3(how: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args, env = (["--base-url", url], {}) if how == "option" else ([], {"TRAINYARD_BASE_URL": url})
    result = CliRunner().invoke(app, [*args, "jobs", "list"], env=env)
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith(f"error: could not reach {url}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_database_url_is_exit_2_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", "mysql://root@db/trainyard")
    result = CliRunner().invoke(app, ["admin", "create-team", "x"])
    assert result.exit_code == 2
    assert (
        result.stderr
        == "error: bad database URL 'mysql://root@db/trainyard': only PostgreSQL is supported, got 'mysql'\n"
    )


def test_an_unreachable_database_is_exit_3_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/trainyard"
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", url)
    for args in (["migrate"], ["admin", "create-team", "x"], ["admin", "list-sources", "x"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.startswith(f"error: cannot reach the database at {url}: ")
        assert len(result.stderr.strip().splitlines()) == 1


def _info(pid: int) -> stackfile.StackInfo:
    return stackfile.StackInfo(
        base_url="http://127.0.0.1:8000",
        database_url="postgresql+psycopg://postgres:@/postgres?host=/data/pg",
        storage_uri="file:///data/store",
        data_dir="/data",
        pid=pid,
    )


def test_the_stack_file_sits_beside_the_credentials_and_only_a_live_stack_counts(tmp_path: Path) -> None:
    assert stackfile.stack_file() == tmp_path / "stack.json"  # isolated_config's credentials dir
    assert stackfile.read() is None
    path = stackfile.write(_info(os.getpid()))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert stackfile.read() == _info(os.getpid())
    stackfile.remove(os.getpid() + 1)  # another stack's stop leaves ours alone
    assert stackfile.read() == _info(os.getpid())
    stackfile.remove(os.getpid())
    assert not path.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stackfile.write(_info(dead.pid))
    assert stackfile.read() is None, "a stack that died without cleaning up is not used"


def test_admin_uses_the_running_stack_unless_the_database_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainyard.cli.admin import database_settings

    monkeypatch.delenv("TRAINYARD_DATABASE_URL", raising=False)
    monkeypatch.delenv("TRAINYARD_STORAGE_URI", raising=False)
    stackfile.write(_info(os.getpid()))
    settings = database_settings()
    assert settings.database_url == _info(0).database_url and settings.storage_uri == "file:///data/store"
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", "postgresql://ops@dbhost/trainyard")
    assert database_settings().database_url == "postgresql://ops@dbhost/trainyard"


def test_database_urls_are_shown_as_psql_takes_them() -> None:
    assert stackfile.display_url(_info(0).database_url) == "postgresql://postgres@/postgres?host=/data/pg"
    assert stackfile.display_url("postgresql+psycopg://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_a_job_file_deadline_may_be_relative_so_a_committed_example_never_expires(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from trainyard.cli.jobfile import load_job_file, resolve_relative_deadline

    example = load_job_file(Path(__file__).resolve().parents[2] / "examples" / "lora-8b-deadline.yaml")
    deadline = datetime.fromisoformat(example["policy"]["deadline"])
    assert timedelta(days=6, hours=23) < deadline - datetime.now(UTC) <= timedelta(days=7)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    spec = {"policy": {"objective": "deadline", "deadline": "+90m"}}
    assert resolve_relative_deadline(spec, tmp_path, now)["policy"]["deadline"] == "2030-01-01T01:30:00Z"
    spec = {"policy": {"objective": "deadline", "deadline": "in 2H"}}
    assert resolve_relative_deadline(spec, tmp_path, now)["policy"]["deadline"] == "2030-01-01T02:00:00Z"
    fixed = {"policy": {"deadline": "2031-01-01T00:00:00Z"}}
    assert resolve_relative_deadline(fixed, tmp_path, now) == fixed
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: j\nbase_model: gpt2\npolicy:\n  deadline: '+soon'\n")
    with pytest.raises(typer.Exit) as exit_:
        load_job_file(bad)
    assert exit_.value.exit_code == 2


def test_up_on_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path / "ty"), "--port", str(port)])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: port {port} on 127.0.0.1 is in use (another trainyard up?); choose one with --port\n"
    )
    assert not (tmp_path / "ty").exists(), "nothing was started"


def test_up_that_cannot_start_says_why_in_one_line_and_exits_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "RAY_ADDRESS"))}
    env.update(
        TRAINYARD_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/trainyard",
        TRAINYARD_CREDENTIALS=str(tmp_path / "credentials.json"),
        RAY_ADDRESS="127.0.0.1:9",  # never reached: the database fails first
    )
    cmd = [
        sys.executable,
        "-m",
        "trainyard.cli",
        "up",
        "--data-dir",
        str(tmp_path / "ty"),
        "--port",
        str(free_port()),
    ]
    ran = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 3, ran.stderr
    assert ran.stdout == "" and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert ran.stderr.startswith("error: the embedded stack did not start: ") and "--verbose" in ran.stderr
    assert not (tmp_path / "stack.json").exists()


def test_the_cli_and_the_api_read_a_relative_deadline_alike() -> None:
    from datetime import UTC, datetime

    from trainyard.cli.jobfile import RELATIVE
    from trainyard.platform.spec import RELATIVE_DEADLINE, relative_deadline

    # The user commands do not import the platform, so the rule is written twice: held the same.
    assert RELATIVE.pattern == RELATIVE_DEADLINE.pattern and RELATIVE.flags == RELATIVE_DEADLINE.flags
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert relative_deadline("IN 1.5D", now) == datetime(2030, 1, 2, 12, tzinfo=UTC)
    assert relative_deadline("+ 2 w", now) == datetime(2030, 1, 15, tzinfo=UTC)
