"""The worker daemon: claims jobs for its pools and runs each attempt in its own process.

Claims always go through the deployment's pool capacity, so a pool runs at most its
`max_concurrent` jobs at once across every worker, whichever way the daemon was started.

The daemon holds no lease itself; each attempt process heartbeats its own lease, so a crash of
one attempt cannot take others down, and a crash of the daemon leaves its attempts to be rescued
once their leases run out. The daemon also runs the rescuer, so any live worker recovers the
jobs of dead ones.

Its loop survives the database (or the store) going away: a failed pass is logged once per
outage, the next one waits a jittered backoff, and an attempt that exited while the database was
down is recorded once it is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from trainyard.platform import db, queue, storage
from trainyard.platform.deployment import Deployment
from trainyard.platform.errors import LeaseLost
from trainyard.platform.outages import Outage
from trainyard.platform.planning import Planner
from trainyard.platform.states import AttemptOutcome
from trainyard.settings import Settings
from trainyard.workers import warm
from trainyard.workers.logship import LogShipper

# A worker that fails to start attempts claims again after 1, 2, 4 ... seconds, at most this.
START_FAILURE_MAX_PAUSE_SECONDS = 60.0

log = logging.getLogger("trainyard.worker")

_ATTEMPT_SETTINGS = (
    "lease_seconds",
    "heartbeat_seconds",
    "stop_grace_seconds",
    "retry_backoff_seconds",
    "retry_backoff_max_seconds",
    "allow_local_paths",
    "local_roots",
    "shared_sources",
    # The attempt places its run by the daemon's pools and prices it by the daemon's catalog.
    "pools",
    "catalog_path",
    "estimator_constants_path",
)


AttemptProcess = subprocess.Popen[bytes] | warm.WarmProcess


@dataclass
class Running:
    claim: queue.Claim
    process: AttemptProcess
    log: LogShipper
    started: float = field(default_factory=time.monotonic)
    killed: bool = False  # by `force_stop`: its job is handed back, not counted as a crash


def ensure_ray(settings: Settings, num_cpus: int | None = None) -> str:
    """`RAY_ADDRESS`, or a local Ray started here; the address attempt processes connect to."""
    if settings.ray_address:
        return settings.ray_address
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)
    return str(ray.get_runtime_context().gcs_address)


class WorkerDaemon:
    def __init__(
        self,
        settings: Settings,
        deployment: Deployment,
        *,
        pools: Iterable[str] | None = None,
        worker_id: str | None = None,
        ray_address: str | None = None,
    ) -> None:
        """Serve `pools` of the deployment (default: all of them); unknown pools are refused."""
        self.settings = settings
        self.deployment = deployment
        self.pools = deployment.served(pools)
        self.planner = Planner(deployment)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.ray_address = ray_address or settings.ray_address
        self.engine = db.make_engine(settings.database_url, pool_size=2, max_overflow=2)
        self.sessions = db.make_sessionmaker(self.engine)
        # Jobs this daemon ends (a rescue, a crashed attempt) get their cost report there.
        self.store = storage.open_store(settings.storage_uri)
        conninfo = make_url(db.normalize_url(settings.database_url)).set(drivername="postgresql")
        self.listener = queue.Listener(conninfo.render_as_string(hide_password=False))
        self.running: dict[str, Running] = {}
        # Attempt output waits here until it is in the store (workers/logship.py).
        self.log_dir = Path(tempfile.mkdtemp(prefix="trainyard-attempt-logs-"))
        self._unshipped: list[LogShipper] = []  # attempts that ended before their last shipment
        self._ship_lock = threading.Lock()
        self._ship_outage = Outage(log, f"worker {self.worker_id}: shipping attempt logs")
        self._stopping = threading.Event()
        # Attempts this worker failed to start in a row, and when it may claim again.
        self._start_failures = 0
        self._claims_resume_at = 0.0
        self._redispatch_outage = Outage(log, f"worker {self.worker_id}: redispatch")
        if settings.warm_attempts:
            warm.shared_runner()  # its imports overlap with whatever comes before the first claim

    # -- lifecycle -------------------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        """Stop claiming; running attempts checkpoint and hand their jobs back."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: handing running attempts back", self.worker_id)
        self._stopping.set()
        for r in self.running.values():
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)

    def force_stop(self) -> None:
        """Stop now: kill every attempt's process group (its Ray job ends with it) and hand the
        jobs back from their last recorded checkpoints; the loop records that and returns."""
        self._stopping.set()
        log.warning("worker %s forced to stop: killing %d attempt(s)", self.worker_id, len(self.running))
        for r in list(self.running.values()):
            if r.process.poll() is None:
                r.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.process.pid, signal.SIGKILL)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM or SIGINT: stop gracefully; a second one: `force_stop`."""

        def on_signal(*_: object) -> None:
            if self._stopping.is_set():
                self.force_stop()
            else:
                self.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self, *, max_idle_loops: int | None = None) -> None:
        idle = 0
        outage = Outage(
            log, f"worker {self.worker_id}: database or store", cap=max(1.0, self.settings.poll_seconds)
        )
        shipping_done = threading.Event()
        shipping = threading.Thread(
            target=self._ship_loop, args=(shipping_done,), name="log-shipping", daemon=True
        )
        shipping.start()
        try:
            while True:
                try:
                    self._reap()
                    if self._stopping.is_set():
                        if not self.running:
                            return
                        time.sleep(0.5)
                        continue
                    self._rescue()
                    self._redispatch()
                    started = self._claim_and_start()
                except Exception as exc:
                    pause = outage.failed(exc)
                    if self._stopping.is_set():
                        time.sleep(min(pause, 0.5))  # still reaping: attempts are handing back
                    else:
                        self._stopping.wait(pause)
                    continue
                outage.recovered()
                if started or self.running:
                    idle = 0
                else:
                    idle += 1
                    if max_idle_loops is not None and idle >= max_idle_loops:
                        return
                if not started:
                    self.listener.wait(self.settings.poll_seconds if not self.running else 1.0)
        finally:
            shipping_done.set()
            shipping.join(timeout=30)
            self.listener.close()
            self.engine.dispose()

    # -- steps -----------------------------------------------------------------------------
    def _rescue(self) -> None:
        with self.sessions() as s:
            for job_id in queue.rescue(
                s,
                backoff_base=self.settings.retry_backoff_seconds,
                backoff_cap=self.settings.retry_backoff_max_seconds,
                store=self.store,
            ):
                log.warning("rescued job %s: its worker stopped heartbeating", job_id)

    def _redispatch(self) -> None:
        """Jobs waiting behind a full pool may move to another pool that still meets their
        constraint; any worker may do it for all pools."""
        try:
            with self.sessions() as s:
                for job_id in self.planner.redispatch(s):
                    log.info("job %s moved to another pool: its own was full", job_id)
        except Exception as exc:
            # Dispatch is an optimisation; a failure must never stop claiming.
            self._redispatch_outage.failed(exc)
        else:
            self._redispatch_outage.recovered()

    def _claim_and_start(self) -> int:
        free = self.settings.worker_concurrency - len(self.running)
        if free <= 0 or time.monotonic() < self._claims_resume_at:
            return 0
        with self.sessions() as s:
            claims = queue.claim(
                s,
                worker_id=self.worker_id,
                n=free,
                pools=self.pools,
                capacity=self.deployment.capacity,
                lease_seconds=self.settings.lease_seconds,
            )
        for i, claim in enumerate(claims):
            try:
                shipper = LogShipper(
                    self.store, self.log_dir / f"{claim.attempt_id}.log", claim.job_id, claim.attempt_number
                )
                process = self._spawn(claim, shipper.path)
            except Exception as exc:
                self._hand_back_unstarted(claims[i:], exc)
                # This worker cannot start processes now (no file descriptors, no disk for the
                # log): it stops claiming for a while, longer each time, so its jobs go to other
                # workers rather than round a claim-and-hand-back loop.
                self._start_failures += 1
                pause = min(START_FAILURE_MAX_PAUSE_SECONDS, 2.0 ** (self._start_failures - 1))
                self._claims_resume_at = time.monotonic() + pause
                return i
            self._start_failures = 0
            started = Running(claim, process, shipper)
            with self._ship_lock:
                self.running[claim.attempt_id] = started
            log.info("job %s attempt %d started", claim.job_id, claim.attempt_number)
        return len(claims)

    def _hand_back_unstarted(self, claims: list[queue.Claim], error: Exception) -> None:
        """Claims whose attempt could not be started (no process, no file descriptor, no log)
        go back to the queue at once. Left alone, rescue would end them as lost after their
        lease, each spending one of its job's attempts on a run that never began."""
        for claim in claims:
            log.warning(
                "job %s attempt %d could not be started (%s: %s): handed back",
                claim.job_id,
                claim.attempt_number,
                type(error).__name__,
                error,
            )
            try:
                with self.sessions() as s:
                    queue.finish(
                        s,
                        claim.attempt_id,
                        AttemptOutcome.HANDED_BACK,
                        error_message=f"the worker could not start it: {type(error).__name__}: {error}"[:500],
                    )
            except Exception as exc:  # the lease runs out and rescue ends it instead
                log.warning("job %s not handed back: %s", claim.job_id, type(exc).__name__)

    def _ship_logs(self) -> None:
        """What the attempts wrote since the last pass, into the store; a store outage only
        delays it (the local files keep everything)."""
        with self._ship_lock:
            live = [r.log for r in self.running.values()]
            ended = list(self._unshipped)
        try:
            for shipper in live:
                shipper.ship()
            for shipper in ended:
                shipper.ship(final=True)
                shipper.discard()
                with self._ship_lock:
                    self._unshipped.remove(shipper)
        except Exception as exc:
            self._ship_outage.failed(exc)
        else:
            self._ship_outage.recovered()

    def _ship_loop(self, done: threading.Event) -> None:
        # Its own thread: a store that hangs delays logs, never a claim, a reap or a stop.
        while not done.wait(1.0):
            self._ship_logs()
        self._ship_logs()

    def _spawn(self, claim: queue.Claim, log_path: Path) -> AttemptProcess:
        env = dict(os.environ)
        env["TRAINYARD_DATABASE_URL"] = self.settings.database_url
        env["TRAINYARD_STORAGE_URI"] = self.settings.storage_uri
        # The attempt runs on this daemon's settings, not on whatever its environment says: the
        # lease it renews is the one this daemon claimed, and it checks sources as the API does.
        for name in _ATTEMPT_SETTINGS:
            value = getattr(self.settings, name)
            if value is None:
                env.pop(f"TRAINYARD_{name.upper()}", None)
            else:
                env[f"TRAINYARD_{name.upper()}"] = (
                    json.dumps(value) if isinstance(value, list) else str(value)
                )
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
        argv = [claim.attempt_id, "--worker-id", self.worker_id]
        cmd = [sys.executable, "-m", "trainyard.workers.attempt", *argv]
        if self.settings.warm_attempts:
            try:
                return warm.shared_runner().spawn(argv, env, title=" ".join(cmd), log_path=str(log_path))
            except warm.RunnerGone as exc:
                log.warning("warm runner unavailable (%s): starting attempt %s cold", exc, claim.attempt_id)
        # A session of its own: a signal meant for the daemon's terminal does not reach the
        # attempt, which stops only when the daemon asks it to.
        with log_path.open("ab") as out:
            return subprocess.Popen(
                cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
            )

    def _reap(self) -> None:
        for attempt_id, r in list(self.running.items()):
            code = r.process.poll()
            if code is None:
                continue
            if code == 0:
                log.info("job %s attempt %d ended", r.claim.job_id, r.claim.attempt_number)
                with self._ship_lock:
                    self._unshipped.append(r.log)
                    del self.running[attempt_id]
                continue
            # The attempt process died without closing its attempt: record the crash (fenced, so
            # an attempt that did close it, or lost its lease, is left as it is). It stays in
            # `running` until that is recorded, so a database outage only delays it.
            outcome, error = AttemptOutcome.CRASHED, "worker_crashed"
            if r.killed:
                outcome, error = AttemptOutcome.HANDED_BACK, "worker_stopped"
            try:
                with self.sessions() as s:
                    status = queue.finish(
                        s,
                        attempt_id,
                        outcome,
                        error_code=error,
                        error_message=f"attempt process exited with code {code}",
                        backoff_base=self.settings.retry_backoff_seconds,
                        backoff_cap=self.settings.retry_backoff_max_seconds,
                        store=self.store,
                    )
                log.log(
                    logging.WARNING if r.killed else logging.ERROR,
                    "job %s attempt %s (exit %s); job is now %s",
                    r.claim.job_id,
                    outcome,
                    code,
                    status,
                )
            except LeaseLost:
                pass
            with self._ship_lock:
                self._unshipped.append(r.log)
                del self.running[attempt_id]
