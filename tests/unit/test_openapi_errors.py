"""The OpenAPI document tells the truth about errors and limits: every operation documents its
error statuses with the envelope it answers in, never FastAPI's 422 `HTTPValidationError`; the
API key is a bearer security scheme; limits the services enforce are in the schema."""

from __future__ import annotations

import re
from typing import Any

import pytest

from trainyard.api.app import create_app
from trainyard.settings import get_settings

METHODS = ("get", "post", "put", "delete", "patch")


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Building the app and its document touches no database.
    store = tmp_path_factory.mktemp("store")
    settings = get_settings(
        database_url="postgresql+psycopg://nobody@127.0.0.1:9/none", storage_uri=f"file://{store}"
    )
    return create_app(settings).openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, ops in document["paths"].items() for m, op in ops.items() if m in METHODS]


def test_every_operation_documents_its_errors_in_the_envelope(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) >= 30
    for path, method, op in operations:
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert {400, 401, 503} <= set(errors), (method, path, sorted(errors))
        envelope = (
            "OpenAIErrorResponse"
            if path.startswith(("/v1/files", "/v1/fine_tuning", "/v1/models"))
            else "ErrorResponse"
        )
        for status, response in errors.items():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{envelope}", (method, path, status)
            assert response["description"]
        if "{" in path:
            assert 404 in errors, (method, path)
        if "requestBody" in op:
            assert {413, 422} <= set(errors), (method, path)


def test_statuses_that_only_some_routes_answer(document: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[int]:
        return {int(s) for s in document["paths"][path][method]["responses"]}

    assert {403, 404, 409} <= statuses("/v1/jobs", "post")
    assert {403, 404, 409} <= statuses("/v1/fine_tuning/jobs", "post")
    assert 403 in statuses("/v1/teams/{name}/budget", "put")
    assert 409 in statuses("/v1/jobs/{job_id}/cancel", "post")
    assert 409 in statuses("/v1/files/{file_id}", "delete")
    assert 404 in statuses("/v1/costs", "get") and 404 in statuses("/v1/queue", "get")
    for method in ("put", "get", "delete"):
        assert {401, 403, 404, 503} <= statuses("/v1/teams/{name}/grants", method), method


def test_every_operation_documents_a_database_outage(document: dict[str, Any]) -> None:
    # Every operation authenticates, which reads the database: an outage is a 503 in the envelope.
    for path, method, op in _operations(document):
        outage = op["responses"]["503"]
        assert "`database_unavailable`" in outage["description"], (method, path)
        assert outage["headers"]["Retry-After"]["schema"] == {"type": "integer"}, (method, path)


def test_no_fastapi_validation_shape(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert "HTTPValidationError" not in str(document)
    detail = schemas["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message", "param"}
    assert set(schemas["OpenAIErrorDetail"]["required"]) == {"code", "message", "param", "type"}


def test_the_key_is_a_bearer_scheme_not_a_parameter(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Bearer ty_...`",
    }
    for path, method, op in _operations(document):
        assert op["security"] == [{"apiKey": []}], (method, path)
        names = [p["name"].lower() for p in op.get("parameters", [])]
        assert "authorization" not in names, (method, path)
        for param in op.get("parameters", []):
            assert "anyOf" not in param["schema"], (method, path, param)


def test_limits_the_services_enforce_are_in_the_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    spec = schemas["JobSpec"]["properties"]
    assert spec["name"]["maxLength"] == 200
    assert spec["metadata"]["maxProperties"] == 16
    assert spec["metadata"]["propertyNames"] == {"maxLength": 64, "minLength": 1}
    assert spec["base_model"]["maxLength"] == 1024 and spec["base_model"]["pattern"]
    ft = schemas["FineTuningJobRequest"]["properties"]
    assert ft["suffix"]["anyOf"][0]["maxLength"] == 64
    assert ft["model"]["maxLength"] == 1024
    assert ft["metadata"]["anyOf"][0]["additionalProperties"]["maxLength"] == 512
    budget = schemas["BudgetIn"]["properties"]["monthly_budget_usd"]
    assert budget["minimum"] == 0 and budget["maximum"] == 1e12

    def param(path: str, method: str, name: str) -> dict[str, Any]:
        params = document["paths"][path][method]["parameters"]
        return next(p["schema"] for p in params if p["name"] == name)

    assert param("/v1/jobs", "post", "Idempotency-Key")["maxLength"] == 200
    assert "queued" in param("/v1/jobs", "get", "status")["enum"]
    assert param("/v1/jobs/{job_id}/events", "get", "order")["enum"] == ["asc", "desc"]
    assert param("/v1/fine_tuning/jobs", "get", "limit")["minimum"] == 1
    assert param("/v1/costs", "get", "format")["enum"] == ["json", "csv"]
    aggregate = re.compile(param("/v1/costs", "get", "aggregate")["pattern"])
    assert aggregate.match("team, label:project") and not aggregate.match("bogus")
    # What only this deployment knows: the names in its catalog.
    assert "local-cpu" in spec["instance_type"]["anyOf"][0]["enum"]
    assert "local-cpu" in ft["instance_type"]["anyOf"][0]["enum"]
    assert ft["method"]["properties"]["type"]["enum"] == ["supervised", "lora"]
    assert ft["integrations"]["maxItems"] == 0
