"""RunControl: the mailbox between a running training attempt and the worker daemon.

Training workers and the Ray Train controller push events into it (progress, persisted
checkpoints, messages); the attempt process reads them on its own schedule (`pending`), writes
them to the database and only then removes them (`ack`), so a failed write loses nothing.
The other direction is a stop flag and a lease: the attempt asks the run to stop (cancel,
preemption, lease loss) and rank 0 of the training loop polls for it; and each renewal of the
attempt's lease is passed on (`lease`), so that once the attempt stops renewing it (partitioned,
frozen, killed) the run answers "lease_lost" by itself and the workers stop without another write,
before the rescuer may give the job to a new attempt.

The actor takes no CPU so it never competes with training workers for a placement group, and
every method is cheap, so one single-threaded actor serves a whole run.

Report shapes, by kind (each gets ``seq`` and ``time`` stamped on arrival). These are messages
between Ray processes, not job events: the attempt process turns some of them into job events.

- ``{"type": "progress", "step", "total_steps", "tokens_seen", "loss", "tokens_per_second", "epoch",
  "phase"}`` -- or ``{"type": "progress", "phase"}`` alone when only the phase moved
  (``states.JobPhase``: loading_model, training, checkpointing, saving)
- ``{"type": "checkpoint", "step", "metrics", "uri"}`` -- ``uri`` is where Ray Train persisted it
- ``{"type": "message", "level", "message"}``
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, TypeAlias

import ray

from trainyard.workers.lease import LEASE_LOST

PROGRESS = "progress"
CHECKPOINT = "checkpoint"
MESSAGE = "message"
REPORT_KINDS = frozenset({PROGRESS, CHECKPOINT, MESSAGE})

# Progress arrives every couple of seconds; if the daemon stops draining (it crashed, the DB is
# down) the mailbox must not grow without bound. Checkpoints and messages are never dropped.
MAX_PROGRESS_BACKLOG = 500


class RunControlState:
    """The actor's logic as a plain class, so it can be unit-tested without Ray."""

    def __init__(self) -> None:
        self._events: deque[dict[str, Any]] = deque()
        self._progress_backlog = 0
        self._seq = 0
        self._stop_reason: str | None = None
        self._latest_progress: dict[str, Any] | None = None
        self._lease_deadline: float | None = None

    def report(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind not in REPORT_KINDS:
            # A malformed event is still worth seeing; keep it as a warning instead of raising
            # into a fire-and-forget caller that would never notice.
            event = {"type": MESSAGE, "level": "warning", "message": f"unknown event: {event!r}"[:2000]}
            kind = MESSAGE
        self._seq += 1
        stamped = {**event, "seq": self._seq, "time": time.time()}
        if kind == PROGRESS:
            if "step" in event:  # the latest figures; a phase alone leaves them as they were
                self._latest_progress = stamped
            if self._progress_backlog >= MAX_PROGRESS_BACKLOG:
                self._drop_oldest_progress()
            self._progress_backlog += 1
        self._events.append(stamped)

    def _drop_oldest_progress(self) -> None:
        for i, ev in enumerate(self._events):
            if ev["type"] == PROGRESS:
                del self._events[i]
                self._progress_backlog -= 1
                return

    def pending(self) -> list[dict[str, Any]]:
        """Everything reported and not yet acknowledged, oldest first; removes nothing."""
        return list(self._events)

    def ack(self, seq: int) -> None:
        """Remove the events up to and including `seq`: their reader has stored them."""
        while self._events and self._events[0]["seq"] <= seq:
            if self._events.popleft()["type"] == PROGRESS:
                self._progress_backlog -= 1

    def drain(self) -> list[dict[str, Any]]:
        out = list(self._events)
        self._events.clear()
        self._progress_backlog = 0
        return out

    def latest_progress(self) -> dict[str, Any] | None:
        return self._latest_progress

    def request_stop(self, reason: str) -> None:
        # The first reason wins: a later "lease lost" should not relabel an earlier "cancelled".
        if self._stop_reason is None:
            self._stop_reason = reason or "stop requested"

    def lease(self, valid_for_s: float) -> None:
        """The attempt renewed its lease; it holds for `valid_for_s` more seconds from now.

        A duration rather than a deadline: this actor may run on another node, whose clock is not
        the attempt's. Counting from arrival makes the deadline a little late by the call's transit
        time, which the attempt's own margin (`lease_margin`) covers."""
        self._lease_deadline = time.monotonic() + max(0.0, valid_for_s)

    def lease_passed(self) -> bool:
        return self._lease_deadline is not None and time.monotonic() >= self._lease_deadline

    def stop_requested(self) -> str | None:
        # A lapsed lease overrides any earlier reason: whatever the stop was for, nothing more
        # may be written once another attempt may own the job.
        if self.lease_passed():
            return LEASE_LOST
        return self._stop_reason


# num_cpus=0: schedulable even when training holds every CPU of the cluster.
RunControl = ray.remote(num_cpus=0, max_restarts=0)(RunControlState)

# A RunControl actor handle. Ray types a handle's method attributes as Never, which would make
# mypy skip every line after a `handle.report.remote(...)` as unreachable, so it is Any here.
RunControlHandle: TypeAlias = Any


def create_run_control(name: str | None = None, namespace: str | None = None) -> RunControlHandle:
    """Start a RunControl actor, optionally named so another process can look it up.

    It lives on the caller's node (the attempt's, on the worker's own machine) where it can:
    placed on a training node, it would die with that node, a spot node taken back, and the
    run's last reports with it, while the attempt waited on it to end."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    opts: dict[str, Any] = {
        "scheduling_strategy": NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=True
        )
    }
    if name is not None:
        opts.update(name=name, get_if_exists=True)
    if namespace is not None:
        opts["namespace"] = namespace
    return RunControl.options(**opts).remote()
