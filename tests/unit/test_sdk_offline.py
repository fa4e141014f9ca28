"""The Python SDK without a server: fake transports, retries and backoff, error classes,
configuration and credentials, lenient models. integration/test_sdk.py drives it against the app."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import BASE, error_response, free_port, job_body, make_sdk

from trainyard.sdk import (
    APIConnectionError,
    APITimeoutError,
    AsyncTrainyard,
    InternalServerError,
    Job,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Trainyard,
    TrainyardError,
    load_credentials,
    save_credentials,
)
from trainyard.sdk._retries import retry_after_seconds

pytestmark = pytest.mark.usefixtures("isolated_config")


def _mock(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Trainyard:
    return make_sdk(httpx.MockTransport(handler), "ty_test", **kwargs)


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
# Errors


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
    sdk = _mock(lambda _r: error_response(status, code), max_retries=0)
    with pytest.raises(cls) as info:
        sdk.jobs.get("job_1")
    assert info.value.status_code == status and info.value.code == code and info.value.message == f"{code}!"


def test_non_json_error_body_keeps_the_text() -> None:
    sdk = _mock(lambda _r: httpx.Response(502, text="<html>upstream down</html>"), max_retries=0)
    with pytest.raises(InternalServerError, match="upstream down"):
        sdk.jobs.get("job_1")


# ------------------------------------------------------------------------------------------
# Retries


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
        return error_response(500, "internal_error")

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
        return error_response(404, "job_not_found")

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


def test_unreachable_server_is_a_connection_error() -> None:
    sdk = Trainyard(base_url=f"http://127.0.0.1:{free_port()}", api_key="ty_x", max_retries=1)
    sdk._sleep = lambda _s: None
    with sdk, pytest.raises(APIConnectionError) as info:
        sdk.jobs.list_page()
    assert info.value.status_code is None and not isinstance(info.value, APITimeoutError)


# ------------------------------------------------------------------------------------------
# Async client


def test_async_retries_with_the_same_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return error_response(503, "unavailable", **{"Retry-After": "2"})
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
# Estimates, costs, instance types, models


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
