"""What runs beside the Hugging Face Trainer on each worker: progress to RunControl, the stop
signal every rank agrees on, and each Trainer checkpoint handed to Ray Train.

- rank 0 streams progress to the ``RunControl`` actor at most every ``progress_interval_s``
  without any per-step ``ray.train.report`` barrier, and says at once when the run's phase
  changes (training, checkpointing around each save): a report with a ``phase`` and no step;
- rank 0 polls ``RunControl.stop_requested()`` without blocking and broadcasts the decision to
  every rank each optimizer step, so all ranks save one last checkpoint and stop on the same step;
  when the reason is a lost lease, all ranks stop on that step without saving anything;
- a node of the run being drained for preemption (a spot reclaim announced with a deadline, as
  Ray Train's preemption watcher learns it) is a stop too: every rank saves the current step and
  stops, so the next attempt loses no step;
- each Trainer checkpoint is handed to ``ray.train.report`` under a step-numbered directory name,
  so Ray Train persists it in the job's store and hands it back through
  ``ray.train.get_checkpoint()`` when the same run is started again.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist
from transformers import TrainerCallback

from trainyard.platform.states import JobPhase
from trainyard.workers.control import MESSAGE, PROGRESS, RunControlHandle
from trainyard.workers.lease import LEASE_LOST

logger = logging.getLogger(__name__)

PREEMPTED = "preempted"
# The broadcast's values: go on, stop (saving), stop writing nothing, stop (saving) for preemption.
_GO, _STOP, _LEASE_LOST, _PREEMPTED = 0, 1, 2, 3


def preemption_notice() -> bool:
    """Whether Ray Train has told this worker that a node of its group is being preempted.

    Read from the worker's own train context, which Ray Train's preemption watcher updates on
    every worker: unlike ``ray.train.get_preemption_info()`` it is no barrier, so rank 0 can look
    every step and the decision still reaches every rank through the one stop broadcast."""
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        return get_train_context().preemption_context.preemption_info is not None
    except Exception:  # not in a Ray Train worker, or an API that moved: no notice
        return False


def report_phase(
    control: RunControlHandle | None, rank: int, phase: JobPhase, tags: dict[str, Any] | None = None
) -> None:
    """Rank 0 tells RunControl what the run is doing now; never waits, never fails training."""
    if rank != 0 or control is None:
        return
    try:
        control.report.remote({"type": PROGRESS, "phase": str(phase), **(tags or {})})
    except Exception:
        logger.warning("could not reach RunControl", exc_info=True)


CHECKPOINT_DIR_PREFIX = "checkpoint_"


def checkpoint_dir_name(step: int) -> str:
    """The directory name a step's checkpoint gets in the store (sortable by name)."""
    return f"{CHECKPOINT_DIR_PREFIX}{step:09d}"


class StopSignal:
    """Rank 0 asks RunControl without blocking; every rank learns the answer on the same step.

    ``stop_requested`` is an actor call, so rank 0 keeps one call in flight and checks it with a
    zero-timeout ``ray.wait`` each step, issuing a new one every ``poll_interval_s``. The decision
    is then broadcast as one int64 over a gloo group: that costs far less than a training step,
    works when the default group is NCCL, and guarantees no rank stops a step before another
    (which would hang the next collective).
    """

    def __init__(
        self, control: RunControlHandle | None, rank: int, world_size: int, poll_interval_s: float
    ) -> None:
        self._control = control
        self._rank = rank
        self._interval = poll_interval_s
        self._pending: Any = None
        self._last_poll = -math.inf
        self.reason: str | None = None
        self.lease_lost = False  # known on every rank once `should_stop` said so
        self._group: Any = None
        if world_size > 1 and dist.is_available() and dist.is_initialized():
            self._group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def check_now(self, timeout_s: float = 10.0) -> None:
        """A blocking poll, for the start of training, so an early request stops at step one."""
        if self._rank != 0 or self._control is None:
            return
        try:
            self.reason = ray.get(self._control.stop_requested.remote(), timeout=timeout_s) or self.reason
        except Exception:  # a missing control actor must not fail training
            logger.warning("RunControl did not answer stop_requested", exc_info=True)
        self._last_poll = time.monotonic()

    def _refresh(self) -> None:
        if self._control is None or self.reason is not None:
            return
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if not ready:
                return
            try:
                self.reason = ray.get(self._pending) or None
            except Exception:
                logger.warning("RunControl did not answer stop_requested", exc_info=True)
            self._pending = None
            self._last_poll = time.monotonic()
        elif time.monotonic() - self._last_poll >= self._interval:
            self._pending = self._control.stop_requested.remote()

    def should_stop(self) -> bool:
        """Call on every rank at the same point of every step."""
        flag = _GO
        if self._rank == 0:
            self._refresh()
            if self.reason is None and preemption_notice():
                self.reason = PREEMPTED
            flag = {None: _GO, LEASE_LOST: _LEASE_LOST, PREEMPTED: _PREEMPTED}.get(self.reason, _STOP)
        if self._group is not None:
            t = torch.tensor([flag], dtype=torch.int64)
            dist.broadcast(t, src=0, group=self._group)
            flag = int(t.item())
        self.lease_lost = self.lease_lost or flag == _LEASE_LOST
        if flag == _PREEMPTED and self.reason is None:
            self.reason = PREEMPTED
        return flag != _GO


