"""Which database errors are outages, and how the API answers them: 503 `database_unavailable` with
Retry-After, never a 500; a statement the database refused stays a 500."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import exc

from trainyard.api.errors import translate
from trainyard.platform import db


def _wrapped(kind: type[exc.DBAPIError], orig: Exception, *, invalidated: bool = False) -> exc.DBAPIError:
    return kind("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection refused"),
        _wrapped(exc.OperationalError, psycopg.OperationalError("server closed the connection")),
        _wrapped(exc.InterfaceError, psycopg.InterfaceError("connection already closed")),
        _wrapped(exc.DBAPIError, psycopg.Error("lost"), invalidated=True),
        exc.TimeoutError("QueuePool limit of size 2 overflow 0 reached"),
        db.DatabaseUnavailable("the database did not confirm the write"),
    ],
)
def test_outages_answer_503_with_retry_after(error: Exception) -> None:
    answer = translate(error)
    assert (answer.status, answer.code) == (503, "database_unavailable")
    assert answer.headers == {"Retry-After": "1"}


def test_a_refused_statement_is_not_an_outage() -> None:
    error = _wrapped(exc.IntegrityError, psycopg.errors.UniqueViolation("duplicate key"))
    assert not db.is_outage(error)
    assert translate(error).status == 500
