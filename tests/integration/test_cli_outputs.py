"""The CLI's pause, resume, files, budgets, `jobs download` and `jobs cost-report`, and the end
of `submit --wait`, through typer's CliRunner with the SDK pointed at the real app; the store is
a moto S3 server. A test thread plays the worker (no Ray)."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support import CHAT, AppTransport, finish_with_model, job_body, jsonl, make_key, make_sdk
from typer.testing import CliRunner, Result

from trainyard.cli import client as cli_client
from trainyard.cli import rendering
from trainyard.cli import user as cli_user
from trainyard.platform import storage
from trainyard.platform.models import Job as JobRow

Invoke = Callable[..., Result]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def settings(settings: Any, s3_bucket: str) -> Any:
    return settings.model_copy(update={"storage_uri": s3_bucket})


@pytest.fixture
def store(settings: Any) -> storage.ObjectStore:
    return storage.open_store(settings.storage_uri)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainyard.cli.tiny_model import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-gpt2")


def _runner(client: Any, key: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The user commands as the holder of `key` (several runners may take turns in one test)."""
    transport = AppTransport(client)
    app = typer.Typer()
    cli_user.register(app)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        monkeypatch.setattr(cli_client, "client_factory", lambda: make_sdk(transport, key))
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture
def cli(client: Any, key: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    return _runner(client, key, monkeypatch)


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_body()))
    return path


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def worker(
    sessions: sessionmaker[Session], store: storage.ObjectStore, model_dir: Path
) -> Iterator[Callable[[], None]]:
    """A background 'worker' that finishes the next queued job with a model and checkpoints."""
    threads: list[threading.Thread] = []

    def start() -> None:
        def run() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with sessions() as s:
                    queued = s.scalar(
                        select(func.count()).select_from(JobRow).where(JobRow.status == "queued")
                    )
                if queued:
                    time.sleep(0.2)  # let the CLI watch it queued for a poll or two
                    finish_with_model(sessions, store, model_dir)
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(timeout=30)


def test_submit_wait_ends_with_cost_model_and_checkpoints(
    cli: Invoke, job_file: Path, worker: Callable[[], None], store: storage.ObjectStore
) -> None:
    worker()
    r = cli("submit", str(job_file), "--wait", "--interval", "0.05")
    assert r.exit_code == 0, r.output
    job_id = r.stderr.split()[1].rstrip(";")
    summary = r.stderr[r.stderr.index("job ", r.stderr.index("waiting")) :]
    assert f"{job_id} succeeded" in summary
    assert "estimated" in summary and "cost " in summary
    assert store.uri_for(storage.final_model_prefix(job_id, 1)) in summary.replace("\n", "")
    assert "checkpoints  2, last at step 20" in summary
    assert "None" not in r.stderr and "cost report" in summary
    # The live display's last frame: the bar at 20/20 and a loss to 4 significant figures.
    assert "20/20 steps" in r.stderr and "loss 0.5 " in r.stderr


