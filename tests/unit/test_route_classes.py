"""Every route that works in a database session commits it before answering (`UnitOfWorkRoute`,
or `OpenAIRoute`, which extends it): the session dependency itself never commits, so a router
without that class answers 2xx for writes that are rolled back. A hot route may instead run its
work through `deps.unit_of_work`, which commits before it returns."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts

from trainyard.api.app import create_app
from trainyard.api.deps import UnitOfWorkRoute, get_session
from trainyard.settings import get_settings


def _uses_session(dependant: Any) -> bool:
    return dependant.call is get_session or any(_uses_session(d) for d in dependant.dependencies)


def test_every_route_with_a_session_commits_it(tmp_path: Path) -> None:
    settings = get_settings(
        database_url="postgresql+psycopg://nobody@127.0.0.1:9/none", storage_uri=f"file://{tmp_path}"
    )
    routes = [
        (context.path, context.original_route)
        for context in iter_route_contexts(create_app(settings).routes)
        if isinstance(context.original_route, APIRoute) and _uses_session(context.dependant)
    ]
    committing_itself = [
        context.path
        for context in iter_route_contexts(create_app(settings).routes)
        if isinstance(context.original_route, APIRoute)
        and "unit_of_work(" in inspect.getsource(context.original_route.endpoint)
    ]
    assert "/v1/jobs" in committing_itself
    assert len(routes) + len(committing_itself) >= 29
    plain = [path for path, route in routes if not isinstance(route, UnitOfWorkRoute)]
    assert not plain, f"routes whose session is never committed: {plain}"
