"""The CLI without a server: its command table, what the user commands import, job files and
status colours. integration/test_cli_user.py runs the commands against the app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from trainyard.cli import rendering
from trainyard.cli import user as cli_user
from trainyard.cli.jobfile import load_job_file
from trainyard.platform.states import JobStatus

pytestmark = pytest.mark.usefixtures("isolated_config")


def test_user_commands_need_no_server_packages() -> None:
    code = (
        "import sys, typer, trainyard.cli.user as c\n"
        "c.register(typer.Typer())\n"
        "top = ('fastapi', 'sqlalchemy', 'psycopg', 'ray', 'torch')\n"
        "ours = ('trainyard.platform', 'trainyard.api', 'trainyard.workers')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in top or m.startswith(ours)]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_the_main_app_has_every_command_once() -> None:
    from trainyard.cli import app as main_app

    names = [c.name or c.callback.__name__ for c in main_app.registered_commands] + [
        g.name for g in main_app.registered_groups
    ]
    ours = {
        "submit",
        "estimate",
        "costs",
        "instance-types",
        "models",
        "jobs",
        "logs",
        "queue",
        "pause",
        "resume",
        "files",
        "budgets",
    }
    assert ours <= set(names)
    assert {"up", "demo", "api", "worker", "migrate", "admin"} <= set(names)
    assert len(names) == len(set(names)), "no command registered twice"
    probe = typer.Typer()
    cli_user.register(probe)
    assert {c.name for c in probe.registered_commands} | {g.name for g in probe.registered_groups} == ours


def test_relative_local_paths_in_a_job_file_become_absolute(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "hi"}\n')
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: j\nbase_model: gpt2\ntraining_file: data/train.jsonl\nvalidation_file: s3://b/v.jsonl\n"
    )
    data = load_job_file(job)
    assert data["training_file"] == str(tmp_path / "data" / "train.jsonl")
    assert data["base_model"] == "gpt2", "a hub id is not a path"
    assert data["validation_file"] == "s3://b/v.jsonl"


def test_every_job_status_has_a_colour() -> None:
    assert set(rendering.STATUS_STYLE) == {str(s) for s in JobStatus}
    assert rendering.status("paused") == "[bright_black]paused[/bright_black]"
