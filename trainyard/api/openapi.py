"""The OpenAPI document tells the truth about errors: every operation lists the error statuses it
can answer, each with the envelope it answers in (`ErrorResponse`, or `OpenAIErrorResponse` on the
OpenAI routes), in place of FastAPI's default 422 `HTTPValidationError`, which this API never sends.

What every route of a kind can answer is derived from the route itself (a key -> 401, a path id
-> 404, a body -> 413 and 422, the database -> 503, ...); what only some routes answer (403, 404
for a named team, 409) they declare with `responses=errors(...)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field

from trainyard.api.deps import get_principal, get_session
from trainyard.api.openai.errors import OpenAIRoute

DESCRIPTIONS = {
    400: "Invalid request: a bad value, malformed JSON, a source the team may not read "
    "(`source_not_allowed`), or text holding a NUL character or an unpaired surrogate (`invalid_text`)",
    401: "Missing or invalid API key (`unauthenticated`, `invalid_api_key`)",
    403: "The key may not do this (`permission_denied`)",
    404: "No such object visible to this key (another team's objects are not found)",
    409: "Conflicts with the object's state, a reused Idempotency-Key or the team's budget",
    413: "Request body or file over the size limit (`payload_too_large`)",
    422: "A parameter failed validation; `param` names it",
    503: "The database is unavailable (`database_unavailable`), or the object store where the route "
    "reads or writes files (`storage_unavailable`); nothing was written; retry after `Retry-After`",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}
ERROR_STATUSES = tuple(DESCRIPTIONS)
SECURITY = "apiKey"


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable, machine-readable code, e.g. `job_not_found`")
    message: str = Field(description="What went wrong, for people")
    param: str | None = Field(description="The parameter at fault, when one is")


class ErrorResponse(BaseModel):
    """The body of every error answered outside the OpenAI routes."""

    error: ErrorDetail


class OpenAIErrorDetail(ErrorDetail):
    type: str = Field(description="OpenAI's error type, e.g. `invalid_request_error`")


class OpenAIErrorResponse(BaseModel):
    """The body of every error on the OpenAI routes (`/v1/files`, `/v1/fine_tuning/jobs`,
    `/v1/models`)."""

    error: OpenAIErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route answering these error statuses beyond its kind's."""
    return {status: {"description": DESCRIPTIONS[status]} for status in statuses}


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def statuses(route: Any) -> set[int]:
    """The error statuses `route` (an APIRoute or its route context) can answer."""
    every = list(_dependants(route.dependant))
    out = {400}
    if any(d.call is get_principal for d in every):
        out.add(401)
    # Authenticating reads the database, as does the request's own session (committed before the
    # response): either way an outage answers 503 `database_unavailable`.
    if any(d.call in (get_principal, get_session) for d in every):
        out.add(503)
    if any(d.path_params for d in every):
        out |= {404, 422}
    if any(d.query_params or d.header_params for d in every):
        out.add(422)
    if route.body_field is not None:
        out |= {413, 422}
    declared = {int(s) for s in (route.responses or {}) if str(s).isdigit() and int(s) >= 400}
    return out | declared


def _ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


_CONVERTOR = re.compile(r"\{([^}:]+):[^}]+\}")


def _operations(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.include_in_schema and context.path:
            for method in sorted(context.methods or ()):
                # The document names `{path:path}` as `{path}`, as FastAPI writes it.
                yield _CONVERTOR.sub(r"{\1}", context.path), method.lower(), context


def _parameters(operation: dict[str, Any]) -> None:
    """The API key as a security requirement rather than a header parameter; and a parameter that
    may be left out is a string when given, never a JSON null (FastAPI's `anyOf` with null)."""
    params = operation.get("parameters", [])
    kept = [p for p in params if not (p["in"] == "header" and p["name"].lower() == "authorization")]
    if len(kept) < len(params):
        operation["security"] = [{SECURITY: []}]
    for param in kept:
        schema = param["schema"]
        branches = [b for b in schema.get("anyOf", ()) if b.get("type") != "null"]
        if "anyOf" in schema and len(branches) == 1:
            del schema["anyOf"]
            schema.update(branches[0])
    if kept:
        operation["parameters"] = kept
    else:
        operation.pop("parameters", None)


def document_errors(app: FastAPI, schema: dict[str, Any]) -> None:
    """Rewrite `schema` (FastAPI's document for `app`) in place: error responses in the envelope,
    the API key as a bearer security scheme."""
    schema.setdefault("components", {})["securitySchemes"] = {
        SECURITY: {"type": "http", "scheme": "bearer", "description": "An API key: `Bearer ty_...`"}
    }
    components = schema["components"].setdefault("schemas", {})
    for model in (ErrorResponse, OpenAIErrorResponse):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    for path, method, route in _operations(app):
        operation = schema["paths"][path][method]
        envelope = "OpenAIErrorResponse" if isinstance(route.original_route, OpenAIRoute) else "ErrorResponse"
        _parameters(operation)
        responses = operation["responses"]
        for status in sorted(statuses(route)):
            responses[str(status)] = {"description": DESCRIPTIONS[status], "content": _ref(envelope)}
            if status == 503:
                responses[str(status)]["headers"] = RETRY_AFTER
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _instance_types(app, components)


def _instance_types(app: FastAPI, components: dict[str, Any]) -> None:
    """`instance_type` takes a name from this deployment's catalog (else `instance_type_unknown`)."""
    names = [itype.name for itype in app.state.deployment.catalog.types]
    for model in components.values():
        prop = model.get("properties", {}).get("instance_type")
        if prop is None:
            continue
        for branch in [prop, *prop.get("anyOf", ())]:
            if branch.get("type") == "string":
                branch["enum"] = names


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` answer the document with its errors documented."""
    build = app.openapi
    documented: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal documented
        schema = build()  # FastAPI caches it until the routes change
        if schema is not documented:
            document_errors(app, schema)
            documented = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
