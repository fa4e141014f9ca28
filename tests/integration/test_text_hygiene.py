"""Hostile text at the boundary: a NUL or an unpaired surrogate anywhere a request carries text
(query, path, header, JSON body, uploaded JSONL) is a 400 `invalid_text` naming the parameter;
over-long values are a 4xx; every answer is in the envelope, and a keep-alive connection to a
live server stays usable after each of them.
"""

from __future__ import annotations

import io
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import headers, job_body


@pytest.fixture
def ids(client: Any, key: str) -> dict[str, str]:
    job = client.post("/v1/jobs", json=job_body(), headers=headers(key))
    assert job.status_code == 201, job.text
    return {"job": job.json()["id"]}


def _raw_json(value: Any) -> str:
    # json.dumps escapes a lone surrogate as \\ud800, as a hostile client would send it.
    return json.dumps(value)


# (what, method, path, JSON body or None, param named); the Idempotency-Key case sends it in the header
QUERY_AND_PATH = [
    ("after", "GET", "/v1/jobs?after=%00", None, "after"),
    ("status", "GET", "/v1/jobs?status=queued%00", None, "status"),
    ("metadata value", "GET", "/v1/jobs?metadata[k]=%00", None, "metadata[k]"),
    ("metadata key", "GET", "/v1/jobs?metadata[a%00]=v", None, "metadata[a\\u0000]"),
    ("filter value", "GET", "/v1/costs?filter[model]=x%00", None, "filter[model]"),
    ("team", "GET", "/v1/queue?team=%00", None, "team"),
    ("job id", "GET", "/v1/jobs/job_%00", None, "job_id"),
    ("job id, events", "GET", "/v1/jobs/%00/events", None, "job_id"),
    ("checkpoint cursor", "GET", "/v1/jobs/{job}/checkpoints?after=%00", None, "after"),
    ("file id", "GET", "/v1/files/file-%00", None, "file_id"),
    ("file list cursor", "GET", "/v1/files?after=%00", None, "after"),
    ("file purpose", "GET", "/v1/files?purpose=%00", None, "purpose"),
    ("ft job id", "POST", "/v1/fine_tuning/jobs/%00/cancel", None, "job_id"),
    ("ft list cursor", "GET", "/v1/fine_tuning/jobs?after=%00", None, "after"),
    ("team name", "PUT", "/v1/teams/a%00/budget", {"monthly_budget_usd": 1}, "name"),
    ("Idempotency-Key", "POST", "/v1/jobs", job_body(), "Idempotency-Key"),
]
BODIES = [
    ("name NUL", "/v1/jobs", job_body(name="a\x00b"), "name"),
    ("name surrogate", "/v1/jobs", job_body(name="a\ud800b"), "name"),
    ("metadata key NUL", "/v1/jobs", job_body(metadata={"k\x00": "v"}), "metadata"),
    ("metadata key surrogate", "/v1/jobs", job_body(metadata={"k\udc00": "v"}), "metadata"),
    ("metadata value NUL", "/v1/jobs", job_body(metadata={"k": "v\x00"}), "metadata.k"),
    ("base_model NUL", "/v1/estimates", job_body(base_model="gpt2\x00"), "base_model"),
    (
        "nested",
        "/v1/jobs",
        job_body(policy={"allowed_accelerators": ["A10G", "\ud83d"]}),
        "policy.allowed_accelerators.1",
    ),
    (
        "ft metadata",
        "/v1/fine_tuning/jobs",
        {"model": "gpt2", "training_file": "s3://d/t.jsonl", "metadata": {"a": "\x00"}},
        "metadata.a",
    ),
    (
        "ft suffix",
        "/v1/fine_tuning/jobs",
        {"model": "gpt2", "training_file": "x", "suffix": "\udfff"},
        "suffix",
    ),
    (
        "ft hyperparameter key",
        "/v1/fine_tuning/jobs",
        {"model": "m", "training_file": "x", "hyperparameters": {"\x00": 1}},
        "hyperparameters",
    ),
]


def _assert_invalid_text(r: Any, param: str, openai: bool = False) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_text" and error["param"] == param, error
    assert set(error) == {"code", "message", "param"} | ({"type"} if openai else set())
    assert "\x00" not in r.text


@pytest.mark.parametrize(
    ("what", "method", "path", "body", "param"), QUERY_AND_PATH, ids=[c[0] for c in QUERY_AND_PATH]
)
def test_query_path_and_header_text_is_refused(
    client: Any, key: str, ids: dict[str, str], what: str, method: str, path: str, body: Any, param: str
) -> None:
    extra = {"Idempotency-Key": "k\x00"} if what == "Idempotency-Key" else {}
    r = client.request(method, path.format(**ids), json=body, headers=headers(key, **extra))
    _assert_invalid_text(r, param, openai=path.startswith(("/v1/files", "/v1/fine_tuning")))


