"""An attempt's own view of its lease: a deadline on the local monotonic clock.

The database decides who owns a job (`queue.fence`); this deadline lets an attempt that cannot
reach the database stop by itself before the rescuer may give its job to another attempt. It is
the start of the last successful renewal plus the lease, less a margin: the database computed
the lease from its own clock at some point after that start, so the deadline is never late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform.errors import LeaseLost
from trainyard.platform.outages import Outage

T = TypeVar("T")

# The stop reason that means "write nothing more": no last checkpoint, no final model, no end.
LEASE_LOST = "lease_lost"


def lease_margin(lease_seconds: float) -> float:
    """How long before the database would see the lease expire the attempt stops by itself:
    time for the stop to take effect before the rescuer can hand the job to another attempt."""
    return min(lease_seconds / 2, max(2.0, 0.2 * lease_seconds))


class LocalLease:
    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self.margin = lease_margin(lease_seconds)
        self.deadline = time.monotonic() + lease_seconds - self.margin

    def renewed(self, started: float, lease_seconds: float | None = None) -> None:
        """The database (re)set the lease to `lease_seconds` in a call begun at `started`."""
        lasts = self.lease_seconds if lease_seconds is None else lease_seconds
        self.deadline = started + lasts - self.margin

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.left() <= 0


def retrying(
    log: logging.Logger, what: str, step: Callable[[], T], *, lease: LocalLease, check: Callable[[], None]
) -> T:
    """Run `step` until it succeeds, through outages (logged once), until the lease's deadline.

    `check` raises LeaseLost once the deadline has passed; LeaseLost from `step` is not retried.
    """
    outage = Outage(log, what)
    while True:
        check()
        try:
            result = step()
        except LeaseLost:
            raise
        except Exception as exc:
            pause = min(outage.failed(exc), lease.left())
            if pause > 0:
                time.sleep(pause)
            continue
        outage.recovered()
        return result


class Fence:
    """Every database write of one attempt: refused here once the local deadline has passed
    (`on_passed` is told first), and by the database (`queue.fence`, inside each write) once
    another attempt owns the job."""

    def __init__(
        self,
        log: logging.Logger,
        attempt_id: str,
        sessions: sessionmaker[Session],
        lease: LocalLease,
        on_passed: Callable[[], None],
    ) -> None:
        self.log = log
        self.attempt_id = attempt_id
        self.sessions = sessions
        self.lease = lease
        self.on_passed = on_passed

    def check(self) -> None:
        if self.lease.passed:
            self.on_passed()
            raise LeaseLost(f"attempt {self.attempt_id} is past its local lease deadline")

    def __call__(self, write: Callable[[Session], T]) -> T:
        self.check()
        with self.sessions() as s:
            return write(s)

    def retrying(self, what: str, step: Callable[[], T]) -> T:
        """`step` through outages until the local deadline (see `retrying`)."""
        return retrying(
            self.log, f"attempt {self.attempt_id}: {what}", step, lease=self.lease, check=self.check
        )
