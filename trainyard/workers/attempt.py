"""One attempt of one job, in a process of its own: `python -m trainyard.workers.attempt ATTEMPT_ID`.

The main thread drives the Ray Train run; a heartbeat thread renews the lease, moves what the
run reports (progress, persisted checkpoints, messages) into the database through fenced writes,
and turns a cancel, a budget overrun, a shutdown or a lost lease into a graceful stop request.
A lost lease means another attempt owns the job: this one stops and writes nothing more.
Those threads and the stop requests are the heartbeat's (`heartbeat.Heartbeat`, which the runner
owns); this module loads the attempt, drives the run and records how it ended.

The attempt also fences itself (`lease.Fence`): a local deadline every write checks first, and
a watchdog that stops the run once it passes, so an attempt cut off from the database stops
before the rescuer may act; the run itself learns the lease too (RunControl) and stops writing.
Outages are retried (logged once) until then, the end of the run included.

A stop (cancel, pause, budget, shutdown) is graceful first: the run saves a checkpoint and
returns. One still running `stop_grace_seconds` after the request (a hung collective, a stuck
download, a worker group that never started) is ended by the watchdog in the stop's target state,
with its cost report; the process then exits, which ends its Ray job and every worker of the run.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

from sqlalchemy import extract, func, select
from sqlalchemy.orm import Session, sessionmaker

from trainyard.platform import attempts, db, queue, storage
from trainyard.platform.deployment import load_deployment
from trainyard.platform.errors import LeaseLost
from trainyard.platform.models import Job, JobAttempt
from trainyard.platform.spec import JobSpec
from trainyard.platform.states import AttemptOutcome, JobPhase
from trainyard.settings import Settings, get_settings
from trainyard.workers.cluster import InsufficientResources, alive_nodes, lost_nodes
from trainyard.workers.heartbeat import EXIT_LEASE_LOST as EXIT_LEASE_LOST  # the exit code callers check
from trainyard.workers.heartbeat import Heartbeat
from trainyard.workers.lease import Fence, LocalLease
from trainyard.workers.mailbox import Mailbox
from trainyard.workers.outcome import TrainingOutcome, stopped_outcome
from trainyard.workers.preflight import UserError, check_readable, check_sources

if TYPE_CHECKING:  # Ray is imported once the attempt trains, not when the process starts
    from trainyard.workers.control import RunControlHandle

log = logging.getLogger("trainyard.attempt")

NODE_DEATH_WAIT_S = 20.0


class AttemptRunner:
    def __init__(self, settings: Settings, attempt_id: str) -> None:
        self.settings = settings
        self.attempt_id = attempt_id
        self.engine = db.make_engine(settings.database_url, pool_size=2, max_overflow=1)
        self.sessions: sessionmaker[Session] = db.make_sessionmaker(self.engine)
        self.store = storage.open_store(settings.storage_uri)
        self.lease = LocalLease(settings.lease_seconds)  # set from the database in `_load`
        # The fence tells the heartbeat once the local deadline passes; the heartbeat in turn
        # writes through the fence, hence the late lookup.
        self._fenced = Fence(log, attempt_id, self.sessions, self.lease, lambda: self.heartbeat.lapsed())
        self.mailbox = Mailbox(attempt_id, self._fenced, self.store)
        self.heartbeat = Heartbeat(
            settings, attempt_id, self.lease, self._fenced, self.mailbox, self._end_killed
        )
        self._end_lock = threading.Lock()
        self._end_code: int | None = None  # set once the attempt has ended (or failed to)
        self._budget: float | None = None
        self.number = 0  # set in `_load`
        self._spot = False
        self._nodes_at_start: set[str] = set()  # the Ray nodes alive when the run started

    @property
    def control(self) -> RunControlHandle | None:
        """The run's RunControl actor, once the run has one (the mailbox holds it)."""
        return self.mailbox.control

    @property
    def stop_reason(self) -> str | None:
        """Why the attempt was asked to stop, if it was (the heartbeat holds it)."""
        return self.heartbeat.stop_reason

    @property
    def lease_lost(self) -> threading.Event:
        """Set once another attempt may own the job: nothing more is written."""
        return self.heartbeat.lease_lost

    def beat(self) -> None:
        """One heartbeat (see `Heartbeat.beat`)."""
        self.heartbeat.beat()

    def _end_killed(self, reason: str) -> int:
        """The watchdog's end of a stop that ran past its grace period: the stop's target state,
        with the kill in the message."""
        grace = self.settings.stop_grace_seconds
        outcome, code, message, retryable = stopped_outcome(reason, self._budget)
        killed = f"the run did not stop within {grace:.0f}s of the {reason} request and was killed"
        return self.end(
            outcome,
            code=code,
            message=f"{message}; {killed}" if message else killed,
            retryable=retryable,
            forced=True,
        )

    # -- the run ---------------------------------------------------------------------------
    def _load(self) -> tuple[Job, JobAttempt, JobSpec]:
        with self.sessions() as s:
            attempt = s.get(JobAttempt, self.attempt_id)
            if attempt is None:
                raise LeaseLost(f"unknown attempt {self.attempt_id}")
            job = s.get(Job, attempt.job_id)
            assert job is not None
            spec = JobSpec.model_validate(job.spec)
            self.mailbox.job_id = job.id
            self.mailbox.keep = spec.checkpoint.keep if spec.sweep is None else None
            self.mailbox.sweep_trials = spec.sweep.trials if spec.sweep is not None else None
            self._budget = spec.policy.max_cost_usd
            self.number = attempt.number
            self._spot = bool(attempt.spot)
            started = time.monotonic()
            left = s.scalar(
                select(extract("epoch", JobAttempt.lease_expires_at - func.now())).where(
                    JobAttempt.id == attempt.id
                )
            )
            assert left is not None
            self.lease.renewed(started, float(left))
            return job, attempt, spec

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.heartbeat.ended()

    def _run(self) -> int:
        job, _attempt, spec = self._load()
        signal.signal(signal.SIGTERM, lambda *_: self.heartbeat.request_stop("shutdown"))
        # Until the run's workers say they are loading the model (the first beat carries it).
        self.mailbox.set_phase(JobPhase.STARTING_WORKERS)
        self.heartbeat.start()
        outcome = AttemptOutcome.CRASHED
        code: str | None = "internal_error"
        message: str | None = None
        retryable = True
        trained: TrainingOutcome | None = None
        log.info(
            "job %s attempt %d: checking sources (%s on %s)",
            job.id,
            self.number,
            spec.base_model,
            job.instance_type or spec.instance_type,
        )
        try:
            spec = check_sources(self.settings, self.sessions, job, spec)
            check_readable(spec)
            trained = self._train(job, spec)
            # A stop asked for after the run had already finished changes nothing.
            if trained.stopped_early:
                # A stop this attempt asked for wins; otherwise the run's own (a preemption notice).
                reason = self.stop_reason or trained.stop_reason
                outcome, code, message, retryable = stopped_outcome(reason, self._budget)
            else:
                outcome, code = AttemptOutcome.SUCCEEDED, None
        except UserError as exc:
            outcome, code, message, retryable = AttemptOutcome.FAILED, exc.code, str(exc), False
        except InsufficientResources as exc:
            # Capacity may come back (a node restarting, an autoscaler): the job's retries decide.
            outcome, code, message = AttemptOutcome.FAILED, "insufficient_resources", str(exc)
            log.error("attempt %s: %s", self.attempt_id, exc)
        except Exception as exc:
            outcome, code, message = AttemptOutcome.CRASHED, "training_error", f"{type(exc).__name__}: {exc}"
            lost = lost_nodes(self._nodes_at_start, wait_s=NODE_DEATH_WAIT_S) if self._spot else set()
            if lost:
                # A spot node that vanished without notice is a preemption, not a bug in the run:
                # the job resumes from its last recorded checkpoint, counted as a preemption.
                outcome, code = AttemptOutcome.PREEMPTED, "node_lost"
                message = f"spot node(s) {', '.join(sorted(lost))} went away during the run"
            log.error("attempt %s failed:\n%s", self.attempt_id, traceback.format_exc())
        finally:
            self.heartbeat.stop()
        if self.lease_lost.is_set():
            log.error("job %s attempt %d: lease lost; the job is another attempt's now", job.id, self.number)
            return EXIT_LEASE_LOST
        exit_code = self.end(outcome, code=code, message=message, retryable=retryable, trained=trained)
        log.info(
            "job %s attempt %d ended: %s%s",
            job.id,
            self.number,
            outcome,
            f" ({code}: {message})" if code else "",
        )
        return exit_code

    def end(
        self,
        outcome: AttemptOutcome,
        *,
        code: str | None = None,
        message: str | None = None,
        retryable: bool = True,
        trained: TrainingOutcome | None = None,
        forced: bool = False,
    ) -> int:
        """Record what the run left, then end the attempt; returns the process's exit code.

        In order: the mailbox, the last progress (renewing the lease), for a sweep the checkpoints
        Ray Train no longer keeps, then `queue.finish`, which puts the cost report in the store
        before the fenced write that ends the job. Each step is retried through outages until the
        local lease deadline; a finished run is not wasted on a database blip. `forced`: the run
        is being killed, and a mailbox Ray cannot deliver now is not waited for.

        Runs once: a second caller (the run returning while a forced end is under way) waits for
        the first and gets its exit code.
        """
        with self._end_lock:
            if self._end_code is None:
                self._end_code = EXIT_LEASE_LOST  # what a crash part-way leaves: nothing more written
                self._end_code = self._end(outcome, code, message, retryable, trained, forced)
            return self._end_code

    def _end(
        self,
        outcome: AttemptOutcome,
        code: str | None,
        message: str | None,
        retryable: bool,
        trained: TrainingOutcome | None,
        forced: bool,
    ) -> int:
        try:
            if forced:
                self.mailbox.drain_or_log()
            else:
                self._fenced.retrying("reading the run's reports", self.mailbox.drain_unless_gone)
            if trained is not None and trained.tokens_trained:
                self.mailbox.progress["tokens"] = trained.tokens_trained
            if trained is not None and trained.tokens_per_second:
                # The run's average, not its last interval's: the figure later plans learn from.
                self.mailbox.progress["tokens_per_second"] = trained.tokens_per_second
            if outcome == AttemptOutcome.SUCCEEDED:
                # The cost report and the job's final records are written from here on.
                self.mailbox.set_phase(JobPhase.SAVING)
            self._fenced.retrying("lease renewal", self.heartbeat.renew)
            if trained is not None and trained.trials and trained.checkpoint_uris:
                kept = list(trained.checkpoint_uris)
                self._fenced.retrying(
                    "pruning checkpoints",
                    lambda: self._fenced(lambda s: attempts.prune_checkpoints(s, self.attempt_id, kept)),
                )
            self._fenced.retrying(
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
        from trainyard.workers.control import create_run_control
        from trainyard.workers.launch import connect, run_training

        deployment = load_deployment(self.settings)
        itype = deployment.instance_type(job.instance_type or spec.instance_type or "local-cpu")
        pool = deployment.pool(job.pool or itype.name)
        log.info("job %s attempt %d: connecting to Ray", job.id, self.number)
        connect(self.settings.ray_address)
        self._nodes_at_start = alive_nodes()
        # ray.init installs a SIGTERM handler that exits at once; a worker shutdown must instead
        # let the run checkpoint and hand the job back.
        signal.signal(signal.SIGTERM, lambda *_: self.heartbeat.request_stop("shutdown"))
        self.mailbox.control = create_run_control()
        self.heartbeat.pass_lease_on()
        if self.stop_reason:
            self.heartbeat.request_stop(self.stop_reason)
        with self.sessions() as s:
            latest = attempts.latest_checkpoint(s, job.id)
        if spec.sweep is not None:
            # Each trial resumes from its own latest checkpoint; the attempt from all of them.
            self._fenced(lambda s: attempts.set_sweep_start(s, self.attempt_id))
        elif latest is not None:
            step = latest.step
            self._fenced(lambda s: attempts.set_start_step(s, self.attempt_id, step))
        log.info(
            "job %s attempt %d: starting the run on %s%s",
            job.id,
            self.number,
            itype.name,
            f", resuming from step {latest.step}" if latest is not None else "",
        )
        return run_training(
            spec,
            job_id=job.id,
            itype=itype,
            pool=pool,
            store_uri=self.settings.storage_uri,
            control=self.control,
            run_name=job.id,
            attempt=self.number,
            # A sweep's trials resume through Tune's own record of its experiment.
            resume_from=latest.uri if latest is not None and spec.sweep is None else None,
            plan=job.plan,
            spot=self._spot,
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
