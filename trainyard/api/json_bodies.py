"""A JSON body is JSON whatever its Content-Type says.

`curl -d '{...}'` sends `application/x-www-form-urlencoded`, and many clients send `text/plain`
or nothing; FastAPI reads only a JSON media type as JSON and refuses the rest as `invalid_json`.
Every Trainyard route that takes a body takes JSON (multipart uploads to `/v1/files` aside), so
a request whose body parses as JSON is given `Content-Type: application/json` before any route
reads it. A body that is not JSON is passed on untouched, and refused as it was.

Mounted inside the body size limit, so the body it holds in memory is never over that limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _media_type(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


def _is_json_media(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _parses(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


class JsonBodies:
    def __init__(self, app: ASGIApp, *, skip_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.skip_paths = skip_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        media = _media_type(scope) if scope["type"] == "http" else ""
        if (
            scope["type"] != "http"
            or scope.get("method") not in _BODY_METHODS
            or _is_json_media(media)
            or media.startswith("multipart/")
            or str(scope.get("path", "")).startswith(self.skip_paths)
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away; the route sees the disconnect as it would have
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if body.strip() and _parses(bytes(body)):
            headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)
