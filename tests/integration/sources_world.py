"""The world the source-policy tests run in, and the instruments that show nothing was read.

Two teams and an admin over an S3 store; the app reaches the S3 test server only through a
counting proxy (every HTTP request it forwards is logged); an audit hook (`sys.addaudithook`)
logs, and refuses, every `open` in this process of a watched path; the file planted outside the
local root is a FIFO, so a read that slipped through would not even return. Test modules import
the `world` fixture (`world_fixture`) from here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support import headers, make_key

from trainyard.api.app import create_app
from trainyard.platform.models import Job

FIELDS = ("base_model", "training_file", "validation_file")
ENDPOINTS = ("/v1/jobs", "/v1/estimates", "/v1/fine_tuning/jobs")
RECORDS = b"".join(json.dumps({"text": f"line {i} of the team's data"}).encode() + b"\n" for i in range(20))


# ----------------------------------------------------------------------------- what is measured


class CountingProxy:
    """A TCP proxy in front of the S3 test server that logs the request line of every HTTP
    request passing through it (keep-alive connections carry several)."""

    _LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.[01]\r\n")

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, log: bool) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if log:
                    pending += data
                    end = 0
                    for match in self._LINE.finditer(pending):
                        with self._lock:
                            self.requests.append((match[1].decode(), match[2].decode()))
                        end = match.end()
                    pending = pending[end:][-8192:]
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    def close(self) -> None:
        self._server.close()


class OpenAudit:
    """Logs (and refuses) every open, listing or scan of a watched path in this process. An audit
    hook cannot be removed, so one is installed per process and watches what the test arms."""

    watched: tuple[str, ...] = ()
    seen: list[str] = []
    _installed = False

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            sys.addaudithook(cls._hook)
            cls._installed = True

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if not cls.watched or event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        target = args[0]
        if isinstance(target, bytes):
            target = os.fsdecode(target)
        if not isinstance(target, str):
            return
        real = os.path.realpath(target)
        if any(real == w or real.startswith(w + "/") for w in cls.watched):
            cls.seen.append(f"{event} {target}")
            # Refused here, so a slip shows as a failed request instead of a blocked FIFO read.
            raise PermissionError(f"test audit: {event} of {target} refused")


# ----------------------------------------------------------------------------------- the world


class World:
    """Two teams and an admin over an S3 store behind the proxy, other buckets, a local root."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


