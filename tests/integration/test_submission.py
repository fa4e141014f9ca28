"""Submission, the one way a job is created: the Idempotency-Key is looked up before anything
else, so a retried create is answered with its job however the world moved since."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support import headers, job_body

from trainyard.platform import auth
from trainyard.platform.models import Job

CHAT = [{"messages": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}]}]
OPENAI_FIELDS: dict[str, Any] = {"model_parameters": 2_000_000, "instance_type": "local-cpu"}


def set_budget(sessions: sessionmaker[Session], usd: float) -> None:
    with sessions.begin() as s:
        auth.get_team_by_name(s, "research").monthly_budget_usd = usd


def budget_for_one(client: Any, key: str, body: dict[str, Any]) -> None:
    """Give the team a budget that the job `body` describes fits in once, and not twice."""
    r = client.post("/v1/estimates", json=body, headers=headers(key))
    assert r.status_code == 200, r.text
    cost = r.json()["chosen"]["estimated_cost_usd"]
    assert cost > 0
    set_budget(client.app.state.sessionmaker, cost * 1.5)


def job_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_replay_after_the_budget_is_used_up_returns_the_job(
    client: Any, sessions: sessionmaker[Session], key: str
) -> None:
    budget_for_one(client, key, job_body())
    h = headers(key, **{"Idempotency-Key": "run-1"})
    first = client.post("/v1/jobs", json=job_body(), headers=h)
    assert first.status_code == 201, first.text
    # The budget is used up: a new job is refused...
    other = client.post("/v1/jobs", json=job_body(name="another"), headers=headers(key))
    assert other.status_code == 409 and other.json()["error"]["code"] == "budget_exhausted"
    # ...but the retried create is answered with the job it made.
    again = client.post("/v1/jobs", json=job_body(), headers=h)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    # The same key with another body is still the key's misuse, not a budget matter.
    reused = client.post("/v1/jobs", json=job_body(name="changed"), headers=h)
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"
    assert job_count(sessions) == 1


def test_a_fine_tuning_replay_after_the_budget_is_used_up_returns_the_job(
    client: Any, sessions: sessionmaker[Session], key: str
) -> None:
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
    data = b"".join(json.dumps(r).encode() + b"\n" for r in CHAT)
    file_id = oai.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune").id
    native = job_body(training_file=file_id, name="ft")  # what the fine-tuning job will cost
    budget_for_one(client, key, native)

    def create(**extra_headers: str) -> Any:
        return oai.fine_tuning.jobs.create(
            model="file:///models/tiny-gpt2",
            training_file=file_id,
            hyperparameters={"max_steps": 20, "batch_size": 4, "seq_len": 64},
            suffix="ft",
            extra_body=OPENAI_FIELDS,
            extra_headers=extra_headers,
        )

    first = create(**{"Idempotency-Key": "ft-1"})
    with pytest.raises(openai.ConflictError) as refused:
        create()
    assert refused.value.code == "budget_exhausted"
    again = oai.fine_tuning.jobs.with_raw_response.create(
        model="file:///models/tiny-gpt2",
        training_file=file_id,
        hyperparameters={"max_steps": 20, "batch_size": 4, "seq_len": 64},
        suffix="ft",
        extra_body=OPENAI_FIELDS,
        extra_headers={"Idempotency-Key": "ft-1"},
    )
    assert again.status_code == 200 and again.parse().id == first.id
    assert job_count(sessions) == 1


def test_racing_replays_under_a_tight_budget_all_get_the_one_job(
    client: Any, sessions: sessionmaker[Session], key: str
) -> None:
    budget_for_one(client, key, job_body())
    h = headers(key, **{"Idempotency-Key": "race-1"})
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/jobs", json=job_body(), headers=h), range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert job_count(sessions) == 1


def test_an_estimate_creates_nothing(client: Any, sessions: sessionmaker[Session], key: str) -> None:
    r = client.post("/v1/estimates", json=job_body(), headers=headers(key))
    assert r.status_code == 200 and r.json()["chosen"]["instance_type"] == "local-cpu"
    assert job_count(sessions) == 0
