"""The user CLI commands through typer's CliRunner, with the SDK pointed at the real app."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support import AppTransport, job_body, make_sdk, run_job
from typer.testing import CliRunner, Result

from trainyard.cli import client as cli_client
from trainyard.cli import user as cli_user
from trainyard.platform.models import Job as JobRow
from trainyard.sdk import Trainyard

Invoke = Callable[..., Result]

pytestmark = pytest.mark.usefixtures("isolated_config")


def _runner_for(factory: Callable[[], Trainyard], monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.setattr(cli_client, "client_factory", factory)
    app = typer.Typer()
    cli_user.register(app)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture
def cli(client: Any, key: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    transport = AppTransport(client)
    return _runner_for(lambda: make_sdk(transport, key), monkeypatch)


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_body()))
    return path


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def worker(sessions: sessionmaker[Session]) -> Iterator[Callable[..., None]]:
    """Start a background 'worker' that finishes the next queued job with a given outcome."""
    threads: list[threading.Thread] = []

    def start(outcome: str, progress: dict[str, Any] | None = None) -> None:
        def run() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with sessions() as s:
                    queued = s.scalar(
                        select(func.count()).select_from(JobRow).where(JobRow.status == "queued")
                    )
                if queued:
                    time.sleep(0.2)  # let the CLI watch it queued for a poll or two
                    run_job(sessions, outcome, progress=progress)
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(timeout=30)


def test_submit_list_get_events_cancel(cli: Invoke, job_file: Path) -> None:
    r = cli("submit", str(job_file))
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("queued job_")
    first = r.stdout.split()[1]
    second = _json(cli("submit", str(job_file), "--json"))["id"]

    listed = _json(cli("jobs", "list", "--json"))
    assert [j["id"] for j in listed] == [second, first]
    assert [j["id"] for j in _json(cli("jobs", "list", "--limit", "1", "--json"))] == [second]
    ids = cli("jobs", "list", "--quiet")
    assert ids.exit_code == 0 and ids.stdout == f"{second}\n{first}\n", "ids alone, for $(...) in scripts"
    assert len(_json(cli("jobs", "list", "--metadata", "project=demo", "--json"))) == 2
    table = cli("jobs", "list")
    assert table.exit_code == 0 and first in table.stdout and "queued" in table.stdout

    got = _json(cli("jobs", "get", first, "--json"))
    assert got["id"] == first and got["status"] == "queued" and got["hyperparameters"]["max_steps"] == 20
    detail = cli("jobs", "get", first)
    assert detail.exit_code == 0 and "tiny-gpt2" in detail.stdout and "None" not in detail.stdout
    # The total is the plan's from the start; the loss is "-" until the run reports one.
    assert "0/20" in detail.stdout and "loss           -" in detail.stdout

    cancelled = cli("jobs", "cancel", first)
    assert cancelled.exit_code == 0 and f"{first} cancelled" in cancelled.stdout
    assert [j["id"] for j in _json(cli("jobs", "list", "--status", "cancelled", "--json"))] == [first]

    events = _json(cli("jobs", "events", first, "--json"))
    assert [e["data"]["to"] for e in events] == ["queued", "cancelled"]
    lines = cli("jobs", "events", first)
    assert lines.exit_code == 0 and "[status] job queued" in lines.stdout

    again = cli("jobs", "cancel", first)
    assert again.exit_code == 0 and f"{first} cancelled" in again.stdout, "a repeated cancel is not an error"

    missing = cli("jobs", "get", "job_nope")
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith("error: ") and "(404 job_not_found)" in missing.stderr


def test_yaml_timestamps_reach_the_api_as_rfc3339(cli: Invoke, tmp_path: Path) -> None:
    # YAML reads an unquoted timestamp as a datetime; it must still go out as RFC 3339 text.
    path = tmp_path / "deadline.yaml"
    body = yaml.safe_dump(job_body()) + "policy:\n  objective: deadline\n  deadline: 2030-01-01T00:00:00Z\n"
    path.write_text(body)
    job = _json(cli("submit", str(path), "--json"))
    assert job["policy"]["deadline"].startswith("2030-01-01T00:00:00")


def test_bad_input_exits_2_with_a_clear_message(cli: Invoke, tmp_path: Path) -> None:
    r = cli("submit", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 2 and "no such file" in r.output

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    r = cli("submit", str(broken))
    assert r.exit_code == 2 and "not valid YAML at line" in r.output

    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    r = cli("submit", str(listy))
    assert r.exit_code == 2 and "must hold a mapping" in r.output

    bad_json = tmp_path / "job.json"
    bad_json.write_text('{"name": ')
    r = cli("submit", str(bad_json))
    assert r.exit_code == 2 and "not valid JSON: line 1" in r.output

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(job_body(colour="blue")))
    r = cli("submit", str(unknown))
    assert r.exit_code == 2 and "colour" in r.output and "422" in r.output

    r = cli("jobs", "get", "job_missing")
    assert r.exit_code == 2 and "no job 'job_missing'" in r.output

    r = cli("jobs", "list", "--metadata", "novalue")
    assert r.exit_code == 2 and "key=value" in r.output


def test_submit_wait_exit_0_when_the_job_succeeds(
    cli: Invoke, job_file: Path, worker: Callable[..., None]
) -> None:
    worker("succeeded", {"step": 20, "total_steps": 20, "loss": 0.5, "tokens_per_second": 1234.0})
    r = cli("submit", str(job_file), "--wait", "--interval", "0.05")
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.stderr


def test_submit_wait_exit_1_when_the_job_fails(
    cli: Invoke, job_file: Path, worker: Callable[..., None]
) -> None:
    worker("failed")
    r = cli("submit", str(job_file), "--wait", "--json", "--interval", "0.05")
    assert r.exit_code == 1, r.output
    final = json.loads(r.stdout)
    assert final["status"] == "failed" and final["error"]["code"] == "user_error"
    assert "bad data" in r.stderr


def test_events_follow_streams_json_lines_until_the_end(
    cli: Invoke, job_file: Path, worker: Callable[..., None]
) -> None:
    job_id = _json(cli("submit", str(job_file), "--json"))["id"]
    worker("succeeded")
    r = cli("jobs", "events", job_id, "--follow", "--json", "--interval", "0.05")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["data"]["to"] for e in events] == ["queued", "running", "succeeded"]
    assert len({e["id"] for e in events}) == 3  # each once, though polled many times


def test_follow_a_cancelled_job_exits_1(cli: Invoke, job_file: Path) -> None:
    job_id = _json(cli("submit", str(job_file), "--json"))["id"]
    cli("jobs", "cancel", job_id)
    r = cli("jobs", "events", job_id, "--follow", "--interval", "0.05")
    assert r.exit_code == 1 and "[status] cancelled by" in r.stdout and "cancelled" in r.stderr


def test_auth_and_connection_failures(client: Any, monkeypatch: pytest.MonkeyPatch, job_file: Path) -> None:
    transport = AppTransport(client)
    bad_key = _runner_for(lambda: make_sdk(transport, "ty_wrong"), monkeypatch)
    r = bad_key("jobs", "list")
    assert r.exit_code == 2 and "TRAINYARD_API_KEY" in r.output

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = _runner_for(lambda: make_sdk(httpx.MockTransport(refuse), "ty_x"), monkeypatch)
    r = down("submit", str(job_file))
    assert r.exit_code == 3 and "is the API running" in r.output


def test_estimate(cli: Invoke, job_file: Path, tmp_path: Path) -> None:
    r = cli("estimate", str(job_file))
    assert r.exit_code == 0, r.output
    assert "local-cpu" in r.stdout and "chosen (cheapest): local-cpu" in r.stdout
    assert "c7i.2xlarge spot" in r.stdout  # every option, not only the chosen one
    est = _json(cli("estimate", str(job_file), "--json"))
    assert est["chosen"]["instance_type"] == "local-cpu" and len(est["options"]) > 1

    stuck = tmp_path / "stuck.yaml"
    stuck.write_text(yaml.safe_dump(job_body(policy={"allowed_accelerators": ["TPU-v9"]})))
    r = cli("estimate", str(stuck))
    assert r.exit_code == 2 and "relax one of them" in r.stderr


def test_costs(cli: Invoke, job_file: Path, sessions: sessionmaker[Session]) -> None:
    r = cli("costs")
    assert r.exit_code == 0 and "no spend" in r.stderr
    cli("submit", str(job_file))
    run_job(sessions, progress={"step": 3, "total_steps": 20, "tokens": 100})
    r = cli("costs", "--window", "30d", "--by", "team,instance_type")
    assert r.exit_code == 0, r.output
    assert "TEAM" in r.stdout and "INSTANCE_TYPE" in r.stdout and "research" in r.stdout
    assert "local-cpu" in r.stdout and "total $" in r.stdout and "1 job(s)" in r.stdout
    r = cli("costs", "--step", "1d")
    assert r.exit_code == 0 and "FROM" in r.stdout and "research" in r.stdout
    report = _json(cli("costs", "--json"))
    assert report["aggregate"] == ["team"] and report["data"][0]["key"] == {"team": "research"}
    r = cli("costs", "--window", "forever")
    assert r.exit_code == 2 and "[window]" in r.stderr


def test_instance_types(cli: Invoke) -> None:
    r = cli("instance-types")
    assert r.exit_code == 0, r.output
    assert "local-cpu" in r.stdout and " x " in r.stdout and "$/H" in r.stdout
    types = _json(cli("instance-types", "--json"))
    assert "local-cpu" in [t["name"] for t in types] and len(types) > 1
    only = _json(cli("instance-types", "--available", "--json"))
    assert [t["name"] for t in only] == ["local-cpu"]
