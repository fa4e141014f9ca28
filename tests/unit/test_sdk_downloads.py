"""Downloads in the SDK without a server: a broken transfer is retried and leaves no partial
file, and a path the server names cannot write outside the target directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import make_sdk

from trainyard.sdk import NotFoundError, TrainyardError
from trainyard.sdk._download import local_target

pytestmark = pytest.mark.usefixtures("isolated_config")

JOB = "job_0123456789abcdef01234567"
CONFIG = b'{"model_type": "gpt2"}' * 100


class Broken(httpx.SyncByteStream):
    """A body that breaks after its first chunk, as a connection dropped mid-transfer does."""

    def __iter__(self) -> Iterator[bytes]:
        yield CONFIG[:100]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def _listing(*paths: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "object": "list",
            "data": [{"path": p, "bytes": len(CONFIG)} for p in paths],
            "has_more": False,
        },
    )


def test_a_broken_transfer_is_retried_and_leaves_no_partial_file(tmp_path: Path) -> None:
    tries: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/model"):
            return _listing("config.json", "sub dir/weights.bin")
        tries.append(request.url.raw_path.decode())
        if len(tries) == 1:
            return httpx.Response(200, stream=Broken())
        return httpx.Response(200, content=CONFIG)

    sdk = make_sdk(httpx.MockTransport(handler), "ty_test")
    target = sdk.jobs.download(JOB, tmp_path / "model")
    assert (target / "config.json").read_bytes() == CONFIG
    assert (target / "sub dir" / "weights.bin").read_bytes() == CONFIG
    assert tries[:2] == [f"/v1/jobs/{JOB}/model/config.json"] * 2, "the broken one was fetched again"
    assert tries[2] == f"/v1/jobs/{JOB}/model/sub%20dir/weights.bin"
    assert sorted(p.name for p in (target).rglob("*")) == ["config.json", "sub dir", "weights.bin"]


def test_a_transfer_that_keeps_breaking_raises_and_writes_nothing(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/model"):
            return _listing("config.json")
        return httpx.Response(200, stream=Broken())

    sdk = make_sdk(httpx.MockTransport(handler), "ty_test", max_retries=1)
    with pytest.raises(TrainyardError):
        sdk.jobs.download(JOB, tmp_path / "model")
    assert not (tmp_path / "model").exists() or not list((tmp_path / "model").rglob("*"))


def test_a_missing_model_is_not_found(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "final_model_not_found", "message": "no model", "param": "job_id"}}
        return httpx.Response(404, json=body)

    sdk = make_sdk(httpx.MockTransport(handler), "ty_test")
    with pytest.raises(NotFoundError) as missing:
        sdk.jobs.download(JOB, tmp_path / "model")
    assert missing.value.code == "final_model_not_found" and not (tmp_path / "model").exists()


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "", "c:/x", "a\\..\\b"])
def test_a_server_cannot_name_a_path_outside_the_target(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError):
        local_target(tmp_path, path)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/model"):
            return _listing(path)
        return httpx.Response(200, content=CONFIG)

    sdk = make_sdk(httpx.MockTransport(handler), "ty_test")
    with pytest.raises(ValueError):
        sdk.jobs.download(JOB, tmp_path / "model")
    assert not any(p.is_file() for p in tmp_path.parent.rglob("escape"))


def test_a_short_file_is_an_error(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/model"):
            return _listing("config.json")
        return httpx.Response(200, content=CONFIG[:10])

    sdk = make_sdk(httpx.MockTransport(handler), "ty_test")
    with pytest.raises(TrainyardError, match="expected"):
        sdk.jobs.download(JOB, tmp_path / "model")