@pytest.fixture(name="world")
def world_fixture(
    sessions: sessionmaker[Session],
    settings: Any,
    s3_server: str,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    proxy = CountingProxy(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    suffix = uuid.uuid4().hex[:10]
    other, granted = f"other-{suffix}", f"granted-{suffix}"
    for bucket in (other, granted):
        s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=other, Key="secret.jsonl", Body=RECORDS)
    s3_client.put_object(Bucket=granted, Key="datasets/ok.jsonl", Body=RECORDS)
    s3_client.put_object(Bucket=granted, Key="datasets-other/x.jsonl", Body=RECORDS)
    s3_client.put_object(Bucket=granted, Key="private/x.jsonl", Body=RECORDS)
    store_bucket, store_prefix = s3_bucket.removeprefix("s3://").split("/", 1)

    # A local root with a real file and model, and links out of it to a planted FIFO and dir.
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.mkfifo(outside / "planted")
    (outside / "dir").mkdir()
    (root / "ok.jsonl").write_bytes(RECORDS)
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"n_embd": 8}')
    (root / "link").symlink_to(outside / "planted")
    (root / "dirlink").symlink_to(outside)
    (root / "badmodel").mkdir()
    (root / "badmodel" / "config.json").symlink_to(outside / "planted")

    local = settings.model_copy(
        update={
            "storage_uri": s3_bucket,
            "local_roots": [str(root)],
            "shared_sources": [],
            "allow_local_paths": True,
        }
    )
    client = TestClient(create_app(local), raise_server_exceptions=False)
    client.__enter__()
    keys = {
        "mine": make_key(sessions, "vision"),
        "theirs": make_key(sessions, "research"),
        "admin": make_key(sessions, "ops", role="admin"),
    }

    def upload(key: str) -> dict[str, Any]:
        files = {"file": ("train.jsonl", io.BytesIO(RECORDS), "application/jsonl")}
        r = client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=headers(key))
        assert r.status_code == 200, r.text
        return dict(r.json())

    def job(key: str, file_id: str) -> str:
        body = {"name": "seed", "base_model": "org/tiny", "training_file": file_id, **EXTRA}
        r = client.post("/v1/jobs", json=body, headers=headers(key))
        assert r.status_code == 201, r.text
        job_id = str(r.json()["id"])
        for key_ in ("final/config.json", "checkpoints/run/checkpoint_000000004/config.json"):
            s3_client.put_object(
                Bucket=store_bucket, Key=f"{store_prefix}/jobs/{job_id}/{key_}", Body=b'{"n_embd": 8}'
            )
        return job_id

    mine_file, theirs_file = upload(keys["mine"]), upload(keys["theirs"])
    w = World(
        client=client,
        settings=local,
        proxy=proxy,
        keys=keys,
        other=other,
        granted=granted,
        store=s3_bucket,
        store_bucket=store_bucket,
        root=root,
        outside=outside,
        mine_file=mine_file["id"],
        theirs_file=theirs_file["id"],
        theirs_file_uri=f"{s3_bucket}/files/{theirs_file['id']}/data.jsonl",
        mine_file_uri=f"{s3_bucket}/files/{mine_file['id']}/data.jsonl",
        mine_job=job(keys["mine"], mine_file["id"]),
        theirs_job=job(keys["theirs"], theirs_file["id"]),
    )
    assert any(method == "PUT" for method, _ in proxy.take()), "the app's S3 traffic passes the proxy"
    r = client.put(
        "/v1/teams/vision/grants", json={"uri": f"s3://{granted}/datasets"}, headers=headers(keys["admin"])
    )
    assert r.status_code == 200, r.text
    OpenAudit.install()
    try:
        yield w
    finally:
        OpenAudit.watched = ()
        client.__exit__(None, None, None)
        proxy.close()


# What the table names outside the test's directories; nothing in a request has a reason to open them.
PLANTED_ELSEWHERE = tuple(
    os.path.realpath(p)
    for p in ("/etc/passwd", "/etc/shadow", "/proc/self/environ", "/dev/zero", "~/.ssh", "~root/.bashrc")
)
EXTRA: dict[str, Any] = {"model_parameters": 2_000_000, "instance_type": "local-cpu"}


def body_for(endpoint: str, field: str, value: str, w: World) -> dict[str, Any]:
    sources = {"base_model": "org/tiny", "training_file": w.mine_file, "validation_file": None}
    sources[field] = value
    if endpoint == "/v1/fine_tuning/jobs":
        body = {"model": sources["base_model"], "training_file": sources["training_file"], **EXTRA}
    else:
        body = {"name": "hostile", **sources, **EXTRA}
    if sources["validation_file"] is not None:
        body["validation_file"] = sources["validation_file"]
    return body


def verdict_of(r: Any, endpoint: str, field: str) -> str | None:
    """'refused' (source_not_allowed) or 'other 4xx' for a clear refusal naming the field; None
    for anything else."""
    names = {field, "model"} if endpoint == "/v1/fine_tuning/jobs" and field == "base_model" else {field}
    error = (
        r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
    )
    if not isinstance(error, dict) or error.get("param") not in names:
        return None
    if r.status_code == 400 and error.get("code") == "source_not_allowed":
        return "refused"
    if r.status_code in (404, 422):  # the spec refuses control characters; an unknown file id
        return "other 4xx"
    if r.status_code == 400 and error.get("code") == "invalid_text":  # a NUL, refused at the boundary
        return "other 4xx"
    return None


def count_jobs(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)
