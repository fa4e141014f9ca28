"""LISTEN/NOTIFY on one channel, so an idle worker wakes as soon as a job is queued."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from trainyard.platform.outages import Outage

NOTIFY_CHANNEL = "trainyard_jobs"
log = logging.getLogger("trainyard.queue")


def notify(session: Session, pool: str | None) -> None:
    """Wake listening workers when the enclosing transaction commits."""
    session.execute(text("SELECT pg_notify(:ch, :payload)"), {"ch": NOTIFY_CHANNEL, "payload": pool or ""})


class Listener:
    """LISTEN on the queue channel with its own autocommit connection; polling is the fallback.

    `wait(timeout)` returns True when a notification arrived, False on timeout or if the
    connection broke (the caller simply polls again; the break is logged once per outage).
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        self._outage = Outage(log, "queue listener: database")

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._conn

    def wait(self, timeout: float) -> bool:
        try:
            conn = self._connect()
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                self._outage.recovered()
                return True
        except psycopg.Error as exc:
            self.close()
            time.sleep(min(timeout, self._outage.failed(exc)))
            return False
        self._outage.recovered()
        return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
