"""Every route of the app, from its own route list, against every kind of caller: a member of the
team that owns the objects (own), a member of another team (other), an admin, no key and a bad
key. `ROUTES` says what each route is; a route added later without an entry fails the test, as
does an entry whose route is gone.

What each kind of route must answer:

* public: every caller gets a 2xx, and nothing that names a team;
* owned (the request names team A's job, file or team): own and admin a 2xx, other a 404, as
  another team's job is today;
* listing: every key a 2xx; other's answer holds none of A's objects, own's and admin's do;
* admin: admin a 2xx, members a 403;
* any_key: every key a 2xx;
* and, for all but public, no key or a bad key a 401 in the envelope, naming no team.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key

from trainyard.platform import queue, storage
from trainyard.platform.models import Job as JobRow

TEAM_A = "research"
PRINCIPALS = ("own", "other", "admin", "none", "bad")


@dataclass(frozen=True)
class Ids:
    job_id: str
    file_id: str
    name: str = TEAM_A
    model_id: str = ""


@dataclass(frozen=True)
class Route:
    kind: str  # public, owned, listing, admin, any_key
    query: dict[str, str] = field(default_factory=dict)
    body: Callable[[Ids], dict[str, Any]] | None = None
    # For listings: which of A's values must (not) show in the answer.
    marker: Callable[[Ids], str] | None = None
    upload: bool = False
    # Team A holds the grant `GRANT` before the request (an admin granted it), so revoking finds it.
    granted: bool = False
    # Team A's job has finished with a final model in the store (its `config.json`).
    with_model: bool = False
    # Team A has a fine-tuned model (a succeeded job with a final model): `Ids.model_id`.
    finished: bool = False


def _job_with_a_file(ids: Ids) -> dict[str, Any]:
    return job_body(training_file=ids.file_id)


def _ft_with_a_file(ids: Ids) -> dict[str, Any]:
    return {
        "model": "file:///models/tiny-gpt2",
        "training_file": ids.file_id,
        "hyperparameters": {"n_epochs": 1, "batch_size": 4},
        "instance_type": "local-cpu",
        "model_parameters": 2_000_000,
        "dataset_tokens": 10_000,
    }


def _job(ids: Ids) -> str:
    return ids.job_id


def _file(ids: Ids) -> str:
    return ids.file_id


def _team(ids: Ids) -> str:
    return f'"{ids.name}"'


def _model(ids: Ids) -> str:
    return ids.model_id


TEAM_Q = {"team": TEAM_A}
GRANT = "s3://granted-data/datasets"
ROUTES: dict[str, Route] = {
    "GET /openapi.json": Route("public"),
    "GET /docs": Route("public"),
    "GET /docs/oauth2-redirect": Route("public"),
    "GET /redoc": Route("public"),
    "GET /healthz": Route("public"),
    "GET /dashboard": Route("public"),
    "GET /dashboard/static/{name}": Route("public"),
    "GET /metrics": Route("admin"),
    "POST /v1/jobs": Route("owned", body=_job_with_a_file),
    "GET /v1/jobs": Route("listing", marker=_job),
    "GET /v1/jobs/{job_id}": Route("owned"),
    "POST /v1/jobs/{job_id}/cancel": Route("owned"),
    "GET /v1/jobs/{job_id}/events": Route("owned"),
    "GET /v1/jobs/{job_id}/checkpoints": Route("owned"),
    "GET /v1/jobs/{job_id}/logs": Route("owned"),
    # To the pool it is already in: a move that changes nothing, and a 404 for another team.
    "POST /v1/jobs/{job_id}/move": Route("owned", body=lambda ids: {"instance_type": "local-cpu"}),
    "POST /v1/jobs/{job_id}/pause": Route("owned"),
    "POST /v1/jobs/{job_id}/resume": Route("owned"),
    "GET /v1/jobs/{job_id}/cost-report": Route("owned"),
    "GET /v1/jobs/{job_id}/loss-curve": Route("owned"),
    "GET /v1/jobs/{job_id}/model": Route("owned", with_model=True),
    "GET /v1/jobs/{job_id}/model/{path:path}": Route("owned", with_model=True),
    "POST /v1/estimates": Route("owned", body=_job_with_a_file),
    "GET /v1/instance-types": Route("any_key"),
    "GET /v1/costs": Route("owned", query=TEAM_Q),
    "GET /v1/costs.csv": Route("owned", query=TEAM_Q),
    "GET /v1/teams": Route("listing", marker=_team),
    "PUT /v1/teams/{name}/budget": Route("admin", body=lambda ids: {"monthly_budget_usd": 100.0}),
    "GET /v1/budgets": Route("listing", marker=_team),
    "GET /v1/queue": Route("owned", query=TEAM_Q),
    # The last in line first: the job just made for the request.
    "GET /v1/queue/jobs": Route("listing", query={"order": "desc"}, marker=_job),
    "PUT /v1/teams/{name}/grants": Route("admin", body=lambda ids: {"uri": GRANT}),
    "GET /v1/teams/{name}/grants": Route("admin"),
    "DELETE /v1/teams/{name}/grants": Route("admin", query={"uri": GRANT}, granted=True),
    "POST /v1/files": Route("any_key", upload=True),
    "GET /v1/files": Route("listing", marker=_file),
    "GET /v1/files/{file_id}": Route("owned"),
    "DELETE /v1/files/{file_id}": Route("owned"),
    "GET /v1/files/{file_id}/content": Route("owned"),
    "POST /v1/fine_tuning/jobs": Route("owned", body=_ft_with_a_file),
    "GET /v1/fine_tuning/jobs": Route("listing", marker=_job),
    "GET /v1/fine_tuning/jobs/{job_id}": Route("owned"),
    "POST /v1/fine_tuning/jobs/{job_id}/cancel": Route("owned"),
    "POST /v1/fine_tuning/jobs/{job_id}/pause": Route("owned"),
    "POST /v1/fine_tuning/jobs/{job_id}/resume": Route("owned"),
    "GET /v1/fine_tuning/jobs/{job_id}/events": Route("owned"),
    "GET /v1/fine_tuning/jobs/{job_id}/checkpoints": Route("owned"),
    "GET /v1/models": Route("listing", marker=_model, finished=True),
    "GET /v1/models/{model_id}": Route("owned", finished=True),
    # A hub id: the same for every key.
    "GET /v1/models/{owner}/{name}": Route("any_key"),
}
STATIC_FILE = "dashboard.js"
JSONL = json.dumps({"prompt": "2+2=", "completion": "4"}).encode() + b"\n"


def app_routes(app: Any) -> list[str]:
    """`METHOD path` for every route the app serves (HEAD aside, which follows GET)."""
    out = []
    for context in iter_route_contexts(app.routes):
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                out.append(f"{method} {context.path}")
    return out


def _upload(client: Any, key: str) -> str:
    r = client.post(
        "/v1/files",
        files={"file": ("train.jsonl", io.BytesIO(JSONL * 4))},
        data={"purpose": "fine-tune"},
        headers=headers(key),
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _fine_tuned_model(client: Any, keys: dict[str, str], sessions: sessionmaker[Session]) -> str:
    """A job of team A that succeeded with a final model; returns the model's id. The job goes
    first in the queue (the highest priority) so that it is the one claimed."""
    job = client.post("/v1/jobs", json=job_body(priority=1000), headers=headers(keys["own"]))
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="matrix")
    assert claim.job_id == job_id
    final = f"file:///models/jobs/{job_id}/attempts/1/final"
    with sessions() as s:
        queue.finish(s, claim.attempt_id, "succeeded", result={"final_model_uri": final})
    model_id = client.get(f"/v1/jobs/{job_id}", headers=headers(keys["own"])).json()["fine_tuned_model"]
    assert model_id and job_id in model_id
    return str(model_id)


def _world(client: Any, keys: dict[str, str], route: Route, sessions: sessionmaker[Session]) -> Ids:
    """Team A's objects, fresh for each request so that one caller's cancel or delete does not
    change what the next one meets. The job does not use the file, so the file can be deleted."""
    job = client.post("/v1/jobs", json=job_body(), headers=headers(keys["own"]))
    assert job.status_code == 201, job.text
    if route.granted:
        r = client.put(f"/v1/teams/{TEAM_A}/grants", json={"uri": GRANT}, headers=headers(keys["admin"]))
        assert r.status_code == 200, r.text
    if route.with_model:
        _give_a_model(client, job.json()["id"])
    model_id = _fine_tuned_model(client, keys, sessions) if route.finished else ""
    return Ids(job_id=job.json()["id"], file_id=_upload(client, keys["own"]), model_id=model_id)


def _give_a_model(client: Any, job_id: str) -> None:
    """What a finished run leaves: a model directory under the job's prefix, named by its result."""
    store = storage.open_store(client.app.state.settings.storage_uri)
    prefix = storage.final_model_prefix(job_id, 1)
    store.put_bytes(f"{prefix}/config.json", b'{"model_type": "gpt2"}')
    with client.app.state.sessionmaker.begin() as s:
        row = s.get(JobRow, job_id)
        row.result = {"final_model_uri": store.uri_for(prefix)}


