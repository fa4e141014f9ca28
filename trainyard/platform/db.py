"""Engine and session factories, and what a database outage looks like. Nothing connects at import
time."""

from __future__ import annotations

import contextlib
import logging

import psycopg
from sqlalchemy import Engine, create_engine, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform.errors import TrainyardError

log = logging.getLogger("trainyard.db")

# A server that does not answer a connect within this is down, as far as a request is concerned.
CONNECT_TIMEOUT_SECONDS = 5


class DatabaseUnavailable(TrainyardError):
    """The database could not be reached, or did not confirm a write; the request may be retried."""

    status = 503
    code = "database_unavailable"


# Every error the database layer raises, outage or not.
DATABASE_ERRORS: tuple[type[Exception], ...] = (exc.SQLAlchemyError, psycopg.Error)


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the database (or the way to it) is down, rather than that a statement
    was wrong: a refused or dropped connection, an exhausted pool, a server shutting down."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        exc.OperationalError
        | exc.InterfaceError
        | exc.TimeoutError
        | psycopg.OperationalError
        | psycopg.InterfaceError,
    )


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs (what every other tool prints) and use psycopg 3."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    if not u.drivername.startswith("postgresql"):
        raise ValueError(f"only PostgreSQL is supported, got {u.drivername!r}")
    return u.render_as_string(hide_password=False)


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout: float = 30.0
) -> Engine:
    """`pool_timeout`: how long a caller waits for a free connection before `exc.TimeoutError`."""
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        future=True,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: services return ORM objects that routes read after commit.
    return sessionmaker(engine, expire_on_commit=False)


def commit(session: Session) -> None:
    """Commit, or raise `DatabaseUnavailable`: a write the database did not confirm is one the
    caller must not be told was saved."""
    try:
        session.commit()
    except exc.SQLAlchemyError as error:
        log.warning("commit failed: %s", type(error).__name__)
        with contextlib.suppress(exc.SQLAlchemyError):
            session.rollback()
        raise DatabaseUnavailable("the database did not confirm the write; retry the request") from error


def autocommit(session: Session) -> None:
    """Run `session`'s statements until its next commit each as its own transaction: no BEGIN
    and COMMIT round trips, for reads that need no snapshot in common or a write that is one
    statement. Call it before the transaction's first statement; the pool gives the connection
    back to the next user in its usual mode."""
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def release(session: Session) -> None:
    """Commit what `session` holds and give its connection back to the pool, before network I/O
    (the object store, the model hub, a client's upload): no transaction, lock or pooled
    connection waits on them. Objects loaded so far stay readable (`expire_on_commit=False`); the
    session's next statement opens a new transaction."""
    commit(session)