def test_download_and_cost_report(
    cli: Invoke,
    job_file: Path,
    sessions: sessionmaker[Session],
    store: storage.ObjectStore,
    model_dir: Path,
    tmp_path: Path,
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = _json(cli("submit", str(job_file), "--json"))["id"]
    early = cli("jobs", "download", job_id, str(tmp_path / "early"))
    assert early.exit_code == 2 and "no final model" in early.output
    running = cli("jobs", "cost-report", job_id)
    assert running.exit_code == 0 and "figures so far" in running.stdout

    finish_with_model(sessions, store, model_dir)
    r = cli("jobs", "download", job_id, str(tmp_path / "model"))
    assert r.exit_code == 0, r.output
    assert f"{len(list(model_dir.iterdir()))} files" in r.stdout
    for f in model_dir.iterdir():
        assert (tmp_path / "model" / f.name).read_bytes() == f.read_bytes()

    report = cli("jobs", "cost-report", job_id)
    assert report.exit_code == 0, report.output
    assert "succeeded" in report.stdout and "estimated" in report.stdout and "5,120" in report.stdout
    assert store.uri_for(storage.cost_report_key(job_id)) in report.stdout
    assert "ATTEMPT" in report.stdout and "local-cpu" in report.stdout
    as_json = _json(cli("jobs", "cost-report", job_id, "--json"))
    assert as_json["job_id"] == job_id and as_json["attempts"][0]["outcome"] == "succeeded"

    # Another team's key gets a 404 for both, and nothing is written.
    other = _runner(client, make_key(sessions, "vision"), monkeypatch)
    stolen = other("jobs", "download", job_id, str(tmp_path / "stolen"))
    assert stolen.exit_code == 2 and "404" in stolen.output and not (tmp_path / "stolen").exists()
    assert other("jobs", "cost-report", job_id).exit_code == 2


def test_pause_and_resume(cli: Invoke, job_file: Path) -> None:
    job_id = _json(cli("submit", str(job_file), "--json"))["id"]
    r = cli("pause", job_id)
    assert r.exit_code == 0 and f"{job_id} paused" in r.stdout
    assert _json(cli("jobs", "get", job_id, "--json"))["status"] == "paused"
    r = cli("resume", job_id)
    assert r.exit_code == 0 and f"{job_id} queued" in r.stdout
    assert _json(cli("jobs", "pause", job_id, "--json"))["status"] == "paused"
    cli("jobs", "cancel", job_id)
    refused = cli("resume", job_id)
    assert refused.exit_code == 2 and "cannot be resumed" in refused.output


def test_files(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(jsonl(CHAT))
    up = cli("files", "upload", str(path))
    assert up.exit_code == 0, up.output
    file_id = up.stdout.split()[1]
    assert file_id.startswith("file-") and f"{len(CHAT)} records" in up.stdout
    listed = cli("files", "list")
    assert listed.exit_code == 0 and file_id in listed.stdout and "chat.jsonl" in listed.stdout
    assert [f["id"] for f in _json(cli("files", "list", "--json"))] == [file_id]
    got = cli("files", "get", file_id, "--output", str(tmp_path / "copy.jsonl"))
    assert got.exit_code == 0 and (tmp_path / "copy.jsonl").read_bytes() == path.read_bytes()
    assert _json(cli("files", "get", file_id, "--json"))["line_count"] == len(CHAT)
    gone = cli("files", "delete", file_id)
    assert gone.exit_code == 0 and f"deleted {file_id}" in gone.stdout
    missing = cli("files", "get", file_id)
    assert missing.exit_code == 2 and "404" in missing.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    refused = cli("files", "upload", str(bad))
    assert refused.exit_code == 2 and "line 1" in refused.output


def test_budgets(
    cli: Invoke, client: Any, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = cli("budgets", "list")
    assert listed.exit_code == 0 and "research" in listed.stdout and "none" in listed.stdout
    denied = cli("budgets", "set", "research", "100")
    assert denied.exit_code == 2 and "403" in denied.output
    admin = _runner(client, make_key(sessions, "ops", role="admin"), monkeypatch)
    r = admin("budgets", "set", "research", "$1,250")
    assert r.exit_code == 0 and "$1,250" in r.stdout
    assert [b["monthly_budget_usd"] for b in _json(cli("budgets", "list", "--json"))] == [1250.0]
    assert _json(admin("budgets", "set", "research", "none", "--json"))["monthly_budget_usd"] is None
    assert admin("budgets", "set", "research", "lots").exit_code == 2


def test_events_follow_prints_events_above_the_live_display(
    cli: Invoke, job_file: Path, worker: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both streams on one terminal, as in a shell: events go through the live display's console.
    screen = io.StringIO()

    def terminal(stderr: bool = False) -> Console:
        return Console(file=screen, force_terminal=True, width=80, color_system=None, soft_wrap=True)

    monkeypatch.setattr(rendering, "console", terminal)
    job_id = _json(cli("submit", str(job_file), "--json"))["id"]
    worker()
    r = cli("jobs", "events", job_id, "--follow", "--interval", "0.05")
    assert r.exit_code == 0, r.output
    assert r.stdout == "", "nothing bypasses the display"
    lines = [line.rstrip() for line in ANSI.sub("", screen.getvalue()).replace("\r", "\n").splitlines()]
    events = [line for line in lines if "[status]" in line or "[cost]" in line]
    assert [e.split("] ", 1)[1] for e in events if "[status]" in e][-1] == "job succeeded"
    # Each event on a line of its own, never glued to the bar or the figures.
    assert all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[", e) for e in events), events
    assert any(line.startswith("succeeded") and "20/20 steps" in line for line in lines)
    assert any(line.startswith("checkpoints  2, last at step 20") for line in lines)
    assert all(
        len(line) <= 80 for line in lines if not line.startswith(("model", "checkpoints", "cost report"))
    )