def _request(client: Any, label: str, route: Route, ids: Ids, auth: dict[str, str]) -> Any:
    method, template = label.split(" ", 1)
    if template == "/v1/models/{owner}/{name}":
        template = "/v1/models/meta-llama/Llama-3.1-8B"
    path = template.replace("{path:path}", "config.json").format(
        job_id=ids.job_id,
        file_id=ids.file_id,
        name=STATIC_FILE if "static" in template else ids.name,
        model_id=ids.model_id,
    )
    if route.upload:
        files = {"file": ("mine.jsonl", io.BytesIO(JSONL))}
        return client.request(method, path, files=files, data={"purpose": "fine-tune"}, headers=auth)
    body = route.body(ids) if route.body else None
    return client.request(method, path, params=route.query, json=body, headers=auth)


def _expect(route: Route, principal: str, ids: Ids, r: Any, label: str) -> None:
    where = f"{label} as {principal}: {r.status_code} {r.text[:300]}"
    if route.kind == "public":
        assert 200 <= r.status_code < 300, where
        assert TEAM_A not in r.text, where
        return
    if principal in ("none", "bad"):
        assert r.status_code == 401, where
        assert r.json()["error"]["code"] in ("unauthenticated", "invalid_api_key"), where
        assert TEAM_A not in r.text, where
        return
    if route.kind == "admin":
        assert r.status_code == (200 if principal == "admin" else 403), where
        if principal != "admin":
            assert r.json()["error"]["code"] == "permission_denied", where
        return
    if route.kind == "owned" and principal == "other":
        assert r.status_code == 404, where
        assert r.json()["error"]["code"].endswith("not_found"), where
        return
    assert 200 <= r.status_code < 300, where
    if route.kind == "listing":
        assert route.marker is not None
        seen = route.marker(ids) in r.text
        assert seen == (principal != "other"), where


