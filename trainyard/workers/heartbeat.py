"""The heartbeat side of an attempt: its lease, its stop requests, and the two threads that act on them.

The heartbeat thread renews the lease first (nothing may delay it), acts on what the renewal says
(cancel, pause, budget), then moves what the run reported (the mailbox) into the database. A
database or Ray hiccup is retried sooner than the next beat until the lease runs out; a lost lease
means another attempt owns the job, so the process exits without waiting for the run to stop.

The lease watchdog does not depend on the database or on Ray answering: it stops the attempt once
the local deadline passes (`lease.LocalLease`), so an attempt cut off from the database stops
before the rescuer may act. It also ends a graceful stop still running `stop_grace_seconds` after
the request (a hung collective, a stuck download, a worker group that never started): the attempt
ends in the stop's target state (the runner records it) and the process exits, which ends its Ray
job and every worker of the run.

The run learns the lease too (RunControl), so that it stops by itself if the attempt goes quiet.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from trainyard.platform import attempts, events, queue
from trainyard.platform.errors import LeaseLost
from trainyard.platform.outages import Outage
from trainyard.settings import Settings
from trainyard.workers.lease import LEASE_LOST, Fence, LocalLease
from trainyard.workers.mailbox import Mailbox

log = logging.getLogger("trainyard.attempt")

EXIT_LEASE_LOST = 3


class Heartbeat:
    """`end_killed(reason)` ends the attempt in the target state of a stop that did not finish in
    its grace period, the run being killed, and returns the process's exit code."""

    def __init__(
        self,
        settings: Settings,
        attempt_id: str,
        lease: LocalLease,
        fenced: Fence,
        mailbox: Mailbox,
        end_killed: Callable[[str], int],
    ) -> None:
        self.settings = settings
        self.attempt_id = attempt_id
        self.lease = lease
        self._fenced = fenced
        self.mailbox = mailbox
        self._end_killed = end_killed
        self.stop_reason: str | None = None
        self.lease_lost = threading.Event()
        self._done = threading.Event()  # training is over: the heartbeat thread stops
        self._ended = threading.Event()  # the attempt is over: the lease watchdog stops
        self._last_metrics_event = 0.0
        self._stop_at: float | None = None  # when a graceful stop was first asked for
        self._thread: threading.Thread | None = None

    # -- stop requests ---------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("attempt %s: stop requested (%s)", self.attempt_id, reason)
        if self._stop_at is None and reason != LEASE_LOST:
            self._stop_at = time.monotonic()
        control = self.mailbox.control
        if control is not None:
            try:
                control.request_stop.remote(reason)
            except Exception:  # Ray may already be shutting down
                log.debug("could not deliver stop request", exc_info=True)

    def lapsed(self) -> None:
        self._lose_lease("lease not renewed by its local deadline")

    def _lose_lease(self, why: str) -> None:
        if not self.lease_lost.is_set():
            self.lease_lost.set()
            log.error("attempt %s: %s; stopping without further writes", self.attempt_id, why)
        self.request_stop(LEASE_LOST)

    # -- the lease -------------------------------------------------------------------------
    def renew(self) -> queue.Heartbeat:
        started = time.monotonic()
        hb = self._fenced(
            lambda s: queue.heartbeat(
                s,
                self.attempt_id,
                lease_seconds=self.settings.lease_seconds,
                progress=self.mailbox.progress or None,
            )
        )
        self.lease.renewed(started)
        self.pass_lease_on()
        return hb

    def pass_lease_on(self) -> None:
        """Tell the run how long the lease holds, so that it stops by itself if we go quiet."""
        try:
            if self.mailbox.control is not None:
                self.mailbox.control.lease.remote(self.lease.left())
        except Exception:  # Ray away: the watchdog still stops us in time
            log.debug("could not pass the lease on to the run", exc_info=True)

    def beat(self) -> None:
        """One heartbeat: renew the lease first (nothing may delay it), act on what it says, then
        move what the run reported into the database."""
        hb = self.renew()
        if hb.stop_reason:
            self.request_stop(hb.stop_reason)
        self.mailbox.drain()
        now = time.monotonic()
        # The run's figures, once it has some (a phase alone is no metrics worth an event).
        if "step" in self.mailbox.progress and now - self._last_metrics_event >= 10.0:
            p = dict(self.mailbox.progress)
            self._fenced(
                lambda s: attempts.record_event(
                    s,
                    self.attempt_id,
                    events.METRICS,
                    f"step {p.get('step')}/{p.get('total_steps')} loss {p.get('loss')}",
                    data=p,
                )
            )
            self._last_metrics_event = now

    # -- the threads -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the lease watchdog, then the heartbeat thread (which beats at once)."""
        threading.Thread(target=self._watch_lease, name="lease-watchdog", daemon=True).start()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Training is over: stop the heartbeat thread (the watchdog goes on until `ended`)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def ended(self) -> None:
        """The attempt is over: the lease watchdog stops."""
        self._ended.set()

    def _heartbeat_loop(self) -> None:
        # A database or Ray hiccup is retried (sooner than the next beat) until the lease runs
        # out; the watchdog acts on that.
        outage = Outage(log, f"attempt {self.attempt_id}: heartbeat", cap=self.settings.heartbeat_seconds)
        pause = self.settings.heartbeat_seconds
        first = True
        while first or not self._done.wait(pause):
            first = False
            try:
                self.beat()
            except LeaseLost:
                self._lose_lease("lease lost")
                # The run is now someone else's: do not wait for a graceful stop to finish.
                self._shutdown_hard()
                return
            except Exception as exc:
                pause = outage.failed(exc)
                continue
            outage.recovered()
            pause = self.settings.heartbeat_seconds

    def _watch_lease(self) -> None:
        """Stop the attempt once its local deadline passes, whatever the other threads wait on;
        end it once a graceful stop has run past its grace period."""
        while not self._ended.wait(min(1.0, self.settings.heartbeat_seconds)):
            if self.lease.passed:
                self.lapsed()
                self._shutdown_hard()
                return
            if self._stop_overdue():
                self._force_stop()
                return

    def _stop_overdue(self) -> bool:
        return (
            self._stop_at is not None
            and not self._done.is_set()
            and not self.lease_lost.is_set()
            and time.monotonic() - self._stop_at > self.settings.stop_grace_seconds
        )

    def _force_stop(self) -> None:
        reason = self.stop_reason or "shutdown"
        log.warning(
            "attempt %s: the run did not stop within %.0fs of the %s request; ending it",
            self.attempt_id,
            self.settings.stop_grace_seconds,
            reason,
        )
        self._done.set()  # the heartbeat thread stops after its current beat
        exit_code = self._end_killed(reason)
        # Exiting ends this driver's Ray job: Ray stops every worker and actor of the run.
        os._exit(exit_code)

    def _shutdown_hard(self) -> None:
        time.sleep(min(5.0, self.settings.heartbeat_seconds))
        os._exit(EXIT_LEASE_LOST)
