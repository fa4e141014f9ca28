"""One attempt of one job, in a process of its own: `python -m trainyard.workers.attempt ATTEMPT_ID`.

The main thread drives the Ray Train run; a heartbeat thread renews the lease, moves what the
run reports (progress, persisted checkpoints, messages) into the database through fenced writes,
and turns a cancel, a budget overrun, a shutdown or a lost lease into a graceful stop request.
A lost lease means another attempt owns the job: this one stops and writes nothing more.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import attempts, costs, db, events, queue, storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import ApiKey, Job, JobAttempt
from trainyard.platform.sources import Reader, SourcePolicy, SourceRefused
from trainyard.platform.spec import JobSpec
from trainyard.platform.states import AttemptOutcome
from trainyard.settings import Settings, get_settings
from trainyard.workers.outcome import TrainingOutcome

if TYPE_CHECKING:
    # Ray is imported once the attempt trains, not when the process starts.
    from trainyard.workers.control import RunControlHandle

log = logging.getLogger("trainyard.attempt")

EXIT_LEASE_LOST = 3


class UserError(Exception):
    """The job cannot run as specified (missing dataset, unreadable model): no retry."""

    def __init__(self, message: str, code: str = "user_error") -> None:
        super().__init__(message)
        self.code = code


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
        self._done = threading.Event()
        self._progress: dict[str, Any] = {}
        self._last_metrics_event = 0.0

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

    def _drain(self) -> None:
        if self.control is None:
            return
        import ray

        from trainyard.workers.control import CHECKPOINT, MESSAGE, PROGRESS

        reports: list[dict[str, Any]] = ray.get(self.control.drain.remote(), timeout=10)
        for event in reports:
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
                with self.sessions() as s:
                    attempts.record_checkpoint(
                        s,
                        self.attempt_id,
                        step=int(event["step"]),
                        uri=str(event["uri"]),
                        metrics=event.get("metrics") or {},
                    )
            elif kind == MESSAGE:
                with self.sessions() as s:
                    attempts.record_event(
                        s,
                        self.attempt_id,
                        events.MESSAGE,
                        str(event.get("message", "")),
                        level=str(event.get("level", "info")),
                    )

    def beat(self) -> None:
        """One heartbeat: renew the lease first (nothing may delay it), act on what it says, then
        move what the run reported into the database."""
        with self.sessions() as s:
            hb = queue.heartbeat(
                s, self.attempt_id, lease_seconds=self.settings.lease_seconds, progress=self._progress or None
            )
        if hb.stop_reason:
            self._request_stop(hb.stop_reason)
        self._drain()
        now = time.monotonic()
        if self._progress and now - self._last_metrics_event >= 10.0:
            self._last_metrics_event = now
            with self.sessions() as s:
                p = self._progress
                attempts.record_event(
                    s,
                    self.attempt_id,
                    events.METRICS,
                    f"step {p.get('step')}/{p.get('total_steps')} loss {p.get('loss')}",
                    data=dict(p),
                )

    def _heartbeat_loop(self) -> None:
        first = True
        while first or not self._done.wait(self.settings.heartbeat_seconds):
            first = False
            try:
                self.beat()
            except LeaseLost:
                self.lease_lost.set()
                self._request_stop("lease_lost")
                log.error("attempt %s lost its lease; stopping without further writes", self.attempt_id)
                # The run is now someone else's: do not wait for a graceful stop to finish.
                self._shutdown_hard()
                return
            except Exception:
                # A database or Ray hiccup: keep trying until the lease itself runs out.
                log.warning("heartbeat failed; retrying", exc_info=True)

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
            return job, attempt, JobSpec.model_validate(job.spec)

    def _check_sources(self, job: Job, spec: JobSpec) -> JobSpec:
        """The source policy again, as the job's team, before any byte is read: a grant revoked
        or a link changed since submit stops the job here. Returns the spec as checked."""
        policy = SourcePolicy.from_settings(self.settings)
        with self.sessions() as s:
            key = s.get(ApiKey, job.api_key_id) if job.api_key_id else None
            reader = Reader(job.team_id, is_admin=key is not None and key.role == "admin")
            try:
                return policy.check_spec(s, reader, spec)
            except SourceRefused as exc:
                raise UserError(exc.message, code=exc.code) from None

    def _preflight(self, spec: JobSpec) -> None:
        for param in ("training_file", "validation_file"):
            uri = getattr(spec, param)
            if uri is None:
                continue
            try:
                storage.read_uri(uri)
            except (storage.ObjectNotFound, storage.InvalidKey, FileNotFoundError) as exc:
                raise UserError(f"{param} {uri!r} cannot be read: {exc}") from exc

    def run(self) -> int:
        job, _attempt, spec = self._load()
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop("shutdown"))
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        outcome = AttemptOutcome.CRASHED
        code: str | None = "internal_error"
        message: str | None = None
        retryable = True
        trained: TrainingOutcome | None = None
        try:
            spec = self._check_sources(job, spec)
            self._preflight(spec)
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
        try:
            self._drain()
        except Exception:
            log.warning("final drain failed", exc_info=True)
        try:
            with self.sessions() as s:
                if trained is not None and trained.checkpoint_uris:
                    attempts.prune_checkpoints(s, self.attempt_id, list(trained.checkpoint_uris))
                if self._progress:
                    queue.heartbeat(
                        s, self.attempt_id, lease_seconds=self.settings.lease_seconds, progress=self._progress
                    )
                queue.finish(
                    s,
                    self.attempt_id,
                    outcome,
                    error_code=code,
                    error_message=message,
                    retryable=retryable,
                    backoff_base=self.settings.retry_backoff_seconds,
                    backoff_cap=self.settings.retry_backoff_max_seconds,
                    result=trained.to_dict() if trained is not None else None,
                )
        except LeaseLost:
            return EXIT_LEASE_LOST
        self.write_cost_report(job.id)
        return 0

    def write_cost_report(self, job_id: str) -> None:
        with self.sessions() as s:
            report = costs.cost_report(s, job_id)
            uri = self.store.put_bytes(
                storage.cost_report_key(job_id),
                json.dumps(report, indent=2).encode(),
                content_type="application/json",
            )
            totals = report["totals"]
            events.add(
                s,
                job_id,
                events.COST,
                f"${totals['cost_usd']:.4f} over {totals['billable_seconds']:.0f}s",
                attempt_id=self.attempt_id,
                data={"uri": uri, **totals},
            )
            job = s.get(Job, job_id)
            if job is not None:
                job.result = {**(job.result or {}), "cost_report_uri": uri}
            s.commit()

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
                attempts.set_start_step(s, self.attempt_id, latest.step)
        trained = run_training(
            spec,
            job_id=job.id,
            itype=itype,
            pool=pool,
            store_uri=self.settings.storage_uri,
            control=self.control,
            run_name=job.id,
        )
        if trained.tokens_trained:
            self._progress["tokens"] = trained.tokens_trained
        return trained


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
