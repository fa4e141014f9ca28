"""The Python SDK against the real app (and real Postgres), a live server, and fake transports."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from factories import job_body, make_key
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import queue
from trainyard.platform.models import Checkpoint as CheckpointRow
from trainyard.sdk import (
    APIConnectionError,
    APITimeoutError,
    AsyncTrainyard,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    Job,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    Trainyard,
    TrainyardError,
    UnprocessableEntityError,
    WaitTimeoutError,
    __version__,
    load_credentials,
    save_credentials,
)
from trainyard.sdk._base import retry_after_seconds

BASE = "http://testserver"


class AppTransport(httpx.BaseTransport):
    """Forwards httpx requests to the app through Starlette's TestClient.

    The TestClient is built on httpx2, not httpx, so it cannot be handed to the SDK as its
    http_client directly; this adapter keeps the SDK on plain httpx while the app, its lifespan
    and its database stay real. `seen` keeps every request, for assertions on headers.
    """

    def __init__(self, test_client: Any) -> None:
        self.test_client = test_client
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        drop = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in drop]
        r = self.test_client.request(
            request.method, str(request.url), headers=headers, content=request.read()
        )
        out = [
            (k, v)
            for k, v in r.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length")
        ]
        return httpx.Response(r.status_code, headers=out, content=r.content, request=request)


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


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never read the developer's own credentials or environment.
    monkeypatch.delenv("TRAINYARD_BASE_URL", raising=False)
    monkeypatch.delenv("TRAINYARD_API_KEY", raising=False)
    monkeypatch.setenv("TRAINYARD_CREDENTIALS", str(tmp_path / "no-credentials.json"))


@pytest.fixture
def key(sessions: sessionmaker[Session]) -> str:
    return make_key(sessions, "research")


@pytest.fixture
def transport(client: Any) -> AppTransport:
    return AppTransport(client)


def make_sdk(transport: httpx.BaseTransport, key: str | None, **kwargs: Any) -> Trainyard:
    sdk = Trainyard(base_url=BASE, api_key=key, http_client=httpx.Client(transport=transport), **kwargs)
    sdk._sleep = lambda _seconds: None  # retries and polls without real waiting
    return sdk


@pytest.fixture
def sdk(transport: AppTransport, key: str) -> Trainyard:
    return make_sdk(transport, key)


def run_job(
    sessions: sessionmaker[Session],
    outcome: str = "succeeded",
    *,
    progress: dict[str, Any] | None = None,
    checkpoints: tuple[int, ...] = (),
) -> str:
    """Play a worker: claim the oldest queued job, report progress and checkpoints, finish it."""
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="test-worker")
    with sessions() as s:
        if progress:
            queue.heartbeat(s, claim.attempt_id, progress=progress)
    with sessions.begin() as s:
        for step in checkpoints:
            s.add(
                CheckpointRow(
                    job_id=claim.job_id,
                    attempt_id=claim.attempt_id,
                    step=step,
                    uri=f"file:///ckpt/{step}",
                    metrics={"loss": 1.0 / step},
                )
            )
    with sessions() as s:
        queue.finish(
            s,
            claim.attempt_id,
            outcome,
            error_code=None if outcome == "succeeded" else "user_error",
            error_message=None if outcome == "succeeded" else "bad data",
            retryable=False,
        )
    return claim.job_id


# ------------------------------------------------------------------------------------------
# Packaging


def test_sdk_imports_without_the_server() -> None:
    code = (
        "import sys, trainyard.sdk\n"
        "banned = ('fastapi', 'starlette', 'sqlalchemy', 'psycopg', 'ray', 'torch', 'boto3', 'uvicorn',"
        " 'trainyard.platform', 'trainyard.api', 'trainyard.workers', 'trainyard.settings')\n"
        "bad = sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in banned))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "", f"trainyard.sdk pulled in: {out.stdout}"


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


def _mock(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Trainyard:
    return make_sdk(httpx.MockTransport(handler), "ty_test", **kwargs)


def _error(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": f"{code}!", "param": None}}, headers=headers
    )


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "permission_denied", PermissionDeniedError),
        (429, "rate_limited", RateLimitError),
        (500, "internal_error", InternalServerError),
        (502, "bad_gateway", InternalServerError),
        (418, "rate_limited", RateLimitError),  # an odd status: the code decides
    ],
)
def test_status_and_code_map_to_classes(status: int, code: str, cls: type[TrainyardError]) -> None:
    sdk = _mock(lambda _r: _error(status, code), max_retries=0)
    with pytest.raises(cls) as info:
        sdk.jobs.get("job_1")
    assert info.value.status_code == status and info.value.code == code and info.value.message == f"{code}!"


def test_non_json_error_body_keeps_the_text() -> None:
    sdk = _mock(lambda _r: httpx.Response(502, text="<html>upstream down</html>"), max_retries=0)
    with pytest.raises(InternalServerError, match="upstream down"):
        sdk.jobs.get("job_1")


# ------------------------------------------------------------------------------------------
# Retries


def test_retry_after_503_makes_exactly_one_job(
    transport: AppTransport, key: str, sessions: sessionmaker[Session]
) -> None:
    flaky = FlakyTransport(transport, [_error(503, "unavailable")])
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
    flaky = FlakyTransport(transport, [_error(429, "rate_limited", **{"Retry-After": "3"})])
    sdk = make_sdk(flaky, key)
    delays: list[float] = []
    sdk._sleep = delays.append
    sdk.jobs.list_page()
    assert delays == [3.0] and len(flaky.seen) == 2


def test_retry_after_parsing() -> None:
    def resp(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after_seconds(resp("1.5")) == 1.5
    assert retry_after_seconds(resp("100000")) == 60.0  # clamped
    assert retry_after_seconds(resp("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past
    assert retry_after_seconds(resp("soon")) is None
    assert retry_after_seconds(httpx.Response(429)) is None


def test_backoff_grows_with_jitter_then_gives_up() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _error(500, "internal_error")

    sdk = _mock(handler, max_retries=3)
    delays: list[float] = []
    sdk._sleep = delays.append
    with pytest.raises(InternalServerError):
        sdk.jobs.get("job_1")
    assert len(calls) == 4 and len(delays) == 3
    for n, delay in enumerate(delays):
        assert 0.5 * 2**n * 0.75 <= delay <= 0.5 * 2**n


def test_no_retry_on_other_4xx() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _error(404, "job_not_found")

    with pytest.raises(NotFoundError):
        _mock(handler).jobs.get("job_1")
    assert len(calls) == 1


def test_connection_errors_retry_then_raise() -> None:
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(APIConnectionError, match="connection refused"):
        _mock(refuse, max_retries=2).jobs.list_page()
    assert len(calls) == 3

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(APITimeoutError):
        _mock(slow, max_retries=1).jobs.list_page()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_a_connection_error() -> None:
    sdk = Trainyard(base_url=f"http://127.0.0.1:{_free_port()}", api_key="ty_x", max_retries=1)
    sdk._sleep = lambda _s: None
    with sdk, pytest.raises(APIConnectionError) as info:
        sdk.jobs.list_page()
    assert info.value.status_code is None and not isinstance(info.value, APITimeoutError)


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


def test_async_retries_with_the_same_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return _error(503, "unavailable", **{"Retry-After": "2"})
        return httpx.Response(201, json={"id": "job_1", "status": "queued"})

    async def scenario() -> list[float]:
        delays: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            delays.append(seconds)

        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        sdk = AsyncTrainyard(base_url=BASE, api_key="ty_x", http_client=http)
        sdk._sleep = fake_sleep
        job = await sdk.jobs.create(name="n")
        assert job.id == "job_1"
        await http.aclose()
        return delays

    assert asyncio.run(scenario()) == [2.0]
    assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]


# ------------------------------------------------------------------------------------------
# A live server over real HTTP


@pytest.fixture
def live_server(settings: Any, sessions: sessionmaker[Session]) -> Iterator[str]:
    import uvicorn

    from trainyard.api.app import create_app

    port = _free_port()
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
        thread.join(timeout=10)


def test_against_a_live_server(live_server: str, key: str) -> None:
    with Trainyard(base_url=live_server, api_key=key) as sdk:
        job = sdk.jobs.create(**job_body())
        assert sdk.jobs.get(job.id).status == "queued"
        assert [j.id for j in sdk.jobs.list(limit=1)] == [job.id]
        assert sdk.jobs.cancel(job.id).status == "cancelled"
        with pytest.raises(NotFoundError):
            sdk.jobs.get("job_missing")


# ------------------------------------------------------------------------------------------
# Configuration and credentials


def test_credentials_round_trip_private_file(tmp_path: Path) -> None:
    path = save_credentials("http://127.0.0.1:9000", "ty_secret", tmp_path / "cfg" / "credentials.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"base_url": "http://127.0.0.1:9000", "api_key": "ty_secret"}
    creds = load_credentials(path)
    assert creds is not None and creds.api_key == "ty_secret" and "ty_secret" not in repr(creds)
    assert load_credentials(tmp_path / "absent.json") is None
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(TrainyardError, match="not valid JSON"):
        load_credentials(tmp_path / "broken.json")


def _capture(sdk: Trainyard) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    sdk._http = httpx.Client(transport=httpx.MockTransport(handler))
    return seen


def test_configuration_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    monkeypatch.setenv("TRAINYARD_CREDENTIALS", str(creds))
    assert Trainyard().base_url == "http://127.0.0.1:8000" and Trainyard().api_key is None

    save_credentials("http://127.0.0.1:9000/", "ty_saved")
    saved = Trainyard()
    assert saved.base_url == "http://127.0.0.1:9000" and saved.api_key == "ty_saved"
    seen = _capture(saved)
    list(saved.jobs.list())
    assert str(seen[0].url) == "http://127.0.0.1:9000/v1/jobs"
    assert seen[0].headers["authorization"] == "Bearer ty_saved"

    # The saved key belongs to the saved server: another server never receives it.
    other = Trainyard(base_url="https://prod.example")
    assert other.base_url == "https://prod.example" and other.api_key is None

    monkeypatch.setenv("TRAINYARD_BASE_URL", "http://env:1")
    monkeypatch.setenv("TRAINYARD_API_KEY", "ty_env")
    env = Trainyard()
    assert (env.base_url, env.api_key) == ("http://env:1", "ty_env")
    explicit = Trainyard("http://arg:2", "ty_arg")
    assert (explicit.base_url, explicit.api_key) == ("http://arg:2", "ty_arg")

    timeouts = Trainyard().timeout
    assert timeouts.connect == 5.0 and timeouts.read == 60.0
    with pytest.raises(ValueError):
        Trainyard(max_retries=-1)


# ------------------------------------------------------------------------------------------
# Estimates, costs, instance types


def mount_costs(app: Any) -> None:
    """Mount the cost routes when the app does not (yet) include them itself."""
    from trainyard.api import routes_costs

    if not any(getattr(r, "path", None) == "/v1/costs" for r in app.routes):
        app.include_router(routes_costs.router)


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


def test_costs(sdk: Trainyard, client: Any, sessions: sessionmaker[Session]) -> None:
    mount_costs(client.app)
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


def test_request_shapes_and_lenient_parsing_over_a_fake_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/estimates":
            option = {"instance_type": "g5.xlarge", "spot": True, "gpu_generation": "ampere"}
            return httpx.Response(
                200, json={"chosen": {"instance_type": "g5.xlarge", "spot": True}, "options": [option]}
            )
        if request.url.path == "/v1/costs":
            return httpx.Response(
                200,
                json={
                    "window": {"start": "not a time", "end": "2026-01-02T00:00:00Z"},
                    "data": [{"key": {"team": "a"}, "cost_usd": 2.0, "carbon_kg": 0.3}],
                },
            )
        return httpx.Response(200, json=[{"name": "cpu-small", "kind": "cpu"}])

    sdk = _mock(handler)
    est = sdk.estimates.create(job_body(), policy={"objective": "fastest"})
    sent = json.loads(seen[-1].content)
    assert (
        seen[-1].method == "POST"
        and sent["name"] == "tiny-gpt2"
        and sent["policy"] == {"objective": "fastest"}
    )
    assert est.is_chosen(est.options[0]) and est.options[0].to_dict()["gpu_generation"] == "ampere"

    report = sdk.costs.query("30d", ["team", "user"], "1d", team="a", filters={"model": "gpt2"}, limit=5)
    assert dict(seen[-1].url.params) == {
        "window": "30d",
        "aggregate": "team,user",
        "step": "1d",
        "team": "a",
        "limit": "5",
        "filter[model]": "gpt2",
    }
    assert report.window.start == "not a time" and report.data[0].to_dict()["carbon_kg"] == 0.3
    sdk.costs.query()
    assert dict(seen[-1].url.params) == {"window": "7d", "aggregate": "team"}

    # A bare array is accepted as well as a list object.
    assert [t.name for t in sdk.instance_types.list()] == ["cpu-small"]
    assert seen[-1].method == "GET" and seen[-1].url.path == "/v1/instance-types"


def test_models_keep_unknown_fields() -> None:
    job = Job.model_validate({"id": "job_1", "status": "queued", "queue_position": 3, "progress": {"eta": 9}})
    assert job.to_dict()["queue_position"] == 3 and job.progress.to_dict()["eta"] == 9
    assert not job.is_terminal and job.cost.usd == 0.0
