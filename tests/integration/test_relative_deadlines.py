"""Relative deadlines in the API (`+90m`, `in 2h`): resolved to the time that long after the
request is read, the same request (key and body) a moment later is the same job, and a bad
spelling is a 422 in the error envelope naming `policy.deadline`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import headers, job_body


def _deadline_body(deadline: Any) -> dict[str, Any]:
    return job_body(policy={"objective": "deadline", "deadline": deadline})


@pytest.mark.parametrize(
    ("spelled", "span"), [("in 2h", timedelta(hours=2)), ("+90m", timedelta(minutes=90))]
)
def test_a_relative_deadline_is_that_long_after_the_request(
    client: Any, key: str, spelled: str, span: timedelta
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    r = client.post("/v1/jobs", json=_deadline_body(spelled), headers=headers(key))
    assert r.status_code == 201, r.text
    job = r.json()
    at = datetime.fromisoformat(job["policy"]["deadline"])
    assert before + span <= at <= datetime.now(UTC) + span
    assert job["plan"]["meets_deadline"] is True and job["plan"]["objective"] == "deadline"
    est = client.post("/v1/estimates", json=_deadline_body(spelled), headers=headers(key))
    assert est.status_code == 200, est.text
    assert est.json()["chosen"]["meets_deadline"] is True


def test_a_retry_of_a_relative_deadline_is_the_same_request(client: Any, key: str) -> None:
    h = headers(key, **{"Idempotency-Key": "in-two-hours"})
    first = client.post("/v1/jobs", json=_deadline_body("in 2h"), headers=h)
    assert first.status_code == 201, first.text
    time.sleep(1.1)  # resolved again now, the time is a second later: still the same request
    again = client.post("/v1/jobs", json=_deadline_body("in 2h"), headers=h)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["policy"]["deadline"] == first.json()["policy"]["deadline"]
    other = client.post("/v1/jobs", json=_deadline_body("in 3h"), headers=h)
    assert other.status_code == 409, other.text


@pytest.mark.parametrize(
    ("spelled", "says"),
    [
        ("in soon", "is not a deadline"),
        ("+2y", "is not a deadline"),
        ("in -2h", "is not a deadline"),
        ("+0h", "is not in the future"),
        ("+99999999999w", "further off than a calendar goes"),
    ],
)
def test_a_bad_relative_deadline_is_a_422_naming_the_field(
    client: Any, key: str, spelled: str, says: str
) -> None:
    r = client.post("/v1/jobs", json=_deadline_body(spelled), headers=headers(key))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert set(error) == {"code", "message", "param"}
    assert error["code"] == "invalid_value" and error["param"] == "policy.deadline"
    assert says in error["message"]
    if "not a" in says:
        assert "(+48h, in 2h)" in error["message"], "it says how to write one"
