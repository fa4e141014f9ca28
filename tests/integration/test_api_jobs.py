"""The job API over HTTP against real Postgres."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key


def test_create_get_and_list(client: Any, key: str) -> None:
    r = client.post("/v1/jobs", json=job_body(), headers=headers(key))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["id"].startswith("job_") and job["object"] == "job"
    assert job["status"] == "queued"
    assert job["base_model"] == "file:///models/tiny-gpt2"
    assert job["hyperparameters"]["max_steps"] == 20
    assert job["metadata"] == {"project": "demo"}
    assert job["progress"]["step"] == 0 and job["cost"]["usd"] == 0
    assert job["error"] is None and job["attempts"] == 0
    assert job["created_at"].endswith("Z")
    got = client.get(f"/v1/jobs/{job['id']}", headers=headers(key)).json()
    assert got["id"] == job["id"]
    listed = client.get("/v1/jobs", headers=headers(key)).json()
    assert listed["object"] == "list" and [j["id"] for j in listed["data"]] == [job["id"]]
    assert listed["has_more"] is False
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=headers(key)).json()
    assert [e["type"] for e in events["data"]] == ["status"]
    assert client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=headers(key)).json()["data"] == []


def test_list_paginates_newest_first_and_filters(client: Any, key: str) -> None:
    ids = []
    for i in range(5):
        body = job_body(name=f"j{i}", metadata={"sweep": "a" if i % 2 else "b"})
        ids.append(client.post("/v1/jobs", json=body, headers=headers(key)).json()["id"])
    seen, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/jobs", params=params, headers=headers(key)).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == list(reversed(ids))
    only_a = client.get("/v1/jobs", params={"metadata[sweep]": "a"}, headers=headers(key)).json()
    assert [j["id"] for j in only_a["data"]] == [ids[3], ids[1]]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=headers(key))
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}, headers=headers(key)).json()
    assert [j["id"] for j in cancelled["data"]] == [ids[0]]


def test_idempotency_key_same_body_same_job_other_body_conflict(client: Any, key: str) -> None:
    h = headers(key, **{"Idempotency-Key": "abc-123"})
    first = client.post("/v1/jobs", json=job_body(), headers=h)
    again = client.post("/v1/jobs", json=job_body(), headers=h)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json=job_body(name="different"), headers=h)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_idempotency_under_a_race_makes_one_job(client: Any, key: str) -> None:
    h = headers(key, **{"Idempotency-Key": "race-1"})
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/jobs", json=job_body(), headers=h), range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(client.get("/v1/jobs", headers=headers(key)).json()["data"]) == 1


def test_team_isolation_on_every_job_endpoint(client: Any, sessions: sessionmaker[Session], key: str) -> None:
    other = make_key(sessions, "vision")
    admin = make_key(sessions, "ops", role="admin")
    job_id = client.post("/v1/jobs", json=job_body(), headers=headers(key)).json()["id"]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("GET", f"/v1/jobs/{job_id}/checkpoints"),
    ]:
        r = client.request(method, path, headers=headers(other))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "job_not_found"
    assert client.get("/v1/jobs", headers=headers(other)).json()["data"] == []
    assert client.get(f"/v1/jobs/{job_id}", headers=headers(key)).json()["status"] == "queued"
    # Admins see every team.
    assert client.get(f"/v1/jobs/{job_id}", headers=headers(admin)).status_code == 200
    assert [j["id"] for j in client.get("/v1/jobs", headers=headers(admin)).json()["data"]] == [job_id]
    # Another team may reuse the same idempotency key without colliding.
    h = {"Idempotency-Key": "shared"}
    a = client.post("/v1/jobs", json=job_body(), headers=headers(key, **h)).json()["id"]
    b = client.post("/v1/jobs", json=job_body(), headers=headers(other, **h)).json()["id"]
    assert a != b


BIG = "x" * (70 * 1024)

BAD_REQUESTS = [
    # (description, method, path, kwargs, status, code)
    ("no key", "GET", "/v1/jobs", {"auth": None}, 401, "unauthenticated"),
    ("wrong scheme", "GET", "/v1/jobs", {"auth": "Basic abc"}, 401, "unauthenticated"),
    ("unknown key", "GET", "/v1/jobs", {"auth": "Bearer ty_nope"}, 401, "invalid_api_key"),
    ("malformed json", "POST", "/v1/jobs", {"content": b"{not json"}, 400, "invalid_json"),
    ("json array", "POST", "/v1/jobs", {"json": [1, 2]}, 400, "invalid_json"),
    ("empty body", "POST", "/v1/jobs", {"content": b""}, 400, "invalid_json"),
    ("missing name", "POST", "/v1/jobs", {"json": job_body(name=None) | {"name": None}}, 422, "invalid_type"),
    ("missing base_model", "POST", "/v1/jobs", {"drop": "base_model"}, 422, "missing_parameter"),
    ("unknown field", "POST", "/v1/jobs", {"json": job_body(colour="red")}, 422, "unknown_parameter"),
    ("wrong type", "POST", "/v1/jobs", {"json": job_body(priority="high")}, 422, "invalid_type"),
    ("bad task", "POST", "/v1/jobs", {"json": job_body(task="translation")}, 422, "invalid_value"),
    (
        "absurd batch",
        "POST",
        "/v1/jobs",
        {"json": job_body(hyperparameters={"batch_size": 10**12})},
        422,
        "invalid_value",
    ),
    (
        "negative lr",
        "POST",
        "/v1/jobs",
        {"json": job_body(hyperparameters={"learning_rate": -1})},
        422,
        "invalid_value",
    ),
    (
        "nan lr",
        "POST",
        "/v1/jobs",
        {"content": json.dumps(job_body(hyperparameters={"learning_rate": float("nan")})).encode()},
        422,
        "invalid_value",
    ),
    (
        "deadline without tz",
        "POST",
        "/v1/jobs",
        {"json": job_body(policy={"objective": "deadline", "deadline": "2030-01-01T00:00:00"})},
        422,
        "invalid_value",
    ),
    (
        "budget objective without cap",
        "POST",
        "/v1/jobs",
        {"json": job_body(policy={"objective": "budget"})},
        422,
        "invalid_value",
    ),
    (
        "too much metadata",
        "POST",
        "/v1/jobs",
        {"json": job_body(metadata={f"k{i}": "v" for i in range(17)})},
        422,
        "invalid_value",
    ),
    ("oversized body", "POST", "/v1/jobs", {"json": job_body(name=BIG)}, 413, "payload_too_large"),
    ("huge idempotency key", "POST", "/v1/jobs", {"idem": "k" * 300}, 400, "invalid_request"),
    ("unknown job", "GET", "/v1/jobs/job_missing", {}, 404, "job_not_found"),
    ("bad status filter", "GET", "/v1/jobs?status=exploded", {}, 400, "invalid_request"),
    ("limit too big", "GET", "/v1/jobs?limit=100000", {}, 422, "invalid_value"),
    ("limit not a number", "GET", "/v1/jobs?limit=ten", {}, 422, "invalid_type"),
    ("bad cursor", "GET", "/v1/jobs?after=job_nope", {}, 400, "invalid_request"),
    ("unknown route", "GET", "/v1/nothing", {}, 404, "not_found"),
    ("wrong method", "DELETE", "/v1/jobs", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [row[1:] for row in BAD_REQUESTS],
    ids=[row[0] for row in BAD_REQUESTS],
)
def test_bad_input_gets_a_clear_4xx(
    client: Any, key: str, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    kwargs = dict(kwargs)
    h = headers(key)
    if "auth" in kwargs:
        auth = kwargs.pop("auth")
        h = {"Authorization": auth} if auth else {}
    if "drop" in kwargs:
        body = job_body()
        del body[kwargs.pop("drop")]
        kwargs["json"] = body
    if "idem" in kwargs:
        h["Idempotency-Key"] = kwargs.pop("idem")
        kwargs["json"] = job_body()
    if "content" in kwargs:
        h["Content-Type"] = "application/json"
    r = client.request(method, path, headers=h, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "param"} and error["message"]


def test_validation_error_names_the_parameter(client: Any, key: str) -> None:
    r = client.post("/v1/jobs", json=job_body(hyperparameters={"batch_size": 0}), headers=headers(key))
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "hyperparameters.batch_size"


def test_healthz_and_metrics(client: Any, sessions: sessionmaker[Session], key: str) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    client.post("/v1/jobs", json=job_body(), headers=headers(key))
    # Metrics name every team: an admin key reads them, nobody else.
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=headers(key)).status_code == 403
    text = client.get("/metrics", headers=headers(make_key(sessions, "ops", role="admin"))).text
    assert 'trainyard_jobs{state="queued"} 1.0' in text
    assert "trainyard_queue_depth" in text
    assert "trainyard_claim_latency_seconds" in text
    assert (
        'trainyard_http_request_duration_seconds_count{method="POST",route="/v1/jobs",status="201"} 1.0'
        in text
    )
