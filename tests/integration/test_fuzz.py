"""Fuzz the API over its own OpenAPI document (schemathesis): every operation, schema-valid and
schema-violating requests, as an admin and as a member whose team owns a job and a file.

Asserted for every response: never a 5xx; every error in the envelope of its dialect; every
status documented for its operation, with a body its schema describes. Examples per operation are
bounded (`EXAMPLES`) so the run fits CI on two cores.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body, make_key

EXAMPLES = 25
OPENAI_PREFIXES = ("/v1/files", "/v1/fine_tuning", "/v1/models")


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


TALLY = Tally()


@dataclass(frozen=True)
class World:
    admin: str
    member: str
    ids: dict[str, str]


def _envelope(path: str, response: Any) -> None:
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: lists of values
    assert content_type.startswith("application/json"), response.content[:200]
    error = json.loads(response.content)["error"]
    want = {"code", "message", "param"} | ({"type"} if path.startswith(OPENAI_PREFIXES) else set())
    assert set(error) == want, error
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str)


@pytest.fixture
def world(client: Any, sessions: sessionmaker[Session]) -> World:
    admin = make_key(sessions, "ops", role="admin")
    member = make_key(sessions, "research")
    job = client.post("/v1/jobs", json=job_body(), headers=headers(member))
    assert job.status_code == 201, job.text
    line = json.dumps({"prompt": "2+2=", "completion": "4"}).encode() + b"\n"
    upload = client.post(
        "/v1/files",
        files={"file": ("train.jsonl", io.BytesIO(line * 4))},
        data={"purpose": "fine-tune"},
        headers=headers(member),
    )
    assert upload.status_code == 200, upload.text
    return World(
        admin, member, {"job_id": job.json()["id"], "file_id": upload.json()["id"], "name": "research"}
    )


def _send(case: Case, key: str) -> None:
    label = f"{case.method} {case.path}"
    TALLY.requests[label] += 1
    try:
        response = case.call(headers={"Authorization": f"Bearer {key}"})
    except Exception as exc:  # the app raised through the test transport: a 500 on the wire
        TALLY.failures[f"{label} -> raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"] += 1
        raise
    TALLY.statuses[response.status_code] += 1
    try:
        case.validate_response(
            response, checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
        )
        _envelope(case.path, response)
    except Exception as exc:
        TALLY.failures[f"{label} -> {response.status_code}: {str(exc).strip().splitlines()[0][:300]}"] += 1
        raise


# Values the generator seldom makes but hostile callers send: NUL, a long path component, odd
# Unicode, traversal. Lone surrogates only go in JSON bodies (a URL or header cannot carry one).
HOSTILE = (
    "\x00",
    "a\x00b",
    "x" * 256,
    "m/" + "a" * 300,
    "\u202e\ufeff\u200d",
    "../../etc/passwd",
    "\U0001f600" * 70,
)
BODY_ONLY = ("\ud800", "a\udfffb")


def _poison(case: Case, value: str, slot: int) -> bool:
    """Put `value` in one of the case's text slots (path, query, Idempotency-Key, a top-level
    string of a JSON body; every third time a lone surrogate in the body); False when none."""
    body = (
        [(case.body, k) for k, v in case.body.items() if isinstance(v, str)]
        if isinstance(case.body, dict)
        else []
    )
    if body and slot % 3 == 0 and case.media_type == "application/json":
        where, key = body[slot % len(body)]
        where[key] = BODY_ONLY[slot % 2]
        return True
    slots: list[tuple[dict[str, Any], str]] = list(body)
    # A "/" in a path parameter makes another URL (the client resolves "..") that no route matches.
    paths = case.path_parameters if "/" not in value else None
    for params in (paths, case.query):
        if params:
            slots += [(params, k) for k, v in params.items() if isinstance(v, str)]
    if case.headers and "Idempotency-Key" in case.headers and value.isascii():  # headers are latin-1
        slots.append((case.headers, "Idempotency-Key"))
    if not slots:
        return False
    where, key = slots[slot % len(slots)]
    where[key] = value
    return True


def _fuzz(operation: Any, world: World) -> None:
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in GenerationMode))

    @given(case=strategy, hostile=st.sampled_from(HOSTILE), slot=st.integers(0, 50))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
        derandomize=True,
        database=None,
    )
    def run(case: Case, hostile: str, slot: int) -> None:
        # As the admin with what was generated; as the member with the team's own ids put in
        # (where the operation takes one), so the fuzz also reaches real objects; and once more
        # with a hostile value in one of the request's text slots.
        _send(case, world.admin)
        if case.path_parameters:
            case.path_parameters = {k: world.ids.get(k, v) for k, v in case.path_parameters.items()}
        _send(case, world.member)
        if _poison(case, hostile, slot):
            _send(case, world.member)

    run()


def test_fuzz_every_operation(client: Any, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 27
    broken: list[str] = []
    for operation in operations:
        try:
            _fuzz(operation, world)
        except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
            broken.append(f"{operation.label}: {str(exc).strip()[:2000]}")
    with capsys.disabled():
        _report(operations)
    assert not broken, "\n".join(broken)
    assert not TALLY.failures


def _report(operations: list[Any]) -> None:
    """Requests made and failures found."""
    print(
        f"\nfuzz: {sum(TALLY.requests.values())} requests over {len(TALLY.requests)} of "
        f"{len(operations)} operations, {sum(TALLY.failures.values())} failing responses"
    )
    print("fuzz: statuses " + ", ".join(f"{s}: {n}" for s, n in sorted(TALLY.statuses.items())))
    for failure, n in TALLY.failures.most_common(30):
        print(f"fuzz failure (x{n}): {failure}")
