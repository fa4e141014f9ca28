"""Request-scoped dependencies and the route class every router uses.

A request's unit of work: the caller is authenticated in a short session of its own (a
`Principal` is a plain dataclass), so no connection is held while the route streams an upload or
reads the store; the route's own session takes a connection only when it first talks to the
database; `UnitOfWorkRoute` commits it after the route function returns and before the response is
sent, so a 2xx means the write is durable, and a commit that fails answers 503
`database_unavailable` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Query, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from trainyard.platform import auth, db, jobs, storage
from trainyard.platform.errors import InvalidRequest


def get_session(request: Request) -> Iterator[Session]:
    session = request.app.state.sessionmaker()
    # Kept on the request for `UnitOfWorkRoute`, which commits it, and for a route class answering
    # an error itself, which rolls it back.
    request.state.session = session
    try:
        yield session
    finally:
        session.close()  # rolls back whatever was not committed


# Function scope: the session closes before the response is sent, not after.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> auth.Principal:
    with request.app.state.sessionmaker() as session:
        return auth.authenticate(session, authorization)


PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]
Authorization = Annotated[str | None, Header()]
T = TypeVar("T")


async def unit_of_work(
    request: Request, authorization: str | None, work: Callable[[Session, auth.Principal], T]
) -> T:
    """Authenticate, run `work` in a session and commit it, in one trip to the thread pool: what
    `PrincipalDep`, `SessionDep` and `UnitOfWorkRoute` do, for a hot route with its body already
    read, which would otherwise cross to the pool once for each. The key is checked in the
    work's own session (there is no upload to wait for while it is open), in autocommit: the
    work's first transaction is reads, and the work says when it writes (`db.release`, then its
    own transaction or `db.autocommit`). The commit comes before the answer, and one that fails
    answers 503, as there."""

    def run() -> T:
        with request.app.state.sessionmaker() as session:
            db.autocommit(session)
            out = work(session, auth.authenticate(session, authorization))
            db.commit(session)
            return out

    return await run_in_threadpool(run)


# Parameters that the services check themselves, their limits stated in the schema
# (json_schema_extra) so that the services' own answers stay as they are.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", json_schema_extra={"minLength": 1, "maxLength": jobs.MAX_IDEMPOTENCY_KEY}
    ),
]
OrderQ = Annotated[str, Query(json_schema_extra={"enum": ["asc", "desc"]})]


class UnitOfWorkRoute(APIRoute):
    """Commits the request's session once the route function has returned, before the response is
    sent (FastAPI ends even function-scoped dependencies outside the route handler, where an error
    could no longer be answered in the route's envelope)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            response = await handler(request)
            session: Session | None = getattr(request.state, "session", None)
            if session is not None:
                await run_in_threadpool(db.commit, session)
            return response

        return route


def bracket_params(request: Request, name: str, example: str) -> dict[str, str]:
    """Query parameters of the form `name[key]=value` (Stripe's and OpenAI's way of passing a
    map in a query string), as a dict."""
    out: dict[str, str] = {}
    prefix = f"{name}["
    for param, value in request.query_params.multi_items():
        if param.startswith(prefix) and param.endswith("]"):
            key = param[len(prefix) : -1]
            if not key:
                raise InvalidRequest(f"{name} needs a key: {example}", param=name)
            out[key] = value
    return out


def get_store(request: Request) -> storage.ObjectStore:
    """This deployment's object store, opened on first use (opening contacts nothing)."""
    store: storage.ObjectStore | None = getattr(request.app.state, "store", None)
    if store is None:
        store = storage.open_store(request.app.state.settings.storage_uri)
        request.app.state.store = store
    return store


StoreDep = Annotated[storage.ObjectStore, Depends(get_store)]
