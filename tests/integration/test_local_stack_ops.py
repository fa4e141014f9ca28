"""`trainyard up` for an operator: start-up prints the URLs and the key and nothing else, and
`trainyard admin` / `trainyard migrate` in another terminal reach its embedded Postgres.

The stack runs in a subprocess with its own embedded Postgres, and with RAY_ADDRESS naming a
cluster it never needs here (no job is submitted, so nothing connects to Ray)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port
from typer.testing import CliRunner, Result

from trainyard.cli import app

ANNOUNCED = ("API", "dashboard", "database", "admin key")


def _env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "RAY_ADDRESS"))}
    env["TRAINYARD_CREDENTIALS"] = str(config / "credentials.json")
    env["RAY_ADDRESS"] = "127.0.0.1:9"  # never contacted: no job runs
    env["COLUMNS"] = "200"
    return env


def _cli(env: dict[str, str], *args: str) -> Result:
    """The command in this process, in the environment of another terminal beside the stack's."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TRAINYARD_")}
    return CliRunner().invoke(app, list(args), env={**unset, **env})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ops")
    env = _env(root / "config")
    log = root / "up.log"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainyard.cli",
                "up",
                "--data-dir",
                str(root / "ty"),
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "admin key" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield {"proc": proc, "env": env, "log": log, "root": root, "port": port}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_start_up_prints_the_urls_and_the_key_and_nothing_else(stack: dict[str, Any]) -> None:
    lines = stack["log"].read_text().splitlines()
    assert lines[0] == "Trainyard is up; Ctrl-C stops it.", lines
    rows = dict(re.match(r"  (\S+(?: key)?)\s+(\S+)$", line).groups() for line in lines[1:])  # type: ignore[union-attr]
    assert tuple(rows) == ANNOUNCED, lines
    base = f"http://127.0.0.1:{stack['port']}"
    key = rows["admin key"]
    assert rows["API"] == base
    assert rows["dashboard"] == f"{base}/dashboard#key={key}"
    assert rows["database"].startswith("postgresql://postgres@/postgres?host=")
    saved = json.loads((stack["root"] / "ty" / "credentials.json").read_text())
    assert saved["api_key"] == key
    assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_admin_and_migrate_reach_the_running_stack(stack: dict[str, Any]) -> None:
    env = stack["env"]
    info = json.loads((stack["root"] / "config" / "stack.json").read_text())
    assert info["pid"] == stack["proc"].pid and info["base_url"].endswith(str(stack["port"]))
    assert _cli(env, "migrate").exit_code == 0
    made = _cli(env, "admin", "create-team", "ops-team")
    assert made.exit_code == 0 and "created team ops-team" in made.stdout, made.stderr
    again = _cli(env, "admin", "create-team", "ops-team")
    assert again.exit_code == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    key = _cli(env, "admin", "create-key", "--team", "ops-team").stdout.strip()
    r = httpx.get(f"{info['base_url']}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    # An explicit TRAINYARD_DATABASE_URL wins over the running stack.
    elsewhere = _cli(
        {**env, "TRAINYARD_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"},
        "admin",
        "create-team",
        "nowhere",
    )
    assert elsewhere.exit_code == 3, elsewhere.stderr
    assert elsewhere.stderr.startswith("error: cannot reach the database at postgresql://postgres@127.0.0.1:")
    assert len(elsewhere.stderr.strip().splitlines()) == 1 and "Traceback" not in elsewhere.stderr


def test_ctrl_c_stops_the_stack_and_forgets_it(stack: dict[str, Any]) -> None:
    proc = stack["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, stack["log"].read_text()
    assert not (stack["root"] / "config" / "stack.json").exists()
    assert stack["log"].read_text().rstrip().endswith("stopped")
