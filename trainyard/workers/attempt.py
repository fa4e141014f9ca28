"""One attempt of one job, in a process of its own: `python -m trainyard.workers.attempt ATTEMPT_ID`.

The main thread drives the Ray Train run; a heartbeat thread renews the lease, moves what the
run reports (progress, persisted checkpoints, messages) into the database through fenced writes,
and turns a cancel, a budget overrun, a shutdown or a lost lease into a graceful stop request.
A lost lease means another attempt owns the job: this one stops and writes nothing more.

The attempt also fences itself: it keeps a local deadline (monotonic clock: its last successful
renewal plus the lease, less a margin), every write checks it first, and a watchdog stops the
run once it passes, so an attempt cut off from the database stops before the rescuer may act.
Database and Ray outages are retried (logged once each) until then; the end of the run (mailbox,
checkpoints, cost report, the fenced end) is retried the same way rather than wasting the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import extract, func, select
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import attempts, db, events, queue, storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.outages import Outage
from trainyard.platform.spec import JobSpec
from trainyard.platform.states import AttemptOutcome
from trainyard.settings import Settings, get_settings
from trainyard.workers.lease import LocalLease, retrying
from trainyard.workers.outcome import TrainingOutcome
from trainyard.workers.preflight import UserError, check_readable, check_sources

if TYPE_CHECKING:
    # Ray is imported once the attempt trains, not when the process starts.
    from trainyard.workers.control import RunControlHandle

log = logging.getLogger("trainyard.attempt")

EXIT_LEASE_LOST = 3

T = TypeVar("T")


class AttemptRunner:
    def __init__(self, settings: Settings, attempt_id: str) -> None:
        self.settings = settings
        self.attempt_id = attempt_id
        self.engine = db.make_engine(settings.database_url, pool_size=2, max_overflow=1)
        self.sessions: sessionmaker[Session] = db.make_sessionmaker(self.engine)
        self.store = storage.open_store(settings.storage_uri)
        self.control: RunControlHandle | None = None
        self.stop_reason: str | None = None
        self.lease_lost = threading.Event()
        self._done = threading.Event()  # training is over: the heartbeat thread stops
        self._ended = threading.Event()  # the attempt is over: the lease watchdog stops
        self._progress: dict[str, Any] = {}
        self._last_metrics_event = 0.0
        self.lease = LocalLease(settings.lease_seconds)  # set from the database in `_load`
        self._acked = 0  # the last mailbox report written to the database

    # -- the heartbeat side ----------------------------------------------------------------
    def _request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("attempt %s: stop requested (%s)", self.attempt_id, reason)
        if self.control is not None:
            try:
                self.control.request_stop.remote(reason)
            except Exception:  # Ray may already be shutting down
                log.debug("could not deliver stop request", exc_info=True)

    def _lose_lease(self, why: str) -> None:
        if not self.lease_lost.is_set():
            self.lease_lost.set()
            log.error("attempt %s: %s; stopping without further writes", self.attempt_id, why)
        self._request_stop("lease_lost")

    def _check_deadline(self) -> None:
        if self.lease.passed:
            self._lose_lease("lease not renewed by its local deadline")
            raise LeaseLost(f"attempt {self.attempt_id} is past its local lease deadline")

    def _fenced(self, write: Callable[[Session], T]) -> T:
        """Every database write of this attempt: refused here once the local deadline has passed,
        and by the database (`queue.fence`) once another attempt owns the job."""
        self._check_deadline()
        with self.sessions() as s:
            return write(s)

    def _retrying(self, what: str, step: Callable[[], T]) -> T:
        return retrying(
            log, f"attempt {self.attempt_id}: {what}", step, lease=self.lease, check=self._check_deadline
        )

    def _renew(self) -> queue.Heartbeat:
        started = time.monotonic()
        hb = self._fenced(
            lambda s: queue.heartbeat(
                s, self.attempt_id, lease_seconds=self.settings.lease_seconds, progress=self._progress or None
            )
        )
        self.lease.renewed(started)
        return hb

    def _drain(self) -> None:
        """Write what the run reported; a report leaves the mailbox only once it is written, so a
        failed write is retried on the next call and nothing is dropped."""
        if self.control is None:
            return
        import ray

        reports: list[dict[str, Any]] = ray.get(self.control.pending.remote(), timeout=10)
        written = self._acked
        try:
            for event in reports:
                if int(event["seq"]) <= self._acked:
                    continue  # written before; its acknowledgement did not arrive
                self._store_report(event)
                self._acked = int(event["seq"])
        finally:
            if self._acked > written:
                self.control.ack.remote(self._acked)

    def _store_report(self, event: dict[str, Any]) -> None:
        from trainyard.workers.control import CHECKPOINT, MESSAGE, PROGRESS

        kind = event.get("type")
        if kind == PROGRESS:
            self._progress = {
                "step": int(event.get("step") or 0),
                "total_steps": event.get("total_steps"),
                "tokens": int(event.get("tokens_seen") or 0),
                "loss": event.get("loss"),
                "tokens_per_second": event.get("tokens_per_second"),
                "epoch": event.get("epoch"),
            }
        elif kind == CHECKPOINT:
            self._fenced(
                lambda s: attempts.record_checkpoint(
                    s,
                    self.attempt_id,
                    step=int(event["step"]),
                    uri=str(event["uri"]),
                    metrics=event.get("metrics") or {},
                )
            )
        elif kind == MESSAGE:
            self._fenced(
                lambda s: attempts.record_event(
                    s,
                    self.attempt_id,
                    events.MESSAGE,
                    str(event.get("message", "")),
                    level=str(event.get("level", "info")),
                )
            )

    def beat(self) -> None:
        """One heartbeat: renew the lease first (nothing may delay it), act on what it says, then
        move what the run reported into the database."""
        hb = self._renew()
        if hb.stop_reason:
            self._request_stop(hb.stop_reason)
        self._drain()
        now = time.monotonic()
        if self._progress and now - self._last_metrics_event >= 10.0:
            p = dict(self._progress)
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
        """Stop the attempt once its local deadline passes, whatever the other threads wait on."""
        while not self._ended.wait(min(1.0, self.settings.heartbeat_seconds)):
            if self.lease.passed:
                self._lose_lease("lease not renewed by its local deadline")
                self._shutdown_hard()
                return

    def _shutdown_hard(self) -> None:
        time.sleep(min(5.0, self.settings.heartbeat_seconds))
        os._exit(EXIT_LEASE_LOST)

    # -- the run ---------------------------------------------------------------------------
    def _load(self) -> tuple[Job, JobAttempt, JobSpec]:
        with self.sessions() as s:
            attempt = s.get(JobAttempt, self.attempt_id)
            if attempt is None:
                raise LeaseLost(f"unknown attempt {self.attempt_id}")
            job = s.get(Job, attempt.job_id)
            assert job is not None
            started = time.monotonic()
            left = s.scalar(
                select(extract("epoch", JobAttempt.lease_expires_at - func.now())).where(
                    JobAttempt.id == attempt.id
                )
            )
            assert left is not None
            self.lease.renewed(started, float(left))
            return job, attempt, JobSpec.model_validate(job.spec)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self._ended.set()

    def _run(self) -> int:
        job, _attempt, spec = self._load()
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop("shutdown"))
        threading.Thread(target=self._watch_lease, name="lease-watchdog", daemon=True).start()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        outcome = AttemptOutcome.CRASHED
        code: str | None = "internal_error"
        message: str | None = None
        retryable = True
        trained: TrainingOutcome | None = None
        try:
            spec = check_sources(self.settings, self.sessions, job, spec)
            check_readable(spec)
            trained = self._train(job, spec)
            # A stop asked for after the run had already finished changes nothing.
            stopped = trained.stopped_early
            if stopped and self.stop_reason == "cancelled":
                outcome = AttemptOutcome.CANCELLED
            elif stopped and self.stop_reason == "budget_exceeded":
                outcome, code, retryable = AttemptOutcome.FAILED, "budget_exceeded", False
                message = f"projected spend passed max_cost_usd={spec.policy.max_cost_usd}"
            elif stopped and self.stop_reason in ("shutdown", "paused"):
                outcome = AttemptOutcome.HANDED_BACK
            elif stopped:
                outcome, code = AttemptOutcome.CRASHED, "stopped"
                message = f"run stopped early ({self.stop_reason})"
            else:
                outcome, code = AttemptOutcome.SUCCEEDED, None
        except UserError as exc:
            outcome, code, message, retryable = AttemptOutcome.FAILED, exc.code, str(exc), False
        except Exception as exc:
            outcome, code, message = AttemptOutcome.CRASHED, "training_error", f"{type(exc).__name__}: {exc}"
            log.error("attempt %s failed:\n%s", self.attempt_id, traceback.format_exc())
        finally:
            self._done.set()
            beat.join(timeout=30)
        if self.lease_lost.is_set():
            return EXIT_LEASE_LOST
        return self.end(outcome, code=code, message=message, retryable=retryable, trained=trained)

    def end(
        self,
        outcome: AttemptOutcome,
        *,
        code: str | None = None,
        message: str | None = None,
        retryable: bool = True,
        trained: TrainingOutcome | None = None,
    ) -> int:
        """Record what the run left, then end the attempt; returns the process's exit code.

        In order: the mailbox, the last progress (renewing the lease), the checkpoints Ray Train
        no longer keeps, then `queue.finish`, which puts the cost report in the store before the
        fenced write that ends the job. Each step is retried through outages until the local
        lease deadline; a finished run is not wasted on a database blip.
        """
        try:
            self._retrying("reading the run's reports", self._drain)
            if trained is not None and trained.tokens_trained:
                self._progress["tokens"] = trained.tokens_trained
            self._retrying("lease renewal", self._renew)
            if trained is not None and trained.checkpoint_uris:
                kept = list(trained.checkpoint_uris)
                self._retrying(
                    "pruning checkpoints",
                    lambda: self._fenced(lambda s: attempts.prune_checkpoints(s, self.attempt_id, kept)),
                )
            self._retrying(
                "ending the attempt",
                lambda: self._fenced(
                    lambda s: queue.finish(
                        s,
                        self.attempt_id,
                        outcome,
                        error_code=code,
                        error_message=message,
                        retryable=retryable,
                        backoff_base=self.settings.retry_backoff_seconds,
                        backoff_cap=self.settings.retry_backoff_max_seconds,
                        result=trained.to_dict() if trained is not None else None,
                        store=self.store,
                    )
                ),
            )
        except LeaseLost:
            return EXIT_LEASE_LOST
        return 0

    def _train(self, job: Job, spec: JobSpec) -> TrainingOutcome:
        import ray

        from trainyard.workers.control import create_run_control
        from trainyard.workers.launch import run_training

        deployment = load_deployment(self.settings)
        itype = deployment.instance_type(job.instance_type or spec.instance_type or "local-cpu")
        pool = deployment.pool(job.pool or itype.name)
        if not ray.is_initialized():
            ray.init(
                address=self.settings.ray_address or "auto", configure_logging=False, log_to_driver=False
            )
        # ray.init installs a SIGTERM handler that exits at once; a worker shutdown must instead
        # let the run checkpoint and hand the job back.
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop("shutdown"))
        self.control = create_run_control()
        if self.stop_reason:
            self._request_stop(self.stop_reason)
        with self.sessions() as s:
            latest = attempts.latest_checkpoint(s, job.id)
        if latest is not None:
            step = latest.step
            self._fenced(lambda s: attempts.set_start_step(s, self.attempt_id, step))
        return run_training(
            spec,
            job_id=job.id,
            itype=itype,
            pool=pool,
            store_uri=self.settings.storage_uri,
            control=self.control,
            run_name=job.id,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainyard.workers.attempt")
    parser.add_argument("attempt_id")
    parser.add_argument("--worker-id", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runner = AttemptRunner(get_settings(), args.attempt_id)
    try:
        return runner.run()
    finally:
        runner.engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
