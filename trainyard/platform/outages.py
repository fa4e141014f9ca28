"""When an outside system (Postgres, the object store, Ray) goes away: log once, back off, carry on.

A loop that talks to one of them keeps an `Outage`. Each failed try calls `failed(exc)`, which
logs the first failure of an outage as a warning (later ones only at debug level, so a minute
of downtime is one line, not hundreds) and returns how long to wait before the next try:
exponential, capped, with jitter so that many workers coming back do not retry in step. The
first success afterwards calls `recovered()`, which says how long the outage lasted.

`keep_running` restarts a long-lived component (a thread's loop) that dies anyway.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable


class Outage:
    def __init__(self, log: logging.Logger, what: str, *, base: float = 0.5, cap: float = 15.0) -> None:
        self.log = log
        self.what = what
        self.base = base
        self.cap = cap
        self.failures = 0
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException) -> float:
        """Record a failed try; returns the seconds to wait before the next one."""
        if self.failures == 0:
            self._since = time.monotonic()
            self.log.warning(
                "%s unavailable (%s: %s); retrying with backoff", self.what, type(exc).__name__, exc
            )
        else:
            self.log.debug("%s still unavailable (try %d)", self.what, self.failures + 1, exc_info=True)
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        return delay * random.uniform(0.5, 1.0)

    def recovered(self) -> None:
        if self.failures and self._since is not None:
            self.log.info(
                "%s reachable again after %.1fs (%d failed tries)",
                self.what,
                time.monotonic() - self._since,
                self.failures,
            )
        self.failures = 0
        self._since = None


def keep_running(
    log: logging.Logger, name: str, run: Callable[[], None], *, stopping: Callable[[], bool]
) -> None:
    """Run `run` until it returns; start it again (after a jittered backoff) each time it dies,
    unless `stopping()` says the process is shutting down. For a long-lived thread, which would
    otherwise die silently."""
    deaths = 0
    while True:
        try:
            run()
            return
        except Exception:
            if stopping():
                log.exception("%s died while stopping", name)
                return
            deaths += 1
            pause = min(30.0, 0.5 * 2 ** (deaths - 1)) * random.uniform(0.5, 1.0)
            log.exception("%s died (%d times so far); starting it again in %.1fs", name, deaths, pause)
            time.sleep(pause)
