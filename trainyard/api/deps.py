"""Request-scoped dependencies: a database session (one unit of work) and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from trainyard.platform import auth, jobs
from trainyard.platform.errors import InvalidRequest


def get_session(request: Request) -> Iterator[Session]:
    session = request.app.state.sessionmaker()
    # Kept on the request so that a route class answering an error itself can roll it back.
    request.state.session = session
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> auth.Principal:
    return auth.authenticate(session, authorization)


PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]

# Parameters that the services check themselves, their limits stated in the schema
# (json_schema_extra) so that the services' own answers stay as they are.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", json_schema_extra={"minLength": 1, "maxLength": jobs.MAX_IDEMPOTENCY_KEY}
    ),
]
OrderQ = Annotated[str, Query(json_schema_extra={"enum": ["asc", "desc"]})]


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
