"""The attempt's side of the RunControl mailbox: what the run reported, written to the database.

A report leaves the mailbox only once it is written (`ack` after the write), so a failed write is
retried on the next drain and nothing is dropped. Every write goes through the attempt's fence.
Recording a checkpoint may retire older ones (the job's `keep`); their files are deleted from the
store only after the commit that stopped listing them.

Progress is the run's latest figures (step, tokens, loss; a sweep's summed over its trials), the
phase last reported (by the run, or by the attempt itself: `set_phase`) and, for a sweep, how many
of its trials have started of how many it runs. A report with a phase and no step moves the phase
only: the figures stay as they were.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from trainyard.platform import attempts, events
from trainyard.platform.errors import LeaseLost
from trainyard.platform.states import JobPhase
from trainyard.platform.storage import ObjectStore, job_prefix
from trainyard.workers.lease import Fence

log = logging.getLogger("trainyard.attempt")


class Mailbox:
    def __init__(self, attempt_id: str, fenced: Fence, store: ObjectStore) -> None:
        self.attempt_id = attempt_id
        self.job_id: str | None = None  # set once the attempt has read its job
        self._fenced = fenced
        self.store = store
        self.control: Any = None  # the RunControl actor handle, once the run has one
        self.keep: int | None = None  # the job's checkpoint keep (None: a sweep prunes at its end)
        self.sweep_trials: int | None = None  # a sweep's number of trials (None: not a sweep)
        self.progress: dict[str, Any] = {}  # the latest progress report, for the heartbeat
        self._figures: dict[str, Any] = {}  # the latest step, tokens, loss (a sweep's: summed)
        self._phase: str | None = None
        self._trials: dict[str, dict[str, Any]] = {}  # a sweep's latest report per trial
        self._started: set[str] = set()  # a sweep's trials heard from in this attempt
        self._acked = 0  # the last report written to the database
        self._lock = threading.Lock()  # the heartbeat and a forced end both drain

    def set_phase(self, phase: JobPhase) -> None:
        """What the attempt itself is doing (starting the workers, saving what the run left):
        it goes out with the next heartbeat, until the run reports a phase of its own."""
        self._phase = str(phase)
        self.progress = {**self.progress, "phase": self._phase}

    def _combine(self) -> dict[str, Any]:
        out = dict(self._figures)
        if self._phase is not None:
            out["phase"] = self._phase
        if self.sweep_trials:
            out["trials"] = self.sweep_trials
            if self._started:
                out["trial"] = min(len(self._started), self.sweep_trials)
        return out

    def _report_phase(self, value: Any) -> None:
        if value is None:
            return
        try:
            self._phase = str(JobPhase(value))
        except ValueError:  # a run of another version: its figures still count
            log.warning("attempt %s: the run reported an unknown phase %r", self.attempt_id, value)

    def drain(self) -> None:
        """Write everything reported and not yet written; raises what a write raised."""
        if self.control is None:
            return
        import ray

        with self._lock:
            reports: list[dict[str, Any]] = ray.get(self.control.pending.remote(), timeout=10)
            written = self._acked
            try:
                for event in reports:
                    if int(event["seq"]) <= self._acked:
                        continue  # written before; its acknowledgement did not arrive
                    self._store(event)
                    self._acked = int(event["seq"])
            finally:
                if self._acked > written:
                    self.control.ack.remote(self._acked)

    def drain_unless_gone(self) -> None:
        """`drain`, except that a run whose control actor has died (its node went away) has
        nothing more to hand over: that is logged once, not retried until the lease runs out."""
        from ray.exceptions import RayActorError

        try:
            self.drain()
        except RayActorError as exc:
            log.warning("attempt %s: the run's last reports are lost with its node: %s", self.attempt_id, exc)

    def drain_or_log(self) -> None:
        """One drain, for a run being killed: what Ray cannot hand over now is logged as lost."""
        try:
            self.drain()
        except LeaseLost:
            raise
        except Exception as exc:
            log.warning("attempt %s: the run's last reports are lost: %s", self.attempt_id, exc)

    def _store(self, event: dict[str, Any]) -> None:
        from trainyard.workers.control import CHECKPOINT, MESSAGE, PROGRESS

        kind = event.get("type")
        if kind == PROGRESS:
            trial = event.get("trial")
            if trial:
                self._started.add(str(trial))
            self._report_phase(event.get("phase"))
            if "step" in event:
                report = {
                    "step": int(event.get("step") or 0),
                    "total_steps": event.get("total_steps"),
                    "tokens": int(event.get("tokens_seen") or 0),
                    "loss": event.get("loss"),
                    "tokens_per_second": event.get("tokens_per_second"),
                    "epoch": event.get("epoch"),
                }
                if trial:
                    self._trials[str(trial)] = report
                    self._figures = sweep_progress(self._trials, self.sweep_trials)
                else:
                    self._figures = report
            self.progress = self._combine()
        elif kind == CHECKPOINT:
            gone: list[str] = self._fenced(
                lambda s: attempts.record_checkpoint(
                    s,
                    self.attempt_id,
                    step=int(event["step"]),
                    uri=str(event["uri"]),
                    metrics=event.get("metrics") or {},
                    keep=self.keep,
                    trial=event.get("trial"),
                )
            )
            self._delete(gone)
        elif kind == MESSAGE:
            self._fenced(
                lambda s: attempts.record_event(
                    s,
                    self.attempt_id,
                    events.MESSAGE,
                    str(event.get("message", "")),
                    level=str(event.get("level", "info")),
                    data=event.get("data") if isinstance(event.get("data"), dict) else None,
                )
            )

    def _delete(self, uris: list[str]) -> None:
        """Remove checkpoints no row points at any more (beyond `keep`, or replaced): only ever
        under this job's own prefix in the store, whatever a recorded URI says."""
        if self.job_id is None:
            return
        own = self.store.uri_for(job_prefix(self.job_id)).rstrip("/") + "/"
        root = self.store.root_uri.rstrip("/") + "/"
        for uri in uris:
            if not uri.startswith(own):
                continue  # not this job's: nothing of ours to delete
            try:
                self.store.delete_prefix(uri.removeprefix(root))
            except Exception as exc:  # a blip leaves an unlisted directory behind, nothing worse
                log.warning("attempt %s: could not delete checkpoint %s: %s", self.attempt_id, uri, exc)


def sweep_progress(trials: dict[str, dict[str, Any]], count: int | None) -> dict[str, Any]:
    """A sweep's progress, its trials' together: their steps and tokens summed (so the budget's
    pace is the sweep's, all trials at once), and its total steps those of every trial, the ones
    not heard from yet taken to be as long as the average of those heard from."""
    reports = list(trials.values())
    totals = [r["total_steps"] for r in reports if isinstance(r.get("total_steps"), int | float)]
    waiting = max(0, (count or len(reports)) - len(reports))
    total = sum(totals) + waiting * (sum(totals) / len(totals)) if totals else None
    losses = [r["loss"] for r in reports if isinstance(r.get("loss"), int | float)]
    rates = [r["tokens_per_second"] for r in reports if isinstance(r.get("tokens_per_second"), int | float)]
    return {
        "step": sum(r["step"] for r in reports),
        "total_steps": round(total) if total is not None else None,
        "tokens": sum(r["tokens"] for r in reports),
        "loss": min(losses) if losses else None,  # the best trial's
        "tokens_per_second": sum(rates) if rates else None,
        "epoch": None,
        "trial_steps": {name: r["step"] for name, r in sorted(trials.items())},
    }
