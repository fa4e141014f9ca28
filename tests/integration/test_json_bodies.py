"""A JSON body is read as JSON whatever Content-Type came with it (`curl -d` sends a form type),
while bodies that are not JSON, oversized ones and multipart uploads are answered as before."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import headers, job_body


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain; charset=utf-8", None],
)
def test_a_json_body_creates_the_job_whatever_its_content_type(
    client: Any, key: str, content_type: str | None
) -> None:
    h = headers(key)
    if content_type:
        h["Content-Type"] = content_type
    r = client.post("/v1/jobs", content=json.dumps(job_body(name="curl")).encode(), headers=h)
    assert r.status_code == 201, r.text
    assert client.get(f"/v1/jobs/{r.json()['id']}", headers=headers(key)).json()["name"] == "curl"


def test_validation_still_names_the_parameter_of_a_form_typed_body(client: Any, key: str) -> None:
    h = headers(key, **{"Content-Type": "application/x-www-form-urlencoded"})
    body = json.dumps(job_body(hyperparameters={"batch_size": 0})).encode()
    r = client.post("/v1/jobs", content=body, headers=h)
    assert r.status_code == 422 and r.json()["error"]["param"] == "hyperparameters.batch_size"


def test_a_body_that_is_not_json_is_still_invalid_json(client: Any, key: str) -> None:
    h = headers(key, **{"Content-Type": "application/x-www-form-urlencoded"})
    r = client.post("/v1/jobs", content=b"name=tiny&base_model=gpt2", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_the_size_limit_still_holds_for_a_form_typed_body(client: Any, key: str, settings: Any) -> None:
    h = headers(key, **{"Content-Type": "text/plain"})
    body = json.dumps(job_body(notes="x" * (settings.max_body_bytes + 1))).encode()
    r = client.post("/v1/jobs", content=body, headers=h)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_openai_routes_take_a_form_typed_json_body_and_uploads_stay_multipart(client: Any, key: str) -> None:
    upload = client.post(
        "/v1/files",
        files={"file": ("train.jsonl", b'{"text": "hello"}\n', "application/jsonl")},
        data={"purpose": "fine-tune"},
        headers=headers(key),
    )
    assert upload.status_code == 200, upload.text
    h = headers(key, **{"Content-Type": "application/x-www-form-urlencoded"})
    body = {"model": "file:///models/tiny-gpt2", "training_file": upload.json()["id"]}
    r = client.post("/v1/fine_tuning/jobs", content=json.dumps(body).encode(), headers=h)
    print("XX", r.status_code, r.text)


def test_text_hygiene_covers_a_form_typed_json_body(client: Any, key: str) -> None:
    h = headers(key, **{"Content-Type": "application/x-www-form-urlencoded"})
    r = client.post("/v1/jobs", content=json.dumps(job_body(name="a\u0000b")).encode(), headers=h)
    assert r.status_code == 400 and r.json()["error"] == {
        "code": "invalid_text",
        "message": r.json()["error"]["message"],
        "param": "name",
    }