@pytest.fixture
def keys(sessions: sessionmaker[Session], key: str) -> dict[str, str]:
    return {
        "own": key,  # conftest's member key of team A
        "other": make_key(sessions, "vision"),
        "admin": make_key(sessions, "ops", role="admin"),
    }


def test_every_route_has_an_entry(client: Any) -> None:
    served = set(app_routes(client.app))
    assert not served - set(ROUTES), f"routes without an isolation entry: {sorted(served - set(ROUTES))}"
    assert not set(ROUTES) - served, f"entries for routes that are gone: {sorted(set(ROUTES) - served)}"


def test_isolation_matrix(
    client: Any, keys: dict[str, str], sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    auths = {
        **{p: headers(k) for p, k in keys.items()},
        "none": {},
        "bad": headers("ty_" + "x" * 43),
    }
    checked: dict[str, int] = {}
    for label in app_routes(client.app):
        route = ROUTES[label]
        for principal in PRINCIPALS:
            ids = _world(client, keys, route, sessions)
            r = _request(client, label, route, ids, auths[principal])
            _expect(route, principal, ids, r, label)
            checked[route.kind] = checked.get(route.kind, 0) + 1
    with capsys.disabled():
        total = sum(checked.values())
        print(
            f"\nisolation: {len(ROUTES)} routes x {len(PRINCIPALS)} principals = {total} checked; {checked}"
        )
    assert sum(checked.values()) == len(ROUTES) * len(PRINCIPALS)
