"""The SDK's reach beyond jobs: pause and resume, a job's typed result, its cost report and its
final model (downloaded through the API from a real S3 server, moto), files and budgets; each
team sees only its own. Real app, real Postgres, no Ray: a test plays the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import BASE, CHAT, AppTransport, finish_with_model, job_body, jsonl, make_key, make_sdk

from trainyard.platform import queue, storage
from trainyard.platform.models import Job as JobRow
from trainyard.sdk import (
    AsyncTrainyard,
    ConflictError,
    FileObject,
    JobCostReport,
    JobResult,
    NotFoundError,
    PermissionDeniedError,
    TeamBudget,
    Trainyard,
)

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def settings(settings: Any, s3_bucket: str) -> Any:
    """The app's settings with its store on the moto S3 server."""
    return settings.model_copy(update={"storage_uri": s3_bucket})


@pytest.fixture
def store(settings: Any) -> storage.ObjectStore:
    return storage.open_store(settings.storage_uri)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, random) GPT-2 saved with save_pretrained: what a run leaves as its model."""
    from trainyard.cli.tiny_model import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny-gpt2")


@pytest.fixture
def transport(client: Any) -> AppTransport:
    return AppTransport(client)


@pytest.fixture
def sdk(transport: AppTransport, key: str) -> Trainyard:
    return make_sdk(transport, key)


# ------------------------------------------------------------------------------------------


def test_total_steps_are_known_before_training(sdk: Trainyard) -> None:
    job = sdk.jobs.create(**job_body())
    assert job.status == "queued" and job.progress.total_steps == 20 and job.progress.fraction == 0.0
    # An epochs run: the plan counts the steps from the dataset's tokens.
    epochs = sdk.jobs.create(
        **job_body(hyperparameters={"epochs": 2, "batch_size": 4, "seq_len": 64}, dataset_tokens=51_200)
    )
    assert epochs.plan is not None and epochs.progress.total_steps == epochs.plan.to_dict()["total_steps"]
    workers = epochs.plan.workers or 1
    assert epochs.progress.total_steps == -(-2 * 51_200 // (4 * 64 * workers))


def test_pause_and_resume(sdk: Trainyard, sessions: sessionmaker[Session]) -> None:
    queued = sdk.jobs.create(**job_body())
    paused = sdk.jobs.pause(queued.id)
    assert paused.status == "paused" and sdk.jobs.pause(queued.id).status == "paused"
    resumed = sdk.jobs.resume(queued.id)
    assert resumed.status == "queued"
    # A running job: the pause is a request its worker acts on at its next heartbeat.
    with sessions() as s:
        queue.claim(s, worker_id="w")
    asked = sdk.jobs.pause(queued.id)
    assert asked.status == "running" and asked.pause_requested
    assert not sdk.jobs.resume(queued.id).pause_requested
    done = sdk.jobs.create(**job_body(name="done"))
    sdk.jobs.cancel(done.id)
    with pytest.raises(ConflictError) as refused:
        sdk.jobs.pause(done.id)
    assert refused.value.code == "job_not_pausable"
    with pytest.raises(NotFoundError):
        sdk.jobs.resume("job_missing")


def test_result_cost_report_and_download(
    sdk: Trainyard,
    sessions: sessionmaker[Session],
    store: storage.ObjectStore,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    job = sdk.jobs.create(**job_body())
    running = sdk.jobs.get(job.id)
    assert running.result is None
    with pytest.raises(NotFoundError) as early:
        sdk.jobs.download(job.id, tmp_path / "early")
    assert early.value.code == "final_model_not_found"
    # Before the end there is no published report: the figures so far.
    live = sdk.jobs.cost_report(job.id)
    assert isinstance(live, JobCostReport) and live.uri is None and live.attempts == []

    finish_with_model(sessions, store, model_dir)
    done = sdk.jobs.get(job.id)
    assert isinstance(done.result, JobResult)
    assert done.result.final_model_uri == store.uri_for(storage.final_model_prefix(job.id, 1))
    assert done.result.cost_report_uri == store.uri_for(storage.cost_report_key(job.id))
    assert len(done.result.checkpoint_uris) == 2 and done.result.metrics["loss"] == 0.5

    report = sdk.jobs.cost_report(job.id)
    assert report.uri == done.result.cost_report_uri and report.job_id == job.id
    assert report.status == "succeeded" and report.team == "research"
    [attempt] = report.attempts
    assert attempt.attempt == 1 and attempt.outcome == "succeeded"
    assert report.totals.tokens_trained == 5120 and report.totals.cost_usd == pytest.approx(done.cost.usd)
    assert report.estimate.estimated_cost_usd == done.cost.estimated_usd

    listing = sdk.jobs.model_files(job.id)
    expected = sorted(p.name for p in model_dir.iterdir())
    assert sorted(f.path for f in listing.data) == expected
    assert listing.total_bytes == sum(p.stat().st_size for p in model_dir.iterdir())
    target = sdk.jobs.download(job.id, tmp_path / "model")
    for name in expected:
        assert (target / name).read_bytes() == (model_dir / name).read_bytes()
    assert not [p for p in target.iterdir() if p.name.endswith(".part")]

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(target)
    assert loaded.config.model_type == "gpt2"


def test_another_team_reaches_none_of_it(
    sdk: Trainyard,
    sessions: sessionmaker[Session],
    store: storage.ObjectStore,
    model_dir: Path,
    transport: AppTransport,
    tmp_path: Path,
) -> None:
    job = sdk.jobs.create(**job_body())
    finish_with_model(sessions, store, model_dir)
    other = make_sdk(transport, make_key(sessions, "vision"))
    for call in (
        lambda: other.jobs.cost_report(job.id),
        lambda: other.jobs.model_files(job.id),
        lambda: other.jobs.download(job.id, tmp_path / "stolen"),
        lambda: other.jobs.pause(job.id),
    ):
        with pytest.raises(NotFoundError):
            call()
    # Nor by asking for the file directly.
    direct = transport.test_client.get(
        f"/v1/jobs/{job.id}/model/config.json", headers={"Authorization": f"Bearer {other.api_key}"}
    )
    assert direct.status_code == 404 and direct.json()["error"]["code"] == "job_not_found"
    assert not (tmp_path / "stolen").exists()
    # An admin sees every team's.
    admin = make_sdk(transport, make_key(sessions, "ops", role="admin"))
    assert admin.jobs.cost_report(job.id).team == "research"

    # A job whose result names another job's model gets nothing: only its own prefix is served.
    mine = sdk.jobs.create(**job_body(name="mine"))
    with sessions.begin() as s:
        row = s.get(JobRow, mine.id)
        assert row is not None
        row.result = {"final_model_uri": store.uri_for(storage.final_model_prefix(job.id, 1))}
    with pytest.raises(NotFoundError) as foreign:
        sdk.jobs.model_files(mine.id)
    assert foreign.value.code == "final_model_not_found"
    traversal = transport.test_client.get(
        f"/v1/jobs/{job.id}/model/..%2F..%2Fcost_report.json",
        headers={"Authorization": f"Bearer {sdk.api_key}"},
    )
    assert traversal.status_code == 404


def test_files(
    sdk: Trainyard, transport: AppTransport, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(jsonl(CHAT))
    uploaded = sdk.files.upload(path)
    assert isinstance(uploaded, FileObject) and uploaded.id.startswith("file-")
    assert uploaded.filename == "chat.jsonl" and uploaded.line_count == len(CHAT)
    assert uploaded.bytes == path.stat().st_size and uploaded.created is not None
    second = sdk.files.upload(jsonl(CHAT[:2]), filename="two.jsonl")
    assert [f.id for f in sdk.files.list()] == [second.id, uploaded.id]
    assert [f.id for f in sdk.files.list(limit=1, order="asc")] == [uploaded.id, second.id]
    assert sdk.files.retrieve(uploaded.id).filename == "chat.jsonl"
    copy = sdk.files.download(uploaded.id, tmp_path / "copy.jsonl")
    assert copy.read_bytes() == path.read_bytes()

    job = sdk.jobs.create(**job_body(training_file=uploaded.id))
    with pytest.raises(ConflictError) as in_use:
        sdk.files.delete(uploaded.id)
    assert in_use.value.code == "file_in_use"
    sdk.jobs.cancel(job.id)
    assert sdk.files.delete(uploaded.id).deleted
    with pytest.raises(NotFoundError):
        sdk.files.retrieve(uploaded.id)

    other = make_sdk(transport, make_key(sessions, "vision"))
    assert list(other.files.list()) == []
    with pytest.raises(NotFoundError):
        other.files.retrieve(second.id)


def test_budgets(sdk: Trainyard, transport: AppTransport, sessions: sessionmaker[Session]) -> None:
    [mine] = sdk.budgets.list()
    assert isinstance(mine, TeamBudget) and mine.team == "research" and mine.monthly_budget_usd is None
    with pytest.raises(PermissionDeniedError):
        sdk.budgets.set("research", 100)
    admin = make_sdk(transport, make_key(sessions, "ops", role="admin"))
    set_to = admin.budgets.set("research", 250.5)
    assert set_to.team == "research" and set_to.monthly_budget_usd == 250.5 and set_to.available == 250.5
    assert sorted(b.team for b in admin.budgets.list()) == ["ops", "research"]
    assert sdk.budgets.list()[0].monthly_budget_usd == 250.5
    assert admin.budgets.set("research", None).monthly_budget_usd is None


def test_costs_query_takes_by(sdk: Trainyard) -> None:
    sdk.jobs.create(**job_body())
    by = sdk.costs.query("7d", by=["team", "instance_type"])
    assert by.aggregate == ["team", "instance_type"]
    assert sdk.costs.query(by="team").aggregate == sdk.costs.query(aggregate="team").aggregate == ["team"]
    with pytest.raises(ValueError):
        sdk.costs.query(by="team", aggregate="user")


def test_async_client(
    client: Any,
    key: str,
    sessions: sessionmaker[Session],
    store: storage.ObjectStore,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app))
        async with AsyncTrainyard(base_url=BASE, api_key=key, http_client=http) as sdk:
            job = await sdk.jobs.create(**job_body())
            assert job.progress.total_steps == 20
            assert (await sdk.jobs.pause(job.id)).status == "paused"
            assert (await sdk.jobs.resume(job.id)).status == "queued"
            await asyncio.to_thread(finish_with_model, sessions, store, model_dir)
            report = await sdk.jobs.cost_report(job.id)
            assert report.status == "succeeded" and report.uri
            target = await sdk.jobs.download(job.id, tmp_path / "async-model")
            assert (target / "config.json").read_bytes() == (model_dir / "config.json").read_bytes()
            uploaded = await sdk.files.upload(jsonl(CHAT), filename="a.jsonl")
            assert [f.id async for f in sdk.files.list()] == [uploaded.id]
            assert (await sdk.files.retrieve(uploaded.id)).line_count == len(CHAT)
            assert (await sdk.files.delete(uploaded.id)).deleted
            [budget] = await sdk.budgets.list()
            assert budget.team == "research"
            assert (await sdk.costs.query(by="team")).aggregate == ["team"]
        await http.aclose()

    asyncio.run(scenario())
