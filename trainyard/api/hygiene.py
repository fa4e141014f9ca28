"""Text hygiene at the boundary: a request whose path, query, headers or body hold text the
platform cannot store (`platform.text`) is refused with 400 `invalid_text` naming the parameter,
before any route reads it. Installed as an app-wide dependency, so every route, also one added
later, is covered, and each answers in its own dialect's envelope.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from trainyard.platform.errors import InvalidRequest
from trainyard.platform.text import dotted, find_bad_text, text_problem

INVALID_TEXT = "invalid_text"


def _refuse(param: str | None, problem: str) -> InvalidRequest:
    where = param or "the request body"
    return InvalidRequest(f"{where} {problem}", code=INVALID_TEXT, param=param)


def _check(value: str, param: str) -> None:
    problem = text_problem(value)
    if problem:
        raise _refuse(_escaped(param), problem)


def _escaped(name: str) -> str:
    # A parameter's own name may be the bad text; the error names it without repeating it.
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _header_name(raw: str) -> str:
    # Starlette lowercases header names; an error names them as clients write them.
    return "-".join(part.capitalize() for part in raw.split("-"))


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _body(request: Request) -> Any:
    """The decoded JSON body, or None where there is none to check (FastAPI has already answered
    a body that is not JSON, and a route without a body never reads one)."""
    if not _is_json(request.headers.get("content-type", "")):
        return None
    raw = await request.body()  # cached: the route's own parse read it first
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def refuse_bad_text(request: Request) -> None:
    """The app-wide dependency: raises InvalidRequest (`invalid_text`) on the first bad text."""
    for name, value in request.path_params.items():
        if isinstance(value, str):
            _check(value, name)
    for key, value in request.query_params.multi_items():
        _check(key, key)
        _check(value, key)
    for name, value in request.headers.items():
        _check(value, _header_name(name))
    content_type = request.headers.get("content-type", "").lower()
    if request.method in ("POST", "PUT", "PATCH") and content_type.startswith("multipart/form-data"):
        for key, value in (await request.form()).multi_items():  # cached, as the body is
            _check(key, key)
            if isinstance(value, UploadFile):
                _check(value.filename or "", f"{key}.filename")
            else:
                _check(value, key)
        return
    found = find_bad_text(await _body(request))
    if found:
        path, problem = found
        raise _refuse(dotted(path), problem)
