"""Queue answers: a job waiting behind a full pool says where it stands, when it should start, why
it waits and which pool would start it sooner; moved there, that pool's claim takes it. The team
quota and a retry's backoff are reasons too, and another team's job cannot be moved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import TWO_POOLS, AppTransport, headers, job_body, make_key, make_sdk, principal_for
from typer.testing import CliRunner

from trainyard.api.app import create_app
from trainyard.cli import client as cli_client
from trainyard.cli import user as cli_user
from trainyard.money import format_usd
from trainyard.platform import jobs, queue
from trainyard.platform.models import Job, JobEvent
from trainyard.platform.states import AttemptOutcome
from trainyard.sdk import QueueAlternative, QueueAnswer

# Long enough that a running job's estimate does not run out while the test looks at it.
LONG = {"max_steps": 4000, "batch_size": 4, "seq_len": 64}
GPU_POOLS = json.dumps(
    [
        {"instance_type": "g6.xlarge", "max_concurrent": 4},
        {"instance_type": "g5.xlarge", "max_concurrent": 4},
    ]
)


@pytest.fixture
def two_pools(sessions: sessionmaker[Session], settings: Any) -> Iterator[TestClient]:
    """The API over a deployment of two CPU pools of one slot each (local-cpu the cheaper)."""
    with TestClient(
        create_app(settings.model_copy(update={"pools": TWO_POOLS})), raise_server_exceptions=False
    ) as c:
        yield c


def _submit(client: TestClient, key: str, **overrides: Any) -> dict[str, Any]:
    body = job_body(**{"instance_type": None, "hyperparameters": LONG, **overrides})
    r = client.post("/v1/jobs", json=body, headers=headers(key))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _claim(client: TestClient, sessions: sessionmaker[Session], pools: list[str] | None = None) -> list[str]:
    capacity = client.app.state.deployment.capacity  # type: ignore[attr-defined]
    with sessions() as s:
        return [c.job_id for c in queue.claim(s, worker_id="w", pools=pools, capacity=capacity)]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_job_behind_a_full_pool_answers_and_moves_to_the_pool_with_room(
    two_pools: TestClient, sessions: sessionmaker[Session], key: str
) -> None:
    client = two_pools
    first = _submit(client, key)
    assert first["pool"] == "local-cpu", "the cheaper pool first"
    assert _claim(client, sessions) == [first["id"]]
    waiting = _submit(client, key)
    behind = _submit(client, key)

    got = client.get(f"/v1/jobs/{waiting['id']}", headers=headers(key)).json()
    answer = got["queue"]
    assert answer["reason"] == "pool_full" and answer["reasons"] == ["pool_full"]
    assert answer["position"] == 1 and answer["pool"] == "local-cpu"
    assert answer["message"] == "pool local-cpu is full (1 of 1 running)"
    # It starts when the running job's estimate runs out: its plan's length less its time so far.
    running_estimate = first["plan"]["estimated_seconds"]
    assert running_estimate - 60 < answer["eta_seconds"] <= running_estimate
    start, finish = _at(answer["estimated_start_at"]), _at(answer["estimated_finish_at"])
    assert (finish - start).total_seconds() == pytest.approx(waiting["plan"]["estimated_seconds"], abs=1)
    [alt] = answer["alternatives"]
    assert alt["instance_type"] == "c7i.2xlarge" and alt["starts_in_seconds"] < 1
    assert alt["summary"].startswith(f"on c7i.2xlarge{' spot' if alt['spot'] else ''}: starts now, finishes ")
    extra = alt["estimated_cost_usd"] - waiting["plan"]["estimated_cost_usd"]
    assert alt["extra_cost_usd"] == pytest.approx(extra, abs=1e-6)
    sign = "+" if alt["extra_cost_usd"] > 0 else "-"
    assert alt["summary"].endswith(f", {sign}{format_usd(abs(alt['extra_cost_usd']))}")
    assert alt["finishes_sooner_by_seconds"] == pytest.approx(
        answer["eta_seconds"] + waiting["plan"]["estimated_seconds"] - alt["estimated_seconds"], abs=1
    )
    assert alt["move"] == {
        "method": "POST",
        "path": f"/v1/jobs/{waiting['id']}/move",
        "body": {"instance_type": "c7i.2xlarge", "spot": alt["spot"]},
    }
    assert alt["command"].startswith(f"trainyard jobs move {waiting['id']} --instance-type c7i.2xlarge")
    # The next in line waits for both: its start is the first one's finish.
    later = client.get(f"/v1/jobs/{behind['id']}", headers=headers(key)).json()["queue"]
    assert later["position"] == 2
    assert later["message"] == "pool local-cpu is full (1 of 1 running, 1 queued ahead of it)"
    assert later["eta_seconds"] == pytest.approx(
        answer["eta_seconds"] + waiting["plan"]["estimated_seconds"], abs=2
    )

    # Nothing but the local-cpu pool's claim would take it where it is.
    assert _claim(client, sessions, ["c7i.2xlarge"]) == []
    moved = client.post(alt["move"]["path"], json=alt["move"]["body"], headers=headers(key))
    assert moved.status_code == 200, moved.text
    job = moved.json()
    assert job["pool"] == job["instance_type"] == job["plan"]["instance_type"] == "c7i.2xlarge"
    assert job["plan"]["estimated_cost_usd"] == pytest.approx(alt["estimated_cost_usd"])
    assert job["queue"]["reason"] == "awaiting_worker" and job["queue"]["position"] == 1
    # A retried move changes nothing and records nothing twice.
    again = client.post(alt["move"]["path"], json=alt["move"]["body"], headers=headers(key))
    assert again.status_code == 200 and again.json()["plan"] == job["plan"]
    with sessions() as s:
        notes = s.scalars(
            select(JobEvent.message).where(JobEvent.job_id == waiting["id"], JobEvent.message.like("moved %"))
        ).all()
        assert len(notes) == 1 and "from pool local-cpu to c7i.2xlarge" in notes[0]
    assert _claim(client, sessions, ["c7i.2xlarge"]) == [waiting["id"]]
    # Running now: no queue answer, and no more moves.
    assert client.get(f"/v1/jobs/{waiting['id']}", headers=headers(key)).json()["queue"] is None
    r = client.post(alt["move"]["path"], json={"instance_type": "local-cpu"}, headers=headers(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_movable"

    # The line lists the caller's waiting jobs with their answers.
    line = client.get("/v1/queue/jobs", headers=headers(key)).json()
    assert [j["id"] for j in line["data"]] == [behind["id"]]
    assert line["data"][0]["queue"]["position"] == 1


def test_a_move_is_checked_and_kept_to_its_team(
    two_pools: TestClient, sessions: sessionmaker[Session], key: str
) -> None:
    client = two_pools
    job = _submit(client, key)
    path = f"/v1/jobs/{job['id']}/move"
    other = make_key(sessions, "vision")
    r = client.post(path, json={"instance_type": "c7i.2xlarge"}, headers=headers(other))
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert client.get("/v1/queue/jobs", headers=headers(other)).json()["data"] == []
    for body, status, code, param in (
        ({"instance_type": "p5.48xlarge"}, 400, "instance_type_unavailable", "instance_type"),
        ({"instance_type": "no-such-type"}, 400, "instance_type_unavailable", "instance_type"),
        # local-cpu has no spot price: no option matches.
        ({"instance_type": "local-cpu", "spot": True}, 422, "no_eligible_instance", "spot"),
    ):
        r = client.post(path, json=body, headers=headers(key))
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert (error["code"], error["param"]) == (code, param), error
    for body, param in (
        ({}, "instance_type"),
        ({"instance_type": "c7i.2xlarge", "pool": "x"}, "pool"),
        ({"instance_type": 3}, "instance_type"),
        ({"instance_type": "c7i.2xlarge", "spot": "maybe"}, "spot"),
    ):
        r = client.post(path, json=body, headers=headers(key))
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"]["param"] == param, r.text
    with sessions() as s:
        stored = s.get(Job, job["id"])
        assert stored is not None and stored.pool == "local-cpu", "a refused move changes nothing"


def test_team_quota_and_backoff_are_reasons(sessions: sessionmaker[Session], settings: Any, key: str) -> None:
    app = create_app(settings.model_copy(update={"pools": GPU_POOLS}))
    with TestClient(app, raise_server_exceptions=False) as client:
        with sessions.begin() as s:
            s.execute(text("UPDATE teams SET max_concurrent_gpus = 1 WHERE name = 'research'"))
        first = _submit(client, key)
        assert first["plan"]["accelerator_count"] == 1
        assert _claim(client, sessions) == [first["id"]]
        held = _submit(client, key)
        answer = client.get(f"/v1/jobs/{held['id']}", headers=headers(key)).json()["queue"]
        # Its pool has room; its team's one GPU is taken until the running job ends.
        assert answer["reason"] == "team_quota" and answer["reasons"] == ["team_quota"]
        assert "holds 1 of its 1 GPUs" in answer["message"]
        assert (
            first["plan"]["estimated_seconds"] - 60
            < answer["eta_seconds"]
            <= first["plan"]["estimated_seconds"]
        )
        assert answer["alternatives"] == [], "the quota holds it on every pool"

        # The running job's attempt crashes: it waits out its retry's backoff.
        with sessions() as s:
            attempt = s.scalar(select(Job.current_attempt_id).where(Job.id == first["id"]))
            assert attempt is not None
            queue.finish(s, attempt, AttemptOutcome.CRASHED, backoff_base=600, backoff_cap=600)
        retry = client.get(f"/v1/jobs/{first['id']}", headers=headers(key)).json()["queue"]
        assert retry["reason"] == "backoff" and retry["reasons"] == ["backoff"]
        with sessions() as s:
            run_after = s.scalar(select(Job.run_after).where(Job.id == first["id"]))
            now = s.scalar(select(func.now()))
        assert run_after is not None and now is not None
        assert _at(retry["not_before"]) == run_after
        assert retry["eta_seconds"] == pytest.approx((run_after - now).total_seconds(), abs=5)
        assert f"retry not before {retry['not_before']}" in retry["message"]
        # Its team's GPU is free again: the other job is next in its pool.
        assert client.get(f"/v1/jobs/{held['id']}", headers=headers(key)).json()["queue"]["reason"] == (
            "awaiting_worker"
        )


def test_the_line_pages_in_claim_order_either_way(two_pools: TestClient, key: str) -> None:
    client = two_pools
    ids = [_submit(client, key)["id"] for _ in range(3)]
    urgent = _submit(client, key, priority=5)["id"]
    line = [urgent, *ids]

    def read(**params: Any) -> list[str]:
        seen, after = [], None
        while True:
            page = client.get(
                "/v1/queue/jobs",
                params={**params, "limit": 2, **({"after": after} if after else {})},
                headers=headers(key),
            ).json()
            seen += [j["id"] for j in page["data"]]
            # Each job's position is its place in that line.
            for job in page["data"]:
                assert job["queue"]["position"] == line.index(job["id"]) + 1
            if not page["has_more"]:
                return seen
            after = seen[-1]

    assert read() == line
    assert read(order="desc") == line[::-1]
    r = client.get("/v1/queue/jobs", params={"after": "job_nope"}, headers=headers(key))
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"


@pytest.mark.usefixtures("isolated_config")
def test_sdk_and_cli_show_the_answer_and_move_the_job(
    two_pools: TestClient, sessions: sessionmaker[Session], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk = make_sdk(AppTransport(two_pools), key)
    first = sdk.jobs.create(job_body(instance_type=None, hyperparameters=LONG))
    assert _claim(two_pools, sessions) == [first.id]
    waiting = sdk.jobs.create(job_body(instance_type=None, hyperparameters=LONG))
    job = sdk.jobs.get(waiting.id)
    assert isinstance(job.queue, QueueAnswer) and job.queue.reason == "pool_full"
    [alt] = job.queue.alternatives
    assert isinstance(alt, QueueAlternative) and alt.move is not None and alt.instance_type == "c7i.2xlarge"
    assert job.plan is not None and {o.instance_type for o in job.plan.pool_options} == {
        "local-cpu",
        "c7i.2xlarge",
    }
    assert [j.id for j in sdk.queue.jobs()] == [waiting.id]
    assert sdk.queue.summary().waiting == 1

    monkeypatch.setattr(cli_client, "client_factory", lambda: make_sdk(AppTransport(two_pools), key))
    app = typer.Typer()
    cli_user.register(app)
    runner = CliRunner()
    shown = runner.invoke(app, ["jobs", "get", waiting.id])
    assert shown.exit_code == 0, shown.output
    assert "#1 in local-cpu, pool_full: pool local-cpu is full (1 of 1 running)" in shown.stdout
    # The CLI asks again a moment later: the finish is "sooner" by what the running job has left,
    # which shrinks by the second, so only the parts that hold still are compared.
    where, _, rest = alt.summary.partition(", finishes")
    assert where in shown.stdout and rest.rpartition(", ")[2] in shown.stdout
    assert f"trainyard jobs move {waiting.id}" in shown.stdout
    line = runner.invoke(app, ["queue"])
    assert line.exit_code == 0, line.output
    row = next(r for r in line.stdout.splitlines() if r.startswith(waiting.id))
    assert row.split()[1:4] == ["local-cpu", "1", "pool_full"] and "c7i.2xlarge" in row
    spot = ["--spot"] if alt.spot else ["--on-demand"]
    moved = runner.invoke(app, ["jobs", "move", waiting.id, "--instance-type", "c7i.2xlarge", *spot])
    assert moved.exit_code == 0, moved.output
    assert f"{waiting.id} on c7i.2xlarge" in moved.stdout and "awaiting_worker" in moved.stdout
    refused = runner.invoke(app, ["jobs", "move", waiting.id, "--instance-type", "p5.48xlarge"])
    assert refused.exit_code == 2 and "instance_type_unavailable" in refused.output
    again = sdk.jobs.move(waiting.id, instance_type="c7i.2xlarge", spot=alt.spot)
    assert again.pool == "c7i.2xlarge" and again.queue is not None and again.queue.position == 1
    assert _claim(two_pools, sessions, ["c7i.2xlarge"]) == [waiting.id]


def test_a_job_no_pool_runs_and_a_paused_job_say_so(
    two_pools: TestClient, sessions: sessionmaker[Session], key: str
) -> None:
    client = two_pools
    job = _submit(client, key)
    # The deployment no longer runs the pool it was placed in (its pools were changed since).
    with sessions.begin() as s:
        s.execute(text("UPDATE jobs SET pool = 'g5.xlarge' WHERE id = :j"), {"j": job["id"]})
    answer = client.get(f"/v1/jobs/{job['id']}", headers=headers(key)).json()["queue"]
    assert answer["reason"] == "pool_unavailable" and answer["position"] is None
    assert answer["eta_seconds"] is None and "no pool of this deployment runs g5.xlarge" in answer["message"]
    # Every pool here would start it now; the soonest finish first.
    assert [a["instance_type"] for a in answer["alternatives"]] == ["c7i.2xlarge", "local-cpu"]
    assert all(a["starts_in_seconds"] < 1 for a in answer["alternatives"])
    assert all(a["finishes_sooner_by_seconds"] is None for a in answer["alternatives"])
    assert answer["alternatives"][0]["summary"].startswith("on c7i.2xlarge spot: starts now, finishes in ")

    with sessions.begin() as s:
        jobs.pause_job(s, principal_for(sessions, key), job["id"])
    paused = client.get(f"/v1/jobs/{job['id']}", headers=headers(key)).json()["queue"]
    assert (paused["reason"], paused["position"], paused["alternatives"]) == ("paused", None, [])
    r = client.post(f"/v1/jobs/{job['id']}/move", json={"instance_type": "local-cpu"}, headers=headers(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_movable"
