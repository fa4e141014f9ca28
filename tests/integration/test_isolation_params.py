"""Team isolation through the parameters the route matrix (test_isolation_matrix.py) leaves
alone: team-named query parameters, cost filters and aggregates, pagination cursors, ids inside
request bodies, Idempotency-Keys and log attempts.

A member of `other` points each of them at team `research`'s objects. What they rely on: another
team's object reads exactly as one that does not exist (the same status and body, the id aside),
never a 403, and nothing of research's (ids, names, users, dollars) shows in data, totals, errors
or cursors. Each case also checks that research's objects are real and reachable by their owner
or an admin, so an empty answer proves isolation rather than an empty world.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key

from trainyard.platform import logs, queue, storage

RESEARCH, OTHER = "research", "other"
NO_TEAM = "no-such-team"
NO_JOB = "job_" + "0" * 24
NO_FILE = "file-" + "0" * 24
JSONL = json.dumps({"prompt": "2+2=", "completion": "4"}).encode() + b"\n"
SECRET_NAME = "research-secret-run"  # research's job name: must never reach `other`


@dataclass(frozen=True)
class Keys:
    research: str
    other: str
    admin: str


@pytest.fixture
def keys(sessions: sessionmaker[Session], key: str) -> Keys:
    return Keys(research=key, other=make_key(sessions, OTHER), admin=make_key(sessions, "ops", role="admin"))


def _submit(client: Any, key: str, **overrides: Any) -> dict[str, Any]:
    r = client.post("/v1/jobs", json=job_body(**overrides), headers=headers(key))
    assert r.status_code == 201, f"setup: job not created: {r.status_code} {r.text}"
    return dict(r.json())


def _upload(client: Any, key: str) -> str:
    files = {"file": ("train.jsonl", io.BytesIO(JSONL * 4))}
    r = client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=headers(key))
    assert r.status_code == 200, f"setup: upload failed: {r.status_code} {r.text}"
    return str(r.json()["id"])


def _run(sessions: sessionmaker[Session], hours: float, *, with_model: bool = False) -> str:
    """Play a worker on the only queued job: claim it, move its attempt's start `hours` back (time
    passing without waiting; the queue meters from it) and finish it. Real attempt rows, billed
    by the queue, as the cost rollup and allocation tests make them."""
    with sessions() as s:
        [claim] = queue.claim(s, worker_id="isolation")
    with sessions.begin() as s:
        s.execute(
            text("UPDATE job_attempts SET started_at = started_at - make_interval(secs => :s) WHERE id = :a"),
            {"s": hours * 3600, "a": claim.attempt_id},
        )
    # A final model under the store's layout is all an ft id needs (no training run).
    final = f"file:///models/jobs/{claim.job_id}/attempts/1/final"
    with sessions() as s:
        queue.finish(
            s, claim.attempt_id, "succeeded", result={"final_model_uri": final} if with_model else None
        )
    return claim.job_id


def _same_as_unknown(real: Any, real_id: str, unknown: Any, unknown_id: str, what: str) -> None:
    """`real` (another team's id) must answer as `unknown` (an id of nothing) does: the same
    status and the same body once each id is replaced by a placeholder."""
    assert real.status_code == unknown.status_code, (
        f"{what}: another team's id answers {real.status_code}, an unknown id {unknown.status_code}; "
        f"the status tells the id exists. {real.text[:300]}"
    )
    assert real.status_code != 403, f"{what}: 403 admits the object exists: {real.text[:300]}"
    mine, theirs = real.text.replace(real_id, "<ID>"), unknown.text.replace(unknown_id, "<ID>")
    assert json.loads(mine) == json.loads(theirs), f"{what}: bodies differ:\n {mine[:300]}\n {theirs[:300]}"


def _job_count(client: Any, admin: str) -> int:
    return len(client.get("/v1/jobs", params={"limit": 100}, headers=headers(admin)).json()["data"])


# --- 1. team-named query parameters on the queue routes -----------------------------------


def test_queue_jobs_team_param_names_no_other_team(client: Any, keys: Keys) -> None:
    theirs = _submit(client, keys.research, name=SECRET_NAME)["id"]
    mine = _submit(client, keys.other)["id"]
    path = "/v1/queue/jobs"

    asked = client.get(path, params={"team": RESEARCH}, headers=headers(keys.other))
    unknown = client.get(path, params={"team": NO_TEAM}, headers=headers(keys.other))
    assert asked.status_code == 404, f"?team=research as a member of other: {asked.status_code} {asked.text}"
    assert asked.json()["error"]["param"] == "team", asked.text
    _same_as_unknown(asked, RESEARCH, unknown, NO_TEAM, "GET /v1/queue/jobs?team=")
    assert theirs not in asked.text and SECRET_NAME not in asked.text, asked.text

    # Naming one's own team works, and holds only one's own jobs.
    own = client.get(path, params={"team": OTHER}, headers=headers(keys.other))
    assert own.status_code == 200, own.text
    assert [j["id"] for j in own.json()["data"]] == [mine], f"?team=other: {own.text[:300]}"

    # An admin may name any team, and sees that team's line only.
    admin = client.get(path, params={"team": RESEARCH}, headers=headers(keys.admin))
    assert admin.status_code == 200, f"admin ?team=research: {admin.status_code} {admin.text}"
    assert [j["id"] for j in admin.json()["data"]] == [theirs], f"admin ?team=research: {admin.text[:300]}"


# --- 2. cost filters, aggregates and CSV --------------------------------------------------


@dataclass(frozen=True)
class Spend:
    research_job: str
    research_usd: float
    other_job: str
    other_usd: float


@pytest.fixture
def spend(client: Any, sessions: sessionmaker[Session], keys: Keys) -> Spend:
    """Ten billed hours for research and one for other, on local-cpu, run through the queue."""
    _submit(client, keys.research, name=SECRET_NAME)
    research_job = _run(sessions, 10)
    _submit(client, keys.other, name="other-run")
    other_job = _run(sessions, 1)

    def usd(key: str, job_id: str) -> float:
        return float(client.get(f"/v1/jobs/{job_id}", headers=headers(key)).json()["cost"]["usd"])

    out = Spend(research_job, usd(keys.research, research_job), other_job, usd(keys.other, other_job))
    assert out.research_usd > out.other_usd > 0, f"setup: the attempts were not billed: {out}"
    return out


def _costs(client: Any, key: str, **params: str) -> dict[str, Any]:
    r = client.get("/v1/costs", params=params, headers=headers(key))
    assert r.status_code == 200, f"GET /v1/costs {params}: {r.status_code} {r.text}"
    return dict(r.json())


def _leaks(body: str, keys: Keys, spend: Spend) -> list[str]:
    """What of research's shows in `body` (JSON text): its job, the job's name, its key (in the
    `user` value) or its name as a value (a `team` row)."""
    marks = {
        "job id": spend.research_job,
        "job name": SECRET_NAME,
        "user": keys.research[:10],
        "team": json.dumps(RESEARCH),
    }
    return [what for what, mark in marks.items() if mark in body]


@pytest.mark.parametrize("aggregate", ["team", "user", "job"])
def test_costs_filter_team_shows_none_of_another_teams_spend(
    client: Any, keys: Keys, spend: Spend, aggregate: str
) -> None:
    # The research figures exist: an admin filtering on the team sees them.
    admin = _costs(client, keys.admin, aggregate=aggregate, **{"filter[team]": RESEARCH})
    assert admin["totals"]["cost_usd"] == pytest.approx(spend.research_usd, abs=1e-6), admin["totals"]
    assert admin["data"], f"admin filter[team]=research aggregate={aggregate}: no rows"

    asked = _costs(client, keys.other, aggregate=aggregate, **{"filter[team]": RESEARCH})
    unknown = _costs(client, keys.other, aggregate=aggregate, **{"filter[team]": NO_TEAM})
    assert asked["data"] == [], f"filter[team]=research aggregate={aggregate} from other: {asked['data']}"
    assert asked["totals"]["cost_usd"] == 0, f"research's dollars in other's totals: {asked['totals']}"
    # Totals, the previous window's and the change alike: the same as for a team that does not
    # exist (the window's bounds aside, which move with the clock between the two requests).
    for body in (asked, unknown):
        del body["window"], body["filters"], body["previous"]["start"], body["previous"]["end"]
    assert asked == unknown, f"filter[team]=research vs an unknown team:\n {asked}\n {unknown}"
    leaked = _leaks(json.dumps(asked), keys, spend)
    assert not leaked, f"filter[team]=research from other shows research's {leaked}: {asked}"


@pytest.mark.parametrize("aggregate", ["job", "user"])
def test_costs_by_job_and_user_hold_only_own_team(
    client: Any, keys: Keys, spend: Spend, aggregate: str
) -> None:
    mine = _costs(client, keys.other, aggregate=aggregate)
    leaked = _leaks(json.dumps(mine), keys, spend)
    assert not leaked, f"aggregate={aggregate} from other shows research's {leaked}: {mine['data']}"
    assert mine["totals"]["cost_usd"] == pytest.approx(spend.other_usd, abs=1e-6), (
        f"aggregate={aggregate}: other's totals {mine['totals']['cost_usd']} are not its own "
        f"{spend.other_usd} (research spent {spend.research_usd})"
    )
    if aggregate == "job":
        assert [r["key"]["job"] for r in mine["data"]] == [spend.other_job], mine["data"]
    # Row for row and figure for figure, what an admin sees of team other alone.
    admin = _costs(client, keys.admin, aggregate=aggregate, team=OTHER)
    assert mine["data"] == admin["data"], f"aggregate={aggregate}: {mine['data']} vs admin {admin['data']}"
    assert mine["totals"] == admin["totals"], f"{mine['totals']} vs admin {admin['totals']}"
    # The admin's own view, with no team named, does hold research: the check above means something.
    everyone = json.dumps(_costs(client, keys.admin, aggregate=aggregate))
    assert _leaks(everyone, keys, spend), (
        f"setup: research's spend is not in the admin's aggregate={aggregate}"
    )


def _csv(client: Any, key: str, **params: str) -> list[dict[str, str]]:
    r = client.get("/v1/costs", params={**params, "format": "csv"}, headers=headers(key))
    assert r.status_code == 200, f"GET /v1/costs {params} format=csv: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("text/csv"), r.headers
    return list(csv.DictReader(io.StringIO(r.text)))


@pytest.mark.parametrize("aggregate", ["team", "user", "job"])
def test_costs_csv_holds_only_own_team(client: Any, keys: Keys, spend: Spend, aggregate: str) -> None:
    rows = _csv(client, keys.other, aggregate=aggregate)
    leaked = _leaks(json.dumps(rows), keys, spend)
    assert not leaked, f"CSV aggregate={aggregate} from other shows research's {leaked}: {rows}"
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(spend.other_usd, abs=1e-6), rows
    if aggregate == "team":
        assert [r["team"] for r in rows] == [OTHER], rows
    filtered = _csv(client, keys.other, aggregate=aggregate, **{"filter[team]": RESEARCH})
    assert filtered == [], f"CSV filter[team]=research aggregate={aggregate} from other: {filtered}"
    everyone = _csv(client, keys.admin, aggregate=aggregate)
    assert _leaks(json.dumps(everyone), keys, spend), f"setup: the admin's CSV lacks research: {everyone}"


# --- 3. cursors: `after=` set to another team's id ----------------------------------------


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/fine_tuning/jobs", "/v1/files", "/v1/queue/jobs"])
def test_after_another_teams_id_reads_as_an_unknown_cursor(client: Any, keys: Keys, path: str) -> None:
    is_file = path == "/v1/files"
    # Two of research's, so that its own cursor has a page after it; one of other's.
    make = (
        (lambda k: _upload(client, k)) if is_file else (lambda k: _submit(client, k, name=SECRET_NAME)["id"])
    )
    oldest, newest = make(keys.research), make(keys.research)
    mine = make(keys.other)
    # Newest-first lists page on to older objects; the queue, in claim order, to later ones.
    cursor, next_one = (oldest, newest) if path == "/v1/queue/jobs" else (newest, oldest)
    unknown_id = NO_FILE if is_file else NO_JOB

    # research's cursor is real: its owner pages on from it to its other object.
    own = client.get(path, params={"after": cursor}, headers=headers(keys.research))
    assert own.status_code == 200, f"setup: research's own cursor on {path}: {own.status_code} {own.text}"
    assert [o["id"] for o in own.json()["data"]] == [next_one], f"setup: {own.text[:300]}"

    asked = client.get(path, params={"after": cursor}, headers=headers(keys.other))
    unknown = client.get(path, params={"after": unknown_id}, headers=headers(keys.other))
    _same_as_unknown(asked, cursor, unknown, unknown_id, f"GET {path}?after=<research's id>")
    assert next_one not in asked.text and SECRET_NAME not in asked.text, f"{path}: {asked.text[:300]}"
    # And the caller's own list is untouched by any of it.
    listed = client.get(path, headers=headers(keys.other)).json()["data"]
    assert [o["id"] for o in listed] == [mine], f"GET {path} as other: {listed}"


# --- 4. another team's ids inside a request body ------------------------------------------


@pytest.fixture
def research_ids(client: Any, sessions: sessionmaker[Session], keys: Keys) -> dict[str, str]:
    """research's file and fine-tuned model, each next to an id of the same form naming nothing."""
    file_id = _upload(client, keys.research)
    job_id = _submit(client, keys.research, name=SECRET_NAME)["id"]
    _run(sessions, 0.1, with_model=True)
    model_id = client.get(f"/v1/jobs/{job_id}", headers=headers(keys.research)).json()["fine_tuned_model"]
    assert model_id and model_id.startswith("ft:"), f"setup: no ft id for {job_id}: {model_id}"
    return {
        "validation_file": file_id,
        "validation_file/unknown": NO_FILE,
        "base_model": model_id,
        "base_model/unknown": model_id.replace(job_id, NO_JOB),
    }


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/estimates"])
@pytest.mark.parametrize("field", ["validation_file", "base_model"])
def test_another_teams_file_or_model_in_a_body_is_unknown(
    client: Any, keys: Keys, research_ids: dict[str, str], path: str, field: str
) -> None:
    theirs, nothing = research_ids[field], research_ids[f"{field}/unknown"]
    # The id is research's to use: its own estimate with it is planned.
    own = client.post("/v1/estimates", json=job_body(**{field: theirs}), headers=headers(keys.research))
    assert own.status_code == 200, f"setup: research's own {field} {theirs}: {own.status_code} {own.text}"

    before = _job_count(client, keys.admin)
    asked = client.post(path, json=job_body(**{field: theirs}), headers=headers(keys.other))
    unknown = client.post(path, json=job_body(**{field: nothing}), headers=headers(keys.other))
    assert asked.status_code == 404, f"POST {path} with research's {field}: {asked.status_code} {asked.text}"
    assert asked.json()["error"]["param"] == field, asked.text
    _same_as_unknown(asked, theirs, unknown, nothing, f"POST {path} {field}=<research's>")
    # The ft id echoed back is the caller's own input; nothing else of research's may show.
    assert SECRET_NAME not in asked.text.replace(theirs, "<ID>"), asked.text
    assert _job_count(client, keys.admin) == before, f"POST {path} with research's {field} created a job"


# --- 5. Idempotency-Keys are per team -----------------------------------------------------


def test_reusing_another_teams_idempotency_key_makes_ones_own_job(client: Any, keys: Keys) -> None:
    team_id = client.get("/v1/teams", headers=headers(keys.other)).json()["data"][0]["id"]
    same, other_body = "nightly-2026-03-10", "nightly-2026-03-11"

    def post(key: str, idem: str, **body: Any) -> Any:
        return client.post(
            "/v1/jobs", json=job_body(**body), headers=headers(key, **{"Idempotency-Key": idem})
        )

    theirs = post(keys.research, same, name=SECRET_NAME)
    assert theirs.status_code == 201, theirs.text
    # The same key and body from other: a new job of other's, not research's answered back.
    mine = post(keys.other, same, name=SECRET_NAME)
    assert mine.status_code == 201, f"other reusing research's key: {mine.status_code} {mine.text}"
    assert mine.json()["id"] != theirs.json()["id"], "other was handed research's job for its key"
    assert mine.json()["team"] == team_id, f"the job is not other's: {mine.json()['team']}"
    assert post(keys.other, same, name=SECRET_NAME).json()["id"] == mine.json()["id"], "other's replay"

    # A key research used with another body: no 409 `idempotency_key_reused`, which would tell
    # other that research used it.
    assert post(keys.research, other_body, name=SECRET_NAME).status_code == 201
    fresh = post(keys.other, other_body, name="mine")
    assert fresh.status_code == 201, (
        f"other's new body under research's key: {fresh.status_code} {fresh.text}"
    )
    assert SECRET_NAME not in fresh.text and fresh.json()["team"] == team_id, fresh.text

    # research's replay still finds its own job.
    again = post(keys.research, same, name=SECRET_NAME)
    assert again.status_code == 200 and again.json()["id"] == theirs.json()["id"], again.text
    listed = client.get("/v1/jobs", headers=headers(keys.other)).json()["data"]
    assert {j["id"] for j in listed} == {mine.json()["id"], fresh.json()["id"]}, listed


# --- 6. an attempt's log ------------------------------------------------------------------


@pytest.mark.parametrize("query", [{"attempt": "1"}, {"attempt": "2"}, {"attempt": "1", "tail": "1"}, {}])
def test_another_teams_attempt_log_is_unknown(
    client: Any, sessions: sessionmaker[Session], keys: Keys, query: dict[str, str]
) -> None:
    job_id = _submit(client, keys.research, name=SECRET_NAME)["id"]
    _run(sessions, 0.1)
    line = "research secret: loss 0.123\n"
    store = storage.open_store(client.app.state.settings.storage_uri)
    store.put_bytes(logs.segment_key(job_id, 1, 0), line.encode())
    own = client.get(f"/v1/jobs/{job_id}/logs", params={"attempt": "1"}, headers=headers(keys.research))
    assert own.status_code == 200 and own.json()["data"] == line, f"setup: research's log: {own.text}"

    asked = client.get(f"/v1/jobs/{job_id}/logs", params=query, headers=headers(keys.other))
    unknown = client.get(f"/v1/jobs/{NO_JOB}/logs", params=query, headers=headers(keys.other))
    assert asked.status_code == 404, (
        f"logs {query} of research's job from other: {asked.status_code} {asked.text}"
    )
    # `attempt_not_found` for attempt 2 would tell the job exists.
    assert asked.json()["error"]["code"] == "job_not_found", asked.text
    _same_as_unknown(asked, job_id, unknown, NO_JOB, f"GET /v1/jobs/<research's>/logs {query}")
    assert "secret" not in asked.text, asked.text