@pytest.mark.parametrize(("what", "path", "body", "param"), BODIES, ids=[c[0] for c in BODIES])
def test_json_text_is_refused(client: Any, key: str, what: str, path: str, body: Any, param: str) -> None:
    r = client.post(
        path, content=_raw_json(body), headers=headers(key, **{"Content-Type": "application/json"})
    )
    _assert_invalid_text(r, param, openai=path.startswith("/v1/fine_tuning"))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"text": "a\\u0000b"}', "text holds a NUL"),
        (b'{"prompt": "\\ud800", "completion": "x"}', "prompt holds an unpaired surrogate"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\\u0000"}]}',
            "messages.1.content holds a NUL",
        ),
        (b'{"text": "x", "k\\u0000": 1}', "has a key that holds a NUL"),
    ],
)
def test_uploaded_jsonl_text_is_refused(client: Any, key: str, line: bytes, problem: str) -> None:
    good = b'{"text": "fine"}\n'
    r = client.post(
        "/v1/files",
        files={"file": ("t.jsonl", io.BytesIO(good + line + b"\n"))},
        data={"purpose": "fine-tune"},
        headers=headers(key),
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_file_format" and error["param"] == "file"
    assert "line 2" in error["message"] and problem in error["message"], error


def test_a_nul_in_an_upload_filename_is_refused(client: Any, key: str) -> None:
    # Built by hand: clients percent-encode such a name; a hostile one sends the byte.
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t\x00.jsonl"\r\n'
        f'Content-Type: application/octet-stream\r\n\r\n{{"text": "x"}}\n\r\n--{boundary}--\r\n'
    ).encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    r = client.post("/v1/files", content=body, headers=headers(key, **{"Content-Type": content_type}))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_text" and r.json()["error"]["param"] == "file.filename"


LONG = [
    ("base_model, one 256-byte name", "/v1/jobs", job_body(base_model="a" * 256, model_parameters=None)),
    (
        "base_model, a 300-byte path component",
        "/v1/jobs",
        job_body(base_model="x/" + "a" * 300, model_parameters=None),
    ),
    ("base_model, hinted", "/v1/jobs", job_body(base_model="a" * 600)),
    ("estimate", "/v1/estimates", job_body(base_model="b" * 1000, model_parameters=None)),
    ("ft model", "/v1/fine_tuning/jobs", {"model": "m" * 256, "training_file": "s3://d/t.jsonl"}),
    ("ft model 1024", "/v1/fine_tuning/jobs", {"model": "m" * 1024, "training_file": "t" * 1024}),
    ("ft model too long", "/v1/fine_tuning/jobs", {"model": "m" * 1025, "training_file": "x"}),
    ("training_file component", "/v1/estimates", job_body(training_file="s" * 400, dataset_tokens=None)),
    ("name 201", "/v1/jobs", job_body(name="n" * 201)),
]


@pytest.mark.parametrize(("what", "path", "body"), LONG, ids=[c[0] for c in LONG])
def test_long_values_are_a_4xx(client: Any, key: str, what: str, path: str, body: Any) -> None:
    r = client.post(path, json=body, headers=headers(key))
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) >= {"code", "message", "param"}, r.text


# ------------------------------------------------------------------------- over one live connection


def _exchange(sock: socket.socket, buf: bytearray, request: bytes) -> tuple[int, bytes, bytes]:
    """Send one request, read one response (by Content-Length); returns status, headers, body."""
    sock.sendall(request)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = next(
        int(v)
        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
        if k.lower() == b"content-length"
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    buf[:] = rest[length:]
    return int(head.split(b" ")[1]), head, rest[:length]


def test_hostile_requests_keep_the_connection_usable(live_server: str, key: str) -> None:
    live = urlsplit(live_server)
    auth = f"Authorization: Bearer {key}\r\n".encode()
    big = json.dumps(job_body(base_model="a" * 256, model_parameters=None))
    hostile = [
        b"GET /v1/jobs?after=%00 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /v1/jobs/%00 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /v1/files/%00 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /v1/costs?filter[model]=%00 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
    ]
    for body in (_raw_json(job_body(name="\ud800")), _raw_json(job_body(metadata={"\x00": "v"})), big):
        data = body.encode()
        hostile.append(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + auth
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
    ok = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
    with socket.create_connection((live.hostname, live.port), timeout=10) as sock:
        buf = bytearray()
        for request in hostile:
            status, head, body = _exchange(sock, buf, request)
            assert 400 <= status < 500, body
            assert b"connection: close" not in head.lower()
            assert set(json.loads(body)["error"]) >= {"code", "message", "param"}
            # The same connection answers the next request.
            status, _, body = _exchange(sock, buf, ok)
            assert status == 200, body