class PlatformCallback(TrainerCallback):
    """Progress to RunControl (rank 0), stop on request (all ranks), checkpoints to Ray Train."""

    def __init__(
        self,
        *,
        rank: int,
        control: RunControlHandle | None,
        stop: StopSignal,
        progress_interval_s: float,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self._tags = dict(tags or {})
        self._rank = rank
        self._control = control
        self._stop = stop
        self._interval = progress_interval_s
        self._last_send = -math.inf
        self._last_tokens = 0
        self._last_time = time.monotonic()
        self.start_step: int | None = None
        self.start_tokens = 0
        self.stopped = False
        self.latest: dict[str, float] = {}
        self.phase = JobPhase.LOADING_MODEL
        self._began: float | None = None
        self.average_tokens_per_second: float | None = None  # set at the end of training

    # -- progress -------------------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        """Report to RunControl from rank 0 (other ranks send nothing); never fails training."""
        if self._rank != 0 or self._control is None:
            return
        try:
            self._control.report.remote({**event, **self._tags})  # fire and forget: never wait on the mailbox
        except Exception:
            logger.warning("could not reach RunControl", exc_info=True)

    def set_phase(self, phase: JobPhase) -> None:
        """Say at once when the phase changes; progress reports carry it too."""
        if phase != self.phase:
            self.phase = phase
            report_phase(self._control, self._rank, phase, self._tags)

    def _progress(self, state: Any) -> None:
        now = time.monotonic()
        tokens = int(state.num_input_tokens_seen or 0)
        elapsed = max(now - self._last_time, 1e-9)
        self.send(
            {
                "type": PROGRESS,
                "step": state.global_step,
                "total_steps": state.max_steps,
                "tokens_seen": tokens,
                "loss": self.latest.get("loss"),
                "tokens_per_second": (tokens - self._last_tokens) / elapsed,
                "epoch": state.epoch,
                "phase": str(self.phase),
            }
        )
        self._last_send, self._last_tokens, self._last_time = now, tokens, now

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # After a resume the Trainer has already loaded trainer_state.json, so this is the step the
        # attempt continues from.
        self.start_step = state.global_step
        self.start_tokens = self._last_tokens = int(state.num_input_tokens_seen or 0)
        self._last_time = self._began = time.monotonic()
        self._stop.check_now()
        self.set_phase(JobPhase.TRAINING)
        if self._rank == 0 and state.global_step > 0:
            self.send({"type": MESSAGE, "level": "info", "message": f"resumed at step {state.global_step}"})

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        for key, value in (logs or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.latest[key] = float(value)
        if self._rank == 0 and logs:
            # The training log: the worker's output reaches the attempt's log through Ray.
            shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            print(f"step {state.global_step}/{state.max_steps} {shown}", flush=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._rank == 0 and time.monotonic() - self._last_send >= self._interval:
            self._progress(state)
        if not self.stopped and self._stop.should_stop():
            # Every rank reaches this on the same step; the save below runs before the loop exits,
            # unless the lease is lost: then another attempt may own the job, and a save would be
            # a stale write (even one this step's schedule asked for).
            self.stopped = True
            control.should_save = not self._stop.lease_lost
            control.should_training_stop = True
        if control.should_save:
            # The Trainer saves right after this step's callbacks; `on_save` says when it is done.
            self.set_phase(JobPhase.CHECKPOINTING)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The attempt's own pace, over all its training (checkpoint saves included, as a plan's
        # run includes them): the last report's rate covers only the last interval.
        trained = int(state.num_input_tokens_seen or 0) - self.start_tokens
        if self._began is not None and trained > 0:
            self.average_tokens_per_second = trained / max(time.monotonic() - self._began, 1e-9)
        self._progress(state)

    # -- checkpoints ----------------------------------------------------------------------------

    def metrics(self, state: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": state.global_step,
            "epoch": float(state.epoch or 0.0),
            "tokens_seen": int(state.num_input_tokens_seen or 0),
        }
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "eval_accuracy"):
            if key in self.latest:
                out[key] = self.latest[key]
        return out

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from ray.train import Checkpoint

        if self._stop.lease_lost:
            return  # every rank agrees (see should_stop): none reports, none waits on the others
        # Each rank hands over what it wrote (rank 0: weights, optimizer, trainer state; others:
        # their RNG state); Ray Train merges them into one directory in the store.
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        checkpoint = Checkpoint.from_directory(str(local)) if local.is_dir() else None
        ray.train.report(
            self.metrics(state),
            checkpoint=checkpoint,
            checkpoint_dir_name=checkpoint_dir_name(state.global_step),
            # Uploaded is enough: keeping local copies would fill the worker's disk.
            delete_local_checkpoint_after_upload=True,
        )
        self.set_phase(JobPhase.TRAINING)
