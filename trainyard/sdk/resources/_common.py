"""Helpers the resource modules share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel


def path_id(value: str) -> str:
    """An id as one path segment: a stray '/' or '..' in it cannot reach another route."""
    if not isinstance(value, str) or not value:
        raise ValueError("an id must be a non-empty string")
    return quote(value, safe="")


def path_in_url(value: str) -> str:
    """A relative file path as URL path segments: each quoted, the '/' between them kept."""
    return "/".join(quote(part, safe="") for part in value.split("/"))


def job_body(spec: Mapping[str, Any] | BaseModel | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a job: `spec` (a dict or a pydantic model) with keyword fields on top."""
    if spec is None:
        body: dict[str, Any] = {}
    elif isinstance(spec, BaseModel):
        # Only what the caller set: the server fills defaults, and an old client must not
        # pin defaults the server has since changed.
        body = spec.model_dump(mode="json", exclude_unset=True)
    elif isinstance(spec, Mapping):
        body = dict(spec)
    else:
        raise TypeError(f"spec must be a mapping or a pydantic model, not {type(spec).__name__}")
    body.update(fields)
    return body
