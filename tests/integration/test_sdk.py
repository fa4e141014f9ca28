"""The Python SDK against the real app (and real Postgres) and a live server.
unit/test_sdk_offline.py covers what needs no server."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import BASE, AppTransport, error_response, job_body, make_sdk, run_job

from trainyard.sdk import (
    AsyncTrainyard,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    Job,
    NotFoundError,
    PayloadTooLargeError,
    Trainyard,
    UnprocessableEntityError,
    WaitTimeoutError,
    __version__,
)

pytestmark = pytest.mark.usefixtures("isolated_config")


class FlakyTransport(httpx.BaseTransport):
    """Answers the first `failures` requests itself (forwarding nothing), then forwards."""

    def __init__(self, inner: httpx.BaseTransport, failures: list[httpx.Response | Exception]) -> None:
        self.inner = inner
        self.failures = list(failures)
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return self.inner.handle_request(request)


@pytest.fixture
def transport(client: Any) -> AppTransport:
    return AppTransport(client)


@pytest.fixture
def sdk(transport: AppTransport, key: str) -> Trainyard:
    return make_sdk(transport, key)


# ------------------------------------------------------------------------------------------
# Every call against the real app


def test_jobs_every_call(sdk: Trainyard, sessions: sessionmaker[Session], transport: AppTransport) -> None:
    job = sdk.jobs.create(**job_body())
    assert isinstance(job, Job) and job.id.startswith("job_")
    assert job.status == "queued" and job.name == "tiny-gpt2" and job.hyperparameters["max_steps"] == 20
    assert job.metadata == {"project": "demo"} and job.progress.step == 0 and job.cost.usd == 0
    assert job.created_at is not None and job.created_at.tzinfo is not None
    request = transport.seen[-1]
    assert request.headers["user-agent"] == f"trainyard-python/{__version__}"
    assert request.headers["authorization"].startswith("Bearer ")
    assert len(request.headers["idempotency-key"]) == 36  # a uuid4 per create

    assert sdk.jobs.get(job.id).id == job.id
    assert [j.id for j in sdk.jobs.list()] == [job.id]

    # The worker side moves it along; the SDK reads progress, checkpoints and events back.
    run_job(
        sessions,
        progress={"step": 10, "total_steps": 20, "loss": 1.25, "tokens": 5120, "tokens_per_second": 99.5},
        checkpoints=(5, 10),
    )
    done = sdk.jobs.get(job.id)
    assert done.status == "succeeded" and done.is_terminal
    assert done.progress.step == 10 and done.progress.total_steps == 20 and done.progress.loss == 1.25
    assert done.progress.tokens == 5120 and done.progress.fraction == 0.5
    assert done.attempts == 1 and done.finished_at is not None
    ckpts = list(sdk.jobs.checkpoints(job.id, limit=1))
    assert [c.step for c in ckpts] == [10, 5] and ckpts[0].uri == "file:///ckpt/10"
    assert ckpts[0].metrics == {"loss": 0.1}
    events = list(sdk.jobs.events(job.id))
    assert events[0].type == "status" and events[-1].data["to"] == "succeeded"
    assert sdk.jobs.wait(job.id).status == "succeeded"

    second = sdk.jobs.create(spec=job_body(name="second"), metadata={"project": "other"})
    assert second.name == "second" and second.metadata == {"project": "other"}
    cancelled = sdk.jobs.cancel(second.id)
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    assert [j.id for j in sdk.jobs.list(status="cancelled")] == [second.id]
    assert [j.id for j in sdk.jobs.list(metadata={"project": "demo"})] == [job.id]
    assert sdk.health()["status"] == "ok"


def test_list_follows_pages_newest_first(sdk: Trainyard, transport: AppTransport) -> None:
    ids = [sdk.jobs.create(**job_body(name=f"j{i}")).id for i in range(5)]
    before = len(transport.seen)
    assert [j.id for j in sdk.jobs.list(limit=2)] == list(reversed(ids))
    pages = transport.seen[before:]
    assert len(pages) == 3  # 2 + 2 + 1
    assert pages[1].url.params["after"] == ids[3] and pages[1].url.params["limit"] == "2"
    first = sdk.jobs.list_page(limit=2)
    assert first.has_more and [j.id for j in first.data] == [ids[4], ids[3]]
    last = sdk.jobs.list_page(limit=2, after=ids[1])
    assert not last.has_more and [j.id for j in last.data] == [ids[0]]
    assert [len(p.data) for p in sdk.jobs.list(limit=2).pages()] == [2, 2, 1]


def test_events_paginate_oldest_first_and_resume_after(sdk: Trainyard) -> None:
    job = sdk.jobs.create(**job_body())
    sdk.jobs.cancel(job.id)
    events = list(sdk.jobs.events(job.id, limit=1))
    assert [e.data.get("to") for e in events] == ["queued", "cancelled"]
    assert [e.data.get("to") for e in sdk.jobs.events(job.id, after=events[0].id)] == ["cancelled"]


def test_wait_reports_progress_and_times_out(sdk: Trainyard, sessions: sessionmaker[Session]) -> None:
    job = sdk.jobs.create(**job_body())
    seen: list[str] = []
    with pytest.raises(WaitTimeoutError) as info:
        sdk.jobs.wait(job.id, poll_interval=0.01, timeout=0.05, on_progress=lambda j: seen.append(j.status))
    assert info.value.job.status == "queued" and seen and set(seen) == {"queued"}
    assert isinstance(info.value, TimeoutError)

    finisher = threading.Thread(target=lambda: (time.sleep(0.2), run_job(sessions, "failed")))
    finisher.start()
    try:
        sdk._sleep = time.sleep
        final = sdk.jobs.wait(job.id, poll_interval=0.05, timeout=30)
    finally:
        finisher.join()
    assert final.status == "failed" and final.error is not None and final.error.code == "user_error"


# ------------------------------------------------------------------------------------------
# Errors


def test_error_classes(sdk: Trainyard, transport: AppTransport, settings: Any) -> None:
    with pytest.raises(AuthenticationError) as bad_key:
        make_sdk(transport, "ty_not_a_real_key").jobs.list_page()
    assert bad_key.value.status_code == 401 and bad_key.value.code == "invalid_api_key"

    with pytest.raises(AuthenticationError) as no_key:
        make_sdk(transport, None).jobs.list_page()
    assert "TRAINYARD_API_KEY" in no_key.value.message  # says how to fix it

    with pytest.raises(NotFoundError) as missing:
        sdk.jobs.get("job_nope")
    assert missing.value.code == "job_not_found" and missing.value.param == "job_id"

    body = job_body()
    sdk.jobs.create(body, idempotency_key="same-key")
    assert sdk.jobs.create(body, idempotency_key="same-key").id == sdk.jobs.list_page().data[0].id
    with pytest.raises(ConflictError) as reused:
        sdk.jobs.create(job_body(name="other"), idempotency_key="same-key")
    assert reused.value.code == "idempotency_key_reused" and reused.value.status_code == 409

    finished = sdk.jobs.create(**job_body(name="to-cancel"))
    sdk.jobs.cancel(finished.id)
    assert sdk.jobs.cancel(finished.id).status == "cancelled", "a repeated cancel is not an error"

    with pytest.raises(UnprocessableEntityError) as unknown:
        sdk.jobs.create(**job_body(colour="blue"))
    assert unknown.value.code == "unknown_parameter" and unknown.value.param == "colour"

    with pytest.raises(BadRequestError) as bad_filter:
        sdk.jobs.list_page(status="sleeping")
    assert bad_filter.value.param == "status"

    with pytest.raises(PayloadTooLargeError) as too_big:
        sdk.jobs.create(**job_body(notes="x" * (settings.max_body_bytes + 1)))
    assert too_big.value.status_code == 413 and too_big.value.code == "payload_too_large"

    with pytest.raises(ValueError):
        sdk.jobs.get("")
    # A path separator in an id stays inside the one path segment.
    with pytest.raises(NotFoundError):
        sdk.jobs.get("../jobs")


# ------------------------------------------------------------------------------------------
# Retries


def test_retry_after_503_makes_exactly_one_job(
    transport: AppTransport, key: str, sessions: sessionmaker[Session]
) -> None:
    flaky = FlakyTransport(transport, [error_response(503, "unavailable")])
    sdk = make_sdk(flaky, key)
    job = sdk.jobs.create(**job_body())
    assert len(flaky.seen) == 2
    keys = {r.headers["idempotency-key"] for r in flaky.seen}
    assert len(keys) == 1  # the retry reused the first try's key
    assert flaky.seen[0].content == flaky.seen[1].content
    assert [j.id for j in sdk.jobs.list()] == [job.id]


def test_retried_create_whose_first_response_was_lost_returns_the_same_job(
    transport: AppTransport, key: str
) -> None:
    # The first try reaches the server and makes the job, but the client never hears back.
    class LoseFirstResponse(httpx.BaseTransport):
        def __init__(self) -> None:
            self.calls = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            self.calls += 1
            response = transport.handle_request(request)
            if self.calls == 1:
                raise httpx.ReadError("connection reset", request=request)
            return response

    lossy = LoseFirstResponse()
    sdk = make_sdk(lossy, key)
    job = sdk.jobs.create(**job_body())
    assert lossy.calls == 2
    assert [j.id for j in make_sdk(transport, key).jobs.list()] == [job.id]


def test_retry_honours_retry_after(transport: AppTransport, key: str) -> None:
    flaky = FlakyTransport(transport, [error_response(429, "rate_limited", **{"Retry-After": "3"})])
    sdk = make_sdk(flaky, key)
    delays: list[float] = []
    sdk._sleep = delays.append
    sdk.jobs.list_page()
    assert delays == [3.0] and len(flaky.seen) == 2


# ------------------------------------------------------------------------------------------
# Async client


def test_async_client_against_the_app(client: Any, key: str, sessions: sessionmaker[Session]) -> None:
    # The TestClient fixture has run the app's lifespan (engine, sessionmaker); reuse its app.
    async def scenario() -> None:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app))
        async with AsyncTrainyard(base_url=BASE, api_key=key, http_client=http) as sdk:
            ids = [(await sdk.jobs.create(**job_body(name=f"a{i}"))).id for i in range(3)]
            assert [j.id async for j in sdk.jobs.list(limit=2)] == list(reversed(ids))
            page = await sdk.jobs.list_page(limit=2)
            assert page.has_more and len(page.data) == 2
            assert (await sdk.jobs.get(ids[0])).name == "a0"
            assert (await sdk.jobs.cancel(ids[2])).status == "cancelled"
            events = await sdk.jobs.events(ids[2], limit=1).to_list()
            assert [e.data.get("to") for e in events] == ["queued", "cancelled"]
            assert await sdk.jobs.checkpoints(ids[2]).to_list() == []
            final = await sdk.jobs.wait(ids[2], poll_interval=0.01)
            assert final.status == "cancelled"
            with pytest.raises(NotFoundError):
                await sdk.jobs.get("job_missing")
            with pytest.raises(ConflictError):
                await sdk.jobs.create(job_body(name="x"), idempotency_key="k1")
                await sdk.jobs.create(job_body(name="y"), idempotency_key="k1")
            with pytest.raises(WaitTimeoutError):
                await sdk.jobs.wait(ids[0], poll_interval=0.01, timeout=0.03)
        await http.aclose()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------
# A live server over real HTTP


def test_against_a_live_server(live_server: str, key: str) -> None:
    with Trainyard(base_url=live_server, api_key=key) as sdk:
        job = sdk.jobs.create(**job_body())
        assert sdk.jobs.get(job.id).status == "queued"
        assert [j.id for j in sdk.jobs.list(limit=1)] == [job.id]
        assert sdk.jobs.cancel(job.id).status == "cancelled"
        with pytest.raises(NotFoundError):
            sdk.jobs.get("job_missing")


# ------------------------------------------------------------------------------------------
# Estimates, costs, instance types


def test_estimates_and_instance_types(sdk: Trainyard) -> None:
    est = sdk.estimates.create(job_body())
    assert est.chosen is not None and est.error is None
    assert est.chosen.instance_type == "local-cpu" and est.objective == "cheapest" and est.reason
    assert est.chosen.estimated_cost_usd is not None and est.chosen.estimated_seconds
    assert est.model_parameters and est.options
    [chosen] = [o for o in est.options if est.is_chosen(o)]
    assert chosen.fits and chosen.available and chosen.label == "local-cpu"
    assert any(o.label.endswith(" spot") for o in est.options)

    # Nothing feasible: a 200 with `error` and no choice, not an exception.
    stuck = sdk.estimates.create(job_body(), policy={"allowed_accelerators": ["TPU-v9"]})
    assert stuck.chosen is None and stuck.error is not None and stuck.error.code == "no_eligible_instance"
    with pytest.raises(BadRequestError) as unknown:
        sdk.estimates.create(job_body(instance_type="nope"))
    assert unknown.value.code == "instance_type_unknown"

    types = sdk.instance_types.list()
    local = next(t for t in types if t.name == "local-cpu")
    assert local.available and local.kind == "cpu" and local.on_demand_usd_per_hour is not None
    assert any(t.accelerator and t.accelerator_count for t in types)

    # The plan a job carries is the same model.
    job = sdk.jobs.create(**job_body())
    assert job.plan is not None and job.plan.instance_type == "local-cpu" and job.plan.reason


def test_costs(sdk: Trainyard, sessions: sessionmaker[Session]) -> None:
    sdk.jobs.create(**job_body())
    run_job(sessions, progress={"step": 3, "total_steps": 20, "tokens": 100})
    report = sdk.costs.query()
    assert report.aggregate == ["team"] and report.window.end is not None
    [row] = report.data
    assert row.key == {"team": "research"} and row.jobs == 1 and row.cost_usd >= 0
    assert report.totals.jobs == 1 and not report.truncated

    by_two = sdk.costs.query("30d", ["team", "instance_type"], "1d", filters={"instance_type": "local-cpu"})
    assert by_two.aggregate == ["team", "instance_type"] and by_two.window.step == 86_400
    assert by_two.series and sum(len(b.data) for b in by_two.series) >= 1
    assert by_two.data[0].key == {"team": "research", "instance_type": "local-cpu"}
    assert sdk.costs.query(filters={"instance_type": "g5.xlarge"}).data == []
    with pytest.raises(BadRequestError) as bad:
        sdk.costs.query(window="forever")
    assert bad.value.param == "window"
