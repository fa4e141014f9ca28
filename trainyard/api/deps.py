"""Request-scoped dependencies: a database session (one unit of work) and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from trainyard.platform import auth
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
